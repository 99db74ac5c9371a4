"""Batched two-view augmentation: train/augment.py against kornia's equivalent pipeline, same batch and device.

Usage: python benchmarks/train_augment.py [--batch 256] [--size 32] [--device cpu] [--threads 0] [--repeats 10]
Prints milliseconds per batch (both views) and images/s for each implementation.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from edge_encoder.train.augment import AugmentParams, to_float_nchw, two_views


def kornia_pipeline(p: AugmentParams) -> torch.nn.Module:
    import kornia.augmentation as K

    s = p.brightness
    ops = [K.RandomResizedCrop((p.out_size, p.out_size), scale=(p.crop_min_scale, 1.0)),
           K.ColorJitter(s, s, s, p.hue, p=p.jitter_prob),
           K.RandomGrayscale(p=p.grayscale_prob),
           K.RandomHorizontalFlip(p=p.flip_prob)]
    if p.blur_active:
        k = 2 * max(1, round(3 * p.blur_sigma[1] * p.out_size / 224)) + 1
        ops.append(K.RandomGaussianBlur((k, k), (p.blur_sigma[0] * p.out_size / 224, p.blur_sigma[1] * p.out_size / 224),
                                        p=p.blur_prob))
    ops.append(K.Normalize(mean=torch.tensor(p.mean), std=torch.tensor(p.std)))
    return K.AugmentationSequential(*ops)


def timed(fn, repeats: int, sync) -> float:  # noqa: ANN001
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--blur", type=float, default=0.0, help="blur probability (applied at any size here)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    images = torch.randint(0, 256, (args.batch, args.size, args.size, 3), dtype=torch.uint8, device=dev)
    p = AugmentParams(out_size=args.size, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26), blur_prob=args.blur,
                      blur_min_size=1)
    gen = torch.Generator(device=dev).manual_seed(0)
    ours = timed(lambda: two_views(images, p, gen), args.repeats, sync)
    korn = kornia_pipeline(p).to(dev)
    theirs = timed(lambda: (korn(to_float_nchw(images)), korn(to_float_nchw(images))), args.repeats, sync)
    print(json.dumps({"device": str(dev), "threads": torch.get_num_threads(), "batch": args.batch, "size": args.size,
                      "blur_prob": args.blur,
                      "ours_ms": round(ours * 1e3, 2), "kornia_ms": round(theirs * 1e3, 2),
                      "ours_images_per_s": round(args.batch / ours), "kornia_images_per_s": round(args.batch / theirs),
                      "speedup": round(theirs / ours, 2)}))


if __name__ == "__main__":
    main()
