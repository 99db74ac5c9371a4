import math

import pytest
from edge_encoder.train.schedule import lr_at_step, momentum_at_step, scaled_lr


def test_linear_scaling_rule() -> None:
    assert scaled_lr(0.03, 256) == pytest.approx(0.03)
    assert scaled_lr(0.03, 512) == pytest.approx(0.06)
    assert scaled_lr(0.1, 64) == pytest.approx(0.025)


def test_warmup_is_linear_and_reaches_peak() -> None:
    # 4 warm-up steps: peak * 1/4, 2/4, 3/4, 4/4.
    assert [lr_at_step(s, 100, 1.0, warmup_steps=4) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr_at_step(4, 100, 1.0, warmup_steps=4) == pytest.approx(1.0)  # cosine starts at the peak


def test_cosine_hand_values() -> None:
    # no warm-up, 10 steps: lr = 0.5 * (1 + cos(pi * s / 10))
    assert lr_at_step(0, 10, 2.0) == pytest.approx(2.0)
    assert lr_at_step(5, 10, 2.0) == pytest.approx(1.0)
    assert lr_at_step(10, 10, 2.0) == pytest.approx(0.0)
    assert lr_at_step(3, 10, 1.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.3)))
    # a floor of 10 %: halfway sits at 0.1 + 0.9 * 0.5
    assert lr_at_step(5, 10, 1.0, final_ratio=0.1) == pytest.approx(0.55)
    # with warm-up, the cosine runs over the remaining steps
    assert lr_at_step(2 + 4, 10, 1.0, warmup_steps=2) == pytest.approx(0.5)


def test_momentum_schedules() -> None:
    assert momentum_at_step(7, 10, 0.99, "constant") == 0.99
    assert momentum_at_step(0, 10, 0.99, "cosine") == pytest.approx(0.99)
    assert momentum_at_step(5, 10, 0.99, "cosine") == pytest.approx(0.995)
    assert momentum_at_step(10, 10, 0.99, "cosine") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="linear"):
        momentum_at_step(0, 10, 0.99, "linear")
