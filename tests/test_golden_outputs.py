"""Every figure the CLI writes stays what it was when tests/golden/ was recorded (see tests/golden.py).

New keys, sheets, sheet rows and dashboard sections may be added; nothing recorded may change. A
difference names the file, the sheet and the column (or the key) so it can be looked at directly.
"""

import json

import pytest

from tests.golden import GOLDEN, REAL_LOGS, generated_export, run_cli


def contained(recorded, now, where="summary"):
    """Differences of `now` from `recorded`, where `recorded` may be a part of `now` (dicts only grow)."""
    if isinstance(recorded, dict) and isinstance(now, dict):
        out = []
        for key, value in recorded.items():
            out += [f"{where}.{key}: missing"] if key not in now else contained(value, now[key], f"{where}.{key}")
        return out
    return [] if recorded == now else [f"{where}: was {json.dumps(recorded)[:200]}, now {json.dumps(now)[:200]}"]


def in_order(recorded: list, now: list) -> list:
    """Items of `recorded` missing from `now`, or out of their recorded order."""
    rest = iter(now)
    return [item for item in recorded if not any(item == x for x in rest)]


def differences(recorded: dict, now: dict) -> list[str]:
    out = contained(recorded["summary"], now["summary"])
    book, new_book = recorded["workbook"], now["workbook"]
    out += [f"sheet {name} missing or out of order" for name in in_order(book["sheets"], new_book["sheets"])]
    out += [f"Summary sheet row {row} missing or moved" for row in in_order(book["Summary"], new_book["Summary"])]
    for sheet in book["sheets"]:
        if sheet == "Summary" or sheet not in new_book:
            continue
        was, new = book[sheet], new_book[sheet]
        if was["rows"] != new["rows"]:
            out.append(f"sheet {sheet}: {was['rows']} rows recorded, {new['rows']} now")
        if list(was["columns"]) != list(new["columns"]):
            out.append(f"sheet {sheet}: columns were {list(was['columns'])}, now {list(new['columns'])}")
        out += [f"sheet {sheet}, column {col}: values differ" for col, digest in was["columns"].items()
                if new["columns"].get(col) not in (None, digest)]
    if recorded["csv"] != now["csv"]:
        out.append("raw_parsed.csv differs")
    out += contained(recorded["html"], now["html"], "report.html")
    return out


def check(name: str, log_dir, out, *extra):
    recorded = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    found = differences(recorded, run_cli(log_dir, out, *extra))
    assert not found, f"{name}: outputs differ from tests/golden/{name}.json:\n" + "\n".join(found[:40])


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return generated_export(tmp_path_factory.mktemp("golden") / "export")


def test_generated_export_outputs_are_unchanged(generated, tmp_path):
    check("generated", generated, tmp_path / "out")


def test_generated_export_full_ledger_is_unchanged(generated, tmp_path):
    check("generated-full", generated, tmp_path / "out", "--excel-columns", "full")


@pytest.mark.real_logs
@pytest.mark.skipif(not REAL_LOGS.is_dir(), reason="../shared/real-logs is absent")
def test_real_export_outputs_are_unchanged(tmp_path):
    check("real-logs", REAL_LOGS, tmp_path / "out")
