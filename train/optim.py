"""Optimisers for MoCo: SGD, AdamW and LARS, with optional exclusion of norm/bias parameters from weight decay."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    """LARS (You et al. 2017) as in MoCo v3: layer-wise trust ratio and weight decay for matrices/filters only;
    1-d parameters (biases, norm scales) get plain momentum SGD."""

    def __init__(self, params: Iterable[nn.Parameter] | Iterable[dict], lr: float, weight_decay: float = 0.0,
                 momentum: float = 0.9, trust_coefficient: float = 0.001) -> None:
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                dp = p.grad
                if p.ndim > 1:
                    dp = dp.add(p, alpha=group["weight_decay"])
                    param_norm, update_norm = torch.norm(p), torch.norm(dp)
                    one = torch.ones_like(param_norm)
                    trust = torch.where(param_norm > 0.0,
                                        torch.where(update_norm > 0.0,
                                                    group["trust_coefficient"] * param_norm / update_norm, one), one)
                    dp = dp.mul(trust)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(group["momentum"]).add_(dp)
                p.add_(mu, alpha=-group["lr"])


def param_groups(params: list[nn.Parameter], weight_decay: float, exclude_norm_bias: bool) -> list[dict]:
    """One group, or two when 1-d parameters (biases, norm scales/shifts) are excluded from weight decay."""
    if not exclude_norm_bias:
        return [dict(params=params, weight_decay=weight_decay)]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]


def build_optimizer(name: str, params: list[nn.Parameter], *, lr: float, weight_decay: float, momentum: float,
                    exclude_norm_bias: bool = False, trust_coefficient: float = 0.001) -> torch.optim.Optimizer:
    """``name`` in ``("sgd", "lars", "adamw")``; ``lr`` is the initial value (the loop sets it every step)."""
    groups = param_groups(params, weight_decay, exclude_norm_bias)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, trust_coefficient=trust_coefficient)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"optimizer {name!r} is unknown; choose 'sgd', 'lars' or 'adamw'")
