"""A few rows of a written dataset as a Markdown table, for the export's materialization in the UI.

Read from the staged file the destination received (after filters and transformations), so the preview
shows what was exported, anonymized values as written, never the raw records.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

PREVIEW_ROWS = 5
CELL_CHARS = 64  # content fields run to kilobytes: each cell is cut to this (a SHA-256 hex id still fits)


def cell(value: object, limit: int = CELL_CHARS) -> str:
    """One table cell: empty for null, one line, pipes escaped, at most `limit` characters (then `…`)."""
    if value is None:
        return ""
    text = " ".join(str(value).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def markdown_table(frame: pl.DataFrame, limit: int = CELL_CHARS) -> str:
    names = frame.columns
    lines = ["| " + " | ".join(cell(n, limit) for n in names) + " |", "|" + "---|" * len(names)]
    for row in frame.iter_rows():
        lines.append("| " + " | ".join(cell(v, limit) for v in row) + " |")
    return "\n".join(lines)


def preview(dataset: str, parquet_path: Path, rows: int = PREVIEW_ROWS) -> str:
    """The first `rows` rows of a staged dataset (its Parquet copy) as Markdown, under a line naming it."""
    frame = pl.scan_parquet(parquet_path).head(rows).collect()
    if frame.height == 0:
        return f"`{dataset}`: no rows."
    return f"First {frame.height} row(s) of `{dataset}` as written (cells cut to {CELL_CHARS} characters):\n\n" + (
        markdown_table(frame)
    )
