"""One engine's full evaluation (extraction, kNN, retrieval, linear probe) and the cross-engine table.

``evaluate_engines`` is the loop the pipeline and ``edge-encoder evaluate`` run over their engines and baselines,
calling ``evaluate_engine`` for each; its images are arrays or image
sources decoded batch by batch (``evaluate.extract.ImageSource``); everything after the two extractions is a
function of arrays. ``compare_engines`` turns several evaluations into the report's
``metrics`` section, with deltas against the FP32 reference.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from edge_encoder.core.config import TEMPERATURE_RANGE, check_types, config_from_dict, require
from edge_encoder.core.errors import InputError
from edge_encoder.evaluate.extract import ImageSource, extract
from edge_encoder.evaluate.knn import (
    scoped_threads,
    exact_search,
    rank_classes,
    vote_scores,
)
from edge_encoder.evaluate.linear_probe import linear_probe
from edge_encoder.evaluate.retrieval import (
    relevance,
    relevant_counts,
    retrieval_per_query,
    summarize,
)
from edge_encoder.evaluate.validation import (
    check_embeddings,
    check_labels,
    check_same_dim,
    l2_normalize,
)

log = logging.getLogger(__name__)

# Metrics whose change against the reference engine goes into the comparison table.
COMPARED_METRICS = ("knn_top1", "knn_top5", "linear_top1", "linear_top5", "recall_at_1", "map_at_r")
MAX_CLASSES_FOR_CONFUSION = 100
SECTION = "evaluate"  # the config file section EvalConfig is


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings (all plain values, so a config file can hold them).

    Attributes:
        knn_k, knn_temperature: the headline weighted kNN (``knn_top1``/``knn_top5``).
        extra_knn: further ``(k, T)`` settings, reported as ``knn_k<k>_t<T>_top1/top5``.
        linear_probe: fit the linear probe (the slowest part on CPU).
        retrieval_ks: ranks for recall@k and precision@k.
        batch_size: images per engine call.
        memory_budget_mb: bound on search tiles and per-chunk neighbour lists.
        seed: seeds the linear probe's held-out slice.
        num_threads: FAISS/PyTorch threads; ``None`` = the cores this process may use.
        agreement_k: neighbours compared with the reference engine's.
        index_benchmark: sweep FAISS approximate indexes (``evaluate.index_bench``) on the FP32 engine's
            embeddings and report recall@10 vs queries/s with a recommendation (speed only, never accuracy).
        index_recall_target: recall@10 the recommended index must reach.
        index_shards: build each benchmarked index as this many CPU shards (``IndexShards``); GPUs, when FAISS
            sees them, always hold a shard each.
        label_free_images: held-out images (seeded subset) for the label-free measures (``evaluate.label_free``),
            each embedded with one positive view; 0 = none when accuracy is measured.
    """

    knn_k: int = 20
    knn_temperature: float = 0.07
    extra_knn: tuple[tuple[int, float], ...] = ((200, 0.1),)
    linear_probe: bool = True
    retrieval_ks: tuple[int, ...] = (1, 5, 10)
    batch_size: int = 256
    memory_budget_mb: int = 512
    seed: int = 0
    num_threads: int | None = None
    agreement_k: int = 10
    index_benchmark: bool = True
    index_recall_target: float = 0.95
    index_shards: int = 1
    label_free_images: int = 1000

    def __post_init__(self) -> None:
        check_types(SECTION, self)
        for key in ("knn_k", "batch_size", "memory_budget_mb", "agreement_k", "index_shards"):
            require(getattr(self, key) >= 1, SECTION, key, "must be >= 1", getattr(self, key))
        require(self.seed >= 0, SECTION, "seed", "must be >= 0", self.seed)
        require(self.label_free_images == 0 or self.label_free_images >= 2, SECTION, "label_free_images",
                "must be 0 (none) or >= 2 (uniformity needs pairs)", self.label_free_images)
        require(0.0 < self.index_recall_target <= 1.0, SECTION, "index_recall_target", "must lie in (0, 1]",
                self.index_recall_target)
        low, high = TEMPERATURE_RANGE
        require(low <= self.knn_temperature <= high, SECTION, "knn_temperature",
                f"must lie in [{low}, {high}] (core.config.TEMPERATURE_RANGE)", self.knn_temperature)
        for k, t in self.extra_knn:
            require(k >= 1 and low <= t <= high, SECTION, "extra_knn",
                    f"needs [k, temperature] pairs with k >= 1 and T in [{low}, {high}]", [k, t])
        require(bool(self.retrieval_ks) and min(self.retrieval_ks) >= 1, SECTION, "retrieval_ks",
                "must be a non-empty list of ranks >= 1", list(self.retrieval_ks))
        require(self.num_threads is None or self.num_threads >= 1, SECTION, "num_threads", "must be >= 1 or null",
                self.num_threads)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["extra_knn"] = [list(p) for p in self.extra_knn]
        d["retrieval_ks"] = list(self.retrieval_ks)
        return d


