"""Log text made harmless for spreadsheets: no formula injection, no characters Excel refuses.

Log fields are written by whoever created the transaction; opened in Excel or
LibreOffice, a value such as `=HYPERLINK(...)` must stay text. In the workbook
such a value is written as a string cell with the quote-prefix style; in CSV
(which has no cell types) it gets a leading `'`. Control characters that the
xlsx format cannot hold become visible `\\xNN` escapes, so the row is still
written and nothing is silently dropped. Numbers are never touched.
"""

from __future__ import annotations

import polars as pl
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

#: First characters that make Excel, LibreOffice or Sheets read a value as a formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: The longest text an xlsx cell holds.
MAX_CELL_CHARS = 32_767
TRUNCATED = " …[cut: longer than an Excel cell holds]"

_CONTROLS = [chr(c) for c in range(32) if ILLEGAL_CHARACTERS_RE.match(chr(c))]
_ESCAPES = [f"\\x{ord(c):02x}" for c in _CONTROLS]


def escape_controls(text: str) -> str:
    """Control characters the xlsx format refuses, written as `\\xNN`."""
    return ILLEGAL_CHARACTERS_RE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def looks_like_formula(text: str) -> bool:
    return text.startswith(FORMULA_START)


def for_excel(text: str) -> tuple[str, bool]:
    """(text safe for a cell, whether the cell needs the quote prefix to stay text)."""
    text = escape_controls(text)
    if len(text) > MAX_CELL_CHARS:
        text = text[: MAX_CELL_CHARS - len(TRUNCATED)] + TRUNCATED
    return text, looks_like_formula(text)


def for_csv(text: str) -> str:
    """The text with a leading `'` when a spreadsheet would read it as a formula."""
    text = escape_controls(text)
    return "'" + text if looks_like_formula(text) else text


def csv_expr(column: str) -> pl.Expr:
    """`for_csv` as a Polars expression, so a million-row export stays vectorised."""
    escaped = pl.col(column).str.replace_many(_CONTROLS, _ESCAPES)
    formula = escaped.str.contains("^[" + "".join("\\" + c if c in "-^]\\" else c for c in FORMULA_START) + "]")
    return pl.when(formula).then(pl.lit("'") + escaped).otherwise(escaped).alias(column)
