"""The command line as a user runs it: the real console script in a subprocess (its refusals in-process)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from calo_assets.cli import build_parser, main
from calo_assets.defs.config import AnalysisConfig
from calo_assets.settings import OPTIONS
from tests.logbuilder import simple_log, tx

BIN = Path(sys.executable).parent


def run(*args, cwd=None):
    return subprocess.run([str(BIN / "calo-logs-analyzer"), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture
def logs(tmp_path):
    folder = tmp_path / "logs"
    simple_log(folder, [tx(user="u1"), tx(user="u2", new="16.3"), tx(user="u3", currency="SAR", amount="57.5",
                                                                      vat="7.5", old="1700", new="1650")])
    return folder


def test_writes_summary_and_reports_and_prints_a_closing_screen(logs, tmp_path):
    out = tmp_path / "out"
    done = run(logs, "--out", out, "--raw-csv")
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    for key in ["transactions", "users", "rejects", "sync_errors", "files", "currencies", "outcomes", "checks", "anomalies"]:
        assert key in summary
    assert summary["transactions"] == 3 and summary["checks"]["balance_mismatch"] == 1
    assert summary["currencies"]["BHD"]["debit"] == "16.0000" and summary["currencies"]["SAR"]["debit"] == "57.500"
    assert set(summary["files"]) >= {"read", "skipped", "truncated"}
    assert set(summary["outcomes"]) == {"applied", "already_synced", "failed", "refused", "unknown"}
    # the CLI reads the whole folder it is given: its report is complete and lists no failed run
    assert summary["complete"] is True and summary["missing_drops"] == [] and summary["failures"] == []
    assert {p.name for p in out.iterdir()} >= {"summary.json", "report.xlsx", "report.html", "raw_parsed.csv"}
    assert "BHD" in done.stdout and "balance_mismatch 1" in done.stdout and "wrote" in done.stdout


def test_log_dir_option_and_module_form_give_the_same_numbers(logs, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run("--log_dir", logs, "--out", a, "--excel-columns", "accounting", "--log-level", "INFO").returncode == 0
    done = subprocess.run([sys.executable, "-m", "calo_assets", str(logs), "--out", str(b)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((a / "summary.json").read_text()) == json.loads((b / "summary.json").read_text())


def test_options_change_the_rules(logs, tmp_path):
    out = tmp_path / "o"
    assert run(logs, "--out", out, "--tolerance", "0.2", "--currency-decimals", "SAR=2,KWD=3").returncode == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["checks"]["balance_mismatch"] == 0
    assert summary["currencies"]["SAR"]["debit"] == "57.50"
    assert summary["settings"]["currency_places"] == {"BHD": 4, "KWD": 3, "SAR": 2}


@pytest.mark.parametrize("args, message", [
    (["--tolerance", "abc"], "--tolerance: must be a number, got 'abc'"),
    (["--tolerance", "-1"], "--tolerance: must be zero or more"),
    (["--decimals", "99"], "--decimals: must be between 0 and 10, got 99"),
    (["--currency-decimals", "KWD3"], "--currency-decimals: expected CUR=N"),
    (["--currency-decimals", "KWD=11"], "--currency-decimals: places for KWD must be between 0 and 10"),
    (["--excel-columns", "nonsense"], "--excel-columns: 'nonsense' is neither a preset"),
    (["--rapid-window", "0"], "--rapid-window: must be positive"),
    (["--burst-min", "0"], "--burst-min: must be positive"),
    (["--burst-window", "x"], "--burst-window: invalid int value"),
])
def test_bad_options_are_refused_with_a_message(logs, tmp_path, args, message, capsys):
    """In-process (the console script's own main), as a person sees it: exit code 2 and one line saying why."""
    with pytest.raises(SystemExit) as refused:
        main([str(logs), "--out", str(tmp_path / "o"), *args])
    assert refused.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before anything was read or written


def test_the_cli_and_the_launchpad_offer_the_same_settings():
    flags = {action.dest for action in build_parser()._actions}
    assert {option.name for option in OPTIONS} <= flags
    assert set(AnalysisConfig.model_fields) == {option.name for option in OPTIONS}


def test_missing_log_dir(tmp_path):
    done = run(tmp_path / "nope", "--out", tmp_path / "o")
    assert done.returncode == 2 and "does not exist" in done.stderr


def test_a_folder_without_any_log(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_bytes(b"\x00\x01")
    done = run(tmp_path / "empty", "--out", tmp_path / "o")
    assert done.returncode == 3 and "no log file found" in done.stderr


def test_an_unwritable_out_folder(logs, tmp_path):
    """A path that cannot be a folder (under a file) fails the same way for root and for a user."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    done = run(logs, "--out", blocker / "out")
    assert done.returncode == 4 and "cannot write to --out" in done.stderr and "Traceback" not in done.stderr


def test_bad_input_is_named_by_file_and_line_and_the_run_goes_on(logs, tmp_path):
    (logs / "broken.log").write_text("2024-01-10T08:00:00.000Z 2024-01-10T08:00:00.000Z\tr9\tINFO\tProcessing message m\n\n"
                                     "2024-01-10T08:00:00.001Z 2024-01-10T08:00:00.001Z\tr9\tINFO\tStart syncing the balance {\n"
                                     "  transaction: {\n    id: 'X'\n\n")
    done = run(logs, "--out", tmp_path / "o")
    assert done.returncode == 0
    assert "broken.log:3: unreadable transaction block" in done.stderr
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["rejects"] == 1


def test_a_report_that_cannot_be_written_is_exit_4_with_a_message(logs, tmp_path):
    out = tmp_path / "o"
    (out / "report.xlsx").mkdir(parents=True)  # something in the way of the workbook
    done = run(logs, "--out", out)
    assert done.returncode == 4 and "cannot write to --out" in done.stderr and "Traceback" not in done.stderr
