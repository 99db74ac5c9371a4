"""Files the user keeps: atomic writes and content hashes (standard library only, so a device needs nothing else).

Every file the project writes goes through :func:`atomic_write` (temp file in the same folder, flush, fsync,
``os.replace``, fsync of the folder): a reader sees the old file or the new one, never half of one, a write that
returned survives a power loss, and an interrupted or failed write (a full disk) leaves no temp file behind; one
killed outright (SIGKILL, OOM killer) leaves ``.NAME.<pid>.<random>.tmp``, which the next write to the same file
removes once that pid is gone. Logs grow by :func:`append_text`, one whole record at a time. What the project
writes gets the ordinary mode (``0666`` / ``0777`` less the umask, :func:`make_temp_dir` for folders built aside),
so a bundle or report stays readable by another user or a service account.

A run directory is guarded by :func:`hold_lock` (``fcntl.flock`` on ``DIR/.lock``): one process at a time, and a
process that dies, even by SIGKILL, leaves nothing stuck, because the kernel drops the lock with the process.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable

from edge_encoder.core.errors import InputError

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
    """Call ``write(binary_file)`` on a temp file beside ``path``, fsync it, then ``os.replace`` it onto ``path``.

    Raises:
        OSError: the folder cannot be created or written (full disk, read-only, permissions): the temp file is
            removed and the error names ``path`` (not the temp file, and also when ``write`` failed mid-way, where
            Python's own error names no file).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_temps(path)
        # The temp name carries this process's pid, so a later write can tell a dead writer's leftover from a live
        # one's file (_remove_dead_temps).
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _naming(exc, path) from exc
    try:
        # mkstemp creates the file 0600; give it the mode an ordinary open() would (0666 less the umask), so a
        # bundle or report copied to another user or a device stays readable.
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)  # the rename itself is durable only once the folder's entry is on disk
    except BaseException as exc:
        error = _short_write_errno(exc, path) if isinstance(exc, OSError) else None  # before the space is freed
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _naming(error or exc, path) from exc
        raise
    return path


_FULL_BYTES = 1 << 20


def _read_umask() -> int:
    """The process umask (read by setting it and putting it back: POSIX has no getter). Read once, at import,
    because the umask is process-wide and a worker thread writing a file meanwhile would see 0."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
FILE_MODE = 0o666 & ~_UMASK  # what open() gives a new file
DIR_MODE = 0o777 & ~_UMASK  # what mkdir() gives a new folder
# fsync of a folder where the file system or platform does not support it: nothing more to do there
_DIR_FSYNC_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EACCES, errno.EPERM,
                          errno.EISDIR, errno.ENOSYS}


def fsync_dir(folder: Path | str) -> None:
    """fsync ``folder`` itself, so that a rename or a new file in it survives a power loss (POSIX: the entry lives
    in the folder). Where the platform or file system cannot (no ``O_DIRECTORY``, EINVAL...) it does nothing.

    Raises:
        OSError: a real I/O error of the folder (EIO...).
    """
    flags = getattr(os, "O_DIRECTORY", None)
    if flags is None:  # Windows: no folder fsync
        return
    try:
        fd = os.open(folder, os.O_RDONLY | flags)
    except OSError as exc:
        if exc.errno in _DIR_FSYNC_UNSUPPORTED:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _DIR_FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def make_temp_dir(prefix: str, folder: Path | str) -> Path:
    """A new empty folder ``folder/<prefix><random>`` (``tempfile.mkdtemp``) with the ordinary folder mode
    (``0777`` less the umask) instead of mkdtemp's ``0700``: for folders built aside and then renamed into place
    (a deploy bundle, a Triton model), which another user or a service account must be able to read."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=folder))
    try:
        os.chmod(path, DIR_MODE)
    except BaseException:
        os.rmdir(path)
        raise
    return path


def _temp_pattern(path: Path) -> re.Pattern[str]:
    """The temp names :func:`atomic_write` gives ``path``: ``.NAME.<pid>.<mkstemp's random letters>.tmp``."""
    return re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[a-z0-9_]+\.tmp")


