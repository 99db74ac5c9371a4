"""Training leaves no process-wide setting behind (issue 17): ``train.num_threads`` holds for the run only."""

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from edge_encoder.train.config import TrainConfig
from edge_encoder.train.loop import torch_threads, train_moco

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def test_torch_threads_restores_the_count() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with torch_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with torch_threads(0):  # unset: left alone
            assert torch.get_num_threads() == 2
        try:
            with torch_threads(1):
                raise RuntimeError("stop")
        except RuntimeError:
            pass
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_train_moco_restores_the_thread_count(tiny_images: np.ndarray, tmp_path: Path,
                                              tiny_config: Callable[..., TrainConfig]) -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        result = train_moco(tiny_images, tiny_config(epochs=1, num_threads=1), tmp_path, preprocess_mean=MEAN,
                            preprocess_std=STD, progress=False)
        assert result.steps == 4 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
