"""Stage 4, combine: put the reads of several drops (or files) together, counting each record once.

A file whose bytes were already read is marked `duplicate` and its rows left
out; a record seen in two overlapping files is kept once. How many rows were
collapsed is kept per table, so the transaction blocks seen still reconcile.
"""

from __future__ import annotations

import polars as pl

from calo_assets.catalog import DUPLICATES
from calo_assets.parsed import ParsedLogs

#: What makes two rows the same record seen twice (records without a request id are never collapsed).
DEDUPE_KEYS = {
    "transactions": ["requestId", "messageId", "id", "timestamp"],
    "events": ["kind", "requestId", "messageId", "timestamp", "text"],
    "rejects": ["kind", "requestId", "messageId", "timestamp", "excerpt"],
}


def combine(parts: list[ParsedLogs]) -> ParsedLogs:
    """Put several reads together (drops of the same export) and collapse exact duplicates.

    A file whose bytes were already read (the same file dropped twice) is marked
    `duplicate` and its rows are left out: only that read's rows, so an earlier
    file of the same name with other bytes keeps its own. A record seen twice in
    different files (overlapping exports) has the same request id, message id,
    transaction id and timestamp: it is kept once. Records without a request id
    (INIT_START, metrics) are never collapsed, since two Lambda instances can log
    those in the same millisecond. How many rows were collapsed is reported per
    table, and rejected transaction blocks apart (`rejected_blocks`), so the
    blocks seen still reconcile.
    """
    seen: dict[str, str] = {}  # sha256 -> the path first read with those bytes
    marked: list[pl.DataFrame] = []
    fresh: dict[str, list[pl.DataFrame]] = {name: [] for name in (*DEDUPE_KEYS, "record_counts")}
    for part in parts:
        originals = []
        for path, sha, status in part.files.select("path", "sha256", "status").iter_rows():
            originals.append(seen.setdefault(sha, path) if status == "read" else None)
        files = part.files.with_columns(pl.Series("original", originals, dtype=pl.String)).with_columns(
            status=pl.when(pl.col("original").is_not_null() & (pl.col("original") != pl.col("path")))
            .then(pl.lit("duplicate")).otherwise(pl.col("status")))
        files = files.with_columns(reason=pl.when(pl.col("status") == "duplicate")
                                   .then(pl.lit("same bytes as ") + pl.col("original") + pl.lit("; counted once"))
                                   .otherwise(pl.col("reason"))).drop("original")
        marked.append(files)
        repeated = files.filter(pl.col("status") == "duplicate")["path"]
        for name in fresh:
            frame = getattr(part, name)
            fresh[name].append(frame.filter(~pl.col("sourceFile").is_in(repeated.implode())) if len(repeated) else frame)
    earlier = pl.concat([p.duplicates for p in parts]).group_by("table").agg(pl.col("collapsed").sum())
    collapsed: dict[str, int] = dict(zip(earlier["table"], earlier["collapsed"]))
    blocks = pl.col("kind") == "transaction_block"
    seen_rows = {name: sum(getattr(p, name).height for p in parts) for name in DEDUPE_KEYS}
    seen_blocks = sum(p.rejects.filter(blocks).height for p in parts)
    kept: dict[str, pl.DataFrame] = {}
    for name, key in DEDUPE_KEYS.items():
        rows = pl.concat(fresh.pop(name), how="vertical", rechunk=False)
        keyed = pl.col("requestId") != ""  # part of every key: keyed rows never equal unkeyed ones
        kept[name] = pl.concat([rows.filter(keyed & pl.struct(key).is_first_distinct()), rows.filter(~keyed)],
                               rechunk=False)
        collapsed[name] = collapsed.get(name, 0) + seen_rows[name] - kept[name].height
    collapsed["rejected_blocks"] = (collapsed.get("rejected_blocks", 0) + seen_blocks
                                    - kept["rejects"].filter(blocks).height)
    duplicates = pl.DataFrame({"table": list(collapsed), "collapsed": list(collapsed.values())},
                              schema=DUPLICATES.schema()).sort("table")
    return ParsedLogs(files=pl.concat(marked, how="vertical"), record_counts=pl.concat(fresh["record_counts"]),
                      duplicates=duplicates, **kept)
