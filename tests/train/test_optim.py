import pytest
import torch
from edge_encoder.train.optim import LARS, build_optimizer, param_groups


def test_lars_step_hand_computed() -> None:
    w = torch.nn.Parameter(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))  # ||w|| = 5
    b = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    w.grad = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    b.grad = torch.tensor([0.5, -0.5])
    opt = LARS([w, b], lr=0.1, weight_decay=0.1, momentum=0.9, trust_coefficient=0.01)
    opt.step()
    dp = w.grad + 0.1 * torch.tensor([[3.0, 0.0], [0.0, 4.0]])  # [[0.3, 1], [0, 0.4]], norm sqrt(1.25)
    trust = 0.01 * 5.0 / (1.25 ** 0.5)
    torch.testing.assert_close(w.detach(), torch.tensor([[3.0, 0.0], [0.0, 4.0]]) - 0.1 * trust * dp)
    torch.testing.assert_close(b.detach(), torch.tensor([1.0, 1.0]) - 0.1 * torch.tensor([0.5, -0.5]))  # no wd/trust


def test_norm_and_bias_excluded_from_weight_decay() -> None:
    conv = torch.nn.Conv2d(3, 4, 3)
    bn = torch.nn.BatchNorm2d(4)
    params = list(conv.parameters()) + list(bn.parameters())
    groups = param_groups(params, 5e-4, exclude_norm_bias=True)
    assert [len(g["params"]) for g in groups] == [1, 3] and groups[1]["weight_decay"] == 0.0
    assert len(param_groups(params, 5e-4, exclude_norm_bias=False)) == 1


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("lars", LARS), ("adamw", torch.optim.AdamW)])
def test_build_optimizer(name: str, cls: type) -> None:
    opt = build_optimizer(name, [torch.nn.Parameter(torch.zeros(2, 2))], lr=0.1, weight_decay=0.0, momentum=0.9)
    assert isinstance(opt, cls)
