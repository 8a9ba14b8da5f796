"""Parsed-transaction rows built directly as frames, for ledger and anomaly tests."""

from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import polars as pl

from calo_assets.catalog import EVENTS, TRANSACTIONS
from calo_assets.parsed import with_times
from calo_assets.ledger import build_ledger
from calo_assets.settings import Settings

T0 = datetime(2024, 1, 10, 8, 0, tzinfo=timezone.utc)
NO_ERRORS = pl.DataFrame(schema=EVENTS.schema())


def row(i=0, user="u1", type_="DEBIT", amount="8", vat="0", old="24.4", new="16.4", pay="same",  # noqa: PLR0913
        currency="BHD", outcome="applied", shape="typed", tx_id=None, source="MANUAL_DEDUCTION",
        action="DELIVERY_DEDUCTION", seconds=None):
    """One parsed transaction; `seconds` after T0 (default 90 s per `i`), money given as text."""
    dec = lambda v: None if v is None else D(v)  # noqa: E731
    return {"id": tx_id or f"T{i:04d}", "userId": user, "currency": currency, "type": type_ if shape == "typed" else None,
            "source": source if shape == "typed" else None, "action": action if shape == "typed" else None,
            "amount": D(amount), "vat": dec(vat), "oldBalance": D(old),
            "newBalance": dec(new), "paymentBalance": dec(new if pay == "same" else pay) if shape == "typed" else None,
            "shape": shape, "outcome": outcome, "sourceFile": "f.log", "line": 10 + i, "endLine": 20 + i,
            "requestId": f"r{i}", "messageId": f"m{i}", "jsonMerged": False,
            "timestamp": (T0 + timedelta(seconds=90 * i if seconds is None else seconds)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"}


def transactions(rows):
    return with_times(pl.DataFrame(rows, schema=TRANSACTIONS.building_schema()))


def ledger(rows, settings=None):
    return build_ledger(transactions(rows), NO_ERRORS, settings or Settings())


