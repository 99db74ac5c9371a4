"""Worker for test_extract_distributed*: run by torchrun with 2 CPU ranks (gloo) as a module
(``torchrun -m tests.evaluate.dist_extract_worker`` from the project root, so ``tests`` imports like under pytest;
``edge_encoder`` is the installed package). A third argument ``source`` embeds the images as an image source (a
ListSource) instead of an array."""

import sys
from pathlib import Path

import numpy as np
import torch.distributed as dist
from edge_encoder.evaluate.extract import extract

from tests.evaluate.conftest import ListSource, ProjectionEngine, make_images

dist.init_process_group("gloo")
model, out = Path(sys.argv[1]), Path(sys.argv[2])
x, _ = make_images(13, 3, seed=4)  # 39 images: shards of 19 and 20
engine = ProjectionEngine(model)
images = ListSource(x) if sys.argv[3:] == ["source"] else x
res = extract(engine, images, batch_size=8, cache_dir=out / "cache", dataset_id="toy", split="train",
              shard=True)
np.save(out / f"rank{dist.get_rank()}.npy", res.embeddings)
np.save(out / f"calls{dist.get_rank()}.npy", np.array([engine.calls]))
if isinstance(images, ListSource):
    np.save(out / f"reads{dist.get_rank()}.npy", np.array([images.reads]))
dist.destroy_process_group()
