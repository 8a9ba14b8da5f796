"""The three folders the service works with (the inbox, the table storage, the reports), and where failures are sent.

Paths come from the environment (`CALO_INBOX`, `CALO_STORAGE`, `CALO_REPORTS`,
`CALO_SETTLE_SECONDS`, `CALO_FAILURE_WEBHOOK`) when set, else the defaults below. A relative path is
taken from the project folder (the one holding pyproject.toml, where
`dagster dev` is started) so the webserver, the daemon and every run worker
agree on it whatever their working directory; outside a source checkout it is
taken from the working directory. Absolute paths are used as they are.
"""

import hashlib
import json
import os
import shutil
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import dagster as dg
import polars as pl
from pydantic import Field

from calo_assets.atomic import new_folder, sweep
from calo_assets.catalog import Table
from calo_assets.files import file_sha256, walk
from calo_assets.parsed import ParsedLogs

_CHECKOUT = Path(__file__).resolve().parents[2]
PROJECT_ROOT = _CHECKOUT if (_CHECKOUT / "pyproject.toml").is_file() else None
MANIFEST = "manifest.json"
#: Run statuses in which a run may be writing into the folders.
WRITING = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def resolve(path: str) -> Path:
    """An absolute path: relative ones are taken from the project folder (or the working directory)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    return (PROJECT_ROOT or Path.cwd()) / p


class InboxEntry(NamedTuple):
    """What a stat tells of one file of the inbox; `skip` is why it is not a log (by name, or empty)."""

    path: str  # relative to the inbox, POSIX separators
    size: int
    mtime_ns: int
    skip: str | None


def drop_key(files: Iterable[tuple[str, str]]) -> str:
    """The partition key of a drop: short sha256 of its sorted (relative path, content sha256) pairs.

    Built from content, so the same drop always gets the same key (a run key that
    dedupes forever then never skips new data, nor runs old data twice).
    """
    text = json.dumps(sorted(files), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class InboxFolder(dg.ConfigurableResource):
    """The folder log files are dropped into (sub-folders included)."""

    path: str = Field(default="data/inbox", description="Inbox folder; relative paths start at the project folder")
    settle_seconds: float = Field(
        default=5.0, description="A file counts as settled when unchanged since the previous sensor tick "
                                 "and last modified at least this many seconds ago")

    @property
    def root(self) -> Path:
        return resolve(self.path)

    def scan(self) -> Iterator[InboxEntry]:
        """Every file under the inbox, as `files.walk` finds them, from `stat` alone: nothing is opened or read.

        What the walk skips (junk by name, a symlink leaving the inbox, a folder that
        cannot be listed) comes with its reason, and so does an empty file: the drop
        lists them as the CLI does. A file gone between listing and stat is seen on a later tick.
        """
        if not self.root.is_dir():
            return
        for path, rel, skip in walk(self.root):
            try:
                st = path.lstat() if skip else path.stat()
            except OSError:
                continue
            yield InboxEntry(rel, st.st_size, st.st_mtime_ns, skip or ("empty file" if st.st_size == 0 else None))

    def sha256(self, relative: str) -> str:
        return file_sha256(self.root / relative)


class StorageFolder(dg.ConfigurableResource):
    """Where the assets keep their tables, as Parquet files, one folder per asset (per drop for drops).

    Layout: `drops/<key>/raw/manifest.json`, `drops/<key>/parsed/<table>.parquet`,
    `parsed_events/`, `sync_errors/`, `ledger/` (with the `config.json` it was built
    with), `anomalies/`. A folder is written whole into a temporary sibling and
    then swapped in, so a reader never sees half a table set; what a killed run
    left of such a write is swept away when the next run starts.
    """

    path: str = Field(default="data/storage", description="Storage folder; relative paths start at the project folder")

    @property
    def root(self) -> Path:
        return resolve(self.path)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        sweep_when_alone(context, [self.root, *self.root.glob("drops/*")])

    def folder(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def write(self, parts: str | tuple[str, ...], tables: dict[str, pl.DataFrame],
              documents: dict[str, Any] | None = None) -> Path:
        """Replace the folder `parts` (an asset's name, or a drop's path) with these tables and JSON documents."""
        with new_folder(self.folder(*_parts(parts))) as tmp:
            for name, frame in tables.items():
                frame.write_parquet(tmp / f"{name}.parquet")
            for name, doc in (documents or {}).items():
                (tmp / name).write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")
        return self.folder(*_parts(parts))

    def has(self, *parts: str) -> bool:
        return self.folder(*parts).is_dir()

    def table(self, table: Table) -> pl.DataFrame:
        """A catalog table, from the folder of the asset that keeps it."""
        return pl.read_parquet(self.folder(table.asset) / table.file)

    def document(self, parts: str | tuple[str, ...], name: str) -> Any:
        return json.loads((self.folder(*_parts(parts)) / name).read_text(encoding="utf-8"))

    def manifest(self, drop: str) -> list[dict]:
        """The files of a drop as `raw_log_drops` recorded them: path, size, sha256, skip, duplicate_of."""
        return self.document(("drops", drop, "raw"), MANIFEST)["files"]

    def parsed(self, parts: str | tuple[str, ...]) -> ParsedLogs:
        folder = self.folder(*_parts(parts))
        return ParsedLogs.from_tables({p.stem: pl.read_parquet(p) for p in folder.glob("*.parquet")})


class ReportsFolder(dg.ConfigurableResource):
    """Where each report version gets its own folder, plus a copy of the newest in `latest/`."""

    path: str = Field(default="data/reports", description="Reports folder; relative paths start at the project folder")

    @property
    def root(self) -> Path:
        return resolve(self.path)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        sweep_when_alone(context, [self.root])

    def publish_latest(self, version: Path) -> Path:
        """Copy a finished version folder to `latest/`, swapped in whole."""
        with new_folder(self.root / "latest") as tmp:
            shutil.copytree(version, tmp, dirs_exist_ok=True)
        return self.root / "latest"


def _parts(parts: str | tuple[str, ...]) -> tuple[str, ...]:
    return (parts,) if isinstance(parts, str) else parts


def sweep_when_alone(context: dg.InitResourceContext, folders: Iterable[Path]) -> None:
    """Sweep leftovers at the start of a run, unless another run may be writing (then the next run will)."""
    if context.instance is None or context.run is None:
        return
    others = set(context.instance.get_run_ids(dg.RunsFilter(statuses=WRITING))) - {context.run.run_id}
    if others:
        return
    for line in (line for folder in folders for line in sweep(folder)):
        context.log.warning(f"leftover of an interrupted write: {line}")


class FailureWebhook(dg.ConfigurableResource):
    """Where each failed run is posted as JSON (the record listed in summary.json's `failures`); empty: nowhere."""

    url: str = Field(default="", description="http(s) URL that receives a POST per failed run")
    timeout_seconds: float = Field(default=10.0, description="How long a POST may take")

    def post(self, failure: dict) -> str | None:
        """POST `failure`; returns None when sent (or when there is no URL), else why it was not."""
        if not self.url:
            return None
        request = urllib.request.Request(self.url, data=json.dumps(failure).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                response.read()
        except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
            return str(exc)
        return None


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    """The resources of the service: environment variables first, then the defaults."""
    env = os.environ
    inbox = InboxFolder(path=env.get("CALO_INBOX", InboxFolder.model_fields["path"].default),
                        settle_seconds=float(env.get("CALO_SETTLE_SECONDS",
                                                     InboxFolder.model_fields["settle_seconds"].default)))
    return {
        "inbox": inbox,
        "storage": StorageFolder(path=env.get("CALO_STORAGE", StorageFolder.model_fields["path"].default)),
        "reports_folder": ReportsFolder(path=env.get("CALO_REPORTS", ReportsFolder.model_fields["path"].default)),
        "failure_webhook": FailureWebhook(url=env.get("CALO_FAILURE_WEBHOOK", "")),
    }
