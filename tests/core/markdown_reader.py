"""A reader for the tables ``core.markdown`` writes: splits a row back into its cells as a GitHub-flavoured Markdown
renderer does, so tests can count a row's columns and compare what a reader sees with what was written. The product
only writes tables; reading them back is the tests' concern."""

from __future__ import annotations

PUNCTUATION = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")  # what a backslash escapes in CommonMark


def split_md_row(line: str) -> list[str]:
    """The cells of one table row as a GFM reader splits it: on unescaped ``|``, a backslash before ASCII punctuation
    dropped (``\\|`` -> ``|``, ``\\\\`` -> ``\\``), any other kept (``\\n`` stays ``\\n``); cells stripped.

    Raises:
        ValueError: ``line`` does not start and end with ``|``.
    """
    text = line.strip()
    if not (text.startswith("|") and text.endswith("|")) or len(text) < 2:
        raise ValueError(f"not a Markdown table row: {line!r}")
    cells, current, i = [], [], 1
    while i < len(text) - 1:
        char = text[i]
        if char == "\\" and i + 1 < len(text) - 1 and text[i + 1] in PUNCTUATION:  # an escape, as CommonMark
            current.append(text[i + 1])
            i += 2
            continue
        if char == "|":
            cells.append("".join(current).strip())
            current = []
        else:
            current.append(char)
        i += 1
    cells.append("".join(current).strip())
    return cells
