"""End-to-end evaluation of one engine on cifar10_dev (12k images): extraction + kNN + retrieval + linear probe.

Goal (issue 5): <= 60 s on the 2-core machine, extraction included. The engine is an exported ONNX model
(``--onnx PATH``, run by ONNX Runtime) or, by default, a randomly initialised ResNet-18 (width 16, CIFAR
stem, as in configs/cifar10_cpu.toml) run by export's PyTorch engine. A second call shows the cached cost.

    python benchmarks/evaluate_engine_e2e.py [--onnx runs/NAME/model_fp32.onnx] [--no-linear-probe]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from edge_encoder.evaluate.suite import EvalConfig, evaluate_engine
from evaluate_embeddings import cifar10_dev_path


def make_engine(onnx: Path | None, width: int):
    if onnx is not None:
        from edge_encoder.device.engines import OnnxRuntimeEngine

        return OnnxRuntimeEngine(onnx)
    import torch
    from edge_encoder.export.engines import TorchEngine
    from edge_encoder.train.backbones import BackboneConfig, build_backbone

    torch.manual_seed(0)
    backbone = build_backbone(BackboneConfig(arch="resnet18", width=width, stem="cifar"))
    engine = TorchEngine(backbone, {"image_size": 32, "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]},
                         name="random_init")
    engine.cache_token = f"random_init_resnet18_w{width}_seed0"  # lets the second run hit the cache
    return engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx", type=Path, default=None)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--no-linear-probe", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache-dir", type=Path, default=None, help="keep embeddings here (default: a temp dir)")
    args = ap.parse_args()
    with np.load(cifar10_dev_path()) as d:
        data = [d[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    config = EvalConfig(linear_probe=not args.no_linear_probe, num_threads=args.threads)
    out = {}
    with make_engine(args.onnx, args.width) as engine, tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or Path(tmp)
        for attempt in ("cold", "cached"):
            start = time.perf_counter()
            ev = evaluate_engine(engine, *data, config=config, dataset_id="cifar10_dev", cache_dir=Path(cache))
            wall = time.perf_counter() - start
            m = ev.metrics
            out[attempt] = {"wall_s": round(wall, 2), "search_s": round(m["search_s"], 2),
                            "linear_probe_s": round(m.get("linear_probe_s") or 0.0, 2),
                            "cache_hit": m["cache_hit"], "dim": m["dim"],
                            "embed_images_per_s": round(m["embed_images_per_s"], 1),
                            **{k: round(m[k], 4) for k in ("knn_top1", "knn_top5", "recall_at_1", "map_at_r")},
                            "linear_top1": m["linear_top1"]}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
