"""core.markdown (issue 18, point 5): a cell holding ``|``, a backslash, a line break or another control character
keeps its row to the table's column count, and reads back as written (``|`` and ``\\`` as typed, a line break as
``\\n``)."""

from __future__ import annotations

import pytest
from edge_encoder.core.markdown import md_cell, md_row, md_table

from tests.core.markdown_reader import split_md_row

ODD = ["a|b", "c\nd", "e\r\nf", "g\\", "h\\|i", "tab\there", "esc\x1b[31m", "line\u2028sep", "||", "\\n literal"]


def table_blocks(markdown: str) -> list[list[str]]:
    """The Markdown tables of a document: each a list of its row lines (header, rule, rows)."""
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in markdown.split("\n"):
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def assert_tables_keep_their_columns(markdown: str) -> list[list[list[str]]]:
    """Every row of every table has its header's number of cells; returns each table's rows split into cells
    (header first, the ``|---|`` rule left out)."""
    tables = []
    for block in table_blocks(markdown):
        assert len(block) >= 2 and set(block[1]) <= {"|", "-"}, f"not a table (header + rule): {block[:2]}"
        header = split_md_row(block[0])
        rows = [split_md_row(line) for line in block[2:]]
        for line, cells in zip(block[2:], rows):
            assert len(cells) == len(header), f"{len(cells)} cells under {len(header)} columns: {line!r}"
        tables.append([header, *rows])
    return tables


def shown(name: str) -> str:
    """How a name reads back from a cell: as typed, control characters as their escapes."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in name)


@pytest.mark.parametrize("name", ODD)
def test_an_odd_cell_keeps_the_row_and_reads_back(name: str) -> None:
    table = md_table(["class", "kNN top-1"], [[f"0 {name}", "0.500"], ["1 plain", "1.000"]])
    lines = table.split("\n")
    assert len(lines) == 4  # a line break inside a name never starts a new row
    [[header, *rows]] = assert_tables_keep_their_columns(table)
    assert header == ["class", "kNN top-1"]
    assert rows == [[f"0 {shown(name)}".strip(), "0.500"], ["1 plain", "1.000"]]


def test_ordinary_text_is_unchanged() -> None:
    text = "onnx_fp32 folder:/data/photos (train/ + val/) — Δ kNN top-1 éà 12.5%"
    assert md_cell(text) == text and md_row(["a", 1, None]) == "| a | 1 | None |"


def test_a_gfm_renderer_sees_the_same_cells() -> None:
    markdown = pytest.importorskip("markdown")  # Python-Markdown, where installed: an independent reader
    table = md_table(["class", "value"], [[name, str(i)] for i, name in enumerate(ODD)])
    html = markdown.markdown(table, extensions=["tables"])
    assert html.count("<tr>") == len(ODD) + 1 and html.count("<td>") == 2 * len(ODD)
    assert "<td>a|b</td>" in html and "<td>h\\|i</td>" in html


def test_split_md_row_refuses_what_is_not_a_row() -> None:
    with pytest.raises(ValueError, match="not a Markdown table row"):
        split_md_row("plain text")
