"""MoCo v1/v2/v3 as one small module: query encoder, momentum key encoder, negative queue, InfoNCE.

Reads like the papers (He et al. 2020; Chen et al. 2020; Chen, Xie, He 2021). Embeddings are L2-normalised
and the logits and loss are computed in fp32 even when the encoders run under bf16 autocast.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from edge_encoder.train.backbones import BackboneConfig, ResNetBackbone, build_backbone
from edge_encoder.train.distributed import DistContext, broadcast_, gather_rows, local_rows
from torch import nn


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
    with fp32_region(q):
        logits = infonce_logits(q, k, queue, temperature)  # N x (1+K), fp32
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)  # positives at index 0
        return F.cross_entropy(logits, labels)


def fp32_region(like: torch.Tensor) -> torch.autocast:
    """A region where autocast is off on ``like``'s device, so ops on fp32 inputs run in fp32.

    Under bf16/fp16 autocast, ``matmul``/``einsum`` are on the low-precision cast list: ``q.float() @ queue.T``
    would be cast back to bf16 (8 bits of mantissa for logits of up to ``1 / temperature`` = 14 at tau 0.07).
    "autocast(enabled=False) subregions can be nested in autocast-enabled regions ... inputs from the surrounding
    region should be cast to dtype before use" (torch.autocast docstring, https://pytorch.org/docs/stable/amp.html).
    """
    return torch.autocast(device_type=like.device.type, enabled=False)


def infonce_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """fp32 ``(N, 1+K)`` logits ``[q.k+, q.n_1 .. q.n_K] / temperature`` (positive first), whatever autocast is on."""
    with fp32_region(q):
        q, k, queue = q.float(), k.float(), queue.float()
        l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)  # N x 1
        l_neg = q @ queue.T  # N x K
        return torch.cat([l_pos, l_neg], dim=1) / temperature  # N x (1+K)


def in_batch_contrastive_loss(q: torch.Tensor, k: torch.Tensor, temperature: float,
                              labels: torch.Tensor | None = None) -> torch.Tensor:
    """MoCo v3 loss: the other keys of the batch are the negatives, scaled by ``2 * temperature``.

    ``q``: ``(N, C)``, ``k``: ``(M, C)``, L2-normalised. Without ``labels`` (``M = N``) row i of ``k`` is the
    positive of row i of ``q``; under DDP ``k`` is the global key batch and ``labels (N,)`` give each local
    query's positive. Returns fp32 scalar (logits and loss in fp32 under autocast, see :func:`fp32_region`).
    """
    with fp32_region(q):
        q, k = q.float(), k.float()
        logits = q @ k.T / temperature  # N x M, positives on the diagonal (or at ``labels``)
        if labels is None:
            labels = torch.arange(logits.shape[0], device=logits.device)
        return F.cross_entropy(logits, labels) * (2.0 * temperature)


class SplitBatchNorm2d(nn.BatchNorm2d):
    """Batch norm that, in training, normalises ``num_splits`` contiguous blocks of the batch separately.

    Sample ``n`` belongs to group ``n // (N / num_splits)``: this is what G devices with N/G samples each would do
    (``train.distributed`` gives rank r the r-th block). Blocks, not interleaved groups (lightly's and the MoCo
    code's ``(N, C, H, W) -> (N/G, G*C, H, W)`` view): a block of an NHWC batch is NHWC-contiguous, so each is
    normalised where it lies and joined with one ``cat``, where the view copies an NHWC batch in and out and hands
    the next convolution an NCHW tensor (1.4-1.6x the time over the stages, ``benchmarks/split_bn_layouts.py``).
    Together with a shuffle of the key batch it stops MoCo from "cheating" through batch statistics on one
    device. The state dict keys and eval-mode computation are those of ``nn.BatchNorm2d`` (running stats are
    the mean over groups), so a checkpoint loads into a plain ``BatchNorm2d`` with identical eval outputs.
    """

    def __init__(self, num_features: int, num_splits: int, **kwargs: object) -> None:
        super().__init__(num_features, **kwargs)  # type: ignore[arg-type]
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, g = x.shape[0], self.num_splits
        if not self.training or g == 1:
            return super().forward(x)
        if n % g:
            raise ValueError(f"split batch norm: batch {n} is not divisible by {g} groups")
        momentum = self.momentum if self.momentum is not None else 0.1
        # each block updates its own row of a (G, C) copy of the running statistics (one copy, not G: 4-7 % of
        # the bf16 step); the module keeps their mean over blocks
        means = self.running_mean.expand(g, -1).clone()
        variances = self.running_var.expand(g, -1).clone()
        out = torch.cat([F.batch_norm(block, means[i], variances[i], self.weight, self.bias, True, momentum, self.eps)
                         for i, block in enumerate(x.chunk(g))])
        with torch.no_grad():
            self.running_mean.copy_(means.mean(dim=0))
            self.running_var.copy_(variances.mean(dim=0))
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
    """Projection head (and predictor for v3), as the reference code builds them for a ResNet:

    - v1: one linear layer (``fc`` to ``dim``, facebookresearch/moco ``moco/builder.py``);
    - v2: Linear-ReLU-Linear with biases (``mlp=True`` there);
    - v3: a 2-layer projector Linear-BN-ReLU-Linear-BN(affine=False) and a 2-layer predictor Linear-BN-ReLU-Linear,
      no biases (facebookresearch/moco-v3 ``moco/builder.py``: ``MoCo_ResNet`` builds ``_build_mlp(2, ...)`` for
      both; the 3-layer projector is ``MoCo_ViT``'s, and every backbone here is a ResNet).
    """
    if method == "moco_v1":
        return nn.Linear(in_dim, out_dim), None
    if method == "moco_v2":
        return mlp([in_dim, hidden_dim, out_dim]), None
    if method == "moco_v3":
        projector = mlp([in_dim, hidden_dim, out_dim], hidden_bn=True, last_bn=True)
        predictor = mlp([out_dim, pred_hidden_dim, out_dim], hidden_bn=True)
        return projector, predictor
    raise ValueError(f"MoCo method {method!r} is unknown")


class QueryEncoder(nn.Module):
    """The trainable path (backbone, projector, predictor) as one module whose one ``forward`` encodes one or
    two views: what DDP wraps, so a symmetric step is still a single DDP forward before its backward."""

    def __init__(self, backbone: nn.Module, projector: nn.Module, predictor: nn.Module | None) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector
        self.predictor = predictor

    def forward(self, *views: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = []
        for im in views:
            z = self.projector(self.backbone(im))  # N x C
            if self.predictor is not None:
                z = self.predictor(z)
            out.append(F.normalize(z.float(), dim=1))
        return tuple(out)


class MoCo(nn.Module):
    """Query encoder + momentum key encoder (+ queue for v1/v2).

    ``forward(im_q, im_k, momentum)`` performs the momentum update of the key encoder, encodes both views,
    computes the loss (symmetric if configured), enqueues the keys and returns the fp32 loss.

    Under DDP (``attach_distributed``) the inputs are this rank's rows of the global batch (its contiguous
    block, ``train.distributed.local_rows``); the query path runs through the DDP wrapper, keys are gathered
    from all ranks in global order before they are enqueued (every rank holds the same queue), and with
    ``shuffle_keys`` the key batch is shuffled across ranks (gather, permute with rank 0's permutation, encode
    this rank's rows, gather, unshuffle). With one process nothing changes.
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
        self.dist = DistContext()  # one process until attach_distributed
        self._query_ddp: nn.Module | None = None

    def attach_distributed(self, ctx: DistContext, query_ddp: nn.Module | None) -> None:
        """Train as rank ``ctx.rank`` of ``ctx.world``; ``query_ddp`` is the DDP-wrapped ``QueryEncoder`` of this
        module's query modules (kept out of ``_modules`` so the state dict keys stay those of one process)."""
        self.dist = ctx
        object.__setattr__(self, "_query_ddp", query_ddp)
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

    def _encode_queries(self, *views: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self._query_ddp is not None:
            return self._query_ddp(*views)
        return tuple(self.encode_query(v) for v in views)

    @torch.no_grad()
    def _keys(self, im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(this rank's keys (n, C), the global batch's keys (W*n, C) in global order)``; one process: both
        are ``encode_key(im)``."""
        d = self.dist
        if not d.active:
            k = self.encode_key(im)
            return k, k
        if self.shuffle_keys:  # cross-rank shuffle: each key is normalised with samples of other ranks
            im_all = gather_rows(im, d)  # W*n x 3 x S x S, global order
            if im.dim() == 4 and im.is_contiguous(memory_format=torch.channels_last):
                im_all = im_all.contiguous(memory_format=torch.channels_last)
            # Drawn on every rank from the shared generator (keeps the generators in step, and equals the
            # single-process draw); rank 0's permutation is broadcast and authoritative.
            perm = broadcast_(torch.randperm(im_all.shape[0], device=im.device, generator=self.generator), d)
            k_shuffled = gather_rows(self._encode_key_plain(local_rows(im_all[perm], d.rank, d.world)), d)  # W*n x C
            k_all = k_shuffled[torch.argsort(perm)]  # unshuffled
        else:
            k_all = gather_rows(self._encode_key_plain(im), d)
        return local_rows(k_all, d.rank, d.world), k_all

    @torch.no_grad()
    def _encode_key_plain(self, im: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector_k(self.backbone_k(im)).float(), dim=1)

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
        qs = self._encode_queries(im_q, im_k) if self.symmetric else self._encode_queries(im_q)  # N x C each
        q1 = qs[0]
        k2, k2_all = self._keys(im_k)  # N x C (this rank), W*N x C (global batch)
        if not self.uses_queue:
            q2 = qs[1]
            k1, k1_all = self._keys(im_q)
            d = self.dist
            labels = None  # one process: the diagonal; DDP: local row j is global row rank * n + j
            if d.active:
                labels = d.rank * q1.shape[0] + torch.arange(q1.shape[0], device=q1.device)
            return (in_batch_contrastive_loss(q1, k2_all, self.temperature, labels)
                    + in_batch_contrastive_loss(q2, k1_all, self.temperature, labels))
        queue = self.queue.clone()  # K x C, negatives as they were before this step's keys
        if self.symmetric:
            q2 = qs[1]
            k1, k1_all = self._keys(im_q)
            # The sum of both directions (not their mean), as the MoCo CIFAR demo computes it
            # (facebookresearch/moco colab/moco_cifar10_demo.ipynb: loss = loss_12 + loss_21), and moco-v3 too.
            loss = infonce_loss(q1, k2, queue, self.temperature) + infonce_loss(q2, k1, queue, self.temperature)
            self.enqueue(torch.cat([k1_all, k2_all]))  # each key once, the global batch on every rank
        else:
            loss = infonce_loss(q1, k2, queue, self.temperature)
            self.enqueue(k2_all)
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