def _remove_dead_temps(path: Path) -> None:
    """Remove the temp files of earlier writes to ``path`` whose process is gone (killed mid-write: SIGKILL, the
    OOM killer, a power cut); a live process's (this one's included) are left alone. Only exact matches of
    :func:`_temp_pattern` are touched, so no other file of the folder can be taken for one."""
    pattern = _temp_pattern(path)
    prefix = f".{path.name}."
    try:
        entries = [e.name for e in os.scandir(path.parent) if e.name.startswith(prefix) and e.name.endswith(".tmp")]
    except OSError:
        return
    for name in entries:
        match = pattern.fullmatch(name)
        if match is None or pid_alive(int(match.group(1))):
            continue
        with contextlib.suppress(FileNotFoundError):  # another writer removed it first
            os.unlink(path.parent / name)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (one of another user counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OverflowError:  # not a pid at all
        return False
    return True


def _short_write_errno(exc: OSError, path: Path) -> OSError | None:
    """NumPy's ``tofile`` (``np.save`` to a real file) reports a full disk as ``OSError("N requested and M
    written")`` without an errno; give it ENOSPC when the file system is indeed (nearly) full."""
    if exc.errno is not None or "requested and" not in str(exc):
        return None
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return None
    if st.f_bavail * st.f_frsize >= _FULL_BYTES:
        return None
    return OSError(errno.ENOSPC, f"No space left on device ({exc})", str(path))


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` as an ``OSError`` of the same errno (and subclass) naming ``path``; ``exc`` itself when it has no errno
    or names a folder on the way (``mkdir``)."""
    temp_prefix = os.path.join(str(path.parent), f".{path.name}.")
    named = None if exc.filename is None else str(exc.filename)
    if exc.errno is None or (named is not None and named != str(path) and not named.startswith(temp_prefix)):
        return exc
    return OSError(exc.errno, exc.strerror or str(exc), str(path))  # OSError(errno, ...) picks the subclass


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path | str, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, payload: Any) -> Path:
    """Write ``payload`` as indented JSON (with a final newline) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def append_text(path: Path | str, text: str) -> None:
    """Append ``text`` (UTF-8) to ``path`` (created if missing) in one ``write``; if it fails (a full disk) the file
    is cut back to its previous length, so a JSON-lines log never ends in half a record.

    Raises:
        OSError: naming ``path``.
    """
    path = Path(path)
    data = memoryview(text.encode("utf-8"))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise _naming(exc, path) from exc
    try:
        start = os.fstat(fd).st_size
        try:
            while data:
                data = data[os.write(fd, data):]
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise _naming(exc, path) from exc
    finally:
        os.close(fd)


LOCK_FILE = ".lock"


class LockHeldError(InputError):
    """Another live process holds the lock of a run directory (the message names the folder and its pid)."""


class RunLock:
    """The exclusive lock of one folder, ``folder/.lock``; get it through :func:`hold_lock`.

    ``fcntl.flock`` (advisory, whole file, non-blocking): it belongs to the open file, so the kernel releases it
    when the holding process exits or is killed (SIGKILL included; forked children such as DataLoader workers
    share it until they exit too, which they do with their parent). A stale ``.lock`` file is therefore harmless:
    what counts is whether a live process holds it. The holder writes its pid into the file for the refusal
    message; that write happens in place (replacing the file would create a new, unlocked inode) and is the one
    write of the project that does not go through :func:`atomic_write`. Re-entrant within a process.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None
        self._depth = 0

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock (or count one more hold of it).

        Raises:
            LockHeldError: another process holds it.
            OSError: the folder is missing, read-only or not writable (naming the lock file).
        """
        if self._fd is None:
            self._fd = _open_locked(self.folder, self.path)
        self._depth += 1
        return self

    def release(self) -> None:
        """Drop one hold; the last one unlocks and closes the file (which stays, see the class docstring)."""
        if self._fd is None:
            return
        self._depth -= 1
        if self._depth <= 0:
            os.close(self._fd)  # closing the last descriptor of the open file releases the flock
            self._fd, self._depth = None, 0
            _HELD.pop(os.path.realpath(self.folder), None)

    def __enter__(self) -> RunLock:  # noqa: PYI034 - RunLock is final; typing.Self needs Python 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"RunLock({str(self.folder)!r}, held={self.held})"


_HELD: dict[str, RunLock] = {}


def hold_lock(folder: Path | str) -> RunLock:
    """Hold the lock of ``folder`` (which must exist) for this process, and return it.

    ``with hold_lock(run_dir): ...`` releases it at the end of the block; a lock that is simply kept is held until
    the process ends. Taking it again in the same process (the pipeline, then a stage it calls) just counts.

    Raises:
        LockHeldError: another process holds it: ``run directory D is in use by process P (lock D/.lock) ...``.
        OSError: the folder is missing, read-only or not writable (naming the lock file).
    """
    key = os.path.realpath(folder)
    lock = _HELD.get(key)
    if lock is None:
        lock = RunLock(Path(folder))
    lock.acquire()
    _HELD[key] = lock
    return lock


def _open_locked(folder: Path, path: Path) -> int:
    import fcntl  # POSIX only; imported here so the module (hashes, atomic writes) still imports elsewhere

    for _ in range(20):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # O_CLOEXEC by default (PEP 446)
        except OSError as exc:
            raise _naming(exc, path) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise LockHeldError(f"run directory {folder} is in use by process {holder} (lock {path}); wait for it "
                                "to finish, or choose another --name") from None
        except BaseException:
            os.close(fd)
            raise
        try:  # removed (or replaced) between open and flock: that lock guards nothing, take the new file's
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {time.time():.0f}\n".encode(), 0)
            except OSError as exc:
                os.close(fd)
                raise _naming(exc, path) from exc
            return fd
        os.close(fd)
    raise OSError(f"{path} keeps being replaced while it is being locked")


def _holder(fd: int) -> str:
    """The holder's ``pid`` (and host) as its lock file says; it writes them just after locking, so wait briefly."""
    for _ in range(50):
        words = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
        if words:
            return words[0] + (f" on {words[1]}" if len(words) > 1 and words[1] != socket.gethostname() else "")
        time.sleep(0.01)
    return "(pid not recorded yet)"
