"""Hand-worked ledger checks, at their boundaries, and a property test over random chains."""

from decimal import Decimal as D

from hypothesis import given, settings as hsettings, strategies as st

import polars as pl
from polars.testing import assert_frame_equal

from calo_assets.ledger import ORDER, build_ledger
from calo_assets.money import round_money
from calo_assets.settings import Settings
from tests.frames import NO_ERRORS, ledger, row, transactions

def test_expected_balance_is_worked_out_in_words():
    r = ledger([row()]).row(0, named=True)
    assert r["expectedNewBalance"] == D("16.4") and not r["balanceMismatch"]
    assert r["balanceExplanation"] == "expected 16.4000 = 24.4000 - (8.0000 - 0.0000), logged 16.4000"


def test_credit_with_vat():
    r = ledger([row(type_="CREDIT", currency="SAR", amount="57.5", vat="7.5", old="1700", new="1750")]).row(0, named=True)
    assert r["expectedNewBalance"] == D("1750.000") and not r["balanceMismatch"]


def test_mismatch_beyond_tolerance_suggests_the_adjustment():
    r = ledger([row(new="16.3")]).row(0, named=True)
    assert r["balanceMismatch"] and r["suggestedAdjustment"] == D("0.1")
    assert "off by +0.1000, beyond the tolerance 0.005" in r["balanceExplanation"]


def test_exactly_at_tolerance_is_not_a_mismatch_and_just_past_it_is():
    at, past = ledger([row(new="16.395"), row(i=1, user="u2", new="16.3949")]).sort("userId").iter_rows(named=True)
    assert not at["balanceMismatch"] and at["suggestedAdjustment"] == 0
    assert past["balanceMismatch"] and past["suggestedAdjustment"] == D("0.0051")


def test_half_up_rounding_at_three_places():
    assert round_money(D("0.0005"), 3) == D("0.001")
    assert round_money(D("-0.0005"), 3) == D("-0.001")
    assert round_money(D("2.0045"), 3) == D("2.005")  # half-even would give 2.004
    r = ledger([row(currency="SAR", amount="1", old="10.0005", new="9.001")]).row(0, named=True)
    assert r["expectedNewBalance"] == D("9.001") and not r["balanceMismatch"]


def test_currency_places_can_be_overridden():
    s = Settings().with_currency_places({"KWD": 3})
    r = ledger([row(currency="KWD", amount="1.2345", old="10", new="8.766")], s).row(0, named=True)
    assert r["places"] == 3 and r["expectedNewBalance"] == D("8.766") and not r["balanceMismatch"]


def test_old_shape_direction_is_inferred_and_said():
    up, down = ledger([row(shape="old", amount="11", vat="1", old="453", new="463"),
                       row(i=1, user="u2", shape="old", old="24.4", new="16.4")]).sort("userId").iter_rows(named=True)
    assert (up["type"], up["typeInferred"]) == ("CREDIT", True) and "CREDIT inferred" in up["balanceExplanation"]
    assert (down["type"], down["typeInferred"]) == ("DEBIT", True) and not down["balanceMismatch"]


def test_missing_new_balance_is_filled_for_continuity():
    first, second = ledger([row(new=None), row(i=1, old="16.4", new="8.4")]).iter_rows(named=True)
    assert first["newBalanceMissing"] and first["newBalanceFilled"] == D("16.4") and not first["balanceMismatch"]
    assert "filled with the expected value" in first["balanceExplanation"]
    assert not second["continuityBreak"]


def test_continuity_break_names_what_it_follows_and_the_jump():
    a, b = ledger([row(), row(i=1, old="20", new="12")]).iter_rows(named=True)
    assert not a["continuityBreak"] and b["continuityBreak"]
    assert b["continuityFollows"] == "T0000" and b["continuityDelta"] == D("3.6")
    assert b["continuityReason"] == ("oldBalance 20.0000 but the previous applied transaction T0000 left 16.4000: "
                                     "a jump of +3.6000")


def test_repeats_and_refusals_stay_in_the_ledger_but_are_not_links():
    rows = [row(), row(i=1, old="24.4", new="16.4", outcome="already_synced"),
            row(i=2, old="16.4", new="-100", amount="116.4", outcome="refused"), row(i=3, old="16.4", new="8.4")]
    out = ledger(rows).to_dicts()
    assert [r["chainLink"] for r in out] == [True, False, False, True]
    assert not any(r["continuityBreak"] for r in out)
    assert out[3]["continuityFollows"] == "T0000"
    assert "repeat delivery" in out[1]["continuityReason"]


def test_overdraft_reasons_and_attempted_overdrafts():
    rows = [row(old="5", amount="8", new="5", outcome="applied"),            # expected<0 only
            row(i=1, user="u2", type_="CREDIT", old="-20", amount="8", new="-12"),  # both
            row(i=2, user="u3", old="5", amount="8", new="-3", outcome="refused")]
    out = {r["userId"]: r for r in ledger(rows).to_dicts()}
    assert out["u1"]["overdraftReason"] == "expected<0" and not out["u1"]["attemptedOverdraft"]
    assert out["u2"]["overdraftReason"] == "both"
    assert out["u3"]["attemptedOverdraft"] and "subscription balance did not move" in out["u3"]["overdraftExplanation"]


