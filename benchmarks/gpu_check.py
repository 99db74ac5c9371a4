"""One prepared GPU check (≤ 8 minutes on an H100/H200) for the three stages, written to run unattended.

    python benchmarks/gpu_check.py --data PATH/cifar10_dev.npz --out DIR        # on a CUDA machine
    python benchmarks/gpu_check.py --data PATH/cifar10_dev.npz --smoke --device cpu   # logic check on a CPU

Sections (each timed; a failing section is recorded with its error and the next one runs):

1. ``train_gpu``: the GPU ResNet-18 CIFAR preset (``configs/cifar10_gpu_resnet18.toml``: batch 512, bf16, split
   BN, K=4096) trained by ``train.loop.train_moco`` with the uint8 train split resident on the GPU and the
   batched augmentation on the GPU, for ``--epochs`` epochs: images/s, seconds per epoch (median over epochs
   after the first) and that figure scaled to a 50,000-image epoch (the issue's "≤ 5 s on an H100" target).
2. ``knn``: weighted kNN top-1 (k=200, T=0.1, cosine, the formula of ``evaluate.knn``; computed with a matmul on
   the GPU because the image has no FAISS) and the L-BFGS linear probe (``evaluate.linear_probe`` on the GPU)
   of the trained backbone and of the same architecture at random init.
3. ``train_cpu_aug_fp32``: the same MoCo model, optimiser and learning rate with the conventional data path —
   torchvision per-sample transforms (crop, jitter, grayscale, flip) in DataLoader workers (all cores but one,
   pinned memory, persistent workers) — and fp32 (TF32 matmuls off): images/s for ``--baseline-steps`` steps,
   and the ratio of section 1's images/s to it.
4. ``inference``: PyTorch CUDA latency (p50) and throughput of the trained backbone at batch 1, 8, 64 and 512,
   FP32 against bf16 autocast (channels_last); ONNX Runtime CPU ``int8_cpu`` on the machine's cores when
   ``onnxslim`` is importable; TensorRT when ``tensorrt`` is importable (otherwise recorded as skipped).

Writes ``--out``/gpu_check.json (after every section, atomically) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
FULL_EPOCH = 50_000


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _write(out: Path | None, results: dict[str, Any]) -> None:
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "gpu_check.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    os.replace(tmp, out / "gpu_check.json")


def _train_config(args: argparse.Namespace, **overrides: Any):  # -> train.config.TrainConfig
    from edge_encoder.train.config import train_config_from_dict

    with open(ROOT / "configs" / "cifar10_gpu_resnet18.toml", "rb") as handle:
        d = dict(tomllib.load(handle)["train"])
    d.update(epochs=args.epochs, knn_every_epochs=0, checkpoint_every_epochs=args.epochs, log_every=10)
    if args.smoke:
        d.update(width=8, batch_size=64, queue_size=256, split_bn_groups=2)
    d.update(overrides)
    return train_config_from_dict(d)


def section_env(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__, "device": str(device), "cpu_cores": os.cpu_count()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}", memory_gib=round(props.total_memory / 2**30, 1),
                    bf16=torch.cuda.is_bf16_supported(), cuda=torch.version.cuda)
    return info


def section_train_gpu(args: argparse.Namespace, x_train: np.ndarray, device: torch.device, work: Path,
                      state: dict[str, Any]) -> dict[str, Any]:
    from edge_encoder.train.loop import train_moco

    config = _train_config(args)
    run_dir = work / "train_gpu"
    result = train_moco(x_train, config, run_dir, device=str(device), preprocess_mean=MEAN, preprocess_std=STD,
                        progress=False)
    state["checkpoint"] = result.checkpoint_path
    events = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    start = next(e for e in events if e.get("event") == "start")
    cumulative = [e["seconds"] for e in events if e.get("event") == "epoch"]
    per_epoch = np.diff([0.0] + cumulative)
    steady = float(np.median(per_epoch[1:])) if len(per_epoch) > 1 else float(per_epoch[0])
    images_per_epoch = (len(x_train) // config.batch_size) * config.batch_size
    return {"images": len(x_train), "batch_size": config.batch_size, "epochs": result.epochs,
            "precision": start.get("precision"), "images_per_s": result.images_per_s,
            "first_epoch_s": float(per_epoch[0]), "steady_epoch_s": steady,
            "epoch_s_at_50k_images": steady * FULL_EPOCH / images_per_epoch, "train_seconds": result.seconds,
            "final_loss": result.final_loss}


def _weighted_knn_top1(bank: torch.Tensor, bank_y: torch.Tensor, queries: torch.Tensor, query_y: torch.Tensor,
                       k: int = 200, t: float = 0.1) -> float:
    """Weighted kNN (Wu et al. 2018) top-1 on L2-normalised float32 embeddings, by matmul in query chunks."""
    k = min(k, bank.shape[0])
    classes = int(bank_y.max()) + 1
    hits = 0
    for start in range(0, queries.shape[0], 1024):
        sims, ids = (queries[start:start + 1024] @ bank.T).topk(k, dim=1)
        votes = torch.zeros(sims.shape[0], classes, device=bank.device, dtype=torch.float64)
        votes.scatter_add_(1, bank_y[ids], torch.exp(sims.double() / t))
        hits += int((votes.argmax(dim=1) == query_y[start:start + 1024]).sum())
    return hits / queries.shape[0]


def _embed(backbone: torch.nn.Module, images: np.ndarray, device: torch.device, batch: int = 1024) -> torch.Tensor:
    from edge_encoder.export.engines import TorchEngine

    with TorchEngine(backbone, {"image_size": images.shape[1], "mean": list(MEAN), "std": list(STD)},
                     device=str(device)) as engine:
        out = np.concatenate([engine.embed(images[i:i + batch]) for i in range(0, len(images), batch)])
    return torch.from_numpy(out).to(device)


def section_knn(args: argparse.Namespace, data: dict[str, np.ndarray], device: torch.device,
                state: dict[str, Any]) -> dict[str, Any]:
    from edge_encoder.evaluate.linear_probe import linear_probe
    from edge_encoder.train.backbones import build_backbone
    from edge_encoder.train.checkpoint import load_backbone

    backbone, _, backbone_config = load_backbone(state["checkpoint"])
    torch.manual_seed(0)
    results: dict[str, Any] = {"k": 200, "temperature": 0.1}
    for name, model in (("trained", backbone), ("random_init", build_backbone(backbone_config))):
        bank, queries = _embed(model.eval(), data["x_train"], device), _embed(model.eval(), data["x_test"], device)
        y_bank = torch.from_numpy(data["y_train"].astype(np.int64)).to(device)
        y_query = torch.from_numpy(data["y_test"].astype(np.int64)).to(device)
        results[f"{name}_knn_top1"] = _weighted_knn_top1(bank, y_bank, queries, y_query)
        t0 = time.perf_counter()
        probe = linear_probe(bank.cpu().numpy(), data["y_train"], queries.cpu().numpy(), data["y_test"],
                             device=str(device))
        results[f"{name}_linear_top1"] = probe.top1
        results[f"{name}_linear_probe_s"] = time.perf_counter() - t0
    state["backbone"] = backbone
    return results


def section_train_cpu_aug(args: argparse.Namespace, x_train: np.ndarray, device: torch.device,
                          state: dict[str, Any]) -> dict[str, Any]:
    import torchvision.transforms as T
    from edge_encoder.train.backbones import BackboneConfig
    from edge_encoder.train.loop import resolve_split_groups
    from edge_encoder.train.moco import build_moco
    from edge_encoder.train.optim import build_optimizer
    from edge_encoder.train.schedule import scaled_lr
    from PIL import Image

    config = _train_config(args, bf16=False)
    aug = T.Compose([T.RandomResizedCrop(x_train.shape[1], scale=(config.crop_min_scale, 1.0)),
                     T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2),
                     T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])

    class TwoViews(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(x_train)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            img = Image.fromarray(x_train[i])
            return aug(img), aug(img)

    workers = max(1, (os.cpu_count() or 2) - 1)
    loader = torch.utils.data.DataLoader(TwoViews(), batch_size=config.batch_size, shuffle=True, drop_last=True,
                                         num_workers=workers, pin_memory=device.type == "cuda",
                                         persistent_workers=True, prefetch_factor=4)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False  # plain fp32, as the conventional reference runs
    groups = resolve_split_groups(config.split_bn_groups, config.batch_size)
    model = build_moco(BackboneConfig(arch=config.arch, width=config.width, stem=config.stem), method=config.method,
                       proj_hidden_dim=config.proj_hidden_dim, proj_dim=config.proj_dim,
                       pred_hidden_dim=config.pred_hidden_dim, queue_size=config.queue_size,
                       temperature=config.temperature, symmetric=config.symmetric, split_bn_groups=groups)
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = build_optimizer(config.optimizer, model.query_parameters(), lr=scaled_lr(config.base_lr, config.batch_size),
                                weight_decay=config.weight_decay, momentum=config.momentum_sgd,
                                exclude_norm_bias=config.exclude_norm_bias_from_wd,
                                trust_coefficient=config.lars_trust_coefficient)
    warmup, steps = 3, args.baseline_steps
    batches = iter(loader)
    wait = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            start, wait = time.perf_counter(), 0.0
        t0 = time.perf_counter()
        try:
            v1, v2 = next(batches)
        except StopIteration:
            batches = iter(loader)
            v1, v2 = next(batches)
        v1 = v1.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        v2 = v2.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        wait += time.perf_counter() - t0
        loss = model(v1, v2, config.key_momentum)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    seconds = time.perf_counter() - start
    ips = steps * config.batch_size / seconds
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    fast = state.get("train_gpu_images_per_s")
    return {"workers": workers, "steps": steps, "batch_size": config.batch_size, "precision": "fp32",
            "images_per_s": ips, "epoch_s_at_50k_images": FULL_EPOCH / ips, "data_wait_frac": wait / seconds,
            "gpu_resident_bf16_speedup": (fast / ips) if fast else None}


def _latency(fn: Callable[[], Any], device: torch.device, seconds: float) -> float:
    for _ in range(3):
        fn()
    _sync(device)
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 5:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def section_inference(args: argparse.Namespace, data: dict[str, np.ndarray], device: torch.device,
                      state: dict[str, Any]) -> dict[str, Any]:
    from edge_encoder.train.checkpoint import load_backbone

    backbone = load_backbone(state["checkpoint"])[0].to(device).eval()
    results: dict[str, Any] = {}
    batches = (1, 8, 64) if args.smoke else (1, 8, 64, 512)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    for precision in ("fp32", "bf16"):
        model = backbone.to(memory_format=torch.channels_last)
        for b in batches:
            x = torch.from_numpy(data["x_test"][:b]).to(device)

            def run() -> torch.Tensor:
                with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                            enabled=precision == "bf16"):
                    z = (x.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
                    return torch.nn.functional.normalize(model(z.contiguous(memory_format=torch.channels_last)).float())

            s = _latency(run, device, 0.5 if args.smoke else 2.0)
            results[f"pytorch_{precision}_b{b}"] = {"p50_ms": s * 1e3, "images_per_s": b / s}
    results["onnxruntime_cpu_int8"] = _onnxruntime_int8(data, backbone.cpu(), args)
    try:
        import tensorrt  # noqa: F401
        results["tensorrt"] = "importable: build with `edge-encoder build BUNDLE` (not timed here)"
    except ImportError as exc:
        results["tensorrt"] = f"skipped: {exc}"
    return results


def _onnxruntime_int8(data: dict[str, np.ndarray], backbone: torch.nn.Module, args: argparse.Namespace) -> Any:
    try:
        import onnxslim  # noqa: F401  (the exporter simplifies with it)
    except ImportError as exc:
        return f"skipped: {exc} (carry the onnxslim wheel)"
    from edge_encoder.device.engines import OnnxRuntimeEngine
    from edge_encoder.export.onnx_export import build_fp32_encoder, save_model
    from edge_encoder.export.precision import make_variant

    pre = {"image_size": int(data["x_train"].shape[1]), "mean": list(MEAN), "std": list(STD)}
    fp32 = build_fp32_encoder(backbone, pre, exporter="torchscript")[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "encoder_int8_cpu.onnx"
        save_model(make_variant(fp32, "int8_cpu", data["x_train"][:256]), path)
        with OnnxRuntimeEngine(path) as engine:
            batch = data["x_test"][:64]
            s = _latency(lambda: engine.embed(batch), torch.device("cpu"), 0.5 if args.smoke else 2.0)
    return {"b64_p50_ms": s * 1e3, "images_per_s": 64 / s, "threads": "onnxruntime default (all cores)"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10_dev.npz")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--epochs", type=int, default=30, help="GPU-resident training epochs (the kNN is after these)")
    parser.add_argument("--baseline-steps", type=int, default=40, help="timed steps of the CPU-augmentation fp32 path")
    parser.add_argument("--smoke", action="store_true", help="tiny model and data: checks the script's logic on a CPU")
    parser.add_argument("--out", type=Path, default=None, help="folder for gpu_check.json")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device (use --device cpu --smoke to check the logic)",
              file=sys.stderr)
        return 2
    if not args.data.is_file():
        print(f"error: {args.data} not found (copy cifar10_dev.npz there, or pass --data)", file=sys.stderr)
        return 2
    with np.load(args.data) as d:
        data = {k: np.ascontiguousarray(d[k]) for k in ("x_train", "y_train", "x_test", "y_test")}
    if args.smoke:
        data = {"x_train": data["x_train"][:512], "y_train": data["y_train"][:512],
                "x_test": data["x_test"][:128], "y_test": data["y_test"][:128]}
        args.epochs, args.baseline_steps = min(args.epochs, 2), min(args.baseline_steps, 2)
    results: dict[str, Any] = {"env": section_env(device), "args": vars(args)}
    state: dict[str, Any] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        sections: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("train_gpu", lambda: section_train_gpu(args, data["x_train"], device, work, state)),
            ("knn", lambda: section_knn(args, data, device, state)),
            ("train_cpu_aug_fp32", lambda: section_train_cpu_aug(args, data["x_train"], device, state)),
            ("inference", lambda: section_inference(args, data, device, state)),
        ]
        for name, run in sections:
            t0 = time.perf_counter()
            try:
                results[name] = run()
            except Exception as exc:  # keep going: one broken section must not lose the others' figures
                results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
            results[name]["section_s"] = time.perf_counter() - t0
            if name == "train_gpu" and "images_per_s" in results[name]:
                state["train_gpu_images_per_s"] = results[name]["images_per_s"]
            print(f"[{time.perf_counter() - started:6.1f} s] {name}: {json.dumps(results[name], default=str)[:600]}",
                  flush=True)
            _write(args.out, results)
    failed = [n for n, _ in sections if "error" in results[n]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
