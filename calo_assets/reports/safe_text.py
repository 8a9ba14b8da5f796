"""Log text made harmless for spreadsheets: no formula injection, no characters Excel refuses.

Log fields are written by whoever created the transaction; opened in Excel or
LibreOffice, a value such as `=HYPERLINK(...)` must stay text. In the workbook
such a value (also `_x003D_...`, which Excel decodes to `=`, and an error value
such as `#N/A`) is written as a string cell with the quote-prefix style; in CSV
(which has no cell types) it gets a leading `'`. Characters that XML 1.0, and so
the xlsx format, cannot hold (C0 controls other than tab, line feed and carriage
return; U+FFFE and U+FFFF) become visible `\\xNN` / `\\uNNNN` escapes, so the row
is still written and nothing is silently dropped. Numbers are never touched.
"""

from __future__ import annotations

import re

import polars as pl

#: First characters that make Excel, LibreOffice or Sheets read a value as a formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: Texts a spreadsheet shows as an error value: written as text with the quote prefix, like formulas.
ERROR_CODES = ("#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A")
#: The longest text an xlsx cell holds.
MAX_CELL_CHARS = 32_767
TRUNCATED = " …[cut: longer than an Excel cell holds]"

_CONTROLS = [chr(c) for c in (*range(9), 11, 12, *range(14, 32))]
#: Characters XML 1.0 refuses besides the controls; CSV holds them, so only the workbook escapes them.
_NONCHARACTERS = ["\ufffe", "\uffff"]


def _visible(ch: str) -> str:
    return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"


#: What a workbook writes for each character XML 1.0 cannot hold.
EXCEL_ESCAPES = {c: _visible(c) for c in _CONTROLS + _NONCHARACTERS}
#: A text escaped by EXCEL_ESCAPES grows at most this many times its UTF-8 bytes (a control: 1 byte, 4 chars).
EXCEL_GROWTH = 4
_CONTROL_RE = re.compile("[" + "".join(_CONTROLS) + "]")
# Lone surrogates reach a Python str from undecodable file names; Polars text cannot hold them.
_XLSX_REFUSED_RE = re.compile("[" + "".join(EXCEL_ESCAPES) + "\ud800-\udfff]")
_FORMULA_RE = "^[" + "".join("\\" + c if c in "-^]\\" else c for c in FORMULA_START) + "]"
#: Excel reads `_xHHHH_` in a cell's text as the character HHHH: a formula start written so is quoted too.
_ENCODED_FORMULA_RE = "^_x00(?:3[dD]|2[bBdD]|40|09|0[dD])_"
_EXCEL_QUOTE_RE = re.compile(f"{_FORMULA_RE}|{_ENCODED_FORMULA_RE}")


def escape_controls(text: str) -> str:
    """Control characters a spreadsheet refuses, written as `\\xNN`."""
    return _CONTROL_RE.sub(lambda m: _visible(m.group()), text)


def looks_like_formula(text: str) -> bool:
    return text.startswith(FORMULA_START)


def for_excel(text: str) -> tuple[str, bool]:
    """(text safe for a cell, whether the cell needs the quote prefix to stay text)."""
    text = _XLSX_REFUSED_RE.sub(lambda m: _visible(m.group()), text)
    if len(text) > MAX_CELL_CHARS:
        text = text[: MAX_CELL_CHARS - len(TRUNCATED)] + TRUNCATED
    return text, bool(_EXCEL_QUOTE_RE.match(text)) or text in ERROR_CODES


def excel_expr(column: str) -> pl.Expr:
    """The text of `for_excel` as a Polars expression."""
    text = pl.col(column).str.replace_many(EXCEL_ESCAPES)
    return (pl.when(text.str.len_chars() > MAX_CELL_CHARS)
            .then(text.str.slice(0, MAX_CELL_CHARS - len(TRUNCATED)) + pl.lit(TRUNCATED)).otherwise(text))


def needs_quote_expr(column: str) -> pl.Expr:
    """Whether `for_excel` asks for the quote prefix, from the text as logged: escaping and cutting keep
    the first character of a formula and never make one (an escape starts with a backslash)."""
    return pl.col(column).str.contains(_EXCEL_QUOTE_RE.pattern) | pl.col(column).is_in(ERROR_CODES)


def for_csv(text: str) -> str:
    """The text with a leading `'` when a spreadsheet would read it as a formula."""
    text = escape_controls(text)
    return "'" + text if looks_like_formula(text) else text


def csv_expr(column: str) -> pl.Expr:
    """`for_csv` as a Polars expression, so a million-row export stays vectorised."""
    escaped = pl.col(column).str.replace_many({c: _visible(c) for c in _CONTROLS})
    return pl.when(escaped.str.contains(_FORMULA_RE)).then(pl.lit("'") + escaped).otherwise(escaped).alias(column)