def test_actual_below_zero_alone():
    r = ledger([row(type_="CREDIT", old="-20", amount="30", new="-1")]).row(0, named=True)
    assert r["overdraftReason"] == "actual<0" and r["balanceMismatch"]


def test_negative_amounts_follow_the_same_formula():
    r = ledger([row(amount="-8", old="10", new="18")]).row(0, named=True)
    assert r["expectedNewBalance"] == D("18") and not r["balanceMismatch"]


def test_payment_balance_sync_and_its_chain():
    rows = [row(pay="16.4"), row(i=1, old="16.4", new="8.4", pay="9.4"), row(i=2, old="8.4", new="0.4", pay="-1")]
    out = ledger(rows).to_dicts()
    assert [r["inSync"] for r in out] == [True, False, False]
    assert "differs from newBalance 8.4000 by +1.0000" in out[1]["syncExplanation"]
    assert [r["paymentChainBreak"] for r in out] == [False, True, True]
    assert out[2]["paymentBalanceNegative"]


# -- property: clean chains raise no flag; one injected fault raises exactly its flag --------------------

amounts = st.decimals(min_value=D("0.001"), max_value=D("500"), places=3)


@st.composite
def chains(draw):
    n = draw(st.integers(min_value=1, max_value=12))
    balance = draw(st.decimals(min_value=D("1000"), max_value=D("5000"), places=3))
    rows = []
    for i in range(n):
        kind = draw(st.sampled_from(["DEBIT", "CREDIT"]))
        amount = draw(amounts)
        if kind == "DEBIT" and balance - amount < 100:  # a valid chain never overdraws
            kind = "CREDIT"
        vat = round_money(amount * D("0.1") / D("1.1"), 3)
        new = balance - (amount - vat) if kind == "DEBIT" else balance + (amount - vat)
        rows.append(row(i=i, type_=kind, amount=str(amount), vat=str(vat), old=str(balance), new=str(new),
                        currency="SAR"))
        balance = new
    return rows


FLAGS = ["balanceMismatch", "continuityBreak", "overdraft", "paymentBalanceNegative", "paymentChainBreak"]


def flags(out):
    return {f: [r["id"] for r in out if r[f]] for f in FLAGS} | {"inSync": [r["id"] for r in out if r["inSync"] is False]}


@hsettings(max_examples=60, deadline=None)
@given(chains())
def test_a_valid_chain_raises_no_flag(rows):
    assert all(not v for v in flags(ledger(rows).to_dicts()).values())


@hsettings(max_examples=60, deadline=None)
@given(chains(), st.data())
def test_an_injected_mismatch_is_found_and_only_it(rows, data):
    i = data.draw(st.integers(min_value=0, max_value=len(rows) - 1))
    bump = data.draw(st.decimals(min_value=D("0.006"), max_value=D("50"), places=3))
    rows[i] = rows[i] | {"newBalance": rows[i]["newBalance"] + bump, "paymentBalance": rows[i]["newBalance"] + bump}
    for k in range(i + 1, len(rows)):  # later rows start from what was logged: only row i's arithmetic is off
        rows[k] = rows[k] | {"oldBalance": rows[k]["oldBalance"] + bump, "newBalance": rows[k]["newBalance"] + bump,
                             "paymentBalance": rows[k]["newBalance"] + bump}
    out = ledger(rows).to_dicts()
    found = flags(out)
    assert found["balanceMismatch"] == [rows[i]["id"]]
    assert not found["continuityBreak"] and not found["overdraft"] and not found["inSync"]
    assert found["paymentChainBreak"] == ([rows[i]["id"]] if i else [])  # the wallet moved by more than the amount


@hsettings(max_examples=60, deadline=None)
@given(chains(), st.data())
def test_an_injected_jump_is_a_single_continuity_break(rows, data):
    if len(rows) < 2:
        return
    i = data.draw(st.integers(min_value=1, max_value=len(rows) - 1))
    jump = data.draw(st.decimals(min_value=D("0.006"), max_value=D("50"), places=3))
    for k in range(i, len(rows)):  # everything from row i on is shifted: one jump, then a clean chain
        rows[k] = rows[k] | {"oldBalance": rows[k]["oldBalance"] + jump, "newBalance": rows[k]["newBalance"] + jump,
                             "paymentBalance": rows[k]["newBalance"] + jump}
    found = flags(ledger(rows).to_dicts())
    assert found["continuityBreak"] == [rows[i]["id"]]
    assert not found["balanceMismatch"] and not found["overdraft"]


