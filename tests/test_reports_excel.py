"""report.xlsx and raw_parsed.csv read back: sheets, columns, number formats, safe text, totals, limits."""

import csv
import json
import re
import shutil
import subprocess
from dataclasses import replace
from datetime import datetime
from decimal import Decimal

import openpyxl
import polars as pl
import pytest

from calo_assets.analysis import analyze_folder
from calo_assets.catalog import LEDGER
from calo_assets.money import fmt
from calo_assets.outputs import write_all
from calo_assets.reports import excel, safe_text, tables
from calo_assets.reports.columns import ACCOUNTING_COLUMNS, ledger_columns
from calo_assets.settings import Settings
from tests.logbuilder import CONTROL_ACTION, FORMULA_ACTION, report_drop


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    return analyze_folder(report_drop(tmp_path_factory.mktemp("logs")).parents[1], Settings())


@pytest.fixture(scope="module")
def book(analysis, tmp_path_factory):
    path = excel.write_workbook(analysis, tmp_path_factory.mktemp("out") / "report.xlsx")
    return openpyxl.load_workbook(path)


def header(ws, row=1):
    return [c.value for c in ws[row]]


def rows(ws, start=2):
    """Data rows as dicts keyed by header text."""
    names = header(ws, start - 1)
    return [dict(zip(names, r)) for r in ws.iter_rows(min_row=start, values_only=True)]


def test_sheets_in_contract_order(book):
    assert book.sheetnames == ["Summary", "Ledger", "Reconciliation", "ByUser", "BySource", "Overdrafts",
                               "Anomalies", "SyncErrors", "Rejects", "DataQuality"]


def test_accounting_preset_is_the_ledger_header(book):
    assert [h.removesuffix(" (UTC)") for h in header(book["Ledger"])] == ACCOUNTING_COLUMNS
    assert header(book["Ledger"])[0] == "timestamp (UTC)"


def test_full_preset_has_every_ledger_column_with_provenance(analysis, tmp_path):
    assert ledger_columns("full") == LEDGER.names
    assert set(LEDGER.names) == set(analysis.ledger.columns)
    full = replace(analysis, settings=replace(analysis.settings, excel_columns="full"))
    ws = openpyxl.load_workbook(excel.write_workbook(full, tmp_path / "r.xlsx"))["Ledger"]
    names = [h.removesuffix(" (UTC)") for h in header(ws)]
    assert names == LEDGER.names
    assert {"sourceFile", "line", "requestId", "messageId"} <= set(names)


def test_json_preset_and_money_always_beside_its_currency(analysis, tmp_path):
    preset = tmp_path / "cols.json"
    preset.write_text(json.dumps(["id", "amount", "line"]))
    assert ledger_columns(str(preset)) == ["id", "currency", "amount", "line"]
    custom = replace(analysis, settings=replace(analysis.settings, excel_columns=str(preset)))
    ws = openpyxl.load_workbook(excel.write_workbook(custom, tmp_path / "r.xlsx"))["Ledger"]
    assert header(ws) == ["id", "currency", "amount", "line"]


@pytest.mark.parametrize("content, expected", [
    (json.dumps(["id", "amountt"]), "unknown column(s) 'amountt'"),
    ("[not json", "not readable JSON"),
    (json.dumps({"columns": ["id"]}), "non-empty JSON list"),
    (json.dumps(["id", "id"]), "listed twice"),
])
def test_bad_json_preset_is_refused_naming_the_valid_columns(tmp_path, content, expected):
    preset = tmp_path / "cols.json"
    preset.write_text(content)
    with pytest.raises(ValueError, match=re.escape(expected)) as err:
        ledger_columns(str(preset))
    if "unknown" in expected:
        assert "valid names: " + ", ".join(LEDGER.names) in str(err.value)


def test_unknown_preset_is_refused_naming_the_presets():
    with pytest.raises(ValueError, match="accounting, full"):
        ledger_columns("fancy")


def test_money_columns_are_the_ledgers_decimal_columns(analysis):
    decimals = {c for c, t in analysis.ledger.schema.items() if isinstance(t, pl.Decimal)}
    assert decimals == {name for name, column in LEDGER.columns.items() if column.money}


def test_money_cells_are_numbers_in_the_currencys_places(book, analysis):
    ws = book["Ledger"]
    names = header(ws)
    formats = {"BHD": "0.0000", "SAR": "0.000", "AED": "0.00"}
    for row in ws.iter_rows(min_row=2):
        cells = dict(zip(names, row))
        currency = cells["currency"].value
        for name in ("amount", "oldBalance", "expectedNewBalance"):
            assert cells[name].data_type == "n"
            assert cells[name].number_format == formats[currency], (currency, name)
    noisy = [r for r in rows(ws) if r["action"] == FORMULA_ACTION][0]
    assert noisy["amount"] == pytest.approx(60.181)  # rounded to BHD's 4 places before it became a number


