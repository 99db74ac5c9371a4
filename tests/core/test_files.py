"""core.files under faults: the run-directory lock (a second process is refused, a killed holder blocks nothing),
and writes on a full or read-only disk (one OSError naming the file, nothing half-written left)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from edge_encoder.core.errors import expected_failure
from edge_encoder.core.files import (
    LockHeldError,
    append_text,
    atomic_write,
    atomic_write_bytes,
    hold_lock,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _holder(folder: Path) -> subprocess.Popen:
    """A child process that takes the lock of ``folder``, says so, and sleeps."""
    code = (f"from edge_encoder.core.files import hold_lock; import time; hold_lock({str(folder)!r}); "
            "print('locked', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_is_refused_naming_the_folder_and_the_holder(tmp_path: Path) -> None:
    proc = _holder(tmp_path)
    try:
        with pytest.raises(LockHeldError, match=rf"run directory {tmp_path} is in use by process {proc.pid} "):
            hold_lock(tmp_path)
        assert expected_failure(LockHeldError("x")) == (2, "error: x")
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_holder_leaves_nothing_stuck(tmp_path: Path) -> None:
    proc = _holder(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / ".lock").is_file()  # the stale file stays; only a live holder counts
    with hold_lock(tmp_path) as lock:
        assert lock.held and (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())


def test_the_lock_is_reentrant_and_released_at_the_last_hold(tmp_path: Path) -> None:
    outer = hold_lock(tmp_path)
    inner = hold_lock(tmp_path)  # the pipeline, then a stage it calls
    assert inner is outer
    inner.release()
    assert outer.held
    outer.release()
    assert not outer.held
    proc = _holder(tmp_path)  # free for another process now
    proc.kill()
    proc.wait()


def test_a_full_disk_names_the_file_and_leaves_no_temp_file(small_tmpfs: Callable[..., Path]) -> None:
    disk = small_tmpfs(size="64k")
    (disk / "keep.bin").write_bytes(b"old")
    with pytest.raises(OSError) as info:
        atomic_write_bytes(disk / "keep.bin", b"x" * 200_000)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(disk / "keep.bin")
    assert sorted(p.name for p in disk.iterdir()) == ["keep.bin"] and (disk / "keep.bin").read_bytes() == b"old"
    code, message = expected_failure(info.value)  # type: ignore[misc]
    assert code == 2 and message.startswith(f"error: {disk / 'keep.bin'}: No space left on device [ENOSPC]")


def test_a_failed_append_leaves_no_half_line(small_tmpfs: Callable[..., Path]) -> None:
    disk = small_tmpfs(size="64k")
    log = disk / "log.jsonl"
    append_text(log, '{"step": 1}\n')
    atomic_write_bytes(disk / "filler", b"\0" * (64 * 1024 - 4096 - 64))  # leave less than the next record
    with pytest.raises(OSError) as info:
        append_text(log, '{"step": 2, "pad": "' + "x" * 20_000 + '"}\n')
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(log)
    assert log.read_text() == '{"step": 1}\n'


def test_a_read_only_folder_names_the_file(small_tmpfs: Callable[..., Path]) -> None:
    disk = small_tmpfs(read_only=True)
    with pytest.raises(OSError) as info:
        atomic_write(disk / "config.json", lambda f: f.write(b"{}"))
    assert info.value.errno == errno.EROFS and info.value.filename == str(disk / "config.json")
    with pytest.raises(OSError) as info:
        hold_lock(disk)
    assert info.value.errno == errno.EROFS and info.value.filename == str(disk / ".lock")
    assert expected_failure(info.value)[0] == 2  # type: ignore[index]


def test_bugs_are_not_expected_failures() -> None:
    for exc in (ValueError("x"), TypeError("x"), KeyError("x"), OSError(errno.EBADF, "bad fd"), RuntimeError()):
        assert expected_failure(exc) is None



def test_atomic_write_gives_files_the_ordinary_mode(tmp_path) -> None:
    """mkstemp's 0600 must not leak into the files users copy to devices or share (bundle, report, config)."""
    import stat

    from edge_encoder.core import files

    path = files.atomic_write_text(tmp_path / "report.json", "{}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~files._UMASK
