"""The xlsx writer itself: hostile text, exact money, milliseconds, the two cell paths, chunks, ZIP64, atomic writes."""

import re
import zipfile
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

import openpyxl
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calo_assets.money import round_money
from calo_assets.reports import excel, safe_text, xlsx, zip_stream
from calo_assets.reports.xlsx import Style

HOSTILE = [
    "=HYPERLINK(\"http://example.invalid\",\"click\")",  # a formula
    "+1", "-2", "@SUM(A1)", "\tindented", "\rreturn", "#N/A",  # other formula starts, an error value
    "_x003D_1+1",  # Excel decodes _x003D_ to '=': quoted like a formula
    "<script>alert(1)</script> & <b>bold</b>",  # HTML in a field: literal text
    "bell\x07 nul\x00 esc\x1b", "non\ufffecharacter\uffff",  # characters XML 1.0 cannot hold
    "line\nbreak", "cr\r\nlf", "  spaces around  ", "", "plain",
    "x" * 40_000,  # longer than a cell holds
]


def write(tmp_path, frame: pl.DataFrame, *, places=None, marks=None, name="t.xlsx"):
    path = tmp_path / name
    with xlsx.Workbook(path) as book:
        with book.sheet("Data", [12] * frame.width, frozen_rows=1, filter_ref="A1:A2", rows=frame.height + 1,
                        columns=frame.width) as ws:
            ws.row(frame.columns, excel.HEADER)
            ws.frame(frame, excel.FORMATS, places=places, marks=marks)
    return path


def sheet_xml(path, n=1) -> str:
    with zipfile.ZipFile(path) as z:
        return z.read(f"xl/worksheets/sheet{n}.xml").decode()


def test_hostile_text_is_written_as_safe_text_cells(tmp_path):
    path = write(tmp_path, pl.DataFrame({"text": HOSTILE}))
    cells = [row[0] for row in openpyxl.load_workbook(path)["Data"].iter_rows(min_row=2)]
    for text, cell in zip(HOSTILE, cells):
        expected, quote = safe_text.for_excel(text)
        assert cell.value == (expected or None), repr(text)[:60]
        if text:
            assert cell.data_type == "s" and cell.quotePrefix == quote, repr(text)[:60]
    by_text = dict(zip(HOSTILE, cells))
    assert [t for t in HOSTILE if by_text[t].quotePrefix] == HOSTILE[:8]
    assert by_text["bell\x07 nul\x00 esc\x1b"].value == "bell\\x07 nul\\x00 esc\\x1b"
    assert by_text["non\ufffecharacter\uffff"].value == "non\\ufffecharacter\\uffff"
    assert by_text["\rreturn"].value == "\rreturn"  # kept as a character reference, not turned into \n
    assert by_text["  spaces around  "].value == "  spaces around  "
    long = by_text["x" * 40_000].value
    assert len(long) == safe_text.MAX_CELL_CHARS and long.endswith(safe_text.TRUNCATED)
    xml = sheet_xml(path)
    assert "<script>" not in xml and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;" in xml
    assert "<f>" not in xml  # no formula anywhere


def python_and_polars_rows(tmp_path, frame, places, marks, pythonic):
    """The sheetData of `frame` written by the Polars path and of the same rows written value by value."""
    path = tmp_path / "two.xlsx"
    with xlsx.Workbook(path) as book:
        with book.sheet("Frame", []) as ws:
            ws.frame(frame, excel.FORMATS, places=places, marks=marks)
        with book.sheet("Values", []) as ws:
            for row, mark in zip(pythonic, marks):
                fill = {"fill": excel.FLAG_FILL} if mark else {}
                ws.row([(v, s.but(**fill)) for v, s in row])
    body = [re.search("<sheetData>(.*)</sheetData>", sheet_xml(path, n)).group(1) for n in (1, 2)]
    return body


def test_the_frame_path_and_the_value_path_write_the_same_cells(tmp_path):
    """The Summary's cells (one value at a time) and the data sheets' (Polars) follow the same rules."""
    stamps = [datetime(2024, 1, 10, 8, 0, 1, 123000), datetime(2023, 12, 31, 23, 59, 59, 999000),
              datetime(2024, 2, 29, 0, 0, 0), datetime(1999, 1, 1, 12, 30, 0, 1000), None]
    amounts = [Decimal("60.181000000000004"), Decimal("-0.00005"), Decimal("0.0005"), Decimal("1234567890123.45675"),
               None]
    places = [4, 4, 3, 4, 2]
    texts = ["=1+2", "<b>&</b>", "\x07", "  ", ""]
    long_texts = ["y" * 40_000, "\ufffe\x01", "_x003D_1", "\rx ", None]  # a column that may need the cut
    flags = [True, False, None, True, False]
    numbers = [0, -1, 2**40, 7, None]
    frame = pl.DataFrame({"at": stamps, "amount": amounts, "text": texts, "long": long_texts, "flag": flags,
                          "n": numbers}, schema_overrides={"amount": pl.Decimal(38, 18)})
    marks = [False, True, False, True, False]
    pythonic = [[(t, Style(excel.TIMESTAMP_FORMAT)), (None if a is None else round_money(a, p),
                 Style(excel.money_format(p))), (x, Style()), (y, Style()), (f, Style()), (n, Style())]
                for t, a, p, x, y, f, n in zip(stamps, amounts, places, texts, long_texts, flags, numbers)]
    by_frame, by_value = python_and_polars_rows(tmp_path, frame, pl.Series(places), pl.Series(marks), pythonic)
    assert by_frame == by_value
    assert "<v>60.181</v>" in by_frame and "<v>-0.0001</v>" in by_frame and "<v>0.001</v>" in by_frame
    assert "<v>1234567890123.4568</v>" in by_frame  # exact decimal text: a float would print ...4567 or worse


