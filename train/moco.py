"""MoCo v1/v2/v3 as one small module: query encoder, momentum key encoder, negative queue, InfoNCE.

Reads like the papers (He et al. 2020; Chen et al. 2020; Chen, Xie, He 2021). Embeddings are L2-normalised
and the logits and loss are computed in fp32 even when the encoders run under bf16 autocast.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from train.backbones import BackboneConfig, ResNetBackbone, build_backbone


def infonce_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE with the positive at index 0: ``-log exp(q.k+/t) / (exp(q.k+/t) + sum_j exp(q.n_j/t))``.

    Args:
        q: ``(N, C)`` L2-normalised queries.
        k: ``(N, C)`` L2-normalised positive keys (row i is the positive of query i).
        queue: ``(K, C)`` L2-normalised negative keys.
        temperature: softmax temperature ``t > 0``.

    Returns:
        Scalar fp32 loss, the mean over the N queries of a (K+1)-way cross-entropy.
    """
    q, k, queue = q.float(), k.float(), queue.float()
    l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)  # N x 1
    l_neg = q @ queue.T  # N x K
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature  # N x (1+K)
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)  # positives at index 0
    return F.cross_entropy(logits, labels)


def in_batch_contrastive_loss(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo v3 loss: the other keys of the batch are the negatives, scaled by ``2 * temperature``.

    ``q``, ``k``: ``(N, C)`` L2-normalised; row i of ``k`` is the positive of row i of ``q``. Returns fp32 scalar.
    """
    q, k = q.float(), k.float()
    logits = q @ k.T / temperature  # N x N, positives on the diagonal
    labels = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, labels) * (2.0 * temperature)


class SplitBatchNorm2d(nn.BatchNorm2d):
    """Batch norm that, in training, normalises ``num_splits`` interleaved groups of the batch separately.

    Sample ``n`` belongs to group ``n % num_splits``: this is what G devices with N/G samples each would do.
    Together with a shuffle of the key batch it stops MoCo from "cheating" through batch statistics on one
    device. The state dict keys and eval-mode computation are those of ``nn.BatchNorm2d`` (running stats are
    the mean over groups), so a checkpoint loads into a plain ``BatchNorm2d`` with identical eval outputs.
    """

    def __init__(self, num_features: int, num_splits: int, **kwargs: object) -> None:
        super().__init__(num_features, **kwargs)  # type: ignore[arg-type]
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = self.num_splits
        if not self.training or g == 1:
            return super().forward(x)
        if n % g:
            raise ValueError(f"split batch norm: batch {n} is not divisible by {g} groups")
        mean_split = self.running_mean.repeat(g)  # gC
        var_split = self.running_var.repeat(g)  # gC
        # (N, C, H, W) -> (N/g, g*C, H, W): channel j*C + c of row i is channel c of sample i*g + j.
        out = F.batch_norm(
            x.reshape(n // g, g * c, h, w), mean_split, var_split, self.weight.repeat(g), self.bias.repeat(g),
            True, self.momentum if self.momentum is not None else 0.1, self.eps,
        ).view(n, c, h, w)
        with torch.no_grad():
            self.running_mean.copy_(mean_split.view(g, c).mean(dim=0))
            self.running_var.copy_(var_split.view(g, c).mean(dim=0))
            self.num_batches_tracked.add_(1)
        return out


def split_bn_factory(num_splits: int) -> Callable[[int], nn.Module]:
    """A ``norm_layer`` for ``build_backbone``: plain ``BatchNorm2d`` for 1 split, else ``SplitBatchNorm2d``."""
    if num_splits == 1:
        return nn.BatchNorm2d
    return lambda channels: SplitBatchNorm2d(channels, num_splits)


def mlp(dims: list[int], last_bn: bool = False, hidden_bn: bool = False) -> nn.Sequential:
    """Linear layers with ReLU between them (BatchNorm1d before each ReLU if ``hidden_bn``)."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        layers.append(nn.Linear(d_in, d_out, bias=not (hidden_bn or last_bn)))
        if not last:
            if hidden_bn:
                layers.append(nn.BatchNorm1d(d_out))
            layers.append(nn.ReLU(inplace=True))
        elif last_bn:
            layers.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*layers)


def build_heads(method: str, in_dim: int, hidden_dim: int, out_dim: int, pred_hidden_dim: int) -> tuple[nn.Module, nn.Module | None]:
    """Projection head (and predictor for v3): v1 linear, v2 2-layer MLP, v3 3-layer BN MLP + 2-layer predictor."""
    if method == "moco_v1":
        return nn.Linear(in_dim, out_dim), None
    if method == "moco_v2":
        return mlp([in_dim, hidden_dim, out_dim]), None
    if method == "moco_v3":
        projector = mlp([in_dim, hidden_dim, hidden_dim, out_dim], hidden_bn=True, last_bn=True)
        predictor = mlp([out_dim, pred_hidden_dim, out_dim], hidden_bn=True)
        return projector, predictor
    raise ValueError(f"MoCo method {method!r} is unknown")


