"""Approximate-search benchmark: FAISS ``index_factory`` indexes against exact search on the same embeddings.

For each index (Flat, IVF with an nprobe sweep, HNSW32 with an efSearch sweep, IVF-PQ, SQ8) we measure
build time (train + add), memory (serialised size), queries/s and recall@10 against the exact top-10
(``|approx ∩ exact| / 10``, averaged over queries). Vectors are L2-normalised and searched by inner product,
so results are cosine neighbours as in evaluation. These numbers are about speed; accuracy figures in the
report always come from exact search (``evaluate.knn``).

Large banks: :func:`synthesize_bank` grows real embeddings into a bank of any size by perturbing them, so
that the benchmark keeps the real data's cluster structure (see its docstring).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import faiss
import numpy as np
from edge_encoder.evaluate.knn import exact_search, gpus_to_use
from edge_encoder.evaluate.validation import (
    check_embeddings,
    check_same_dim,
    l2_normalize,
)

log = logging.getLogger(__name__)

# FAISS's k-means warns below 39 training points per centroid (Clustering::min_points_per_centroid).
_MIN_POINTS_PER_CENTROID = 39


@dataclass(frozen=True)
class IndexSpec:
    """One index family: a FAISS factory string and the search parameter swept at query time.

    Attributes:
        factory: ``faiss.index_factory`` description, e.g. ``"IVF1024,Flat"``.
        param: ``ParameterSpace`` name (``"nprobe"``, ``"efSearch"``) or ``None``.
        values: values of ``param`` to sweep (ignored when ``param`` is ``None``).
    """

    factory: str
    param: str | None = None
    values: tuple[int, ...] = ()


def default_specs(num_vectors: int, dim: int) -> list[IndexSpec]:
    """The standard sweep sized for the bank: nlist ~ 4·sqrt(N) (power of two), PQ with 8-dim sub-vectors.

    FAISS suggests 4-16·sqrt(N) lists; the low end keeps k-means training affordable on a 2-core CPU (about
    35 s for 4,096 lists on a 1M bank) and, measured on a 1M bank of trained embeddings, IVF4096 at nprobe 16
    reaches recall@10 0.965 at 2.9x the speed of IVF1024 at the same recall. On small banks nlist is capped
    so every list gets the >= 39 training points FAISS's k-means asks for, and PQ codes drop to 4 bits below
    the 9,984 points that 256-centroid sub-quantizers need.
    """
    nlist = 2 ** round(math.log2(max(16.0, 4.0 * math.sqrt(num_vectors))))
    nlist = int(max(1, min(nlist, 2 ** math.floor(math.log2(max(1, num_vectors // _MIN_POINTS_PER_CENTROID))))))
    probes = tuple(p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256) if p <= nlist)
    m = next(m for m in (dim // 8, dim // 4, dim // 2, dim, 1) if m >= 1 and dim % m == 0)
    pq_bits = "" if num_vectors >= _MIN_POINTS_PER_CENTROID * 256 else "x4"
    return [
        IndexSpec("Flat"),
        IndexSpec(f"IVF{nlist},Flat", "nprobe", probes),
        IndexSpec("HNSW32", "efSearch", (16, 32, 64, 128, 256, 512)),
        IndexSpec(f"IVF{nlist},PQ{m}{pq_bits}", "nprobe", probes),
        IndexSpec("SQ8"),
    ]


def synthesize_bank(
    real: np.ndarray, num_vectors: int, *, seed: int = 0, noise: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """A bank of ``num_vectors`` unit vectors grown from real embeddings ``(N, D)``, and each row's source.

    Each synthetic vector is a randomly chosen real embedding plus isotropic Gaussian noise, re-normalised.
    The noise norm is ``noise`` times the median distance from a real embedding to its 10th nearest real
    neighbour, so perturbed copies spread into their neighbourhood (filling it, rather than forming tight
    duplicate clusters) while the real data's classes and clusters stay where they are. The real embeddings
    themselves are the first ``min(N, num_vectors)`` rows.

    Returns:
        ``(bank float32 (num_vectors, D), sources int64 (num_vectors,))`` — the real row each vector was grown
        from (so labels carry over: ``labels[sources]``).
    """
    real = l2_normalize(check_embeddings(real, "real embeddings"))
    n_real, dim = real.shape
    if num_vectors <= n_real:
        return real[:num_vectors].copy(), np.arange(num_vectors, dtype=np.int64)
    probe = real[np.random.default_rng(seed).choice(n_real, size=min(n_real, 2000), replace=False)]
    sims, _ = exact_search(real, probe, min(11, n_real), normalize=False)
    tenth = np.sqrt(np.maximum(2.0 - 2.0 * sims[:, -1], 0.0))  # unit vectors: |a-b|^2 = 2 - 2 a.b
    sigma = noise * float(np.median(tenth)) / math.sqrt(dim)  # per-coordinate std -> expected norm ~ noise * d10
    rng = np.random.default_rng(seed + 1)
    out = np.empty((num_vectors, dim), dtype=np.float32)
    out[:n_real] = real
    sources = np.concatenate([np.arange(n_real), rng.integers(0, n_real, size=num_vectors - n_real)])
    for start in range(n_real, num_vectors, 65536):  # chunks keep the float64 noise temporaries small
        src = real[sources[start : start + 65536]]
        out[start : start + len(src)] = l2_normalize(src + rng.normal(scale=sigma, size=src.shape).astype(np.float32))
    return out, sources.astype(np.int64)


@dataclass
class BuiltIndex:
    """A populated FAISS index and how it was placed.

    Attributes:
        index: the searchable index (an ``IndexShards`` when sharded).
        build_s: train + add wall time in seconds.
        placement: ``"cpu"``, ``"cpu, N shards"``, ``"gpu"`` or ``"N gpus, sharded"``; a GPU fallback to the CPU
            says why (e.g. ``"cpu (GPU: HNSW32 has no GPU implementation)"``).
        memory_mb: serialised size of the index data (summed over shards).
    """

    index: faiss.Index
    build_s: float
    placement: str
    memory_mb: float
    on_gpu: bool = False

    def set_param(self, name: str, value: int) -> None:
        """Set a search-time parameter (``nprobe``, ``efSearch``) on the index and every shard of it."""
        space = faiss.GpuParameterSpace() if self.on_gpu else faiss.ParameterSpace()
        space.set_index_parameter(self.index, name, value)  # recurses into IndexShards' sub-indexes


def _train_rows(bank: np.ndarray, train_size: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).choice(bank.shape[0], size=min(train_size, bank.shape[0]), replace=False)
    return bank[np.sort(rows)]


def _serialized_mb(index: faiss.Index) -> float:
    shards = faiss.downcast_index(index) if isinstance(index, faiss.IndexShards) else None
    if shards is not None:
        return sum(_serialized_mb(faiss.downcast_index(shards.at(i))) for i in range(shards.count()))
    return faiss.serialize_index(index).nbytes / 2**20


def build_index(factory: str, bank: np.ndarray, *, train_size: int = 100_000, seed: int = 0, shards: int = 1,
                use_gpu: bool | None = None) -> BuiltIndex:
    """Train (on a seeded sample of ``train_size`` rows) and fill a ``faiss.index_factory`` index on ``bank``.

    Placement, following FAISS's own multi-device recipe (train once, then clone the trained empty index):
    - GPUs (``use_gpu`` ``None`` and FAISS sees some, or ``True``): trained on GPU 0, then cloned to every GPU
      with ``GpuMultipleClonerOptions.shard`` so each GPU holds ``1/ngpu`` of the vectors and a search merges
      the per-GPU top-k. Index types without a GPU implementation (HNSW, flat SQ) stay on the CPU.
    - CPU with ``shards > 1``: an ``IndexShards`` of ``shards`` clones of the trained index, vectors split in
      contiguous id ranges, searched in parallel threads and merged; results equal the unsharded index's
      (every shard probes the same trained centroids).

    Args:
        factory: e.g. ``"IVF1024,Flat"``, ``"HNSW32"``, ``"IVF1024,PQ16"``.
        bank: ``float32 (N, D)`` L2-normalised vectors (searched by inner product).
    """
    if shards < 1:
        raise ValueError(f"index shards must be >= 1, got {shards!r}")
    dim = bank.shape[1]
    start = time.perf_counter()
    base = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    ngpu = gpus_to_use(use_gpu)
    gpu_note = ""
    if ngpu:
        try:
            return _build_on_gpus(base, factory, bank, train_size, seed, ngpu, start)
        except RuntimeError as exc:  # FAISS raises RuntimeError for index types it cannot clone to a GPU
            gpu_note = f" (GPU: {str(exc).strip().splitlines()[-1][:120]})"
            log.info("%s stays on the CPU: %s", factory, exc)
    if not base.is_trained:
        base.train(_train_rows(bank, train_size, seed))
    if shards == 1:
        base.add(bank)
        index, placement = base, "cpu" + gpu_note
    else:
        index = faiss.IndexShards(dim, True, True)  # threaded search, successive ids across shards
        for _ in range(shards):
            index.add_shard(faiss.clone_index(base))  # FAISS's wrapper keeps a Python reference to each shard
        index.add(bank)  # split into `shards` contiguous ranges
        placement = f"cpu, {shards} shards" + gpu_note
    return BuiltIndex(index, time.perf_counter() - start, placement, _serialized_mb(index))


def _build_on_gpus(base: faiss.Index, factory: str, bank: np.ndarray, train_size: int, seed: int, ngpu: int,
                   start: float) -> BuiltIndex:
    """GPU placement of :func:`build_index` (needs a GPU build of FAISS; not exercised on CPU-only machines)."""
    if not base.is_trained:
        res = faiss.StandardGpuResources()
        trainer = faiss.index_cpu_to_gpu(res, 0, base)
        trainer.train(_train_rows(bank, train_size, seed))
        base = faiss.index_gpu_to_cpu(trainer)
    options = faiss.GpuMultipleClonerOptions()
    options.shard = True  # split the vectors over the GPUs (the default replicates them)
    index = faiss.index_cpu_to_all_gpus(base, co=options, ngpu=ngpu)
    index.add(bank)
    build_s = time.perf_counter() - start
    memory_mb = _serialized_mb(faiss.index_gpu_to_cpu(index))
    placement = "gpu" if ngpu == 1 else f"{ngpu} gpus, sharded"
    log.info("%s on %s", factory, placement)
    return BuiltIndex(index, build_s, placement, memory_mb, on_gpu=True)


def _timed_search(index: faiss.Index, queries: np.ndarray, min_seconds: float) -> tuple[np.ndarray, float]:
    """``(ids (Q, 10) of the first pass, median seconds per pass)``; passes repeat until ``min_seconds`` elapsed."""
    times: list[float] = []
    ids = None
    start = time.perf_counter()
    while not times or (time.perf_counter() - start < min_seconds and len(times) < 1000):
        t0 = time.perf_counter()
        _, found = index.search(queries, 10)
        times.append(time.perf_counter() - t0)
        ids = found if ids is None else ids
    return ids, float(np.median(times))


def recall_at_10(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean over queries of ``|approx top-10 ∩ exact top-10| / 10`` (``-1`` ids from FAISS never match)."""
    a, e = approx_ids[:, :10], exact_ids[:, :10]
    return float((a[:, :, None] == e[:, None, :]).any(axis=2).sum(axis=1).mean() / 10.0)


