"""Embedding extraction: the only place in evaluate/ that calls an engine.

Images go through ``engine.embed`` in batches; the result is validated (2-D, one row per image, finite) and
cached on disk so that re-evaluating an engine costs nothing. The images are a ``uint8 (N, H, W, 3)`` array, or
an :class:`ImageSource` (``len``, ``images[i] -> uint8 (H, W, 3)``, e.g. a folder decoded on access): its items
are read and stacked one batch at a time, so a split larger than memory can be embedded. The cache key hashes:
the engine's model file (``engine.source_path``, SHA-256, with its ``cache_variant``: a foreign float graph's
mean/std, the output taken of several) or, for engines without a file, their ``cache_token``;
the dataset id and split; for an array its shape and a BLAKE2 digest of its bytes, for a source its length, item
shape and ``fingerprint()`` (a source without one is not cached). A sidecar JSON keeps the throughput measured
when the embeddings were computed, so a cache hit reports the same ``images_per_s``.

With ``shard=True`` under ``torchrun`` (an initialised ``torch.distributed`` group), each rank embeds one shard of
the images and the shards are all-gathered, so every rank returns the full array; rank 0 writes the cache. Sharding
is the caller's explicit choice: without it a process embeds every image, whatever process group exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from edge_encoder.core.contract import check_image_item
from edge_encoder.core.files import atomic_write
from edge_encoder.core.files import file_sha256 as _file_sha256

log = logging.getLogger(__name__)

CACHE_FORMAT = "edge-encoder/embedding-cache/1"
_HASH_CHUNK = 1 << 22


@runtime_checkable
class Engine(Protocol):
    """What evaluate/ needs from an engine (docs/CONTRACTS.md); export/ engines match it by duck typing.

    ``embed`` maps ``uint8 (N, H, W, 3)`` to ``float32 (N, D)``. ``source_path`` is the model file (hashed for
    the cache) or ``None``; an engine without a file may offer a ``cache_token: str`` attribute instead.
    The caller owns the engine's lifetime (``with engine: ...``); extraction never enters or exits it.
    """

    name: str
    source_path: Path | None

    def embed(self, images: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class ImageSource(Protocol):
    """Images evaluate/ can embed without holding them decoded: ``len(images)`` items, ``images[i]`` a
    ``uint8 (H, W, 3)`` RGB array, every item of one size (``imagedata.FolderImages`` is one; a list of arrays too).

    An optional ``fingerprint() -> str`` method makes the embeddings cacheable: it must be cheap (no decoding) and
    change whenever any item would (``FolderImages`` hashes paths, sizes, mtimes and labels). Without it,
    extraction cannot tell whether the items changed since, so it does not cache (and logs a warning).
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray: ...


@dataclass(frozen=True)
class Extraction:
    """Embeddings of one split and how they were obtained.

    Attributes:
        embeddings: ``float32 (N, D)``.
        images_per_s: throughput of the engine when these embeddings were computed (from the sidecar on a hit).
        cache_hit: loaded from the cache instead of running the engine.
        cache_path: the ``.npy`` file, or ``None`` when uncached.
    """

    embeddings: np.ndarray
    images_per_s: float
    cache_hit: bool
    cache_path: Path | None


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a model file, memoised per (path, size, mtime) within the process."""
    return _file_sha256(path, memo=True)


def engine_fingerprint(engine: Any) -> str | None:
    """Identity of the engine: the model file hash, with its ``cache_variant`` when it has one (what else decides
    the embeddings: the normalisation fed to a foreign float graph, the output taken), else its ``cache_token``,
    else ``None``."""
    source = getattr(engine, "source_path", None)
    if source is not None:
        source = Path(source)
        if not source.is_file():
            raise ValueError(f"engine {getattr(engine, 'name', '?')!r}: source_path {source} is not a file")
        variant = getattr(engine, "cache_variant", "")
        return "sha256:" + file_sha256(source) + (f" ({variant})" if variant else "")
    token = getattr(engine, "cache_token", None)
    return f"token:{token}" if token else None


def _images_digest(images: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    flat = np.ascontiguousarray(images).reshape(-1).view(np.uint8)
    for start in range(0, flat.size, _HASH_CHUNK):
        h.update(flat[start : start + _HASH_CHUNK].data)
    return h.hexdigest()


def source_fingerprint(images: ImageSource) -> str | None:
    """The source's ``fingerprint()``, or ``None`` when it has none (then its embeddings are not cached)."""
    method = getattr(images, "fingerprint", None)
    if not callable(method):
        return None
    fp = method()
    if not isinstance(fp, str) or not fp:
        raise TypeError(f"{type(images).__name__}.fingerprint() must return a non-empty str, got {fp!r}")
    return fp


