"""``edge-encoder embed ENGINE (--images FOLDER | --dataset SPEC) --out FILE.npz``: embeddings to one file.

ENGINE is a bundle variant (default ``fp32``) or any ONNX encoder file with a declared input contract
(the "input contract" options). The images are fitted to the engine's input size: a folder's images (at any depth,
any image suffix in any case) each centre-fitted as ``imagedata.folder.read_image`` fits them; a dataset spec's
split(s) as ``evaluate`` loads them (so the rows equal ``evaluate``'s embeddings of the same split).

The ``.npz`` (written atomically) holds ``embeddings`` float32 ``(N, D)`` with L2-normalised rows, ``paths`` (str
``(N,)``: the file path relative to the folder, or ``<split>/<index>`` for a dataset), ``labels`` int64 ``(N,)``
for a dataset, and ``engine`` (the engine's name).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
from edge_encoder.commands.engine_args import (
    engine_options,
    contract_from_args,
    open_target,
    resolve_target,
    square_size,
)
from edge_encoder.commands.errors import UsageError, require_training_stack, usage_errors
from edge_encoder.commands.options import DATASET_HELP, dataset_options, output_options, show_progress
from edge_encoder.core.files import atomic_write
from edge_encoder.evaluate.extract import extract
from edge_encoder.imagedata.folder import IMAGE_SUFFIXES, read_image, walk_images

log = logging.getLogger(__name__)
SPLITS = ("train", "test", "all")


def get_args_parser() -> argparse.ArgumentParser:
    """embed's options (a parent parser)."""
    engine = engine_options(variant_help="bundle variant to run (default: fp32)", many_variants=False)
    parser = argparse.ArgumentParser(add_help=False, parents=[engine, dataset_options(sections=("data",)),
                                                              output_options()])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", metavar="FOLDER", help="a folder of images (any depth; JPEG, PNG, ...)")
    source.add_argument("--dataset", metavar="SPEC", help=DATASET_HELP)
    parser.add_argument("--split", choices=SPLITS, default="all", help="dataset split(s) to embed (default: all)")
    parser.add_argument("--out", required=True, metavar="FILE.npz", help="the embeddings file to write")
    parser.add_argument("--batch-size", type=int, default=256, metavar="N", help="images per engine call")
    return parser


class ImageFiles:
    """Image files decoded on access: ``len``, ``[i] -> uint8 (S, S, 3)`` RGB (``evaluate.extract.ImageSource``)."""

    def __init__(self, files: list[Path], size: int) -> None:
        self.files, self.size = files, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> np.ndarray:
        return read_image(self.files[index], self.size)


def list_images(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (any depth; ``imagedata.folder.walk_images``: suffixes of ``IMAGE_SUFFIXES``
    in any case, hidden files and folders and ``__MACOSX/`` left out), in order of relative path."""
    if not folder.is_dir():
        raise UsageError(f"--images {folder}: not a folder" if folder.exists() else f"--images {folder} does not exist")
    found = walk_images(folder)
    if not found:
        raise UsageError(f"--images {folder}: no image files in it (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def embed_command(args: argparse.Namespace) -> int:
    """Embed the images through ENGINE and write ``--out``; returns the exit code."""
    out = Path(args.out).expanduser()
    if out.suffix != ".npz":
        raise UsageError(f"--out {out}: the embeddings file must end in .npz")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    target = resolve_target(args.engine, args.variant, contract_from_args(args), default_variants="fp32")
    progress = show_progress(args)
    with open_target(target, target.variants[0] if target.variants else None) as engine:
        size = square_size(engine)
        if args.images is not None:
            if not args.images.strip():  # Path("") is the current folder: never embedded by accident
                raise UsageError("--images names no folder: give --images PATH")
            if args.skip_corrupt or args.set or args.config:
                raise UsageError("--skip-corrupt/--set/--config apply to --dataset; --images reads every image file "
                                 "(an unreadable one stops the command, naming it)")
            folder = Path(args.images).expanduser()
            files = list_images(folder)
            parts = [(ImageFiles(files, size), [p.relative_to(folder).as_posix() for p in files], None)]
        else:
            parts = dataset_parts(args, size)
        embeddings, paths, labels = [], [], []
        for images, names, split_labels in parts:
            embeddings.append(_extract(engine, images, args.batch_size, progress))
            paths += names
            labels.append(split_labels)
        name = engine.name
    arrays: dict[str, Any] = {"embeddings": np.concatenate(embeddings).astype(np.float32, copy=False),
                              "paths": np.array(paths, dtype=str), "engine": np.array(name)}
    if all(y is not None for y in labels):
        arrays["labels"] = np.concatenate(labels).astype(np.int64)
    atomic_write(out, lambda f: np.savez(f, **arrays))
    n, d = arrays["embeddings"].shape
    print(f"{n} embeddings ({d}-d, rows L2-normalised) from {name} -> {out}")
    return 0


def dataset_parts(args: argparse.Namespace, size: int) -> list[tuple[Any, list[str], np.ndarray]]:
    """``[(images, paths, labels)]`` of the chosen split(s) of ``--dataset``, fitted to ``size``."""
    require_training_stack("edge-encoder embed --dataset")  # dataset loading resizes with torch; --images does not
    # Imported here: the dataset stage needs the training stack, which the base install (--images) does not have.
    from edge_encoder import stages
    from edge_encoder.commands.dataset_args import resolve_settings

    settings = resolve_settings(args, args.dataset, size, "embed", sections=("data",))
    data = stages.load_data(settings.data)
    splits = ("train", "test") if args.split == "all" else (args.split,)
    parts = []
    for split in splits:
        images, labels = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        parts.append((images, [f"{split}/{i}" for i in range(len(images))], labels))
    return parts


def _extract(engine: Any, images: Any, batch_size: int, progress: bool) -> np.ndarray:
    with usage_errors(f"embedding through {engine.name!r}: "):
        return extract(engine, images, batch_size=batch_size, progress=progress).embeddings
