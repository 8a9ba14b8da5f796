"""Report versions, read from the `reports` materializations recorded in the Dagster instance.

The materialization metadata is the only source of truth: which files a version
has, where they are and what their sha256 was are read from it, never guessed
from the folder layout. Dagster wraps metadata values (`MetadataValue.json`,
`.path`, `.bool`); `_plain` unwraps them so the rest of the app sees plain data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

REPORTS = dg.AssetKey("reports")
#: The files a version offers for download, in the order the page lists them (summary.json is not one).
DOWNLOADABLE = ("report.xlsx", "report.html", "raw_parsed.csv")
#: Largest id SQLite (and Postgres bigint) can hold: a bigger one in a URL is simply unknown.
MAX_STORAGE_ID = 2**63 - 1


@dataclass(frozen=True)
class ReportFile:
    name: str
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class Version:
    """One materialization of `reports`: what it covers and the files it recorded."""

    storage_id: int
    run_id: str
    created: datetime  # UTC
    folder: str
    files: dict[str, ReportFile]  # downloadable files only, in DOWNLOADABLE order
    drops: list[str]
    checks_passed: bool | None  # None: not recorded
    currency_totals: dict[str, dict]
    complete: bool | None = None  # None: not recorded (a version made before reports said so)
    missing_drops: tuple[dict, ...] = ()  # {"drop", "files", "reason"}: drops of log files left out
    failures: tuple[dict, ...] = ()  # {"run_id", "job", "drop", "step", "error", "time"} since the previous version

    @property
    def label(self) -> str:
        """Name of the version folder (`<UTC stamp>-<run id short>`), used in download file names."""
        return Path(self.folder).name or str(self.storage_id)


def _plain(value):
    return value.value if isinstance(value, dg.MetadataValue) else value


def from_record(record: dg.EventLogRecord) -> Version:
    meta = {k: _plain(v) for k, v in record.asset_materialization.metadata.items()}
    recorded = meta.get("files") or {}
    files = {name: ReportFile(name, Path(recorded[name]["path"]), int(recorded[name]["size"]),
                              str(recorded[name]["sha256"]).lower())
             for name in DOWNLOADABLE if isinstance(recorded.get(name), dict) and recorded[name].get("path")}
    checks = meta.get("checks_passed")
    complete = meta.get("complete")
    return Version(
        storage_id=record.storage_id,
        run_id=record.run_id or "",
        created=datetime.fromtimestamp(record.timestamp, UTC),
        folder=str(meta.get("folder") or ""),
        files=files,
        drops=[str(d) for d in meta.get("drops") or []],
        checks_passed=None if checks is None else bool(checks),
        currency_totals=dict(meta.get("currency_totals") or {}),
        complete=None if complete is None else bool(complete),
        missing_drops=tuple(d for d in meta.get("missing_drops") or [] if isinstance(d, dict)),
        failures=tuple(f for f in meta.get("failures") or [] if isinstance(f, dict)),
    )


def list_versions(instance: dg.DagsterInstance, limit: int) -> list[Version]:
    """The newest `limit` versions, newest first."""
    return [from_record(r) for r in instance.fetch_materializations(REPORTS, limit=limit).records]


def get_version(instance: dg.DagsterInstance, storage_id: int) -> Version | None:
    """The version with this storage id, or None when no `reports` materialization has it."""
    if not 0 < storage_id <= MAX_STORAGE_ID:
        return None
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=REPORTS, storage_ids=[storage_id]),
                                              limit=1).records
    return from_record(records[0]) if records else None


def latest_version(instance: dg.DagsterInstance) -> Version | None:
    versions = list_versions(instance, limit=1)
    return versions[0] if versions else None
