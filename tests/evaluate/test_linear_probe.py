import numpy as np
import pytest
from edge_encoder.evaluate.linear_probe import linear_probe


def _blobs(n_per_class: int, num_classes: int, dim: int, seed: int, spread: float = 1.0):
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(size=(num_classes, dim)) * 2.0
    y = np.repeat(np.arange(num_classes), n_per_class)
    return (centers[y] + spread * rng.normal(size=(len(y), dim))).astype(np.float32), y


def test_deterministic_for_fixed_seed():
    x, y = _blobs(40, 5, 12, seed=0, spread=3.0)
    xt, yt = _blobs(10, 5, 12, seed=1, spread=3.0)
    grid = (1.0, 0.01)  # a short path keeps the test fast; determinism does not depend on its length
    a = linear_probe(x, y, xt, yt, seed=3, device="cpu", l2_grid=grid)
    b = linear_probe(x, y, xt, yt, seed=3, device="cpu", l2_grid=grid)
    assert (a.top1, a.top5, a.l2_penalty, a.validation_top1) == (b.top1, b.top5, b.l2_penalty, b.validation_top1)
    np.testing.assert_array_equal(a.predictions, b.predictions)


def test_separable_data_is_learned():
    x, y = _blobs(40, 4, 8, seed=0, spread=0.3)
    xt, yt = _blobs(20, 4, 8, seed=1, spread=0.3)
    res = linear_probe(x, y, xt, yt, device="cpu", l2_grid=(1.0, 0.1))
    assert res.top1 == 1.0 and res.top5 == 1.0
    assert res.predictions.shape == (80,) and res.predictions.dtype == np.int64


def test_matches_sklearn_at_the_selected_penalty():
    from edge_encoder.evaluate.linear_probe import standardize
    from sklearn.linear_model import LogisticRegression

    x, y = _blobs(60, 4, 10, seed=0, spread=2.5)
    xt, yt = _blobs(30, 4, 10, seed=1, spread=2.5)
    res = linear_probe(x, y, xt, yt, device="cpu", l2_grid=(1.0, 0.1, 0.01))
    xs, xts = standardize(x, xt)
    sk = LogisticRegression(C=1.0 / (res.l2_penalty * len(x)), tol=1e-8, max_iter=5000).fit(xs, y)
    agree = (sk.predict(xts) == res.predictions).mean()
    assert agree >= 0.98, agree


def test_closed_form_gradient_matches_autograd():
    import torch
    from edge_encoder.evaluate.linear_probe import loss_and_grad

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 6, generator=g, dtype=torch.float64), torch.randint(0, 4, (50,), generator=g)
    w = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(x @ w.T + b, y) + 0.5 * 0.3 * (w * w).sum()
    ref.backward()
    loss, gw, gb = loss_and_grad(x, y, w.detach(), b.detach(), 0.3)
    torch.testing.assert_close(loss, ref.detach())
    torch.testing.assert_close(gw, w.grad)
    torch.testing.assert_close(gb, b.grad)


def test_bad_inputs():
    x, y = _blobs(10, 2, 4, seed=0)
    with pytest.raises(ValueError, match="NaN/Inf"):
        linear_probe(np.full_like(x, np.nan), y, x, y)
    with pytest.raises(ValueError, match="dimension"):
        linear_probe(x, y, x[:, :3], y)
    with pytest.raises(ValueError, match="train labels has 19"):
        linear_probe(x, y[:-1], x, y)
    with pytest.raises(ValueError, match="holdout_fraction"):
        linear_probe(x, y, x, y, holdout_fraction=1.0)