def cache_key(engine: Any, images: np.ndarray | ImageSource, dataset_id: str, split: str) -> str | None:
    """Hex key of the cache entry for these (engine, images), or ``None`` when the engine or an image source
    without ``fingerprint()`` is not identifiable."""
    fp = engine_fingerprint(engine)
    if fp is None:
        return None
    if isinstance(images, np.ndarray):  # the array key, unchanged since the cache format began
        content: dict[str, Any] = {"shape": list(images.shape), "dtype": str(images.dtype),
                                   "images": _images_digest(images)}
    else:
        if isinstance(images, _CheckedSource):  # extract's own view: its first item is already checked
            item, images = images.item_shape, images.images
        else:
            item = tuple(np.shape(images[0]))
        source = source_fingerprint(images)
        if source is None:
            return None
        content = {"count": len(images), "item_shape": list(item), "source": source}
    payload = json.dumps(
        {"format": CACHE_FORMAT, "engine": fp, "engine_name": getattr(engine, "name", ""), "dataset": dataset_id,
         "split": split, **content},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


class _CheckedSource:
    """An :class:`ImageSource` read one batch at a time: ``batch(a, b)`` decodes items ``a..b-1``, checks each
    (``uint8``, item 0's ``(H, W, 3)``; a ``ValueError`` names the index) and stacks them ``uint8 (b-a, H, W, 3)``.

    Items are read in order in this process. Decoding ahead in DataLoader workers did not pay on the 2-core CPU
    this was measured on, where the engine's threads already use every core: 1,600 32 px PNGs (~85 us to decode
    each) through a width-8 ResNet-18 ONNX engine took 320-440 us an image read in order against 410-455 with 1
    or 2 workers, and through the raw-pixel engine 120-180 against 140-180.
    """

    def __init__(self, images: ImageSource, item_shape: tuple[int, ...]) -> None:
        self.images, self.item_shape = images, item_shape

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, *self.item_shape), dtype=np.uint8)
        for i in range(start, stop):
            out[i - start] = check_item(self.images[i], i, self.item_shape)
        return out


def check_item(item: object, index: int, expected: tuple[int, ...] | None = None) -> np.ndarray:
    """``item`` if it is a ``uint8 (H, W, 3)`` array (of shape ``expected`` when given), else a ``ValueError``."""
    return check_image_item(item, index, expected)


def _take(images: np.ndarray | _CheckedSource, start: int, stop: int) -> np.ndarray:
    """Images ``start..stop-1`` as ``uint8 (stop-start, H, W, 3)``: a view of an array, a decoded batch of a source."""
    return images[start:stop] if isinstance(images, np.ndarray) else images.batch(start, stop)


def _check_spec(engine: Any, height: int, width: int) -> None:
    spec = getattr(engine, "input_spec", None)
    h, w = getattr(spec, "height", None), getattr(spec, "width", None)
    if h is not None and w is not None and (height, width) != (h, w):
        raise ValueError(f"engine {getattr(engine, 'name', '?')!r} expects {h}x{w} images but got {height}x{width}")


def _check_source(engine: Any, images: object) -> _CheckedSource:
    if not (hasattr(images, "__len__") and hasattr(images, "__getitem__")):
        raise TypeError("images must be a numpy array uint8 (N, H, W, 3) or an indexable image sequence (__len__, "
                        f"__getitem__(int) -> uint8 (H, W, 3)), got {type(images).__name__}")
    if len(images) == 0:  # type: ignore[arg-type]
        raise ValueError(f"images are empty (a {type(images).__name__} of 0 items): the split has no images")
    first = check_item(images[0], 0, None)  # type: ignore[index]
    _check_spec(engine, first.shape[0], first.shape[1])
    return _CheckedSource(images, first.shape)  # type: ignore[arg-type]


