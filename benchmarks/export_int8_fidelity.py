"""INT8 fidelity of a trained bundle: kNN top-1 and neighbour agreement against its own FP32 graph.

Re-quantizes the bundle's ``encoder_fp32.onnx`` with each INT8 setting (on the calibration images its
``calibration.json`` records), embeds the dataset's train split (kNN bank) and test split (queries) with ONNX
Runtime, and prints per setting: weighted kNN top-1 and its delta from FP32, top-1 / top-10 neighbour agreement,
and the 1st-percentile / mean cosine to the FP32 query embeddings. ``--noise-seeds N`` adds the noise floor of one
delta: FP32 embeddings plus isotropic Gaussian noise of INT8's size, re-normalised, N seeds.

    python benchmarks/export_int8_fidelity.py runs/cifar10_cpu/deploy [--dataset npz:../shared/data/cifar10_dev.npz]
        [--setting NAME=FLAVOUR[:key=value,...] ...] [--noise-seeds 12] [--json out.json]

A setting's keys are ``export.precision.QuantConfig`` fields, e.g. ``stem_int8=int8_trt:float_input_convs=False``
or ``minmax=int8_trt:calibrate_method=minmax``; the default settings compare both flavours with the stem
convolution in FP32 (the default) and quantized. Quantization uses the installed package, so the figures are those
of the code at hand, not of the bundle's own INT8 files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from edge_encoder.evaluate.knn import exact_search, knn_accuracy
from edge_encoder.evaluate.suite import neighbor_agreement
from edge_encoder.device.engines import OnnxRuntimeEngine
from edge_encoder.export.precision import INT8_FLAVOURS, quantize_int8
from edge_encoder.imagedata.sources import load_dataset

DEFAULT_SETTINGS = ("int8_trt=int8_trt:", "int8_trt_stem_int8=int8_trt:float_input_convs=False",
                    "int8_cpu=int8_cpu:", "int8_cpu_stem_int8=int8_cpu:float_input_convs=False")


def parse_setting(spec: str) -> tuple[str, str, dict[str, object]]:
    """``NAME=FLAVOUR[:key=value,...]`` -> (name, flavour, QuantConfig overrides)."""
    name, _, rest = spec.partition("=")
    flavour, _, items = rest.partition(":")
    if not name or flavour not in INT8_FLAVOURS:
        raise SystemExit(f"--setting {spec!r}: expected NAME=FLAVOUR[:key=value,...] with FLAVOUR in {sorted(INT8_FLAVOURS)}")
    fields = {f.name: f.type for f in dataclasses.fields(INT8_FLAVOURS[flavour])}
    overrides: dict[str, object] = {}
    for item in filter(None, items.split(",")):
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"--setting {spec!r}: {key!r} is not a QuantConfig field ({sorted(fields)})")
        overrides[key] = {"True": True, "False": False}.get(value, value)
    return name, flavour, overrides


def embed(path: Path, images: np.ndarray, batch: int = 500) -> np.ndarray:
    """uint8 ``(N, H, W, 3)`` -> float32 ``(N, D)`` through ONNX Runtime."""
    with OnnxRuntimeEngine(path) as engine:
        return np.concatenate([engine.embed(images[i:i + batch]) for i in range(0, len(images), batch)])


def fidelity(ref: tuple[np.ndarray, np.ndarray], cand: tuple[np.ndarray, np.ndarray], labels: tuple[np.ndarray, np.ndarray],
             k: int, temperature: float) -> dict[str, float]:
    """kNN top-1 of ``cand`` (bank, queries) and its agreement with ``ref``; labels are (bank, query)."""
    top1 = knn_accuracy(cand[0], labels[0], cand[1], labels[1], k=k, temperature=temperature)["top1"]
    ref_nb, nb = exact_search(*ref, 10)[1], exact_search(*cand, 10)[1]
    cos = np.sum(cand[1] * ref[1], axis=1)
    return {"knn_top1": top1, "top1_agreement": float((nb[:, 0] == ref_nb[:, 0]).mean()),
            "top10_agreement": neighbor_agreement(nb, ref_nb),
            "cosine_p1": float(np.percentile(cos, 1)), "cosine_mean": float(cos.mean())}


def noise_floor(ref: tuple[np.ndarray, np.ndarray], labels: tuple[np.ndarray, np.ndarray], one_minus_cos: float,
                seeds: int, k: int, temperature: float) -> list[float]:
    """kNN top-1 deltas (points) of FP32 embeddings plus isotropic noise with mean 1 - cosine ``one_minus_cos``."""
    base = knn_accuracy(ref[0], labels[0], ref[1], labels[1], k=k, temperature=temperature)["top1"]
    sigma = float(np.sqrt(2 * one_minus_cos / ref[0].shape[1]))  # E|n|^2 = D sigma^2 ~ 2 (1 - cos) for small noise
    deltas = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        noisy = [x + rng.normal(0, sigma, x.shape).astype(np.float32) for x in ref]
        noisy = [x / np.linalg.norm(x, axis=1, keepdims=True) for x in noisy]
        deltas.append(100 * (knn_accuracy(noisy[0], labels[0], noisy[1], labels[1], k=k, temperature=temperature)["top1"] - base))
    return deltas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path, help="a deploy bundle with encoder_fp32.onnx and calibration.json")
    parser.add_argument("--dataset", default="npz:../shared/data/cifar10_dev.npz",
                        help="the dataset the bundle was calibrated on, at the bundle's image size (train split: "
                             "calibration indices and kNN bank; test split: queries)")
    parser.add_argument("--setting", action="append", help="NAME=FLAVOUR[:key=value,...] (repeatable)")
    parser.add_argument("--knn-k", type=int, default=20)
    parser.add_argument("--temperature", type=float, default=0.07)
    parser.add_argument("--noise-seeds", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data = load_dataset(args.dataset)
    bank_x, query_x, labels = data.x_train, data.x_test, (data.y_train, data.y_test)
    indices = json.loads((args.bundle / "calibration.json").read_text())["indices"]
    if indices is None:
        raise SystemExit(f"{args.bundle / 'calibration.json'} records no training-split indices; cannot re-calibrate")
    calibration = bank_x[np.asarray(indices)]
    fp32_path = args.bundle / "encoder_fp32.onnx"
    fp32 = onnx.load(fp32_path)
    ref = (embed(fp32_path, bank_x), embed(fp32_path, query_x))
    ref_top1 = knn_accuracy(ref[0], labels[0], ref[1], labels[1], k=args.knn_k, temperature=args.temperature)["top1"]
    print(f"onnx_fp32 kNN top-1 {ref_top1:.4f} ({len(bank_x)} bank, {len(query_x)} queries, k={args.knn_k}, "
          f"{len(calibration)} calibration images)")
    print(f"{'setting':24s} {'top-1':>7s} {'delta':>7s} {'agree@1':>8s} {'agree@10':>9s} {'cos p1':>8s} {'1-cos':>9s}  s")
    rows: dict[str, dict[str, float]] = {}
    for spec in args.setting or DEFAULT_SETTINGS:
        name, flavour, overrides = parse_setting(spec)
        start = time.perf_counter()
        model = quantize_int8(fp32, calibration, flavour, config=dataclasses.replace(INT8_FLAVOURS[flavour], **overrides))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.onnx"
            onnx.save(model, path)
            row = fidelity(ref, (embed(path, bank_x), embed(path, query_x)), labels, args.knn_k, args.temperature)
        row["delta_points"] = 100 * (row["knn_top1"] - ref_top1)
        rows[name] = row
        print(f"{name:24s} {row['knn_top1']:7.4f} {row['delta_points']:+7.2f} {row['top1_agreement']:8.3f} "
              f"{row['top10_agreement']:9.3f} {row['cosine_p1']:8.5f} {1 - row['cosine_mean']:9.2e}  "
              f"{time.perf_counter() - start:.0f}", flush=True)
    floor = {}
    if args.noise_seeds:
        size = float(np.median([1 - r["cosine_mean"] for r in rows.values()]))
        deltas = noise_floor(ref, labels, size, args.noise_seeds, args.knn_k, args.temperature)
        floor = {"one_minus_cos": size, "deltas_points": deltas}
        print(f"noise floor (isotropic, 1-cos {size:.2e}, {args.noise_seeds} seeds): delta {np.mean(deltas):+.2f} "
              f"± {np.std(deltas):.2f} points, range {min(deltas):+.2f} .. {max(deltas):+.2f}")
    if args.json:
        args.json.write_text(json.dumps({"fp32_knn_top1": ref_top1, "settings": rows, "noise_floor": floor}, indent=2))


if __name__ == "__main__":
    main()