def test_timestamps_booleans_header_filter(book, analysis):
    ws = book["Ledger"]
    first = rows(ws)[0]
    assert isinstance(first["timestamp (UTC)"], datetime) and first["timestamp (UTC)"].tzinfo is None
    assert first["timestamp (UTC)"] == analysis.ledger["timestamp"][0].replace(tzinfo=None)
    assert isinstance(first["balanceMismatch"], bool)
    assert ws.freeze_panes == "A2"
    assert ws.auto_filter.ref == f"A1:Z{analysis.ledger.height + 1}"
    assert all(ws.column_dimensions[c].width <= excel.MAX_WIDTH for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def test_flagged_rows_carry_a_fill(book, analysis):
    ws = book["Ledger"]
    expected = analysis.ledger.select(tables.flagged())[:, 0].to_list()
    marked = [row[0].fill.fgColor.rgb == excel.FLAG_FILL for row in ws.iter_rows(min_row=2)]
    assert marked == expected and any(marked) and not all(marked)


def test_formula_looking_text_stays_a_text_cell(book):
    ws = book["Ledger"]
    col = header(ws).index("action")
    cell = next(r[col] for r in ws.iter_rows(min_row=2) if r[col].value == FORMULA_ACTION)
    assert cell.data_type == "s"
    assert cell.quotePrefix


def test_control_character_is_escaped_and_the_row_kept(book):
    actions = [r["action"] for r in rows(book["Ledger"])]
    assert "BELL\\x07ACTION" in actions
    assert CONTROL_ACTION not in actions


def test_summary_totals_per_currency_equal_the_summary(book, analysis):
    assert summary_currencies(book["Summary"]) == analysis.summary["currencies"]


def summary_currencies(ws) -> dict:
    """The Summary's per-currency table, money back as text in each currency's places."""
    lines = list(ws.iter_rows(values_only=True))
    start = next(i for i, r in enumerate(lines) if r and r[0] == "currency") + 1
    out = {}
    for r in lines[start:]:
        if not r or r[0] is None:
            break
        cur, n, users, *money, places = r
        keys = ("debit", "credit", "net", "debit_applied", "credit_applied")
        out[cur] = {"transactions": n, "users": users,
                    **{k: fmt(Decimal(str(v)), places) for k, v in zip(keys, money)}, "places": places}
    return out


def test_summary_states_the_reconciliation_and_run_parameters(book, analysis):
    pairs = {r[0]: r[1] for r in book["Summary"].iter_rows(values_only=True) if r[0]}
    rec = analysis.parsed.reconciliation()
    assert pairs["Transaction blocks seen"] == rec["transaction_blocks_seen"] == 7
    assert pairs["= transactions in the ledger"] == rec["transactions"]
    assert pairs["Reconciles"] is True
    assert pairs["Tolerance (absolute, per comparison)"] == pytest.approx(0.005)
    assert pairs["Currency places: BHD"] == 4 and pairs["Currency places: SAR"] == 3
    assert pairs["Product version"] == analysis.version
    assert pairs["Input folder"] == analysis.input_label


def test_overdrafts_sheet_labels_refusals_without_a_block(book):
    records = {r["id"]: r for r in rows(book["Overdrafts"])}
    assert records["01NOBLOCK"]["record"] == tables.REFUSAL_WITHOUT_BLOCK
    assert records["01NOBLOCK"]["currency"] == "BHD" and records["01NOBLOCK"]["currentBalance"] == 2.5
    refused = [r for r in records.values() if r["record"] == tables.LEDGER_ROW]
    assert [(r["attemptedOverdraft"], r["overdraftReason"]) for r in refused] == [(True, "both")]


def test_sync_errors_and_data_quality_sheets(book, analysis):
    sync = rows(book["SyncErrors"])
    assert len(sync) == 1 and sync[0]["transactionId"] == analysis.parsed.sync_errors["transactionId"][0]
    assert sync[0]["currency"] == "AED" and sync[0]["subscriptionBalance"] == 49
    files = rows(book["DataQuality"])
    assert [(f["status"], f["transactionBlocks"]) for f in files] == [("read", 7)]


def test_row_limit_keeps_the_flagged_rows_and_points_to_the_csv(analysis, tmp_path, monkeypatch):
    flagged = analysis.ledger.filter(tables.flagged())
    assert 0 < flagged.height < analysis.ledger.height
    monkeypatch.setattr(excel, "EXCEL_MAX_ROWS", flagged.height + 2)  # note + header + the flagged rows
    written = write_all(analysis, tmp_path)
    assert "raw_parsed.csv" in written  # written although not asked: the Ledger sheet points to it
    ws = openpyxl.load_workbook(written["report.xlsx"])["Ledger"]
    assert "raw_parsed.csv" in ws["A1"].value and f"of {analysis.ledger.height:,} rows" in ws["A1"].value
    assert ws.freeze_panes == "A3"
    assert [r["id"] for r in rows(ws, start=3)] == flagged["id"].to_list()
    book = openpyxl.load_workbook(written["report.xlsx"])
    notes = {r[0]: r[1] for r in book["Summary"].iter_rows(values_only=True) if r[0] in book.sheetnames}
    assert "raw_parsed.csv" in notes["Ledger"] and "raw_parsed.csv" in notes["Reconciliation"]
    assert "Anomalies" in notes and "raw_parsed.csv" not in notes["Anomalies"]  # its cut rows are not transactions


def test_a_drop_without_transactions_still_gets_every_report(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "notes.txt").write_text("not a log\n")
    written = write_all(analyze_folder(tmp_path / "logs", Settings()), tmp_path / "out", raw_csv=True)
    book = openpyxl.load_workbook(written["report.xlsx"])
    assert len(book.sheetnames) == 10 and header(book["Ledger"])[0] == "timestamp (UTC)"
    assert "No transactions were read." in written["report.html"].read_text(encoding="utf-8")
    assert written["raw_parsed.csv"].read_text(encoding="utf-8").startswith("sourceFile,line,")


# -- raw_parsed.csv and the text rules ----------------------------------------------------------------

def test_raw_csv_is_exact_and_neutralised(analysis, tmp_path):
    path = write_all(analysis, tmp_path, raw_csv=True)["raw_parsed.csv"]
    raw = path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    got = list(csv.DictReader(raw.decode("utf-8").splitlines(keepends=True)))
    assert len(got) == analysis.parsed.transactions.height
    assert list(got[0])[:6] == ["sourceFile", "line", "endLine", "requestId", "messageId", "timestamp"]
    noisy = next(r for r in got if r["action"] == "'" + FORMULA_ACTION)
    assert noisy["amount"] == "60.181000000000004"
    assert noisy["newBalance"] == "-43.781"  # a number: never prefixed
    assert noisy["outcome"] == "refused"
    assert noisy["timestamp"].endswith("Z") and noisy["sourceFile"].endswith("000000.gz")
    assert any(r["action"] == "BELL\\x07ACTION" for r in got)
    assert {r["vat"] for r in got} == {"0", "7.5"}


@pytest.mark.parametrize("text, excel_text, quoted, csv_text", [
    ("=1+2", "=1+2", True, "'=1+2"), ("+1", "+1", True, "'+1"), ("-x", "-x", True, "'-x"),
    ("@SUM(A1)", "@SUM(A1)", True, "'@SUM(A1)"), ("\tx", "\tx", True, "'\tx"), ("\rx", "\rx", True, "'\rx"),
    ("a=b", "a=b", False, "a=b"), ("a\x00b\x1f", "a\\x00b\\x1f", False, "a\\x00b\\x1f"),
])
def test_safe_text_rules(text, excel_text, quoted, csv_text):
    assert safe_text.for_excel(text) == (excel_text, quoted)
    assert safe_text.for_csv(text) == csv_text
    assert pl.DataFrame({"t": [text]}).select(safe_text.csv_expr("t")).item() == csv_text


def test_overlong_text_is_cut_visibly():
    text, _ = safe_text.for_excel("x" * 40_000)
    assert len(text) == safe_text.MAX_CELL_CHARS and text.endswith(safe_text.TRUNCATED)


# -- the workbook as another spreadsheet program sees it --------------------------------------------

SOFFICE = shutil.which("libreoffice") or shutil.which("soffice")


@pytest.mark.skipif(SOFFICE is None, reason="LibreOffice is not installed")
def test_libreoffice_reads_text_as_text_and_money_in_places(analysis, tmp_path):
    xlsx = excel.write_workbook(analysis, tmp_path / "report.xlsx")
    out = tmp_path / "csv"
    # UTF-8 (76), cells as shown (the third true), every sheet to its own file (-1).
    filt = "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,true,false,false,-1"
    subprocess.run([SOFFICE, "--headless", f"-env:UserInstallation=file://{tmp_path}/lo", "--convert-to", filt,
                    "--outdir", str(out), str(xlsx)], check=True, capture_output=True, timeout=180)
    ledger = list(csv.DictReader((out / "report-Ledger.csv").read_text(encoding="utf-8").splitlines()))
    assert len(ledger) == analysis.ledger.height
    by_action = {r["action"]: r for r in ledger}
    assert FORMULA_ACTION in by_action  # shown as the text, not run as a formula ("click")
    assert by_action[FORMULA_ACTION]["amount"] == "60.1810"
    assert by_action[FORMULA_ACTION]["attemptedOverdraft"] == "TRUE"
    assert by_action[FORMULA_ACTION]["timestamp (UTC)"].startswith("2024-01-10 08:00:01.")
    sar = next(r for r in ledger if r["currency"] == "SAR")
    assert len(sar["amount"].split(".")[1]) == 3


# -- the real export ---------------------------------------------------------------------------------

@pytest.mark.real_logs
@pytest.mark.slow
def test_real_logs_all_three_reports(real_logs, tmp_path):
    real = analyze_folder(real_logs, Settings())
    written = write_all(real, tmp_path, raw_csv=True)
    assert set(written) == {"report.xlsx", "report.html", "raw_parsed.csv", "summary.json"}
    book = openpyxl.load_workbook(written["report.xlsx"], read_only=True)
    got = summary_currencies(book["Summary"])
    assert {c: (v["debit"], v["credit"]) for c, v in got.items()} == \
           {c: (v["debit"], v["credit"]) for c, v in real.summary["currencies"].items()}
    assert got["BHD"]["debit"] == "86948.0230" and got["SAR"]["credit"] == "112636.500"
    assert sum(1 for _ in book["Ledger"].iter_rows(values_only=True)) == real.ledger.height + 1
    assert written["raw_parsed.csv"].read_text(encoding="utf-8").count("\n") >= real.ledger.height + 1


# -- report completeness (drops the automation could not include) -------------------------------------

MISSING = [{"drop": "2024-01-11", "files": ["a/000000.gz", "a/000001.gz", "b/000000.gz", "c/000000.gz"],
            "reason": "=cmd|' /C calc'!A0 <b>unreadable</b>"},
           {"drop": "2024-01-12", "files": [], "reason": "upload never finished"}]
FAILURES = [{"run_id": "run-1", "job": "reports_job", "drop": "2024-01-11", "step": "parsed_logs",
             "error": "OSError: bad\x07 gzip <script>x</script>", "time": "2024-01-11T02:00:00Z"},
            {"run_id": "run-2", "job": "reports_job", "drop": None, "step": None, "error": "@timeout",
             "time": "2024-01-12T02:00:00Z"}]


def completeness_rows(analysis, tmp_path, **keys):
    made = replace(analysis, summary={**analysis.summary, **keys})
    ws = openpyxl.load_workbook(excel.write_workbook(made, tmp_path / "c.xlsx"))["Summary"]
    return list(ws.iter_rows())


def trimmed(rows) -> list[list]:
    """Cell values per row without the empty cells openpyxl pads a row with."""
    out = []
    for r in rows:
        values = [c.value for c in r]
        while values and values[-1] is None:
            values.pop()
        out.append(values)
    return out


def test_summary_says_which_drops_an_incomplete_report_leaves_out(analysis, tmp_path):
    rows = completeness_rows(analysis, tmp_path, complete=False, missing_drops=MISSING, failures=FAILURES)
    values = trimmed(rows)
    at = values.index(["Completeness"])
    assert at < values.index(["What was read"])  # near the top
    assert values[at + 1][:2] == ["Complete", "no"]
    alert = rows[at + 2][0]
    assert alert.value == "INCOMPLETE: this report leaves out 2 drop(s)" and alert.font.b
    assert values[at + 3][:4] == ["missing drop", "files", "first files", "reason"]
    assert values[at + 4][:4] == ["2024-01-11", 4, "a/000000.gz, a/000001.gz, b/000000.gz", MISSING[0]["reason"]]
    assert rows[at + 4][3].data_type == "s" and rows[at + 4][3].quotePrefix  # log-derived text stays text
    assert values[at + 5][:4] == ["2024-01-12", 0, None, "upload never finished"]
    assert values[at + 6][:5] == ["failed run (UTC)", "job", "drop", "step", "error"]
    assert values[at + 7][:6] == ["2024-01-11T02:00:00Z", "reports_job", "2024-01-11", "parsed_logs",
                                  "OSError: bad\\x07 gzip <script>x</script>", "run-1"]
    assert values[at + 8][4] == "@timeout" and rows[at + 8][4].quotePrefix


def test_summary_of_a_complete_report_has_no_completeness_section_unless_runs_failed(analysis, tmp_path):
    for keys in ({}, {"complete": True, "missing_drops": [], "failures": []}):
        assert ["Completeness"] not in trimmed(completeness_rows(analysis, tmp_path, **keys))
    values = trimmed(completeness_rows(analysis, tmp_path, complete=True, failures=FAILURES))
    at = values.index(["Completeness"])
    assert values[at + 1][:2] == ["Complete", "yes"] and values[at + 2][0] == "failed run (UTC)"
    assert not any(v and str(v[0]).startswith("INCOMPLETE") for v in values)
