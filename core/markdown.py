"""Markdown tables whose cells hold any text: a class name, a path or an engine name with ``|`` or a line break keeps
its row to the table's column count (``report.md``, ``device_report.md``).

A cell is escaped the way GitHub-flavoured Markdown reads it back: ``\\`` becomes ``\\\\`` and ``|`` becomes ``\\|``
(a renderer shows both as typed), and a line break or other control character, which would end the row, is written
as its Python escape (``\\n``, ``\\r``, ``\\t``, ``\\x1b``...) so the name stays readable and visibly odd.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# Control characters (C0, DEL, C1) and the Unicode line/paragraph separators end or mangle a table row.
_CONTROL = {*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029}
_TRANSLATION = {code: repr(chr(code))[1:-1] for code in _CONTROL} | {ord("\\"): "\\\\", ord("|"): "\\|"}


def md_cell(value: object) -> str:
    """``str(value)`` made safe for one Markdown table cell (module docstring); ordinary text is unchanged."""
    return str(value).translate(_TRANSLATION)


def md_row(cells: Iterable[object]) -> str:
    """``| a | b |`` with every cell escaped by :func:`md_cell`."""
    return "| " + " | ".join(md_cell(c) for c in cells) + " |"


def md_table(header: Sequence[object], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table (header, ``|---|`` rule, rows), every cell escaped: each row keeps the header's columns."""
    return "\n".join([md_row(header), "|" + "|".join("---" for _ in header) + "|", *(md_row(r) for r in rows)])
