"""The failures a user can cause, and the one mapping from such an exception to an exit code and a one-line message.

Stages raise :class:`InputError` (a ``ValueError``) for bad user input or data, naming the file, key or value, and
the command layer :class:`UsageError` (an ``InputError``) for a bad command line or config;
:class:`NonFiniteError` when training state became NaN/inf; ``OSError`` comes from the file system (disk full,
read-only or missing folders). :func:`expected_failure` is what the command line (``commands.errors``)
calls on an exception: an expected failure becomes ``(exit code, one line)``; anything else returns ``None`` and
must keep its traceback, because it is a bug. It never matches a plain ``ValueError``/``TypeError``/``KeyError``:
those are programming errors until a stage turns them into an :class:`InputError` naming what was wrong.

Exit codes: ``0`` ok, ``2`` usage, input or I/O error, ``3`` a check on the run's result failed (a parity gate,
a non-finite training state), ``130`` interrupted.
"""

from __future__ import annotations

import errno
import re

EXIT_OK, EXIT_USAGE, EXIT_GATE, EXIT_INTERRUPTED = 0, 2, 3, 130

# File-system failures a user causes or can fix: a full disk or quota, permissions, read-only mounts, a file where
# a folder belongs or the reverse, a path that does not exist (the message names it, so even a wrong path in the
# code itself is found from the one line).
EXPECTED_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR,
                             errno.EEXIST, errno.EISDIR, errno.ENOENT})


class InputError(ValueError):
    """Bad user input or data (command line, config, dataset, checkpoint, bundle): one line naming it, exit 2."""


class UsageError(InputError):
    """Bad command line, config file or argument (an :class:`InputError` raised by the command layer and the
    settings): one line, exit 2."""


class NonFiniteError(RuntimeError):
    """Training produced NaN/inf (loss or state); nothing non-finite was saved. Exit 3; the message names the step,
    the first non-finite value and the last good checkpoint."""


def one_line(text: str) -> str:
    """``text`` with runs of whitespace (newlines included) collapsed to one space."""
    return re.sub(r"\s+", " ", str(text)).strip()


def describe_os_error(exc: OSError) -> str:
    """``"PATH: No space left on device [ENOSPC]"``, with both paths of a failed rename."""
    where = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None) or "(no file named)"
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    hint = "; free some space and rerun: finished files are kept" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return f"{where}: {exc.strerror or exc} [{code}]{hint}"


def expected_failure(exc: BaseException) -> tuple[int, str] | None:
    """``(exit code, one-line message)`` for an expected failure, ``None`` for a bug (re-raise it).

    Examples:
        InputError("config key 'data.seed': must be >= 0, got -1") -> (2, "error: config key 'data.seed': ...")
        OSError(ENOSPC, ..., "runs/x/config.json")                 -> (2, "error: runs/x/config.json: No space ...")
        NonFiniteError("training state is not finite at step 8 ...") -> (3, "error: training state is not ...")
    """
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted: checkpoints and finished files are kept; rerun the same command to resume"
    if isinstance(exc, NonFiniteError):
        return EXIT_GATE, f"error: {one_line(exc)}"
    if isinstance(exc, InputError):
        return EXIT_USAGE, f"error: {one_line(exc)}"
    if isinstance(exc, OSError) and exc.errno in EXPECTED_ERRNOS:
        return EXIT_USAGE, f"error: {one_line(describe_os_error(exc))}"
    return None
