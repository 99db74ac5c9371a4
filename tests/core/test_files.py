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


# ---------------------------------------------------------------------------------------------- issue 18
# (9) a write that returned survives a power loss: the folder is fsynced after the rename; a writer killed mid-write
# leaves .NAME.<pid>.<random>.tmp, which the next write to the same file removes once that pid is gone.

_SLOW_WRITER = """
import sys, time
from edge_encoder.core.files import atomic_write

def write(f):
    chunk = b"x" * (1 << 20)
    for _ in range(10_000):  # up to 10 GB: killed long before
        f.write(chunk)
        f.flush()
        print("writing", flush=True)
        time.sleep(0.01)

atomic_write(sys.argv[1], write)
"""


def _killed_writer(target: Path) -> tuple[int, list[Path]]:
    """A child writing ``target`` through atomic_write, SIGKILLed once a few MB are written: ``(pid, temp files)``."""
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(target)], cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for _ in range(3):
        assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.pid, sorted(target.parent.glob(f".{target.name}.*.tmp"))


def test_a_killed_writer_leaves_a_temp_file_that_the_next_write_removes(tmp_path: Path) -> None:
    target = tmp_path / "big.bin"
    target.write_bytes(b"old")
    pid, temps = _killed_writer(target)
    assert len(temps) == 1 and temps[0].name.startswith(f".big.bin.{pid}.")  # the writer's pid is in the name
    assert temps[0].stat().st_size >= 3 << 20 and target.read_bytes() == b"old"  # the old file is whole
    other = tmp_path / ".other.bin.999999999.abcdefgh.tmp"  # another target's leftover: not this write's business
    other.write_bytes(b"?")
    user = tmp_path / ".big.bin.notes.tmp"  # a user's file that merely looks alike
    user.write_bytes(b"mine")
    atomic_write_bytes(target, b"new")  # the rerun
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["big.bin", other.name, user.name])
    assert user.read_bytes() == b"mine"


def test_a_live_writers_temp_file_is_left_alone(tmp_path: Path) -> None:
    from edge_encoder.core.files import pid_alive

    target = tmp_path / "report.json"
    live = tmp_path / f".report.json.{os.getppid()}.abcdefgh.tmp"  # the parent process: alive
    dead = tmp_path / ".report.json.999999999.abcdefgh.tmp"  # beyond pid_max: no such process
    live.write_bytes(b"in progress")
    dead.write_bytes(b"left behind")
    assert pid_alive(os.getppid()) and not pid_alive(999_999_999)
    atomic_write_bytes(target, b"{}")
    assert live.read_bytes() == b"in progress" and not dead.exists()


def test_the_folder_is_fsynced_after_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import stat

    events: list[tuple[str, object]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        events.append(("fsync-dir" if stat.S_ISDIR(st.st_mode) else "fsync-file", (st.st_dev, st.st_ino)))
        real_fsync(fd)

    def replace(src: object, dst: object) -> None:
        events.append(("replace", None))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write_bytes(tmp_path / "sub" / "config.json", b"{}")
    folder = (tmp_path / "sub").stat()
    assert [e[0] for e in events] == ["fsync-file", "replace", "fsync-dir"]
    assert events[-1][1] == (folder.st_dev, folder.st_ino)


def test_a_folder_that_cannot_be_fsynced_is_no_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import stat

    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")  # what some file systems answer for a folder
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert atomic_write_bytes(tmp_path / "a.bin", b"1").read_bytes() == b"1"


# (4) files and folders the project writes get the ordinary mode, also under an explicit umask of 022

_MODES = """
import os, stat, sys
from pathlib import Path
from edge_encoder.core.files import atomic_write_text, make_temp_dir

root = Path(sys.argv[1])
folder = make_temp_dir(".bundle.building-", root)
atomic_write_text(folder / "manifest.json", "{}")
print(oct(stat.S_IMODE(folder.stat().st_mode)), oct(stat.S_IMODE((folder / "manifest.json").stat().st_mode)))
"""


def test_files_and_folders_get_the_ordinary_mode_under_umask_022(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _MODES, str(tmp_path)], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, check=False, preexec_fn=lambda: os.umask(0o022))  # noqa: PLW1509
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0o755", "0o644"]