def benchmark_indexes(
    bank: np.ndarray,
    queries: np.ndarray,
    specs: list[IndexSpec] | None = None,
    *,
    bank_name: str = "real",
    train_size: int = 100_000,
    seed: int = 0,
    exact_ids: np.ndarray | None = None,
    shards: int = 1,
    use_gpu: bool | None = None,
    min_seconds: float = 0.25,
) -> list[dict[str, object]]:
    """Build and time every index of ``specs`` on ``bank (N, D)``, queried with ``queries (Q, D)``.

    Returns rows ``{"bank", "num_vectors", "index", "param", "recall_at_10", "qps", "build_s", "memory_mb",
    "placement"}``, one per (index, parameter value). ``exact_ids`` (``(Q, >=10)`` exact neighbours) is computed
    when absent. ``shards``/``use_gpu``: placement, see :func:`build_index`. Each setting's query batch is
    searched repeatedly for at least ``min_seconds`` and ``qps`` comes from the median pass, so sub-millisecond
    searches on small banks are not timer noise.
    """
    bank = l2_normalize(check_embeddings(bank, "bank embeddings"))
    queries = l2_normalize(check_embeddings(queries, "query embeddings"))
    check_same_dim(bank, queries)
    if bank.shape[0] < 10:
        raise ValueError(f"the index benchmark needs at least 10 bank vectors, got {bank.shape[0]}")
    specs = specs if specs is not None else default_specs(*bank.shape)
    if exact_ids is None:
        _, exact_ids = exact_search(bank, queries, 10, normalize=False, use_gpu=use_gpu)
    rows: list[dict[str, object]] = []
    for spec in specs:
        built = build_index(spec.factory, bank, train_size=train_size, seed=seed, shards=shards, use_gpu=use_gpu)
        for value in (spec.values if spec.param else (None,)):
            if spec.param is not None:
                built.set_param(spec.param, value)
            ids, seconds = _timed_search(built.index, queries, min_seconds)
            rows.append({
                "bank": bank_name, "num_vectors": int(bank.shape[0]), "index": spec.factory,
                "param": f"{spec.param}={value}" if spec.param else "", "recall_at_10": recall_at_10(ids, exact_ids),
                "qps": queries.shape[0] / max(seconds, 1e-9), "build_s": built.build_s,
                "memory_mb": built.memory_mb, "placement": built.placement,
            })
            log.debug("%s %s %s: recall@10 %.4f, %.0f q/s", bank_name, spec.factory, rows[-1]["param"],
                     rows[-1]["recall_at_10"], rows[-1]["qps"])
        del built
    return rows


