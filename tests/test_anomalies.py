"""Each anomaly type on a hand-made case, with its threshold moved both ways."""

from decimal import Decimal as D

import polars as pl

from calo_assets.anomalies import detect_anomalies
from calo_assets.settings import Settings
from tests.frames import NO_ERRORS, ledger, row


def findings(rows, settings=None, events=NO_ERRORS):
    s = settings or Settings()
    return detect_anomalies(ledger(rows, s), events, s)


def of_type(frame, kind):
    return frame.filter(pl.col("type") == kind)


def chain(amounts, user="u1", start="1000", **kw):
    """A clean chain of debits of the given amounts, one per 90 s."""
    rows, balance = [], D(start)
    for i, a in enumerate(amounts):
        new = balance - D(a)
        rows.append(row(i=i, user=user, amount=a, old=str(balance), new=str(new), **kw))
        balance = new
    return rows


def test_a_clean_chain_has_no_finding():
    assert findings(chain(["8", "9", "10", "8.5", "9.5"])).height == 0


def test_invalid_action_by_vocabulary_and_by_name():
    rows = [row(action="INVAILID_ENTRY"), row(i=1, user="u2", action="BRAND_NEW_ACTION")]
    details = of_type(findings(rows), "InvalidAction")["details"].to_list()
    assert any("marks an invalid entry" in d for d in details) and any("not in the known vocabulary" in d for d in details)


def test_mad_spike_respects_its_threshold():
    rows = chain(["8", "8.5", "9", "8", "9.5", "8", "80"])
    spike = of_type(findings(rows), "MADSpike")
    assert spike["transactionId"].to_list() == ["T0006"] and "robust z-score" in spike["details"][0]
    assert of_type(findings(rows, Settings(mad_threshold=D("200"))), "MADSpike").height == 0


def test_mad_spike_exactly_at_the_threshold_is_not_one():
    """The screen passes groups near the threshold; the exact Decimal score decides (strictly above counts)."""
    s = Settings(mad_threshold=D("6.745"))  # median 12, MAD 1: an amount of 22 scores exactly 0.6745 * 10
    assert of_type(findings(chain(["10", "11", "12", "13", "22"]), s), "MADSpike").height == 0
    past = of_type(findings(chain(["10", "11", "12", "13", "22.0001"]), s), "MADSpike")
    assert past["transactionId"].to_list() == ["T0004"] and "robust z-score 6.7, threshold 6.745" in past["details"][0]


def test_mad_spike_among_amounts_too_large_for_the_screen():
    rows = chain(["20000000", "20000001", "20000002", "20000003", "20000100"], start="1000000000")
    spike = of_type(findings(rows), "MADSpike")
    assert spike["transactionId"].to_list() == ["T0004"] and "median 20000002.0000 (MAD 1.0000" in spike["details"][0]


def test_duplicate_transaction_id_applied_twice():
    rows = [row(tx_id="DUP"), row(i=1, tx_id="DUP", old="16.4", new="8.4")]
    dup = of_type(findings(rows), "DuplicateTxId")
    assert dup.height == 1 and "applied 2 times" in dup["details"][0]


def test_repeat_delivery_is_its_own_finding_not_a_duplicate():
    rows = [row(tx_id="A"), row(i=1, tx_id="A", outcome="already_synced")]
    f = findings(rows)
    assert of_type(f, "RepeatDelivery").height == 1 and of_type(f, "DuplicateTxId").height == 0


def test_rapid_manual_deduction_within_the_window():
    rows = [row(seconds=0), row(i=1, old="16.4", new="8.4", seconds=30)]
    assert of_type(findings(rows), "RapidManualDeduction")["transactionId"].to_list() == ["T0001"]
    assert of_type(findings(rows, Settings(rapid_window_seconds=20)), "RapidManualDeduction").height == 0


def test_burst_of_transactions_within_one_second():
    rows = chain(["1", "2", "3"])
    rows = [r | {"timestamp": f"2024-01-10T08:00:00.{100 * i:03d}Z"} for i, r in enumerate(rows)]
    burst = of_type(findings(rows), "Burst")
    assert burst.height == 1 and burst["relatedIds"][0] == "T0001,T0002"
    assert of_type(findings(rows, Settings(burst_min_transactions=4)), "Burst").height == 0


def test_after_hours_and_weekend_in_the_currencys_local_time():
    # 2024-01-12 is a Friday: a weekend day in Bahrain, a working day in the UAE. 20:30 UTC is 23:30 in Manama.
    bhd = row(action="COMPENSATION", seconds=2 * 86400 + 12.5 * 3600)
    aed = row(i=1, user="u2", currency="AED", action="COMPENSATION", seconds=2 * 86400 + 6 * 3600)
    f = findings([bhd, aed])
    assert of_type(f, "Weekend")["userId"].to_list() == ["u1"]
    late = row(action="COMPENSATION", seconds=12.5 * 3600)
    assert "23:30 Asia/Bahrain" in of_type(findings([late]), "AfterHours")["details"][0]
    nightly = row(action="DELIVERY_DEDUCTION", seconds=12.5 * 3600)
    assert of_type(findings([nightly]), "AfterHours").height == 0  # the scheduled run is exempt


def test_rounding_pattern_places_and_float_noise():
    rows = [row(amount="8.12345", old="24.12345", new="16"), row(i=1, user="u2", amount="0.30000000000000004",
                                                             old="1.30000000000000004", new="1")]
    details = of_type(findings(rows), "RoundingPattern")["details"].to_list()
    assert any("has 5 decimal places; BHD uses 4" in d for d in details)
    assert any("binary-float noise" in d for d in details)


def test_currency_mismatch_for_one_user_in_two_currencies():
    f = findings([row(currency="BHD"), row(i=1, currency="SAR", old="16.4", new="8.4")])
    assert "BHD, SAR" in of_type(f, "CurrencyMismatch")["details"][0]


def test_missing_field_on_old_shape():
    f = findings([row(shape="old")])
    assert "not logged: type, source, action, paymentBalance" in of_type(f, "MissingField")["details"][0]


def test_ledger_flags_become_findings_with_the_ledgers_words():
    rows = [row(new="16"), row(i=1, old="99", new="91", pay="90"), row(i=2, user="u3", old="1", new="-7", outcome="refused")]
    f = findings(rows)
    kinds = set(f["type"])
    assert {"BalanceMismatch", "ContinuityBreak", "OutOfSync", "Overdraft", "RefusedDebit"} <= kinds
    assert of_type(f, "BalanceMismatch")["severity"][0] == "high"


def test_a_refusal_without_its_block_is_a_finding():
    events = NO_ERRORS.vstack(pl.DataFrame([{**dict.fromkeys(NO_ERRORS.columns), "kind": "refusal", "transactionId": "GONE",
                                             "userId": "u9", "currentBalance": D("2"), "sourceFile": "f.log", "line": 7}],
                                           schema=NO_ERRORS.schema))
    refused = of_type(findings([row()], events=events), "RefusedDebit")
    assert refused["transactionId"].to_list() == ["GONE"] and "not in these logs" in refused["details"][0]
