"""The xlsx format (SpreadsheetML) written directly: sheets built as text by Polars, streamed into the zip.

A general-purpose writer (openpyxl, XlsxWriter) makes one Python object per cell,
about 25 µs each: most of a run's time on a large export. Here a data sheet is
written a chunk of rows at a time, each column turned into its cells' XML by
Polars string expressions, so the cost per cell is a few hundred nanoseconds and
memory stays bounded by the chunk, whatever the number of rows.

What a cell holds:
- money: the decimal text of the amount rounded half-up (Polars' `half_away_from_zero`,
  which is Python's ROUND_HALF_UP) to the row's currency places, never a binary float;
  formatted with those places;
- date-times: Excel serial numbers (days since 1899-12-30, UTC) with milliseconds;
- booleans: TRUE/FALSE; other numbers as Polars writes them;
- text: an inline string, made safe by `safe_text` (escapes, cut, quote prefix for
  formula-looking text), then XML-escaped (`&`, `<`, `>`, and CR, which an XML reader
  would otherwise turn into a line feed). An empty text is an empty cell, as before.

The workbook's own texts (sheet names, the Summary) take `cell_xml`, the same rules
for one Python value at a time; a test holds the two paths to the same output.
"""

from __future__ import annotations

import codecs
import math
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl

from calo_assets.atomic import new_file
from calo_assets.reports.safe_text import (EXCEL_ESCAPES, EXCEL_GROWTH, MAX_CELL_CHARS, excel_expr, for_excel,
                                           needs_quote_expr)
from calo_assets.reports.zip_stream import ZipStream

MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
#: Rows turned into XML at a time: large enough for Polars to pay off, small enough to bound memory.
CHUNK_ROWS = 8_192
#: Excel's date-time serial of 1970-01-01, and milliseconds per day.
_EPOCH_SERIAL, _DAY_MS = 25_569, 86_400_000
#: Number formats Excel knows by id; others are numbered from 164 in styles.xml.
_BUILTIN_FORMATS = {"0": 1, "0.00": 2}
_XML_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"}
_XML_ESCAPE_TABLE = str.maketrans(_XML_ESCAPES)
_SPACE = " \t\n\r"
_HEAD = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'


def xml_escape(text: str) -> str:
    """Text as XML element content. CR is kept as a character reference: a reader would read a raw one as LF."""
    return text.translate(_XML_ESCAPE_TABLE)


def xml_unescape(text: str) -> str:
    """The inverse of `xml_escape`, for the entities any XML writer may use."""
    return _ENTITY_RE.sub(_entity, text) if "&" in text else text


_ENTITY_RE = re.compile(r"&(#x[0-9A-Fa-f]+|#[0-9]+|amp|lt|gt|quot|apos);")
_NAMED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}


def _entity(m: re.Match) -> str:
    name = m.group(1)
    if name.startswith("#x"):
        return chr(int(name[2:], 16))
    return chr(int(name[1:])) if name.startswith("#") else _NAMED[name]


def column_letter(index: int) -> str:
    """`A` for 1, `Z` for 26, `AA` for 27."""
    letters = ""
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


# -- styles ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Style:
    """A cell format: number format, fill colour (ARGB), font, quote prefix."""

    number_format: str | None = None
    fill: str | None = None
    bold: bool = False
    italic: bool = False
    font_color: str | None = None
    quote: bool = False

    def but(self, **changes) -> Style:
        return Style(**{**self.__dict__, **changes})


PLAIN = Style()


