"""One rank of the DDP equivalence test (tests/train/test_train_ddp.py); launched by ``torch.distributed.run``.

Usage: ``python -m torch.distributed.run --standalone --nproc_per_node=2 ddp_worker.py IMAGES.npy OUT_DIR CASES.json``

For each case ``{"name": ..., "config": {...}}`` it trains twice in ``OUT_DIR/NAME`` through ``train_moco`` (which
joins the process group itself from the torchrun environment): up to step 1, then a resume to the end. After
each call every rank dumps what it holds (queue, pointer, query backbone) to ``OUT_DIR/NAME_step{S}_rank{R}.pt``
so the test can check that all ranks agree. A case with ``"stream": true`` trains from an indexable sequence
(DataLoader workers on every rank) instead of the array. Last, a global batch that 2 processes cannot split must be refused:
the message goes to ``OUT_DIR/odd_rank{R}.txt``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from edge_encoder.train import loop
from edge_encoder.train.config import train_config_from_dict

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class Images:
    """The array as a plain indexable sequence: train_moco streams it through DataLoader workers."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.images[index]


def main() -> None:
    images_path, out_dir, cases_path = sys.argv[1:4]
    torch.set_num_threads(1)
    images = np.load(images_path)
    out = Path(out_dir)
    rank = int(os.environ["RANK"])
    runs: list = []
    build = loop._build_run

    def capture(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        run = build(*args, **kwargs)
        runs.append(run)
        return run

    loop._build_run = capture  # to see each rank's model after training
    for case in json.loads(Path(cases_path).read_text()):
        config = train_config_from_dict(case["config"])
        for stop in (1, None):
            source = Images(images) if case.get("stream") else images
            result = loop.train_moco(source, config, out / case["name"], preprocess_mean=MEAN,
                                     preprocess_std=STD, progress=False, stop_at_step=stop)
            model = runs[-1].model
            dump = {"steps": result.steps, "final_loss": result.final_loss, "world": runs[-1].dist.world,
                    "resumed_from_step": result.resumed_from_step,
                    "backbone": {k: v.detach().clone() for k, v in model.backbone_q.state_dict().items()}}
            if model.uses_queue:
                dump["queue"], dump["queue_ptr"] = model.queue.clone(), int(model.queue_ptr)
            torch.save(dump, out / f"{case['name']}_step{result.steps}_rank{rank}.pt")
    # a global batch of 15 does not divide over 2 processes: refused on every rank, before any training
    try:
        loop.train_moco(images, train_config_from_dict({**case["config"], "batch_size": 15}), out / "odd",
                        preprocess_mean=MEAN, preprocess_std=STD, progress=False)
    except ValueError as err:
        (out / f"odd_rank{rank}.txt").write_text(str(err))


if __name__ == "__main__":
    main()