@settings(max_examples=300, deadline=None)
@given(st.lists(st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=6, allow_nan=False),
                min_size=1, max_size=20), st.integers(0, 4))
def test_polars_half_away_from_zero_is_pythons_round_half_up(values, places):
    got = pl.Series(values, dtype=pl.Decimal(38, 6)).round(places, mode="half_away_from_zero").to_list()
    assert got == [v.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP) for v in values]


def test_money_and_milliseconds_read_back_exactly(tmp_path):
    stamps = [datetime(2024, 1, 10, 8, 0, 1, ms * 1000) for ms in (0, 1, 499, 500, 999)]
    frame = pl.DataFrame({"at": stamps, "amount": [Decimal("0.00005"), Decimal("2.5"), Decimal("-43.78105"),
                                                   Decimal("99999999.99995"), Decimal("0.125")]},
                         schema_overrides={"amount": pl.Decimal(38, 18)})
    path = write(tmp_path, frame, places=pl.Series([4, 0, 4, 4, 2]))
    rows = list(openpyxl.load_workbook(path)["Data"].iter_rows(min_row=2))
    assert [r[0].value for r in rows] == stamps
    assert {r[0].number_format for r in rows} == {excel.TIMESTAMP_FORMAT}
    assert [Decimal(repr(r[1].value)) for r in rows] == [Decimal(x) for x in ("0.0001", "3", "-43.7811", "1E+8",
                                                                              "0.13")]
    assert [r[1].number_format for r in rows] == ["0.0000", "0", "0.0000", "0.0000", "0.00"]


def test_rows_are_the_same_whatever_the_chunk_size(tmp_path, monkeypatch):
    frame = pl.DataFrame({"n": range(10), "t": [f"row {i}" for i in range(10)]})
    whole = sheet_xml(write(tmp_path, frame, marks=pl.Series([i % 3 == 0 for i in range(10)]), name="a.xlsx"))
    monkeypatch.setattr(xlsx, "CHUNK_ROWS", 3)
    chunked = sheet_xml(write(tmp_path, frame, marks=pl.Series([i % 3 == 0 for i in range(10)]), name="b.xlsx"))
    assert chunked == whole and '<row r="11">' in whole


def test_zip64_fields_when_parts_pass_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(zip_stream, "ZIP64_FROM", 200)  # every sheet and offset "passes 4 GiB"
    path = write(tmp_path, pl.DataFrame({"t": [f"text {i}" for i in range(500)]}))
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None  # every part's CRC and sizes check out
        assert any(i.file_size > 200 and i.extra for i in z.infolist())
    assert openpyxl.load_workbook(path)["Data"]["A501"].value == "text 499"


def test_a_failed_write_leaves_neither_a_workbook_nor_a_partial_file(tmp_path):
    path = tmp_path / "report.xlsx"
    path.write_bytes(b"the previous report")
    with pytest.raises(RuntimeError), xlsx.Workbook(path) as book, book.sheet("S", []) as ws:
        ws.row(["half written"])
        raise RuntimeError("disk full")
    assert path.read_bytes() == b"the previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.xlsx"]


# -- the auditor's copy: texts found and replaced in the XML -----------------------------------------

def test_find_texts_reads_the_column_under_its_frozen_header(tmp_path):
    frame = pl.DataFrame({"userId": ["u1", "a&b", "userId"], "note": ["x", "see userId: 'u9'", None]})
    path = tmp_path / "t.xlsx"
    with xlsx.Workbook(path) as book:
        with book.sheet("Cut", [], frozen_rows=2) as ws:
            ws.row(["a note above the header"])
            ws.row(frame.columns)
            ws.frame(frame, excel.FORMATS)
    found = list(xlsx.find_texts(path, under="userId", containing="userId"))
    assert sorted(t for t, under in found if under) == ["a&b", "u1", "userId"]
    assert sorted(t for t, under in found if not under) == ["see userId: 'u9'", "userId", "userId"]


def test_rewrite_replaces_texts_links_and_comments_and_keeps_everything_else(tmp_path):
    """On a workbook openpyxl made (shared strings, a comment, a hyperlink), as well as on ours."""
    source = tmp_path / "openpyxl.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws["A1"], ws["B1"], ws["C1"] = "id-1 & id-10", 5, "=SUM(B1)"
    ws["A2"].value = "link to id-1"
    ws["A2"].hyperlink = "https://example.invalid/id-1"
    ws["A3"] = "noted"
    ws["A3"].comment = openpyxl.comments.Comment("about id-10", "auditor")
    wb.save(source)
    target = tmp_path / "out.xlsx"
    xlsx.rewrite_texts(source, target, {"id-1": "P1", "id-10": "P10"})  # the longer id wins where both match
    out = openpyxl.load_workbook(target).active
    assert out["A1"].value == "P1 & P10" and out["B1"].value == 5 and out["C1"].value == "=SUM(B1)"
    assert out["A2"].value == "link to P1" and out["A2"].hyperlink.target == "https://example.invalid/P1"
    assert out["A3"].comment.text == "about P10"



def test_a_workbook_with_shared_strings_is_refused_rather_than_half_searched(tmp_path):
    """Its cells would name their text by number: ids under `userId` would be missed, so no id list at all."""
    path = write(tmp_path, pl.DataFrame({"userId": ["u1"]}))
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("xl/sharedStrings.xml", '<sst xmlns="x"><si><t>u2</t></si></sst>')
    with pytest.raises(ValueError, match="shared-strings"):
        list(xlsx.find_texts(path, under="userId", containing="userId"))
