"""The disk-full and read-only tests skip where no tmpfs can be mounted; this makes sure they only skip *there*.

Where a tmpfs can be mounted (root on Linux with mount(8): the dev machine and CI), a broken ``small_tmpfs`` fixture
or probe ``Probe.tmpfs`` helper would otherwise turn every disk-full/read-only test into a quiet skip. Here the same
mount is tried directly; if it works, the helpers must work too, and a skip from them is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest


def _can_mount_tmpfs(where: Path) -> bool:
    """Whether this machine lets the test process mount (and unmount) a tmpfs: root, Linux and mount(8)."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    target = where / "probe_mount"
    target.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(target)], capture_output=True,
                          check=False)
    if done.returncode != 0:
        return False
    subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)
    return True


def test_the_tmpfs_fixture_does_not_skip_where_a_tmpfs_can_be_mounted(
        tmp_path: Path, small_tmpfs: Callable[..., Path]) -> None:
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("no tmpfs can be mounted here (needs root on Linux and mount(8)): the disk-full tests skip too")
    try:
        disk = small_tmpfs(size="64k")
        read_only = small_tmpfs(read_only=True)
    except pytest.skip.Exception as exc:  # the helper gave up although a mount works: its tests would all skip
        pytest.fail(f"small_tmpfs skipped although a tmpfs can be mounted here: {exc}")
    assert os.path.ismount(disk) and os.path.ismount(read_only)
    (disk / "fits").write_bytes(b"x" * 1024)
    with pytest.raises(OSError):  # ENOSPC: the size limit holds, so the disk-full cases really fill a disk
        (disk / "too_big").write_bytes(b"x" * 128 * 1024)
    with pytest.raises(OSError):  # EROFS
        (read_only / "anything").write_bytes(b"x")


def test_the_probe_tmpfs_helper_does_not_skip_where_a_tmpfs_can_be_mounted(tmp_path: Path) -> None:
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("no tmpfs can be mounted here (needs root on Linux and mount(8)): the disk-full probes skip too")
    from tests.probes.harness import Probe, Skip

    probe = Probe(tmp_path / "probe", finished_run=lambda: tmp_path)
    try:
        disk = probe.tmpfs(tmp_path / "disk", size="64k")
    except Skip as exc:
        pytest.fail(f"Probe.tmpfs skipped although a tmpfs can be mounted here: {exc}")
    finally:
        probe.close()
    assert not os.path.ismount(disk)  # close() unmounted it
