"""The probe harness: a sandbox per case, the real command line in a child process, file snapshots, and the verdicts.

A probe replays one fault or bad input of issue 12 as a careless or hostile user would, with the tiny test config
(``tests/pipeline/tiny.toml``), and classifies what happened:

- ``clear error``: exit 2/3/130 with one ``error:``/``interrupted:`` line (the last on stderr), naming what the case
  says it must (file, key, step), and no traceback;
- ``correct``: the behaviour the issue asks for (a remap with a warning, a resume from the older checkpoint...);
- ``traceback``: a Python traceback on stderr, or an exception of an unexpected type from a library call;
- ``silent wrong``: exit 0 (or a returned value) although the result is wrong, or a check of the result failed;
- ``data lost``: a file that existed before is gone or changed when it should not be;
- ``outside``: something outside the run directory or bundle was written (a sandbox listing before and after) or
  read (a sentinel file's access time, which a relatime mount updates when atime < mtime; Python-level opens
  through an audit hook);
- ``other``: a timeout, a wrong exit code, or an error line that does not name what it must.

``skipped`` is not a verdict: the case could not be set up here (e.g. mounting a tmpfs needs root).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TINY = PROJECT_ROOT / "tests" / "pipeline" / "tiny.toml"
RUN_NAME = "probe"
# The tiny config made cheaper where the probes do not look: one exported variant, no linear probe or index sweep.
FAST = ("--set", "export.variants=['fp32']", "--set", "evaluate.index_benchmark=false",
        "--set", "evaluate.linear_probe=false", "--set", "train.knn_every_epochs=0")
VERDICTS = ("clear error", "correct", "traceback", "silent wrong", "data lost", "outside", "other")
GOOD = ("clear error", "correct")
FAULT_EXIT_CODES = (2, 3, 130)


class Skip(Exception):
    """The case cannot be set up on this machine (the message says why)."""


@dataclass
class Outcome:
    verdict: str  # one of VERDICTS, or "skipped"
    detail: str = ""
    seconds: float = 0.0

    def __post_init__(self) -> None:
        assert self.verdict in VERDICTS + ("skipped",), self.verdict


@dataclass
class Result:
    """A finished child process: exit code (``None`` on timeout), stdout, stderr."""

    rc: int | None
    out: str
    err: str

    @property
    def last_line(self) -> str:
        lines = [line for line in self.err.strip().splitlines() if line.strip()]
        return lines[-1] if lines else ""


@dataclass(frozen=True)
class Case:
    """One probe. ``run(probe) -> Outcome``; ``expect`` is the verdict the fixed code gives."""

    name: str
    defect: str
    what: str
    run: Callable[[Probe], Outcome]
    expect: str = "clear error"
    slow: bool = False
    also_fine: tuple[str, ...] = ()  # other verdicts that meet the issue (e.g. refused up front, or handled)

    @property
    def accepted(self) -> tuple[str, ...]:
        return (self.expect, *self.also_fine)


def env_for_children() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "2")
    return env


class Probe:
    """One case's sandbox (``root``): inputs are made there, runs go to ``root/runs``, and nothing else may change."""

    def __init__(self, root: Path, finished_run: Callable[[], Path]) -> None:
        self.root = root
        self.runs = root / "runs"
        self.run_dir = self.runs / RUN_NAME
        self._finished_run = finished_run
        self._mounts: list[Path] = []
        root.mkdir(parents=True, exist_ok=True)

    # -------------------------------------------------------------------------------------- command line
    def command(self, subcommand: str, *args: str, run_args: bool = True, fast: bool = True) -> list[str]:
        """``python -m edge_encoder.cli SUBCOMMAND ...``; with ``run_args`` the tiny config, sandbox runs dir, name
        and CPU first, so that the case's own ``--set`` overrides (which come later) win."""
        argv = [sys.executable, "-m", "edge_encoder.cli", subcommand]
        if run_args:
            argv += ["--config", str(TINY), "--runs-dir", str(self.runs), "--name", RUN_NAME, "--device", "cpu",
                     "--no-progress", *(FAST if fast else ())]
        return argv + list(args)

    def cli(self, *args: str, timeout: float = 900, **kwargs: Any) -> Result:
        try:
            done = subprocess.run(self.command(*args, **kwargs), cwd=self.root, capture_output=True, text=True,
                                  timeout=timeout, env=env_for_children(), check=False)
        except subprocess.TimeoutExpired as exc:
            return Result(None, _text(exc.stdout), _text(exc.stderr))
        return Result(done.returncode, done.stdout, done.stderr)

    def start(self, *args: str, **kwargs: Any) -> subprocess.Popen:
        # SIGINT back to its default in the child: a probe started from a background shell job inherits it ignored,
        # and Python then never turns Ctrl-C into KeyboardInterrupt.
        return subprocess.Popen(self.command(*args, **kwargs), cwd=self.root, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env_for_children(),
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509

    def python(self, code: str, timeout: float = 300) -> Result:
        """Run ``code`` in a child Python (the library as a user script calls it)."""
        try:
            done = subprocess.run([sys.executable, "-c", code], cwd=self.root, capture_output=True, text=True,
                                  timeout=timeout, env=env_for_children(), check=False)
        except subprocess.TimeoutExpired as exc:
            return Result(None, _text(exc.stdout), _text(exc.stderr))
        return Result(done.returncode, done.stdout, done.stderr)

    # -------------------------------------------------------------------------------------- fixtures
    def copy_finished_run(self) -> Path:
        """A copy of one finished tiny run (trained, exported, evaluated) as ``runs/probe``."""
        shutil.copytree(self._finished_run(), self.run_dir, symlinks=True)
        return self.run_dir

    def tmpfs(self, target: Path, size: str = "256k", read_only: bool = False) -> Path:
        """Mount a fresh tmpfs on ``target`` (created); ``Skip`` where that is not allowed."""
        if os.geteuid() != 0 or shutil.which("mount") is None:
            raise Skip("mounting a tmpfs needs root and mount(8)")
        target.mkdir(parents=True, exist_ok=True)
        options = f"size={size}" + (",ro" if read_only else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:
            raise Skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
        self._mounts.append(target)
        return target

    def close(self) -> None:
        for target in reversed(self._mounts):
            subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)
        self._mounts.clear()


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


# ------------------------------------------------------------------------------------------------ file state


def snapshot(folder: Path, skip: Iterable[Path] = ()) -> dict[str, tuple[int, str]]:
    """``{relative path: (size, sha256)}`` of every file under ``folder`` (not following links), minus ``skip``."""
    skipped = [Path(p) for p in skip]
    state: dict[str, tuple[int, str]] = {}
    if not folder.exists():
        return state
    for path in sorted(folder.rglob("*")):
        if any(path == s or s in path.parents for s in skipped) or not path.is_file() or path.is_symlink():
            continue
        with contextlib.suppress(OSError):
            state[str(path.relative_to(folder))] = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return state


def changes(before: dict[str, tuple[int, str]], after: dict[str, tuple[int, str]]) -> tuple[list[str], list[str], list[str]]:
    """``(gone, changed, new)`` relative paths."""
    gone = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    new = sorted(set(after) - set(before))
    return gone, changed, new


@contextlib.contextmanager
def watched(probe: Probe, keep: Iterable[str] = (), allow_in_run: bool = True) -> Iterator[dict[str, Any]]:
    """Snapshot the sandbox around a block. Afterwards ``box["lost"]`` lists run-directory files named in ``keep``
    (relative to the run dir; a folder keeps all its files) that are gone or changed, and ``box["outside"]`` every
    file outside the run directory that appeared, changed or vanished."""
    run_before = snapshot(probe.run_dir)
    outside_before = snapshot(probe.root, skip=[probe.run_dir])
    box: dict[str, Any] = {}
    yield box
    run_after = snapshot(probe.run_dir)
    gone, changed, _ = changes(run_before, run_after)
    wanted = list(keep)
    box["lost"] = [p for p in gone + changed if any(p == k or p.startswith(k.rstrip("/") + "/") for k in wanted)]
    o_gone, o_changed, o_new = changes(outside_before, snapshot(probe.root, skip=[probe.run_dir]))
    box["outside"] = [f"-{p}" for p in o_gone] + [f"~{p}" for p in o_changed] + [f"+{p}" for p in o_new]
    if not allow_in_run and (run_after != run_before):
        box["outside"] += [f"run dir changed: {changes(run_before, run_after)}"]


def sentinel(path: Path, data: bytes) -> Path:
    """A file whose next read is visible: atime set before mtime, so a relatime mount updates it on read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    now = time.time()
    os.utime(path, (now - 86400, now))
    return path


def was_read(path: Path) -> bool:
    st = path.stat()
    return st.st_atime >= st.st_mtime - 1


# ------------------------------------------------------------------------------------------------ verdicts


def cli_verdict(result: Result, *, mentions: Iterable[str] = (), codes: Iterable[int] = FAULT_EXIT_CODES) -> Outcome:
    """The verdict on a command that must fail cleanly: one ``error:``/``interrupted:`` line naming ``mentions``."""
    if "Traceback (most recent call last)" in result.err:
        tail = [line for line in result.err.strip().splitlines() if line.strip()][-1:]
        return Outcome("traceback", tail[0][:200] if tail else "")
    if result.rc is None:
        return Outcome("other", "timed out")
    if result.rc == 0:
        return Outcome("silent wrong", "exit 0: the fault or bad input went unnoticed")
    lines = [line for line in result.err.splitlines() if line.startswith(("error:", "interrupted"))]
    last = result.last_line
    if result.rc not in tuple(codes):
        return Outcome("other", f"exit {result.rc}: {last[:200]}")
    if len(lines) != 1 or last != lines[0]:
        return Outcome("other", f"exit {result.rc}, {len(lines)} error lines; last: {last[:200]}")
    missing = [m for m in mentions if m not in last]
    if missing:
        return Outcome("other", f"exit {result.rc}, message does not name {missing}: {last[:200]}")
    return Outcome("clear error", f"exit {result.rc}: {last[:240]}")


def library_verdict(call: Callable[[], Any], *, mentions: Iterable[str] = (),
                    check: Callable[[Any], Outcome] | None = None) -> Outcome:
    """The verdict on a library call that must raise a one-line ``ValueError``/``OSError`` naming ``mentions``
    (or, with ``check``, whose returned value ``check`` judges)."""
    try:
        value = call()
    except (ValueError, OSError) as exc:
        message = str(exc)
        missing = [m for m in mentions if m not in message]
        if "\n" in message.strip() or missing:
            return Outcome("other", f"{type(exc).__name__} not naming {missing} or not one line: {message[:200]}")
        return Outcome("clear error", f"{type(exc).__name__}: {message[:240]}")
    except Exception as exc:  # noqa: BLE001 - an exception type a caller cannot expect: a user's traceback
        return Outcome("traceback", f"{type(exc).__name__}: {str(exc)[:200]}")
    if check is None:
        return Outcome("silent wrong", f"returned {type(value).__name__} without an error")
    return check(value)


def worst(primary: Outcome, box: dict[str, Any] | None = None) -> Outcome:
    """``primary``, unless the sandbox shows data lost or files touched outside (those rank above it)."""
    if box:
        if box.get("lost"):
            return Outcome("data lost", f"{box['lost'][:5]} gone or changed ({primary.verdict}: {primary.detail})")
        if box.get("outside"):
            return Outcome("outside", f"outside the run dir: {box['outside'][:5]} ({primary.verdict})")
    return primary


def wait_for(predicate: Callable[[], bool], proc: subprocess.Popen | None = None, timeout: float = 600,
             interval: float = 0.05) -> bool:
    """Poll ``predicate`` until true; ``False`` on timeout or when ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return predicate()
        time.sleep(interval)
    return False


@dataclass
class Table:
    """The probe table: one row per case and the totals the issue's acceptance counts."""

    rows: list[tuple[Case, Outcome]] = field(default_factory=list)

    def add(self, case: Case, outcome: Outcome) -> None:
        self.rows.append((case, outcome))

    def totals(self) -> dict[str, int]:
        tried = [o for _, o in self.rows if o.verdict != "skipped"]
        counts = {"tried": len(tried), **{v: sum(o.verdict == v for o in tried) for v in VERDICTS}}
        counts["skipped"] = len(self.rows) - len(tried)
        counts["as expected"] = sum(o.verdict in c.accepted for c, o in self.rows if o.verdict != "skipped")
        return counts

    def render(self, details: bool = True) -> str:
        lines = []
        if details:
            lines += ["| defect | case | expected | verdict | s | detail |", "|---|---|---|---|---|---|"]
            for case, o in self.rows:
                mark = "" if o.verdict in (*case.accepted, "skipped") else " **!**"
                detail = o.detail.replace("|", "/").replace("\n", " ")[:160]
                lines.append(f"| {case.defect} | {case.name} | {case.expect} | {o.verdict}{mark} | {o.seconds:.0f} "
                             f"| {detail} |")
            lines.append("")
        t = self.totals()
        lines += ["| tried | clear error | correct | traceback | silent wrong | data lost | outside | other | skipped |",
                  "|---|---|---|---|---|---|---|---|---|",
                  (f"| {t['tried']} | {t['clear error']} | {t['correct']} | {t['traceback']} | {t['silent wrong']} | "
                   f"{t['data lost']} | {t['outside']} | {t['other']} | {t['skipped']} |")]
        return "\n".join(lines)


def run_case(case: Case, root: Path, finished_run: Callable[[], Path]) -> Outcome:
    """Run one case in the fresh sandbox ``root``; a harness failure becomes ``other`` (never a crash)."""
    probe = Probe(root, finished_run)
    started = time.perf_counter()
    try:
        outcome = case.run(probe)
    except Skip as exc:
        outcome = Outcome("skipped", str(exc))
    except Exception as exc:  # noqa: BLE001 - the probe itself broke: report it, keep going
        outcome = Outcome("other", f"probe failed: {type(exc).__name__}: {str(exc)[:200]}")
    finally:
        probe.close()
    outcome.seconds = time.perf_counter() - started
    return outcome


def build_finished_run(folder: Path) -> Path:
    """One tiny run (the FAST settings), trained, exported and evaluated, under ``folder/runs/probe``."""
    run_dir = folder / "runs" / RUN_NAME
    if (run_dir / "report.json").is_file():
        return run_dir
    probe = Probe(folder, lambda: run_dir)
    result = probe.cli("run", timeout=1500)
    if result.rc != 0 or not (run_dir / "report.json").is_file():
        raise RuntimeError(f"the finished run for the probes failed (exit {result.rc}): {result.err[-1500:]}")
    return run_dir