def eval_config_from_dict(d: Mapping[str, Any]) -> EvalConfig:
    """Build an :class:`EvalConfig` from user input (``core.config.config_from_dict``).

    Raises:
        ValueError: unknown key, wrong type or out-of-range value, naming ``evaluate.KEY``.
    """
    return config_from_dict(SECTION, EvalConfig, d)


@dataclass(frozen=True)
class EngineEvaluation:
    """Everything :func:`evaluate_engine` measured for one engine.

    Attributes:
        name: engine name.
        train_embeddings, test_embeddings: ``float32 (N, D)`` and ``(Q, D)``.
        metrics: flat JSON-ready dict (see docs/report_schema.md), plus ``per_class`` and ``confusion_matrix``.
        knn_predictions: ``int64 (Q,)`` headline-kNN predicted classes.
        neighbor_ids: ``int64 (Q, agreement_k)`` nearest bank items of each query.
    """

    name: str
    train_embeddings: np.ndarray = field(repr=False)
    test_embeddings: np.ndarray = field(repr=False)
    metrics: dict[str, Any]
    knn_predictions: np.ndarray = field(repr=False)
    neighbor_ids: np.ndarray = field(repr=False)


def _knn_key(k: int, t: float) -> str:
    return f"knn_k{k}_t{t:g}"


