"""Files the user keeps: atomic writes and content hashes (standard library only, so a device needs nothing else).

Every file the project writes goes through :func:`atomic_write` (temp file in the same folder, flush, fsync,
``os.replace``): a reader sees the old file or the new one, never half of one, and an interrupted write leaves
no temp file behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

_HASH_CHUNK = 1 << 20
_hash_memo: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path | str, *, memo: bool = False) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks.

    ``memo=True`` remembers the digest per (resolved path, size, mtime) within the process, for callers that
    hash the same large file many times (the embedding cache); a changed file changes its key.
    """
    path = Path(path)
    key = None
    if memo:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key in _hash_memo:
            return _hash_memo[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    if key is not None:
        _hash_memo[key] = digest.hexdigest()
    return digest.hexdigest()


def atomic_write(path: Path | str, write: Callable[[BinaryIO], Any]) -> Path:
    """Call ``write(binary_file)`` on a temp file beside ``path``, fsync it, then ``os.replace`` it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path | str, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, payload: Any) -> Path:
    """Write ``payload`` as indented JSON (with a final newline) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