class Styles:
    """The workbook's cell formats, numbered as first used; styles.xml is written once every sheet is."""

    def __init__(self) -> None:
        self._ids: dict[Style, int] = {PLAIN: 0}

    def attr(self, style: Style) -> str:
        """The cell's ` s="N"` attribute (nothing for the default format)."""
        n = self._ids.setdefault(style, len(self._ids))
        return f' s="{n}"' if n else ""

    def xml(self) -> bytes:
        formats: dict[str, int] = {}
        fonts: dict[tuple, int] = {(False, False, None): 0}
        fills: dict[str | None, int] = {None: 0}
        xfs = []
        for style in self._ids:
            fmt = 0
            if style.number_format:
                fmt = _BUILTIN_FORMATS.get(style.number_format) or formats.setdefault(
                    style.number_format, 164 + len(formats))
            font = fonts.setdefault((style.bold, style.italic, style.font_color), len(fonts))
            fill = fills.setdefault(style.fill, len(fills) + 1)  # 1 is the gray125 fill the format requires
            xfs.append(f'<xf numFmtId="{fmt}" fontId="{font}" fillId="{fill if style.fill else 0}" borderId="0" '
                       f'xfId="0" applyNumberFormat="{int(bool(fmt))}" applyFont="{int(bool(font))}" '
                       f'applyFill="{int(bool(style.fill))}"' + (' quotePrefix="1"' if style.quote else "") + "/>")
        font_xml = "".join(
            "<font>" + ("<b/>" if bold else "") + ("<i/>" if italic else "") + '<sz val="11"/>'
            + (f'<color rgb="{colour}"/>' if colour else "") + '<name val="Calibri"/><family val="2"/></font>'
            for bold, italic, colour in fonts)
        fill_xml = '<fill><patternFill patternType="none"/></fill><fill><patternFill patternType="gray125"/></fill>' + \
            "".join(f'<fill><patternFill patternType="solid"><fgColor rgb="{c}"/><bgColor indexed="64"/>'
                    "</patternFill></fill>" for c in fills if c)
        numfmt_xml = "".join(f'<numFmt numFmtId="{n}" formatCode="{xml_escape(code)}"/>' for code, n in formats.items())
        return _HEAD + (
            f'<styleSheet xmlns="{MAIN_NS}">'
            + (f'<numFmts count="{len(formats)}">{numfmt_xml}</numFmts>' if formats else "")
            + f'<fonts count="{len(fonts)}">{font_xml}</fonts><fills count="{len(fills) + 1}">{fill_xml}</fills>'
            '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
            '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
            f'<cellXfs count="{len(xfs)}">{"".join(xfs)}</cellXfs>'
            '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
            "</styleSheet>").encode()


# -- cells, one Python value at a time ------------------------------------------------------------

def number_text(value: Decimal) -> str:
    """A Decimal as the shortest exact decimal text (`8.0000` -> `8`), never through a float."""
    text = f"{value:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def excel_serial(value: datetime) -> str:
    """A naive (UTC) date-time as Excel's serial day number (days since 1899-12-30)."""
    return repr((value - _EXCEL_EPOCH) / _DAY)


_EXCEL_EPOCH, _DAY = datetime(1899, 12, 30), timedelta(days=1)


def cell_xml(ref: str, value, styles: Styles, style: Style = PLAIN) -> str:
    """One cell: text made safe (quote prefix when formula-like), numbers and date-times as numbers."""
    if value is None or value == "":  # left out, unless the row is filled across
        return f'<c r="{ref}"{styles.attr(Style(fill=style.fill))}/>' if style.fill else ""
    if isinstance(value, str):
        text, quote = for_excel(value)
        space = ' xml:space="preserve"' if text != text.strip(_SPACE) else ""
        return (f'<c r="{ref}"{styles.attr(style.but(quote=quote) if quote else style)} t="inlineStr"><is><t{space}>'
                f"{xml_escape(text)}</t></is></c>")
    if isinstance(value, bool):
        return f'<c r="{ref}"{styles.attr(style)} t="b"><v>{int(value)}</v></c>'
    if isinstance(value, datetime):
        return f'<c r="{ref}"{styles.attr(style)}><v>{excel_serial(value)}</v></c>'
    if isinstance(value, Decimal) and value.is_finite():
        return f'<c r="{ref}"{styles.attr(style)}><v>{number_text(value)}</v></c>'
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return f'<c r="{ref}"{styles.attr(style)}><v>{value!r}</v></c>'
    return cell_xml(ref, str(value), styles, style)  # anything else is shown as its text