def _search_metrics(
    bank: np.ndarray, y_bank: np.ndarray, queries: np.ndarray, y_query: np.ndarray, config: EvalConfig,
    num_classes: int | None = None,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """kNN accuracies and retrieval metrics from one exact search, in query chunks under the memory budget.

    ``num_classes``: the dataset's class count (the confusion matrix is ``C x C``, as the report's ``num_classes``
    and ``class_names``); default, and never less than, the largest label + 1.

    Returns ``(metrics, knn predictions (Q,), neighbour ids (Q, agreement_k))``.
    """
    labelled = int(max(y_bank.max(), y_query.max())) + 1
    if num_classes is not None and num_classes < labelled:
        raise ValueError(f"num_classes={num_classes} but the labels go up to {labelled - 1}")
    num_classes = labelled if num_classes is None else int(num_classes)
    r = relevant_counts(y_bank, y_query)
    settings = [(config.knn_k, config.knn_temperature)]
    skipped = []
    for k, t in config.extra_knn:
        # The optional settings (e.g. k=200) may not fit a tiny bank (smoke runs): skip them, keep the headline.
        (settings if k <= bank.shape[0] else skipped).append((k, t))
    if skipped:
        log.warning("extra kNN settings %s skipped: the bank has only %d embeddings", skipped, bank.shape[0])
    depth = max(max(k for k, _ in settings), max(config.retrieval_ks), int(r.max()), config.agreement_k)
    if depth > bank.shape[0]:
        raise ValueError(
            f"k={depth} (largest of kNN k, retrieval k, class size R, agreement k) is larger than the bank "
            f"({bank.shape[0]} embeddings)"
        )
    budget = config.memory_budget_mb * 2**20
    # sims + ids + relevance + cumulative precision per (query, rank): ~32 bytes each
    chunk = max(1, min(queries.shape[0], budget // (32 * depth)))
    ranked = {s: [] for s in settings}
    per_query: dict[str, list[np.ndarray]] = {}
    neighbor_ids = []
    for q0 in range(0, queries.shape[0], chunk):
        sims, ids = exact_search(bank, queries[q0 : q0 + chunk], depth, memory_budget_bytes=budget, normalize=False)
        for k, t in settings:
            ranked[(k, t)].append(rank_classes(vote_scores(sims[:, :k], y_bank[ids[:, :k]], num_classes, t), 5))
        yq = y_query[q0 : q0 + chunk]
        for name, v in retrieval_per_query(relevance(ids, y_bank, yq), r[q0 : q0 + chunk], config.retrieval_ks).items():
            per_query.setdefault(name, []).append(v)
        neighbor_ids.append(ids[:, : config.agreement_k])
    metrics: dict[str, Any] = {}
    for (k, t), parts in ranked.items():
        top = np.concatenate(parts)
        prefix = "knn" if (k, t) == settings[0] else _knn_key(k, t)
        metrics[f"{prefix}_top1"] = float((top[:, 0] == y_query).mean())
        metrics[f"{prefix}_top5"] = float((top == y_query[:, None]).any(axis=1).mean())
    for k, t in skipped:
        metrics[f"{_knn_key(k, t)}_top1"] = metrics[f"{_knn_key(k, t)}_top5"] = None
    predictions = np.concatenate(ranked[settings[0]])[:, 0]
    retrieval = summarize({n: np.concatenate(v) for n, v in per_query.items()}, y_query, r)
    per_class = retrieval.pop("per_class")
    metrics.update(retrieval)
    metrics["per_class"] = per_class
    metrics["per_class"]["knn_top1"] = {
        int(c): float((predictions[y_query == c] == c).mean()) for c in np.unique(y_query)
    }
    if num_classes <= MAX_CLASSES_FOR_CONFUSION:
        cm = np.zeros((num_classes, num_classes), dtype=np.int64)
        np.add.at(cm, (y_query, predictions), 1)
        metrics["confusion_matrix"] = cm.tolist()  # rows: true class, columns: kNN prediction
    return metrics, predictions, np.concatenate(neighbor_ids)


def neighbor_agreement(ids_a: np.ndarray, ids_b: np.ndarray) -> float:
    """Mean over queries of ``|N_a(q) ∩ N_b(q)| / k`` for two ``(Q, k)`` neighbour-id lists."""
    if ids_a.shape != ids_b.shape:
        raise ValueError(f"neighbour lists differ in shape: {ids_a.shape} vs {ids_b.shape}")
    k = ids_a.shape[1]
    hits = (ids_a[:, :, None] == ids_b[:, None, :]).any(axis=2).sum(axis=1)
    return float(hits.mean() / k)


def _reference_metrics(
    evaluation_test: np.ndarray, neighbor_ids: np.ndarray, predictions: np.ndarray,
    reference: "np.ndarray | EngineEvaluation", config: EvalConfig,
) -> dict[str, float]:
    """Agreement with the reference engine: bank-neighbour overlap, kNN prediction match, row cosine."""
    out: dict[str, float] = {}
    if isinstance(reference, EngineEvaluation):
        ref_test = reference.test_embeddings
        out[f"neighbor_agreement_at_{config.agreement_k}"] = neighbor_agreement(neighbor_ids, reference.neighbor_ids)
        out["knn_prediction_agreement"] = float((predictions == reference.knn_predictions).mean())
    else:
        ref_test = check_embeddings(reference, "reference test embeddings")
        if ref_test.shape[0] != evaluation_test.shape[0]:
            raise ValueError(
                f"reference has {ref_test.shape[0]} test embeddings but the engine produced {evaluation_test.shape[0]}"
            )
        # Only the test split is known for the reference: compare neighbours within the test split (self excluded).
        k = min(config.agreement_k, ref_test.shape[0] - 1)
        if k >= 1:
            _, mine = exact_search(evaluation_test, evaluation_test, k + 1)
            _, theirs = exact_search(ref_test, ref_test, k + 1)
            out[f"test_neighbor_agreement_at_{k}"] = neighbor_agreement(mine[:, 1:], theirs[:, 1:])
    if ref_test.shape == evaluation_test.shape:
        cos = (l2_normalize(ref_test) * l2_normalize(evaluation_test)).sum(axis=1)
        out["reference_cosine_mean"] = float(cos.mean())
        out["reference_cosine_min"] = float(cos.min())
    return out


def evaluate_engine(
    engine: Any,
    x_train: np.ndarray | ImageSource,
    y_train: np.ndarray,
    x_test: np.ndarray | ImageSource,
    y_test: np.ndarray,
    *,
    config: EvalConfig,
    dataset_id: str,
    cache_dir: Path | None,
    reference: "np.ndarray | EngineEvaluation | None" = None,
    progress: bool = False,
    num_classes: int | None = None,
) -> EngineEvaluation:
    """Embed both splits through ``engine`` (cached), then kNN, retrieval and linear-probe metrics.

    Args:
        engine: anything matching :class:`evaluate.extract.Engine`, already entered by the caller.
        x_train, x_test: ``uint8 (N, H, W, 3)`` images, or image sources of ``uint8 (H, W, 3)`` items (read one
            batch at a time, cached by their ``fingerprint()``; the same metrics as their stacked arrays);
            y_train, y_test: ``int (N,)`` labels.
        dataset_id: identifies the dataset in the embedding cache key.
        reference: the FP32 reference's evaluation (or its test embeddings ``(Q, D)``) for agreement metrics.
        num_classes: the dataset's class count (``len(class_names)``), which sizes the confusion matrix; default:
            the largest label + 1.

    FAISS's and PyTorch's thread counts are ``config.num_threads`` while it runs and as they were after.
    """
    with scoped_threads(config.num_threads) as threads:
        start = time.perf_counter()
        name = getattr(engine, "name", type(engine).__name__)
        y_train = check_labels(y_train, len(x_train), "train labels")
        y_test = check_labels(y_test, len(x_test), "test labels")
        common = dict(batch_size=config.batch_size, cache_dir=cache_dir, dataset_id=dataset_id, progress=progress)
        tr = extract(engine, x_train, split="train", **common)
        te = extract(engine, x_test, split="test", **common)
        bank = l2_normalize(check_embeddings(tr.embeddings, f"{name} train embeddings"))
        queries = l2_normalize(check_embeddings(te.embeddings, f"{name} test embeddings"))
        check_same_dim(bank, queries)
        n_img = len(x_train) + len(x_test)
        embed_s = len(x_train) / tr.images_per_s + len(x_test) / te.images_per_s

        metrics: dict[str, Any] = {"dim": int(bank.shape[1]), "embed_images_per_s": float(n_img / embed_s),
                                   "cache_hit": bool(tr.cache_hit and te.cache_hit), "threads": threads}
        t0 = time.perf_counter()
        search_metrics, predictions, neighbor_ids = _search_metrics(bank, y_train, queries, y_test, config, num_classes)
        metrics.update({k: v for k, v in search_metrics.items() if k not in ("per_class", "confusion_matrix")})
        metrics["search_s"] = time.perf_counter() - t0
        if config.linear_probe:
            probe = linear_probe(bank, y_train, queries, y_test, seed=config.seed)
            metrics.update(linear_top1=probe.top1, linear_top5=probe.top5, linear_l2_penalty=probe.l2_penalty,
                           linear_probe_s=probe.seconds)
        else:
            metrics.update(linear_top1=None, linear_top5=None)
        if reference is not None:
            metrics.update(_reference_metrics(queries, neighbor_ids, predictions, reference, config))
        metrics["per_class"] = search_metrics["per_class"]
        if "confusion_matrix" in search_metrics:
            metrics["confusion_matrix"] = search_metrics["confusion_matrix"]
        metrics["evaluate_s"] = time.perf_counter() - start
        log.info("%s: kNN top-1 %.4f, linear top-1 %s, mAP@R %.4f", name, metrics["knn_top1"],
                 metrics["linear_top1"], metrics["map_at_r"])
        return EngineEvaluation(name, tr.embeddings, te.embeddings, metrics, predictions, neighbor_ids)


def compare_engines(
    evaluations: Mapping[str, EngineEvaluation],
    *,
    reference: str | None = None,
    kinds: Mapping[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """The report's ``metrics`` section: one entry per engine/baseline with ``kind`` and deltas.

    Args:
        evaluations: name -> evaluation, in table order.
        reference: name of the FP32 reference; each other entry gets ``delta_<metric>`` (engine minus
            reference) for :data:`COMPARED_METRICS` and, when not already measured, neighbour agreement.
        kinds: name -> ``"engine" | "baseline" | "reference"`` (default: ``"reference"`` for the reference,
            ``"engine"`` otherwise).
    """
    if reference is not None and reference not in evaluations:
        raise ValueError(f"reference {reference!r} is not among the evaluations {sorted(evaluations)}")
    kinds = dict(kinds or {})
    ref = evaluations[reference] if reference is not None else None
    table: dict[str, dict[str, Any]] = {}
    for name, ev in evaluations.items():
        kind = kinds.get(name, "reference" if name == reference else "engine")
        if kind not in ("engine", "baseline", "reference"):
            raise ValueError(f"kind of {name!r} must be engine, baseline or reference, got {kind!r}")
        row: dict[str, Any] = {"kind": kind, **ev.metrics}
        if ref is not None and name != reference:
            for m in COMPARED_METRICS:
                a, b = ev.metrics.get(m), ref.metrics.get(m)
                row[f"delta_{m}"] = None if a is None or b is None else float(a - b)
            key = f"neighbor_agreement_at_{ref.neighbor_ids.shape[1]}"
            if key not in row and ev.neighbor_ids.shape == ref.neighbor_ids.shape:
                row[key] = neighbor_agreement(ev.neighbor_ids, ref.neighbor_ids)
                row["knn_prediction_agreement"] = float((ev.knn_predictions == ref.knn_predictions).mean())
        table[name] = row
    return table


def evaluate_engines(
    engines: Iterable[tuple[str, Any]],
    splits: Any,
    *,
    config: EvalConfig,
    cache_dir: Path | None,
    progress: bool = False,
) -> tuple[dict[str, dict[str, Any]], dict[str, EngineEvaluation]]:
    """The one engine-evaluation loop (``pipeline.run`` and ``edge-encoder evaluate``): each engine on ``splits``.

    Args:
        engines: ``(kind, engine)`` pairs, each engine open while the loop holds it (a generator that closes it
            when resumed): ``"reference"`` (at most one, before its engines), ``"engine"`` (compared with the
            reference) or ``"baseline"`` (not compared).
        splits: a labelled dataset: ``x_train``, ``y_train`` (the kNN bank), ``x_test``, ``y_test`` (the
            queries), ``spec`` (the cache's dataset id) and ``num_classes`` (``imagedata.ImageSplits``).
        config, cache_dir, progress: as :func:`evaluate_engine`.

    Returns:
        ``(the report's metrics table, name -> EngineEvaluation)``, both in the order of ``engines``.

    Raises:
        InputError: two engines share a name, or an engine's output cannot be evaluated (NaN, wrong shape; the
            message names the engine).
    """
    evaluations: dict[str, EngineEvaluation] = {}
    kinds: dict[str, str] = {}
    reference: EngineEvaluation | None = None
    for kind, engine in engines:
        if engine.name in evaluations:
            raise InputError(f"two engines are named {engine.name!r}; evaluate them one at a time")
        try:
            evaluations[engine.name] = evaluate_engine(
                engine, splits.x_train, splits.y_train, splits.x_test, splits.y_test, config=config,
                dataset_id=splits.spec, cache_dir=cache_dir, reference=reference if kind == "engine" else None,
                progress=progress, num_classes=splits.num_classes)
        except InputError:
            raise
        except (ValueError, TypeError) as exc:  # a foreign engine's NaN or odd output, a tiny split
            raise InputError(f"evaluating {engine.name!r}: {exc}") from exc
        kinds[engine.name] = kind
        if kind == "reference":
            reference = evaluations[engine.name]
    reference_name = None if reference is None else reference.name
    return compare_engines(evaluations, reference=reference_name, kinds=kinds), evaluations
