"""The auditor's workbook: every user id replaced in the sheet XML, every other cell, format and fill kept."""

import csv
import shutil
import subprocess

import openpyxl
import pytest

from calo_assets.analysis import analyze_folder
from calo_assets.downloads.pseudonymise import REWRITERS, Replacer, ids_from_xlsx, pseudonym
from calo_assets.reports import excel
from calo_assets.settings import Settings
from tests.logbuilder import SCRIPT_USER, report_drop

KEY = b"test-key"
SOFFICE = shutil.which("libreoffice") or shutil.which("soffice")


@pytest.fixture(scope="module")
def books(tmp_path_factory):
    analysis = analyze_folder(report_drop(tmp_path_factory.mktemp("logs")).parents[1], Settings())
    out = tmp_path_factory.mktemp("out")
    source = excel.write_workbook(analysis, out / "report.xlsx")
    ids = ids_from_xlsx(source)
    target = out / "pseudonymised.xlsx"
    REWRITERS["report.xlsx"](source, target, Replacer(KEY, ids))
    return analysis, source, target, ids


def test_ids_are_collected_from_the_userid_columns_and_from_texts(books):
    analysis, _, _, ids = books
    assert set(analysis.ledger["userId"]) <= ids and SCRIPT_USER in ids
    assert "userId" not in ids  # the header is not an id


def test_every_user_id_is_replaced_and_every_other_cell_is_identical(books):
    _, source, target, ids = books
    replace = Replacer(KEY, ids)
    before, after = openpyxl.load_workbook(source), openpyxl.load_workbook(target)
    assert after.sheetnames == before.sheetnames
    replaced = 0
    for ws in before.worksheets:
        other = after[ws.title]
        assert other.freeze_panes == ws.freeze_panes and other.auto_filter.ref == ws.auto_filter.ref
        for row, new_row in zip(ws.iter_rows(), other.iter_rows(), strict=True):
            for cell, new in zip(row, new_row, strict=True):
                expected = replace(cell.value) if isinstance(cell.value, str) else cell.value
                assert new.value == expected, (ws.title, cell.coordinate)
                assert (new.data_type, new.number_format, new.fill.fgColor.rgb, new.quotePrefix) == \
                       (cell.data_type, cell.number_format, cell.fill.fgColor.rgb, cell.quotePrefix)
                replaced += expected != cell.value
                if isinstance(new.value, str):
                    assert not [i for i in ids if i in new.value], (ws.title, cell.coordinate)
    assert replaced > 0
    ledger = list(after["Ledger"].iter_rows(values_only=True))
    column = ledger[0].index("userId")
    assert {r[column] for r in ledger[1:]} <= {pseudonym(KEY, i) for i in ids}


@pytest.mark.skipif(SOFFICE is None, reason="LibreOffice is not installed")
def test_libreoffice_opens_the_pseudonymised_workbook(books, tmp_path):
    analysis, _, target, ids = books
    filt = "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,true,false,false,-1"
    subprocess.run([SOFFICE, "--headless", f"-env:UserInstallation=file://{tmp_path}/lo", "--convert-to", filt,
                    "--outdir", str(tmp_path), str(target)], check=True, capture_output=True, timeout=180)
    ledger = list(csv.DictReader((tmp_path / "pseudonymised-Ledger.csv").read_text(encoding="utf-8").splitlines()))
    assert len(ledger) == analysis.ledger.height
    assert {r["userId"] for r in ledger} == {pseudonym(KEY, u) for u in analysis.ledger["userId"]}


def test_the_workbook_rewrite_matches_the_replacer_on_tricky_ids(tmp_path):
    """Ids that extend one another, hold XML's special characters or sit side by side: the workbook's
    rewrite (Polars, on the escaped XML) gives what the Replacer gives on the text itself."""
    import polars as pl

    from calo_assets.reports import xlsx
    from calo_assets.reports.excel import FORMATS

    ids = {"u-1", "u-10", "u-100", "a&b", "<x>", "q\"'", "=cmd", "tail\r"}
    texts = ["u-100u-10u-1", "see u-10, a&b and <x>!", "q\"'=cmd", "tail\r\n", "  u-1  ", "u-1" * 3,
             "nothing here", "&amp; stays", "a&amp;b is not a&b"]
    source = tmp_path / "s.xlsx"
    with xlsx.Workbook(source) as book, book.sheet("S", []) as ws:
        ws.frame(pl.DataFrame({"t": texts}), FORMATS)
    target = tmp_path / "t.xlsx"
    replace = Replacer(KEY, ids)
    REWRITERS["report.xlsx"](source, target, replace)
    got = [r[0] for r in openpyxl.load_workbook(target)["S"].iter_rows(values_only=True)]
    assert got == [replace(t) for t in texts]
    assert got[0] == "".join(pseudonym(KEY, i) for i in ("u-100", "u-10", "u-1"))
