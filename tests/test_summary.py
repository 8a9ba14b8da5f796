"""Per-currency totals: exact sums of the logged amounts, rounded half-up once, per currency only."""

from calo_assets.settings import Settings
from calo_assets.summary import currency_totals
from tests.frames import ledger, row


def test_totals_are_exact_next_to_the_largest_logged_amount():
    rows = [row(amount="99999999999999999999.99995", old="0", new=None), row(i=1, amount="0.00001", old="0", new=None),
            row(i=2, type_="CREDIT", amount="1", old="0", new=None, outcome="refused")]
    assert currency_totals(ledger(rows), Settings())["BHD"] == {
        "transactions": 3, "users": 1, "debit": "100000000000000000000.0000", "credit": "1.0000",
        "net": "-99999999999999999999.0000", "debit_applied": "100000000000000000000.0000",
        "credit_applied": "0.0000", "places": 4}


def test_each_currency_is_totalled_apart_at_its_own_places():
    rows = [row(amount="8.00049", old="24.4", new="16.4"), row(i=1, user="u2", currency="SAR", amount="1.0005",
                                                            old="10", new="9")]
    totals = currency_totals(ledger(rows), Settings())
    assert list(totals) == ["BHD", "SAR"]
    assert (totals["BHD"]["debit"], totals["SAR"]["debit"], totals["SAR"]["net"]) == ("8.0005", "1.001", "-1.001")