# -- cells, a column of a frame at a time ---------------------------------------------------------

def kind(dtype: pl.DataType) -> str:
    """How a column is written: money (Decimal), time, text, bool or number."""
    if isinstance(dtype, pl.Decimal):
        return "money"
    if isinstance(dtype, pl.Datetime):
        return "time"
    if dtype == pl.String:
        return "text"
    if dtype == pl.Boolean:
        return "bool"
    return "number"


#: Hidden columns beside a frame's own while its rows are written (names no report column has).
ROW, PLACES, MARK = " row", " places", " mark"


@dataclass
class ColumnFormats:
    """The styles a frame's cells take: time and money formats, the fill of marked rows."""

    time_format: str
    money_format: Callable[[int], str]
    mark_fill: str


def _rest_of_tag(styles: Styles, style: Style, fill: str, tail: str, quote: pl.Expr | None = None) -> pl.Expr:
    """What follows a cell's reference up to its value: the closing quote, the ` s="N"` attribute (the fill
    on marked rows, the quote prefix where `quote` holds), then `tail`; one literal per case, so a cell
    is joined from few pieces."""
    def pick(quoted: bool) -> pl.Expr:
        own = style.but(quote=quoted)
        return pl.when(pl.col(MARK)).then(pl.lit(f'"{styles.attr(own.but(fill=fill))}{tail}')).otherwise(
            pl.lit(f'"{styles.attr(own)}{tail}'))
    return pick(False) if quote is None else pl.when(quote).then(pick(True)).otherwise(pick(False))


def _cell_expr(name: str, letter: str, kind_: str, places: list[int], styles: Styles, formats: ColumnFormats,
               long_text: bool) -> pl.Expr:
    """The XML of one column's cells, null where a cell is left out (an empty cell of a marked row is filled)."""
    col = pl.col(name)
    ref = [pl.lit(f'<c r="{letter}'), pl.col(ROW)]
    fill = formats.mark_fill
    if kind_ == "text":
        if long_text:  # may need the cut, which counts characters after the escapes
            safe = excel_expr(name)
            text = safe.str.replace_many(_XML_ESCAPES)
        else:  # one pass: the escapes of safe_text and of XML at once
            safe, text = col, col.str.replace_many({**EXCEL_ESCAPES, **_XML_ESCAPES})
        padded = safe.str.strip_chars(_SPACE).str.len_bytes() != safe.str.len_bytes()  # Excel trims unless told
        space = pl.when(padded).then(pl.lit(' xml:space="preserve">')).otherwise(pl.lit(">"))
        cell = pl.when(col != "").then(pl.concat_str(
            [*ref, _rest_of_tag(styles, PLAIN, fill, ' t="inlineStr"><is><t', needs_quote_expr(name)), space, text,
             pl.lit("</t></is></c>")]))
    elif kind_ == "money" and not places:  # no row with a currency: no amount to show
        cell = pl.lit(None, pl.String)
    elif kind_ == "money":  # rounded half-up to the row's places, as decimal text: never a float
        value = rest = None
        for p in places:
            here = pl.col(PLACES) == p
            rounded = col.round(p, mode="half_away_from_zero")
            tag = _rest_of_tag(styles, Style(formats.money_format(p)), fill, "><v>")
            value = pl.when(here).then(rounded) if value is None else value.when(here).then(rounded)
            rest = pl.when(here).then(tag) if rest is None else rest.when(here).then(tag)
        text = value.cast(pl.String).str.strip_chars_end("0").str.strip_chars_end(".").replace("-0", "0")
        cell = pl.concat_str([*ref, rest, text, pl.lit("</v></c>")])
    elif kind_ == "time":
        serial = ((col.dt.epoch("ms") + _EPOCH_SERIAL * _DAY_MS) / _DAY_MS).cast(pl.String)
        cell = pl.concat_str([*ref, _rest_of_tag(styles, Style(formats.time_format), fill, "><v>"), serial,
                              pl.lit("</v></c>")])
    elif kind_ == "bool":
        value = col.cast(pl.UInt8).cast(pl.String)  # a null stays an empty cell
        cell = pl.concat_str([*ref, _rest_of_tag(styles, PLAIN, fill, ' t="b"><v>'), value, pl.lit("</v></c>")])
    else:
        cell = pl.concat_str([*ref, _rest_of_tag(styles, PLAIN, fill, "><v>"), col.cast(pl.String),
                              pl.lit("</v></c>")])
    empty = pl.concat_str([*ref, pl.lit(f'"{styles.attr(PLAIN.but(fill=fill))}/>')])
    return cell.fill_null(pl.when(pl.col(MARK)).then(empty))