def test_a_users_chain_never_follows_another_user():
    """Chains are carried from row to row in ledger order; a new user starts afresh."""
    rows = [row(), row(i=1, old="16.4", new="8.4"), row(i=2, user="u2", old="8.4", new="0.4", pay="7"),
            row(i=3, user="u2", old="0.4", new="-7.6", pay="-1")]
    out = ledger(rows).to_dicts()
    assert [r["continuityReason"] for r in out] == [
        "first transaction of this user in the logs", "follows T0000, which left 16.4000",
        "first transaction of this user in the logs", "follows T0002, which left 0.4000"]
    assert [r["paymentChainExpected"] for r in out] == [None, D("8.4"), None, D("-1")]


def test_ledger_order_is_user_time_id_message_with_nulls_last():
    rows = [row(i=0, user="u2", seconds=5), row(i=1, user="u1", seconds=5, tx_id="B"),
            row(i=2, user="u1", seconds=5, tx_id="A"), row(i=3, user="u1", seconds=5, tx_id="A"),
            row(i=4, user="u1", seconds=1), row(i=5, user=None, seconds=0), row(i=6, user="u1", seconds=5, tx_id="A")]
    rows[3]["messageId"], rows[6]["messageId"] = "m0", None
    rows[4]["timestamp"] = None
    tx = transactions(rows)
    assert_frame_equal(ledger(rows).select(ORDER), tx.sort(ORDER, nulls_last=True).select(ORDER))
    assert ledger(rows)["line"].to_list() == [13, 12, 16, 11, 14, 10, 15]


def test_many_small_chunks_give_the_same_ledger():
    """The reader hands over frames in many chunks; Polars' streaming engine then sees empty pieces."""
    rows = [row(i=i, user=f"u{i % 3}", old="24.4", new="16.4" if i % 4 else "16",
                outcome="refused" if i % 5 else "applied") for i in range(40)]
    whole = transactions(rows)
    chunked = pl.concat([whole.slice(i, 1) for i in range(whole.height)], rechunk=False)
    assert chunked.n_chunks() == 40
    assert_frame_equal(build_ledger(chunked, NO_ERRORS, Settings()), build_ledger(whole, NO_ERRORS, Settings()))


# -- boundaries of the exact columnar arithmetic -------------------------------------------------------------

def test_amounts_next_to_the_largest_logged_value_stay_exact():
    """Three amounts below 1e20 can sum past what a Polars decimal holds: the sum is split, never rounded early."""
    huge = row(amount="-99999999999999999999.99995", old="99999999999999999999.99995", new=None)
    r = ledger([huge]).row(0, named=True)
    assert r["expectedNewBalance"] == D("199999999999999999999.9999")
    assert r["balanceExplanation"] == (
        "expected 199999999999999999999.9999 = 100000000000000000000.0000 - (-100000000000000000000.0000 - 0.0000); "
        "newBalance not logged, filled with the expected value for continuity")


def test_huge_terms_that_cancel_round_their_tiny_difference_half_up_with_its_sign():
    r = ledger([row(amount="99999999999999999999.00005", old="99999999999999999999.00004", new="0")]).row(0, named=True)
    assert r["expectedNewBalance"] == 0 and not r["overdraft"] and not r["balanceMismatch"]
    assert r["balanceExplanation"] == ("expected -0.0000 = 99999999999999999999.0000 - "
                                       "(99999999999999999999.0001 - 0.0000), logged 0.0000")


def test_negative_zero_is_written_as_python_writes_it():
    """fmt(Decimal("-0.00004"), 4) is "-0.0000": a negative amount that rounds to zero keeps its sign in words."""
    r = ledger([row(amount="8", old="8", new="0", pay="-0.00004")]).row(0, named=True)
    assert not r["paymentBalanceNegative"] and r["inSync"]
    assert r["syncExplanation"] == "paymentBalance -0.0000 equals newBalance 0.0000"


def test_zero_places_round_half_up_to_whole_units():
    r = ledger([row(currency="AED", amount="8.5", old="24.4", new="16")], Settings(default_places=0)).row(0, named=True)
    assert r["places"] == 0 and r["expectedNewBalance"] == D("16") and not r["balanceMismatch"]
    assert r["balanceExplanation"] == "expected 16 = 24 - (9 - 0), logged 16"


def test_every_chain_check_lets_a_difference_exactly_at_the_tolerance_pass():
    at = [row(pay="16.405"), row(i=1, old="16.405", new="8.405", pay="8.41")]  # each off by 0.005
    past = [row(pay="16.4051"), row(i=1, old="16.4051", new="8.4051", pay="8.4102")]  # each off by 0.0051
    a, b = ledger(at).row(1, named=True), ledger(past).row(1, named=True)
    assert not a["continuityBreak"] and a["inSync"] and not a["paymentChainBreak"]
    assert b["continuityBreak"] and b["inSync"] is False and b["paymentChainBreak"]
    assert b["paymentChainReason"] == ("paymentBalance 8.4102 but T0000 left 16.4051 and this moves it by -8.0000: "
                                       "expected 8.4051")