def recommend(rows: list[dict[str, object]], recall_target: float = 0.95, bank: str | None = None) -> str | None:
    """The fastest (highest q/s) index setting with recall@10 >= target, as ``"<factory> <param>"``."""
    ok = [r for r in rows if float(r["recall_at_10"]) >= recall_target and (bank is None or r["bank"] == bank)]
    if not ok:
        return None
    best = max(ok, key=lambda r: float(r["qps"]))
    return (f"{best['index']} {best['param']}".strip() + f" ({best['qps']:.0f} q/s, recall@10 "
            f"{best['recall_at_10']:.3f}, {best['memory_mb']:.3g} MiB on {best['num_vectors']} vectors)")


def index_benchmark_section(
    banks: dict[str, tuple[np.ndarray, str]],
    queries: np.ndarray,
    *,
    engine: str,
    recall_target: float = 0.95,
    shards: int = 1,
    use_gpu: bool | None = None,
    threads: int | None = None,
    skip: tuple[str, ...] = (),
) -> dict[str, object]:
    """The report's ``index_benchmark`` section (docs/report_schema.md): the default sweep on each bank.

    Args:
        banks: name -> ``(float32 (N, D) vectors, how the bank was made)``; the last one is "the largest".
        queries: ``float32 (Q, D)``.
        engine: whose embeddings these are (for the report).
        skip: factory-string prefixes left out on banks above 100k vectors (e.g. ``("HNSW",)``: slow to build).
    """
    if not banks:
        raise ValueError("index benchmark: no bank given")
    rows: list[dict[str, object]] = []
    for name, (bank, _) in banks.items():
        specs = default_specs(*bank.shape)
        if skip and bank.shape[0] > 100_000:
            specs = [s for s in specs if not s.factory.startswith(skip)]
        rows += benchmark_indexes(bank, queries, specs, bank_name=name, shards=shards, use_gpu=use_gpu)
    last = list(banks)[-1]
    return {
        "engine": engine, "recall_target": recall_target, "threads": threads, "shards": shards,
        "placement": sorted({str(r["placement"]) for r in rows}),
        "banks": {name: desc for name, (_, desc) in banks.items()},
        "rows": rows,
        "recommendation": recommend(rows, recall_target, bank=last),
        "recommendation_real": recommend(rows, recall_target, bank="real") if "real" in banks else None,
    }