# -- the package ----------------------------------------------------------------------------------

@dataclass
class _Sheet:
    title: str
    filter_ref: str | None
    part: str


class Workbook:
    """An .xlsx written sheet after sheet to `path`, atomically: a reader never sees half a workbook.

        with Workbook(path) as book:
            with book.sheet("Summary", widths=[40, 12]) as ws:
                ws.row([...])
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.styles = Styles()
        self._sheets: list[_Sheet] = []

    def __enter__(self) -> Workbook:
        self._file = new_file(self.path)  # the workbook is written beside `path`, renamed into place when whole
        self._fh = open(self._file.__enter__(), "wb")
        self._zip = ZipStream(self._fh)
        return self

    def __exit__(self, *exc) -> None:
        try:
            if exc[0] is None:
                self._finish()
        except BaseException as error:
            exc = (type(error), error, error.__traceback__)  # so the half-written file is dropped, not renamed
            raise
        finally:
            self._fh.close()
            self._file.__exit__(*exc)

    def sheet(self, title: str, widths: list[float], *, frozen_rows: int = 0, filter_ref: str | None = None,
              rows: int | None = None, columns: int | None = None, position: int | None = None) -> SheetWriter:
        """A new sheet: column widths, rows frozen at the top, the autofilter's range, the size when known.

        Sheets are listed in the order they are written, or at `position`: a summary of what the
        other sheets hold can be written last and still come first.
        """
        sheet = _Sheet(title, filter_ref, f"xl/worksheets/sheet{len(self._sheets) + 1}.xml")
        self._sheets.insert(len(self._sheets) if position is None else position, sheet)
        return SheetWriter(self._zip.part(sheet.part), self.styles, widths, frozen_rows, filter_ref, rows, columns)

    def _finish(self) -> None:
        sheets = self._sheets
        names = "".join(f'<sheet name="{xml_escape(s.title)}" sheetId="{i}" r:id="rId{i}"/>'
                        for i, s in enumerate(sheets, 1))
        filters = "".join(
            f'<definedName name="_xlnm._FilterDatabase" localSheetId="{i}" hidden="1">'
            f"{xml_escape(quote_sheet(s.title))}!{absolute(s.filter_ref)}</definedName>"
            for i, s in enumerate(sheets) if s.filter_ref)
        write = self._zip.write_part
        write("xl/workbook.xml", _HEAD + (
            f'<workbook xmlns="{MAIN_NS}" xmlns:r="{REL_NS}"><bookViews><workbookView activeTab="0"/></bookViews>'
            f"<sheets>{names}</sheets>" + (f"<definedNames>{filters}</definedNames>" if filters else "")
            + '<calcPr calcId="191029"/></workbook>').encode())
        write("xl/styles.xml", self.styles.xml())
        rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/"
        write("xl/_rels/workbook.xml.rels", _HEAD + (
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            + "".join(f'<Relationship Id="rId{i}" Type="{rel}worksheet" Target="{s.part.removeprefix("xl/")}"/>'
                      for i, s in enumerate(sheets, 1))
            + f'<Relationship Id="rId{len(sheets) + 1}" Type="{rel}styles" Target="styles.xml"/>'
            "</Relationships>").encode())
        write("_rels/.rels", _HEAD + (
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{rel}officeDocument" Target="xl/workbook.xml"/></Relationships>').encode())
        ct = "application/vnd.openxmlformats-officedocument.spreadsheetml."
        write("[Content_Types].xml", _HEAD + (
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            f'<Override PartName="/xl/workbook.xml" ContentType="{ct}sheet.main+xml"/>'
            f'<Override PartName="/xl/styles.xml" ContentType="{ct}styles+xml"/>'
            + "".join(f'<Override PartName="/{s.part}" ContentType="{ct}worksheet+xml"/>' for s in sheets)
            + "</Types>").encode())
        self._zip.close()


def quote_sheet(title: str) -> str:
    return "'" + title.replace("'", "''") + "'"


def absolute(ref: str) -> str:
    """`A1:Z9` as `$A$1:$Z$9`."""
    return re.sub(r"([A-Z]+)(\d+)", r"$\1$\2", ref)


class SheetWriter:
    """One worksheet part being written: rows in order, by Python values (`row`) or a whole frame (`frame`)."""

    def __init__(self, part, styles: Styles, widths: list[float], frozen_rows: int, filter_ref: str | None,
                 rows: int | None, columns: int | None):
        self._part = part
        self.styles = styles
        self._filter_ref = filter_ref
        self.rows_written = 0
        dimension = f'<dimension ref="A1:{column_letter(columns)}{max(rows, 1)}"/>' if rows and columns else ""
        pane = (f'<pane ySplit="{frozen_rows}" topLeftCell="A{frozen_rows + 1}" activePane="bottomLeft" '
                'state="frozen"/><selection pane="bottomLeft"/>') if frozen_rows else ""
        cols = "".join(f'<col min="{i}" max="{i}" width="{w:g}" customWidth="1"/>' for i, w in enumerate(widths, 1))
        self._write(f'<worksheet xmlns="{MAIN_NS}">{dimension}<sheetViews><sheetView workbookViewId="0">'
                    f"{pane}</sheetView></sheetViews>"
                    f'<sheetFormatPr defaultRowHeight="15"/>' + (f"<cols>{cols}</cols>" if cols else "")
                    + "<sheetData>", head=True)

    def _write(self, text: str, head: bool = False) -> None:
        self._part.write((_HEAD if head else b"") + text.encode())

    def __enter__(self) -> SheetWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self._write("</sheetData>" + (f'<autoFilter ref="{self._filter_ref}"/>' if self._filter_ref else "")
                        + "</worksheet>")
            self._part.close()

    def row(self, values: list, style: Style = PLAIN) -> None:
        """One row of Python values; a value may be a (value, Style) pair; `style` is the row's default."""
        self.rows_written += 1
        r = self.rows_written
        cells = []
        for i, value in enumerate(values, 1):
            value, own = value if isinstance(value, tuple) else (value, style)
            cells.append(cell_xml(f"{column_letter(i)}{r}", value, self.styles, own))
        self._write(f'<row r="{r}">{"".join(cells)}</row>')

    def frame(self, frame: pl.DataFrame, formats: ColumnFormats, *, places: pl.Series | None = None,
              marks: pl.Series | None = None, rows: pl.Series | None = None) -> None:
        """The rows of `frame` (those at the indices `rows`, in that order, when given), a chunk at a time;
        `places` per row for money, `marks` for rows to fill."""
        kinds = [kind(t) for t in frame.dtypes]
        if "money" in kinds and places is None:
            raise ValueError("money is written in its currency's places: pass `places` for a frame with amounts")
        levels = sorted(set(places.drop_nulls().to_list())) if "money" in kinds else []
        texts = [c for c, k in zip(frame.columns, kinds) if k == "text"]
        longest = frame.select(pl.col(texts).str.len_bytes().max()).row(0) if texts and frame.height else []
        long_text = {c for c, n in zip(texts, longest) if (n or 0) * EXCEL_GROWTH > MAX_CELL_CHARS}
        cells = [_cell_expr(name, column_letter(i), k, levels, self.styles, formats, name in long_text)
                 for i, (name, k) in enumerate(zip(frame.columns, kinds), 1)]
        row = pl.concat_str([pl.lit('<row r="'), pl.col(ROW), pl.lit('">'), *cells, pl.lit("</row>")],
                            ignore_nulls=True).str.join("")
        frame = frame.with_columns(
            pl.Series(PLACES, places) if places is not None else pl.lit(None, pl.Int64).alias(PLACES),
            pl.Series(MARK, marks).fill_null(False) if marks is not None else pl.lit(False).alias(MARK))
        for start in range(0, frame.height if rows is None else rows.len(), CHUNK_ROWS):
            chunk = frame.slice(start, CHUNK_ROWS) if rows is None else frame[rows.slice(start, CHUNK_ROWS)]
            chunk = chunk.with_columns(
                (pl.int_range(pl.len()) + (self.rows_written + 1)).cast(pl.String).alias(ROW))
            self._part.write(chunk.select(row.cast(pl.Binary)).item())
            self.rows_written += chunk.height