class MoCo(nn.Module):
    """Query encoder + momentum key encoder (+ queue for v1/v2).

    ``forward(im_q, im_k, momentum)`` performs the momentum update of the key encoder, encodes both views,
    computes the loss (symmetric if configured), enqueues the keys and returns the fp32 loss.
    """

    def __init__(
        self,
        backbone: ResNetBackbone,
        projector: nn.Module,
        predictor: nn.Module | None,
        *,
        queue_size: int,
        temperature: float,
        symmetric: bool,
        shuffle_keys: bool,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.backbone_q = backbone
        self.projector_q = projector
        self.predictor = predictor
        self.backbone_k = copy.deepcopy(backbone)
        self.projector_k = copy.deepcopy(projector)
        for p in self.key_parameters():
            p.requires_grad_(False)  # the key encoder only moves by the momentum update
        self.temperature = temperature
        self.symmetric = symmetric or predictor is not None  # v3 is always symmetric
        self.shuffle_keys = shuffle_keys
        self.generator = generator
        self.uses_queue = predictor is None
        dim = self._out_dim(projector)
        if self.uses_queue:
            queue = F.normalize(torch.randn(queue_size, dim), dim=1)  # K x C, random keys until filled
            self.register_buffer("queue", queue)
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._q_params = [p for p in self.query_parameters(include_predictor=False)]
        self._k_params = list(self.key_parameters())

    @staticmethod
    def _out_dim(projector: nn.Module) -> int:
        linears = [m for m in projector.modules() if isinstance(m, nn.Linear)]
        return linears[-1].out_features

    def query_parameters(self, include_predictor: bool = True) -> list[nn.Parameter]:
        params = list(self.backbone_q.parameters()) + list(self.projector_q.parameters())
        if include_predictor and self.predictor is not None:
            params += list(self.predictor.parameters())
        return params

    def key_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone_k.parameters()) + list(self.projector_k.parameters())

    @torch.no_grad()
    def momentum_update(self, m: float) -> None:
        """``key = m * key + (1 - m) * query`` for every parameter (buffers such as BN stats stay per encoder)."""
        torch._foreach_mul_(self._k_params, m)
        torch._foreach_add_(self._k_params, self._q_params, alpha=1.0 - m)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """FIFO: write ``keys (B, C)`` at the pointer, wrapping around (K need not divide B)."""
        size = self.queue.shape[0]
        b = keys.shape[0]
        if b > size:  # only the newest K keys survive
            start = int(self.queue_ptr) + b - size
            keys, b = keys[-size:], size
        else:
            start = int(self.queue_ptr)
        idx = (start + torch.arange(b, device=keys.device)) % size  # B
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_ptr.fill_((start + b) % size)

    def encode_query(self, im: torch.Tensor) -> torch.Tensor:
        z = self.projector_q(self.backbone_q(im))  # N x C
        if self.predictor is not None:
            z = self.predictor(z)
        return F.normalize(z.float(), dim=1)

    @torch.no_grad()
    def encode_key(self, im: torch.Tensor) -> torch.Tensor:
        """Key embeddings ``(N, C)``; with ``shuffle_keys`` the batch is permuted before the (split-BN) encoder
        and restored after, so a key is normalised together with other samples than its query."""
        if not self.shuffle_keys:
            return F.normalize(self.projector_k(self.backbone_k(im)).float(), dim=1)
        perm = torch.randperm(im.shape[0], device=im.device, generator=self.generator)  # N
        k = self.projector_k(self.backbone_k(im[perm]))  # N x C, in shuffled order
        return F.normalize(k.float(), dim=1)[torch.argsort(perm)]  # N x C, unshuffled

    def forward(self, im_q: torch.Tensor, im_k: torch.Tensor, momentum: float) -> torch.Tensor:
        """Two views ``(N, 3, H, W)`` -> fp32 scalar loss; updates the key encoder and the queue."""
        self.momentum_update(momentum)
        q1 = self.encode_query(im_q)  # N x C
        k2 = self.encode_key(im_k)  # N x C
        if not self.uses_queue:
            q2, k1 = self.encode_query(im_k), self.encode_key(im_q)
            return in_batch_contrastive_loss(q1, k2, self.temperature) + in_batch_contrastive_loss(q2, k1, self.temperature)
        queue = self.queue.clone()  # K x C, negatives as they were before this step's keys
        if self.symmetric:
            q2, k1 = self.encode_query(im_k), self.encode_key(im_q)
            loss = 0.5 * (infonce_loss(q1, k2, queue, self.temperature) + infonce_loss(q2, k1, queue, self.temperature))
            self.enqueue(torch.cat([k1, k2]))  # each key once
        else:
            loss = infonce_loss(q1, k2, queue, self.temperature)
            self.enqueue(k2)
        return loss


def build_moco(
    backbone_config: BackboneConfig,
    *,
    method: str,
    proj_hidden_dim: int,
    proj_dim: int,
    pred_hidden_dim: int,
    queue_size: int,
    temperature: float,
    symmetric: bool,
    split_bn_groups: int,
    generator: torch.Generator | None = None,
) -> MoCo:
    """Assemble a MoCo module. Hidden dims of 0 mean "the backbone's feature width"."""
    backbone = build_backbone(backbone_config, norm_layer=split_bn_factory(split_bn_groups))
    feat = backbone.out_dim
    projector, predictor = build_heads(method, feat, proj_hidden_dim or feat, proj_dim, pred_hidden_dim or feat)
    return MoCo(backbone, projector, predictor, queue_size=queue_size, temperature=temperature,
                symmetric=symmetric, shuffle_keys=split_bn_groups > 1, generator=generator)
