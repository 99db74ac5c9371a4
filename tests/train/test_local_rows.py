"""The DDP row layout: each rank's contiguous block of a global batch, the same groups split BN normalises."""

from __future__ import annotations

import numpy as np
import torch
from edge_encoder.train.distributed import local_rows
from edge_encoder.train.moco import SplitBatchNorm2d


def test_local_rows_are_contiguous_blocks_that_cover_the_batch_once() -> None:
    rows = torch.arange(16)
    blocks = [local_rows(rows, rank, 4) for rank in range(4)]
    assert [b.tolist() for b in blocks] == [list(range(4 * r, 4 * r + 4)) for r in range(4)]
    assert torch.equal(torch.cat(blocks), rows)
    assert local_rows(rows, 0, 1) is rows  # one process: the batch itself
    assert local_rows(np.arange(6), 1, 2).tolist() == [3, 4, 5]  # arrays too (the DataLoader's sampler)


def test_local_rows_keeps_the_graph() -> None:
    x = torch.randn(8, 3, requires_grad=True)
    local_rows(x, 1, 2).sum().backward()
    assert x.grad is not None and x.grad[4:].eq(1).all() and x.grad[:4].eq(0).all()


def test_rank_blocks_are_split_bn_groups() -> None:
    """Two ranks with plain BN each normalise what one process's split BN with 2 groups normalises."""
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4) * 2.0 + 1.0
    one_process = SplitBatchNorm2d(3, num_splits=2).train()(x)
    per_rank = [torch.nn.BatchNorm2d(3).train()(local_rows(x, rank, 2)) for rank in range(2)]
    torch.testing.assert_close(torch.cat(per_rank), one_process)