# -- reading a workbook back as text: the auditor's pseudonymised copy ----------------------------
#
# The product's workbooks hold every text as an inline string (`<c t="inlineStr"><is><t>…</t></is></c>`),
# as openpyxl's write-only mode did before this module: a cell's text is found, and replaced, in the
# sheet's XML without building any cell. Parts are read a block at a time and cut after a whole row
# (or string, or comment), so a text is never split and a large workbook is never loaded whole.

READ_BYTES = 1 << 22
_BYTES_PER_KEY, _MAX_BLOCK = 1 << 10, 1 << 26
#: The element that closes a unit of each part holding texts; a unit is handled whole.
_UNIT_END = {"xl/worksheets/_rels/": None, "xl/worksheets/": "</row>", "xl/sharedStrings": "</si>",
             "xl/comments": "</comment>"}
#: Texts held in attributes: a hyperlink's label, tip and place, an external link's target.
_LINK = re.compile(r"<hyperlink [^>]*>|<Relationship [^>]*TargetMode=\"External\"[^>]*>")
_LINK_TEXT = re.compile(r'\b(display|tooltip|location|Target)="([^"]*)"')
_ATTR_ESCAPE_TABLE = str.maketrans({**_XML_ESCAPES, '"': "&quot;"})


def _unit_end(name: str) -> str | None | bool:
    """How a part is cut into units (None: whole), or False for a part that holds no text."""
    return next((end for prefix, end in _UNIT_END.items() if name.startswith(prefix)), False)


