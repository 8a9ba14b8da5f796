"""The Ledger sheet's columns: a preset or a JSON list of names, checked against the catalog's ledger."""

from __future__ import annotations

import json
from pathlib import Path

from calo_assets.catalog import LEDGER

#: The columns an accountant needs to verify a ledger row by hand, in reading order.
ACCOUNTING_COLUMNS = [
    "timestamp", "userId", "id", "currency", "type", "typeInferred", "source", "action", "outcome",
    "amount", "vat", "oldBalance", "newBalance", "expectedNewBalance", "balanceMismatch",
    "suggestedAdjustment", "balanceExplanation", "continuityBreak", "continuityReason",
    "overdraft", "overdraftReason", "attemptedOverdraft", "paymentBalance", "inSync", "sourceFile", "line",
]
PRESETS = {"accounting": ACCOUNTING_COLUMNS, "full": LEDGER.names}


def ledger_columns(preset: str) -> list[str]:
    """The Ledger sheet's columns for `accounting`, `full`, or a JSON file holding a list of names.

    Raises ValueError naming the valid presets or columns, so the CLI can refuse a
    bad option before any log is read. Money is never shown without its currency:
    `currency` is added in front of the first money column when the list lacks it.
    """
    if preset in PRESETS:
        return list(PRESETS[preset])
    path = Path(preset)
    if not path.is_file():
        raise ValueError(f"{preset!r} is neither a preset ({', '.join(PRESETS)}) nor a JSON file "
                         "listing column names")
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{preset} is not readable JSON ({exc}); it must be a list of column names") from None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{preset} must hold a non-empty JSON list of column names, such as "
                         '["timestamp", "userId", "id", "currency", "amount"]')
    unknown = [n for n in names if n not in LEDGER.columns]
    if unknown:
        raise ValueError(f"unknown column(s) {', '.join(map(repr, unknown))} in {preset}; "
                         f"valid names: {', '.join(LEDGER.names)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"column(s) listed twice in {preset}: {', '.join(repeated)}")
    money = [i for i, n in enumerate(names) if LEDGER.columns[n].money]
    if money and "currency" not in names:
        names.insert(money[0], "currency")
    return names