def _check_images(engine: Any, images: object) -> np.ndarray | _CheckedSource:
    if not isinstance(images, np.ndarray):
        return _check_source(engine, images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3), got shape {images.shape}")
    if images.shape[0] == 0:
        raise ValueError("images are empty (shape {}): the split has no images".format(images.shape))
    if images.dtype != np.uint8:
        raise TypeError(f"images must be uint8, got {images.dtype}")
    _check_spec(engine, images.shape[1], images.shape[2])
    return images


def _check_output(out: object, n: int, engine_name: str, dim: int | None) -> np.ndarray:
    if not isinstance(out, np.ndarray) or out.ndim != 2 or out.shape[0] != n:
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(f"engine {engine_name!r} returned {shape} for a batch of {n} images; expected ({n}, D)")
    if dim is not None and out.shape[1] != dim:
        raise ValueError(f"engine {engine_name!r} changed its embedding width from {dim} to {out.shape[1]}")
    out = out.astype(np.float32, copy=False)
    if not np.isfinite(out).all():
        raise ValueError(f"engine {engine_name!r} returned NaN/Inf embeddings")
    return out


def _run_engine(engine: Any, images: np.ndarray | _CheckedSource, batch_size: int, progress: bool,
                start: int = 0, stop: int | None = None) -> tuple[np.ndarray, float]:
    """``(float32 (stop-start, D) embeddings of images start..stop-1, seconds spent inside engine.embed)``."""
    name = getattr(engine, "name", type(engine).__name__)
    stop = len(images) if stop is None else stop
    n = stop - start
    starts = range(start, stop, batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=f"embed {name}", unit="batch", total=(n + batch_size - 1) // batch_size)
    out: np.ndarray | None = None
    engine_s = 0.0
    for s in starts:
        batch = _take(images, s, min(s + batch_size, stop))
        t0 = time.perf_counter()
        raw = engine.embed(batch)
        engine_s += time.perf_counter() - t0
        emb = _check_output(raw, batch.shape[0], name, None if out is None else out.shape[1])
        if out is None:
            out = np.empty((n, emb.shape[1]), dtype=np.float32)
        out[s - start : s - start + batch.shape[0]] = emb
    assert out is not None
    return out, engine_s


def _dist_world() -> tuple[int, int]:
    """(rank, world size) when running under an initialised torch.distributed group, else (0, 1)."""
    try:
        import torch.distributed as dist
    except ImportError:
        return 0, 1
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _run_sharded(engine: Any, images: np.ndarray | _CheckedSource, batch_size: int, progress: bool, rank: int,
                 world: int) -> tuple[np.ndarray, float]:
    """Data-parallel extraction (e.g. under ``torchrun``): each rank embeds (and, for a source, decodes) one
    contiguous shard, then an all-gather gives every rank the full ``(N, D)`` array in the original order.
    Returns it with this rank's seconds inside ``engine.embed``."""
    import torch
    import torch.distributed as dist

    bounds = np.linspace(0, len(images), world + 1).astype(int)
    if np.any(np.diff(bounds) == 0):
        raise ValueError(f"{len(images)} images cannot be split over {world} ranks (every shard needs one)")
    mine, engine_s = _run_engine(engine, images, batch_size, progress and rank == 0, int(bounds[rank]),
                                 int(bounds[rank + 1]))
    width = int(np.diff(bounds).max())
    padded = torch.zeros(width, mine.shape[1], dtype=torch.float32)
    padded[: mine.shape[0]] = torch.from_numpy(mine)
    # NCCL needs CUDA tensors; gloo (CPU) takes them as they are.
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    parts = [torch.empty_like(padded, device=device) for _ in range(world)]
    dist.all_gather(parts, padded.to(device))
    return np.concatenate([p[: bounds[i + 1] - bounds[i]].cpu().numpy() for i, p in enumerate(parts)]), engine_s


def _load_cached(npy: Path, meta_path: Path, n: int) -> tuple[np.ndarray, float] | None:
    try:
        emb = np.load(npy, allow_pickle=False)
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:  # a truncated or foreign file: recompute rather than fail
        log.warning("ignoring unreadable embedding cache %s (%s)", npy, exc)
        return None
    if emb.ndim != 2 or emb.shape[0] != n or emb.dtype != np.float32 or not np.isfinite(emb).all():
        log.warning("ignoring embedding cache %s with shape %s dtype %s", npy, emb.shape, emb.dtype)
        return None
    return emb, float(meta.get("images_per_s", float("nan")))


def extract(
    engine: Any,
    images: np.ndarray | ImageSource,
    *,
    batch_size: int = 256,
    cache_dir: Path | None = None,
    dataset_id: str = "",
    split: str = "",
    progress: bool = False,
    shard: bool = False,
) -> Extraction:
    """Embed ``uint8 (N, H, W, 3)`` images, or an :class:`ImageSource` of ``uint8 (H, W, 3)`` items, through
    ``engine`` (or load them from the cache); see the module doc.

    For a source, ``images_per_s`` counts only the time inside ``engine.embed`` (decoding excluded), so engines
    compare as they do on arrays.

    ``shard=True``: every process of the initialised ``torch.distributed`` group calls ``extract`` alike and embeds
    one shard (all-gathered, see the module doc); without a group it changes nothing. ``False`` (the default):
    this process embeds every image, even inside a group.

    Raises:
        TypeError / ValueError: not images (an item's problem names its index), or an engine output that is not
            ``float32 (batch, D)`` and finite.
    """
    images = _check_images(engine, images)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    key = cache_key(engine, images, dataset_id, split) if cache_dir is not None else None
    npy = meta_path = None
    if key is not None:
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        npy, meta_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
        if npy.is_file() and meta_path.is_file():
            cached = _load_cached(npy, meta_path, len(images))
            if cached is not None:
                log.info("embedding cache hit for %s %s/%s: %s", getattr(engine, "name", "?"), dataset_id, split, npy)
                return Extraction(cached[0], cached[1], True, npy)
    elif cache_dir is not None and engine_fingerprint(engine) is None:
        log.warning("engine %r has neither source_path nor cache_token: not caching", getattr(engine, "name", "?"))
    elif cache_dir is not None:
        log.warning("images (a %s) have no fingerprint() to tell whether they changed: not caching the embeddings "
                    "of %s", type(images.images).__name__, getattr(engine, "name", "?"))  # type: ignore[union-attr]

    # One untimed warm-up batch: the first call of an engine pays one-off costs (thread pools, kernel selection,
    # lazy allocation) that would otherwise be billed to whichever split is embedded first.
    _run_engine(engine, images, batch_size, False, 0, min(batch_size, 32, len(images)))
    start = time.perf_counter()
    rank, world = _dist_world() if shard else (0, 1)
    if world > 1:
        emb, engine_s = _run_sharded(engine, images, batch_size, progress, rank, world)
    else:
        emb, engine_s = _run_engine(engine, images, batch_size, progress)
    # An array's figure stays the wall time it always was; a source's leaves out the decoding between batches.
    seconds = time.perf_counter() - start if isinstance(images, np.ndarray) else engine_s
    images_per_s = len(images) / max(seconds, 1e-9)
    if npy is not None and meta_path is not None and rank == 0:  # one writer; the file is atomic for readers
        meta = {"format": CACHE_FORMAT, "engine": getattr(engine, "name", ""), "dataset": dataset_id,
                "split": split, "shape": list(emb.shape), "images_per_s": images_per_s}
        atomic_write(npy, lambda f: np.save(f, emb, allow_pickle=False))
        try:
            atomic_write(meta_path, lambda f: f.write(json.dumps(meta, indent=2).encode()))
        except BaseException:  # e.g. a full disk: the pair is kept whole or not at all (no .npy without its .json)
            npy.unlink(missing_ok=True)
            raise
    return Extraction(emb, images_per_s, False, npy)