def _units(book: zipfile.ZipFile, name: str, end: str | None, size: int = READ_BYTES) -> Iterator[str]:
    """The part's text, in pieces of about `size` bytes that each end on `end` (the whole part when None)."""
    decode = codecs.getincrementaldecoder("utf-8")().decode
    carry = ""
    with book.open(name) as fh:
        while block := fh.read(size):
            carry += decode(block)
            cut = carry.rfind(end) if end else -1
            if cut != -1:
                cut += len(end)
                yield carry[:cut]
                carry = carry[cut:]
    carry += decode(b"", final=True)
    if carry:
        yield carry


def _worksheets(book: zipfile.ZipFile) -> list[str]:
    if "xl/sharedStrings.xml" in book.namelist():
        raise ValueError("this workbook keeps its texts in a shared-strings table; report workbooks hold inline "
                         "strings only, so it was not written by this product")
    return [n for n in book.namelist() if n.startswith("xl/worksheets/") and n.endswith(".xml")]


def find_texts(path: Path, *, under: str, containing: str) -> Iterator[tuple[str, bool]]:
    """Every text under a header cell reading `under`, and every text holding `containing`, as
    (text, whether it is under such a header). The header row is the sheet's frozen one."""
    head = re.escape(xml_escape(under))
    holding = re.compile(r"<t(?: [^>]*)?>([^<]*" + re.escape(xml_escape(containing)) + r"[^<]*)</t>")
    with zipfile.ZipFile(path) as book:
        for name in _worksheets(book):
            header_row, column = None, None
            for unit in _units(book, name, "</row>"):
                if header_row is None:  # the sheet's head, before its first row
                    pane = re.search(r'<pane [^>]*ySplit="(\d+)"', unit)
                    header_row = int(pane.group(1)) if pane else 0
                if header_row and column is None and f'<row r="{header_row}"' in unit:
                    letters = re.findall(rf'<c r="([A-Z]+){header_row}"[^>]*><is><t(?: [^>]*)?>{head}</t>', unit)
                    column = letters and re.compile(
                        rf'<c r="(?:{"|".join(letters)})(\d+)"[^>]*><is><t(?: [^>]*)?>([^<]*)</t>')
                if column:
                    yield from ((xml_unescape(t), True) for row, t in column.findall(unit) if int(row) > header_row)
                yield from ((xml_unescape(t), False) for t in holding.findall(unit))


