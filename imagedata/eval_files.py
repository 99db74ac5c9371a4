"""Which training files are evaluation queries (``EvalFiles``): the same file reached by any path, or a byte-identical
copy of one. ``run_data`` leaves both out of training and counts them apart in the report's ``train_data``.

- **the same file** (``excluded_eval_images``): compared by ``(st_dev, st_ino)`` of ``os.stat``, links followed,
  never by the path string. A symlink to a query, a folder reached through a symlink, a hard link, a ``list:``
  entry through a symlink, or another spelling of the path (relative, ``a/../b``) is the query it reaches. A file
  that cannot be stat'ed (a dangling link) is compared by its absolute path.
- **a copy** (``excluded_eval_duplicates``): another file holding the same bytes as a query (``cp``, a second
  download, a dataset packed twice). Sizes are compared first; only a training file whose size equals a query's is
  read: a BLAKE2b digest of its first 64 KiB, then, if that matches, of the whole file. Each query is read at most
  once, and only when some training file has its size, so folders without copies cost one ``stat`` a file. An
  image re-encoded, resized or with its metadata changed is another file and is not caught.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

HEAD_BYTES = 64 * 1024  # the first digest: enough to tell most different images of one size apart
_CHUNK = 1 << 20


def _digest(path: str, limit: int | None) -> bytes | None:
    """BLAKE2b of the first ``limit`` bytes of ``path`` (all of it for ``None``); ``None`` if it cannot be read."""
    digest = hashlib.blake2b(digest_size=20)
    remaining = limit
    try:
        with open(path, "rb") as handle:
            while remaining is None or remaining > 0:
                block = handle.read(_CHUNK if remaining is None else min(_CHUNK, remaining))
                if not block:
                    break
                digest.update(block)
                if remaining is not None:
                    remaining -= len(block)
    except OSError:
        return None
    return digest.digest()


class EvalFiles:
    """The evaluation images that must never be trained on, matched against training files (module docstring)."""

    def __init__(self, paths: Iterable[Path | str]) -> None:
        self._ids: set[tuple[int, int]] = set()
        self._paths: set[str] = set()
        self._by_size: dict[int, list[str]] = {}
        self._digests: dict[tuple[str, bool], bytes | None] = {}  # (path, whole file?) -> digest, read once
        for path in paths:
            text = os.path.abspath(path)
            self._paths.add(text)
            try:
                st = os.stat(text)
            except OSError:
                continue
            self._ids.add((st.st_dev, st.st_ino))
            self._by_size.setdefault(st.st_size, []).append(text)

    def __len__(self) -> int:
        return len(self._paths)

    def _query_digest(self, path: str, whole: bool) -> bytes | None:
        key = (path, whole)
        if key not in self._digests:
            self._digests[key] = _digest(path, None if whole else HEAD_BYTES)
        return self._digests[key]

    def match(self, path: Path | str) -> str | None:
        """``"same"`` when ``path`` is a query's file (any path or link to it), ``"copy"`` when it holds the same
        bytes as a query, else ``None``."""
        text = os.path.abspath(path)
        try:
            st = os.stat(text)
        except OSError:
            return "same" if text in self._paths else None
        if (st.st_dev, st.st_ino) in self._ids or text in self._paths:
            return "same"
        candidates = self._by_size.get(st.st_size)
        if not candidates:
            return None
        head = _digest(text, HEAD_BYTES)
        candidates = [q for q in candidates if head is not None and self._query_digest(q, False) == head]
        if not candidates:
            return None
        if st.st_size <= HEAD_BYTES:  # the head digest was of the whole file
            return "copy"
        whole = _digest(text, None)
        return "copy" if whole is not None and any(self._query_digest(q, True) == whole for q in candidates) else None

    def split(self, files: Sequence[Path]) -> tuple[list[Path], int, int]:
        """``(files that are not queries, in order; how many were a query's file; how many a copy of one)``."""
        kept: list[Path] = []
        same = copies = 0
        for path in files:
            found = self.match(path)
            if found is None:
                kept.append(path)
            elif found == "same":
                same += 1
            else:
                copies += 1
        return kept, same, copies
