"""pandera (Polars) schemas of the catalog's tables: the rules that must always hold, built from one declaration.

Each column's type, nullability and values, each named cross-column rule and
each unique key come from `calo_assets.catalog`. `validate` returns the failure
cases as a frame (empty when valid) instead of raising, so a check or a report
can show a person which rows failed and why.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaErrors

from calo_assets.catalog import Column, Rule, Table
from calo_assets.ledger import money_scale
from calo_assets.settings import Settings

NO_FAILURES = {"failure_case": pl.String, "schema_context": pl.String, "column": pl.String, "check": pl.String,
               "check_number": pl.Int32, "index": pl.Int32}


def schema(table: Table, settings: Settings | None = None) -> pa.DataFrameSchema:
    """The pandera schema of `table`; computed money at the scale of `settings`."""
    dtypes = table.schema(money_scale(settings or Settings()))
    return pa.DataFrameSchema({name: _column(dtypes[name], c) for name, c in table.columns.items()},
                              checks=[_rule(r) for r in table.rules], unique=list(table.unique) or None,
                              name=table.name)


def _column(dtype: pl.DataType, column: Column) -> pa.Column:
    checks = []
    if column.values:
        checks.append(pa.Check.isin(list(column.values)))
    if column.pattern:
        checks.append(pa.Check.str_matches(column.pattern))
    if column.positive:
        checks.append(pa.Check.gt(0))
    if column.not_blank:
        checks.append(pa.Check.str_length(min_value=1))
    return pa.Column(dtype, checks, nullable=column.nullable)


def _rule(rule: Rule) -> pa.Check:
    return pa.Check(lambda data: data.lazyframe.select(rule.holds), name=rule.name, error=rule.error)


def validate(table: Table, frame: pl.DataFrame, settings: Settings | None = None) -> pl.DataFrame:
    """Failure cases of `frame` against its table's schema; an empty frame means valid."""
    try:
        schema(table, settings).validate(frame, lazy=True)
    except SchemaErrors as errors:
        return errors.failure_cases
    return pl.DataFrame(schema=NO_FAILURES)