def rewrite_texts(source: Path, target: Path, replacements: dict[str, str]) -> None:
    """A copy of the workbook at `source` with each key of `replacements` replaced by its value in every
    text: cell texts, shared strings, comments, hyperlink labels and external link targets. At each place
    the longest key wins, left to right. Numbers, styles and layout are copied as they are; a text made
    longer than a cell holds is cut as the writer cuts it. The texts of a block of rows are replaced at
    once by Polars (Aho-Corasick), not one by one."""
    table = dict(sorted(replacements.items(), key=lambda kv: -len(kv[0])))  # longest first: it wins a tie
    # Polars builds its automaton at each call (~10 µs a key): larger blocks when there are many keys.
    size = min(READ_BYTES + _BYTES_PER_KEY * len(table), _MAX_BLOCK)

    def attribute(m: re.Match) -> str:
        old = xml_unescape(m.group(2))
        new = pl.Series([old]).str.replace_many(table, leftmost=True).item() if table else old
        return m.group(0) if new == old else f'{m.group(1)}="{new.translate(_ATTR_ESCAPE_TABLE)}"'

    with zipfile.ZipFile(source) as book, open(target, "wb") as fh:
        archive = ZipStream(fh)
        for name in book.namelist():
            end = _unit_end(name)
            with archive.part(name) as part:
                if end is False or not table:
                    with book.open(name) as src:
                        while block := src.read(READ_BYTES):
                            part.write(block)
                    continue
                for unit in _units(book, name, end, size):
                    unit = _replace_in_texts(unit, table)
                    unit = _LINK.sub(lambda m: _LINK_TEXT.sub(attribute, m.group(0)), unit)
                    part.write(unit.encode())
        archive.close()


#: The entities the product's writers (this module, and lxml under openpyxl before it) put in text.
_TEXT_ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&apos;": "'", "&#13;": "\r"}


def _replace_in_texts(unit: str, table: dict[str, str]) -> str:
    """`unit` with `table` applied to the content of each `<t>` element, the rest untouched.

    Cut at every `</t>`, each piece but the last ends with a text: what follows the piece's last `>`
    (text holds no `<` or `>`, they are escaped). A text that does not change keeps its bytes.
    """
    pieces = pl.DataFrame({"piece": pl.Series([unit]).str.split("</t>").explode()})
    pieces = pieces.with_columns(escaped=pl.col("piece").str.extract(r"([^>]*)$"))
    pieces = pieces.with_columns(old=pl.col("escaped").str.replace_many(_TEXT_ENTITIES, leftmost=True))
    pieces = pieces.with_columns(new=pl.col("old").str.replace_many(table, leftmost=True))
    changed = (pl.int_range(pl.len()) < pl.len() - 1) & (pl.col("new") != pl.col("old"))
    out = pl.when(changed).then(pl.col("piece").str.strip_suffix(pl.col("escaped"))
                                + excel_expr("new").str.replace_many(_XML_ESCAPES)).otherwise(pl.col("piece"))
    return pieces.select(out.str.join("</t>")).item()
