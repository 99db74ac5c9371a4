"""What can be measured of an encoder without labels: alignment, uniformity, effective rank, per-dimension spread.

Pure functions of ``float (N, D)`` embedding arrays (rows are L2-normalised first, as every engine returns them),
and one engine-level helper that embeds held-out images and a positive view of each (``evaluate_label_free``).

- **alignment** (Wang & Isola 2020, "Understanding Contrastive Representation Learning through Alignment and
  Uniformity on the Hypersphere", ICML, eq. 4 with alpha = 2): ``E ||f(x) - f(x+)||^2`` over positive pairs. 0 when
  an image and its view embed alike; at most 4 on the unit sphere. Lower is better, but 0 is also what a
  collapsed encoder scores: read it with uniformity.
- **uniformity** (ibid., eq. 5, t = 2; their reference code averages over distinct pairs, ``torch.pdist``):
  ``log E_{i<j} exp(-t ||f(x_i) - f(x_j)||^2)``. 0 when every image embeds to one point; more negative as the
  embeddings spread over the sphere (-4 for D orthonormal rows, -8 for two antipodal ones). Lower is better.
- **effective rank** (Roy & Vetterli 2007, "The effective rank: a measure of effective dimensionality", EUSIPCO):
  ``exp(H(p))`` with ``p_k = s_k / sum(s)`` over the singular values ``s`` of the (uncentred) embedding matrix,
  as RankMe (Garrido et al. 2023) takes it: 1 for a rank-1 (collapsed) set, D for D equal singular values; at most
  ``min(N, D)``.
- **per-dimension spread**: the std of each embedding dimension over the images. For L2-normalised embeddings
  spread isotropically the std is about ``1/sqrt(D)``; a collapsed output has std 0 (SimSiam, Chen & He 2021,
  "Exploring Simple Siamese Representation Learning", CVPR, sec. 4.1). Reported as ``std * sqrt(D)`` (about 1
  healthy, 0 collapsed) and the share of near-dead dimensions, ``std < DEAD_RATIO / sqrt(D)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from edge_encoder.evaluate.extract import extract
from edge_encoder.evaluate.validation import check_embeddings, l2_normalize

log = logging.getLogger(__name__)

DEAD_RATIO = 0.1  # a dimension is near-dead below 10 % of the isotropic std 1/sqrt(D)
VIEW_MIN_SIDE = 0.8  # positive views keep 80-100 % of each side
POSITIVE_PAIRS = (f"each held-out image and one view of it: flipped left-right, then a seeded crop keeping "
                  f"{VIEW_MIN_SIDE:.0%}-100% of each side, resized back (bilinear)")


def _unit(x: np.ndarray, name: str) -> np.ndarray:
    """``float64 (N, D)`` rows scaled to unit norm (all-zero rows stay zero)."""
    return l2_normalize(check_embeddings(x, name)).astype(np.float64)


def alignment(embeddings: np.ndarray, positives: np.ndarray) -> float:
    """``mean_i ||x_i - y_i||^2`` of L2-normalised ``(N, D)`` embeddings and their positives ``(N, D)``.

    Raises:
        ValueError: the two arrays differ in shape, or are not finite ``(N, D)``.
    """
    x, y = _unit(embeddings, "embeddings"), _unit(positives, "positive embeddings")
    if x.shape != y.shape:
        raise ValueError(f"alignment needs one positive per embedding: shapes {x.shape} and {y.shape}")
    return float(((x - y) ** 2).sum(axis=1).mean())


def uniformity(embeddings: np.ndarray, t: float = 2.0, chunk: int = 1024) -> float:
    """``log mean_{i<j} exp(-t ||x_i - x_j||^2)`` of L2-normalised ``(N, D)`` embeddings, N >= 2.

    Computed in row blocks of ``chunk`` (memory ``chunk * N`` floats), in float64: on the unit sphere every term
    lies in ``[exp(-4t), 1]``, so the plain mean needs no log-sum-exp.

    Raises:
        ValueError: fewer than 2 rows, ``t <= 0``, or embeddings that are not finite ``(N, D)``.
    """
    x = _unit(embeddings, "embeddings")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 embeddings, got {n}")
    if t <= 0:
        raise ValueError(f"uniformity temperature t must be > 0, got {t}")
    sq = (x * x).sum(axis=1)
    total = 0.0
    for start in range(0, n, chunk):
        block = x[start : start + chunk]
        d2 = np.maximum(sq[start : start + chunk, None] + sq[None, :] - 2.0 * block @ x.T, 0.0)
        rows = np.arange(start, start + len(block))
        upper = np.arange(n)[None, :] > rows[:, None]  # pairs i < j only
        total += float(np.exp(-t * d2[upper]).sum())
    return float(np.log(total / (n * (n - 1) / 2)))


def effective_rank(embeddings: np.ndarray) -> float:
    """Roy & Vetterli's effective rank ``exp(-sum p log p)``, ``p = s / sum(s)``, of ``(N, D)`` embeddings
    (rows L2-normalised, not centred); in ``[1, min(N, D)]``.

    Raises:
        ValueError: every row is zero (no singular value to normalise), or embeddings not finite ``(N, D)``.
    """
    x = _unit(embeddings, "embeddings")
    s = np.linalg.svd(x, compute_uv=False)
    if s.sum() <= 0:
        raise ValueError("effective rank of an all-zero embedding matrix is undefined")
    p = s / s.sum()
    p = p[p > 0]  # 0 log 0 = 0
    return float(np.exp(-(p * np.log(p)).sum()))


def dimension_spread(embeddings: np.ndarray, dead_ratio: float = DEAD_RATIO) -> dict[str, float]:
    """Per-dimension std of L2-normalised ``(N, D)`` embeddings over the N rows, scaled by ``sqrt(D)``.

    Returns:
        ``dim_std_sqrt_d_mean``, ``dim_std_sqrt_d_min``, ``dim_std_sqrt_d_max`` (about 1 for an isotropic spread,
        0 for a collapsed one) and ``dead_dim_fraction``: the share of dimensions with ``std < dead_ratio/sqrt(D)``.
    """
    x = _unit(embeddings, "embeddings")
    scaled = x.std(axis=0) * np.sqrt(x.shape[1])
    return {"dim_std_sqrt_d_mean": float(scaled.mean()), "dim_std_sqrt_d_min": float(scaled.min()),
            "dim_std_sqrt_d_max": float(scaled.max()), "dead_dim_fraction": float((scaled < dead_ratio).mean())}


def label_free_metrics(embeddings: np.ndarray, view_embeddings: np.ndarray) -> dict[str, float]:
    """All the measures above for ``(N, D)`` embeddings of N images and ``(N, D)`` embeddings of their views."""
    x = check_embeddings(embeddings, "embeddings")
    rank = effective_rank(x)
    return {"alignment": alignment(x, view_embeddings), "uniformity": uniformity(x), "effective_rank": rank,
            "effective_rank_fraction": rank / min(x.shape), **dimension_spread(x)}


def positive_views(images: np.ndarray, seed: int, min_side: float = VIEW_MIN_SIDE) -> np.ndarray:
    """One positive view of each ``uint8 (N, H, W, 3)`` image, same shape: flipped left-right, then a crop keeping a
    seeded ``min_side``-1 share of each side at a seeded position, resized back to ``H x W`` (bilinear, PIL)."""
    from PIL import Image

    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {getattr(images, 'dtype', type(images))} "
                         f"{getattr(images, 'shape', '')}")
    if not 0.0 < min_side <= 1.0:
        raise ValueError(f"min_side must lie in (0, 1], got {min_side}")
    rng = np.random.default_rng(seed)
    n, h, w, _ = images.shape
    sides = rng.uniform(min_side, 1.0, size=n)
    corners = rng.uniform(0.0, 1.0, size=(n, 2))
    out = np.empty_like(images)
    for i in range(n):
        ch, cw = max(1, int(round(h * sides[i]))), max(1, int(round(w * sides[i])))
        top, left = int(corners[i, 0] * (h - ch)), int(corners[i, 1] * (w - cw))
        crop = images[i, top : top + ch, ::-1][:, w - left - cw : w - left]  # flipped, then cropped
        out[i] = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((w, h), Image.Resampling.BILINEAR))
    return out


@dataclass(frozen=True)
class LabelFreeEvaluation:
    """One engine's label-free measures.

    Attributes:
        name: engine name.
        embeddings: ``float32 (N, D)`` of the held-out images (for cosines against the reference).
        metrics: ``label_free_metrics`` plus ``dim``, ``embed_images_per_s``, ``cache_hit`` and, against a
            reference of the same width, ``reference_cosine_mean`` / ``reference_cosine_min``.
    """

    name: str
    embeddings: np.ndarray = field(repr=False)
    metrics: dict[str, Any]


def evaluate_label_free(engine: Any, images: np.ndarray, views: np.ndarray, *, batch_size: int = 256,
                        cache_dir: Path | None = None, dataset_id: str = "",
                        reference: LabelFreeEvaluation | None = None, progress: bool = False) -> LabelFreeEvaluation:
    """Embed ``uint8 (N, H, W, 3)`` held-out images and their ``views`` (same shape) through ``engine`` (cached as
    ``evaluate.extract`` caches), then :func:`label_free_metrics`; ``embed_images_per_s`` is the engine's throughput
    on the held-out images (decoding excluded)."""
    common = dict(batch_size=batch_size, cache_dir=cache_dir, dataset_id=dataset_id, progress=progress)
    base = extract(engine, images, split="label_free", **common)
    view = extract(engine, views, split="label_free_views", **common)
    metrics: dict[str, Any] = {"dim": int(base.embeddings.shape[1]), **label_free_metrics(base.embeddings, view.embeddings),
                               "embed_images_per_s": float(base.images_per_s),
                               "cache_hit": bool(base.cache_hit and view.cache_hit)}
    if reference is not None and reference.embeddings.shape == base.embeddings.shape:
        cos = (l2_normalize(reference.embeddings) * l2_normalize(base.embeddings)).sum(axis=1)
        metrics.update(reference_cosine_mean=float(cos.mean()), reference_cosine_min=float(cos.min()))
    name = getattr(engine, "name", type(engine).__name__)
    log.info("%s: alignment %.4f, uniformity %.4f, effective rank %.1f of %d", name, metrics["alignment"],
             metrics["uniformity"], metrics["effective_rank"], min(base.embeddings.shape))
    return LabelFreeEvaluation(name, base.embeddings, metrics)


def label_free_section(evaluations: Mapping[str, LabelFreeEvaluation], kinds: Mapping[str, str], *,
                       source: str) -> dict[str, Any]:
    """The report's ``label_free`` object (docs/report_schema.md): how the images were chosen and, per engine or
    baseline, its ``kind`` and measures."""
    counts = {ev.embeddings.shape[0] for ev in evaluations.values()}
    return {"images": counts.pop() if len(counts) == 1 else None, "source": source, "positive_pairs": POSITIVE_PAIRS,
            "dead_ratio": DEAD_RATIO,
            "engines": {name: {"kind": kinds.get(name, "engine"), **ev.metrics} for name, ev in evaluations.items()}}
