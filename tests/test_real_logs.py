"""Golden figures on the real export in ../shared/real-logs (skipped when it is absent).

Outcomes: the acceptance text of the reader issue says 8,578 applied and 20
unknown. Those 20 blocks have their `event published` line *above* them in the
file but later in time; ordering an invocation's records by time (as the
format notes demand) ties all 20 to their block, so 8,598 are applied.
"""

import pytest

from calo_assets.analysis import analyze
from calo_assets.catalog import ANOMALIES, LEDGER, REJECTS, TRANSACTIONS
from calo_assets.reading import read_logs
from calo_assets.settings import Settings


@pytest.fixture(scope="module")
def parsed(real_logs):
    return read_logs(real_logs)


@pytest.fixture(scope="module")
def analysis(parsed):
    return analyze(parsed, Settings())


def test_reader_figures(parsed):
    files = parsed.files
    assert (files["status"] == "read").sum() == 812
    skipped = files.filter(files["status"] == "skipped")
    assert skipped.height == 2 and all("macOS" in r for r in skipped["reason"])
    t = parsed.transactions
    assert t.height == 9088
    assert t["userId"].n_unique() == 446
    assert parsed.sync_errors.height == 2714
    assert (t["shape"] == "old").sum() == 1773
    assert t["jsonMerged"].sum() == 6
    assert parsed.rejects.height == 0
    outcomes = dict(zip(*t.group_by("outcome").len().to_dict(as_series=False).values()))
    assert outcomes == {"applied": 8598, "already_synced": 489, "refused": 1}
    per_currency = dict(zip(*t.group_by("currency").len().to_dict(as_series=False).values()))
    assert per_currency == {"BHD": 6306, "SAR": 2472, "AED": 92, "KWD": 151, "QAR": 67}
    r = parsed.reconciliation()
    assert r["transaction_blocks_seen"] == r["transactions"] + r["rejected_blocks"] + r["duplicate_blocks_collapsed"]


def test_outcomes_tied_in_time_order_are_the_twenty_above_their_block(parsed):
    t = parsed.transactions
    above = t.filter(t["outcomeLine"] < t["line"])
    assert above.height == 20 and set(above["outcome"]) == {"applied"}


def test_ledger_figures(analysis):
    s = analysis.summary
    assert (s["transactions"], s["users"]) == (9088, 446)
    money = {cur: (c["debit"], c["credit"]) for cur, c in s["currencies"].items()}
    assert money == {"BHD": ("86948.0230", "82005.3250"), "SAR": ("245718.560", "112636.500"),
                     "AED": ("9636.00", "8044.46"), "KWD": ("1197.00", "260.00"), "QAR": ("12500.00", "5600.00")}
    c = s["checks"]
    assert c["balance_mismatch"] == 5 and c["overdraft"] == 1 and c["attempted_overdraft"] == 1
    assert c["payment_balance_negative"] == 126 and c["continuity_break"] == 87
    mismatches = analysis.ledger.filter(analysis.ledger["balanceMismatch"])
    assert set(mismatches["shape"]) == {"old"} and set(mismatches["outcome"]) == {"already_synced"}
    overdraft = analysis.ledger.filter(analysis.ledger["overdraft"]).row(0, named=True)
    assert overdraft["outcome"] == "refused" and "attempted overdraft" in overdraft["overdraftExplanation"]


def test_schemas_hold_on_the_real_ledger(analysis):
    from calo_assets.schemas import validate

    for table, frame in [(TRANSACTIONS, analysis.parsed.transactions), (LEDGER, analysis.ledger),
                         (ANOMALIES, analysis.anomalies), (REJECTS, analysis.parsed.rejects)]:
        assert validate(table, frame, analysis.settings).height == 0, table.name
