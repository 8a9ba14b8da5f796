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
import re
import shutil
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import dagster as dg
import polars as pl
from pydantic import Field

from calo_assets.parsed import ParsedLogs
from calo_assets.files import junk_reason

_CHECKOUT = Path(__file__).resolve().parents[2]
PROJECT_ROOT = _CHECKOUT if (_CHECKOUT / "pyproject.toml").is_file() else None
HASH_CHUNK = 1024 * 1024
MANIFEST = "manifest.json"
#: A folder being written (`.name.tmp-…`) or being swapped out (`.name.old-…`); see `_swap_in`.
LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-[0-9a-f]{8}")
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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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
        """Every file under the inbox, from `stat` alone: nothing is opened or read.

        Like `calo_assets.files.walk`: folders that are symlinks are not descended and
        symlinked files count only when they point inside the inbox.
        """
        root = self.root
        if not root.is_dir():
            return
        real_root = root.resolve()
        stack = [(str(root), "")]
        while stack:
            folder, prefix = stack.pop()
            try:
                with os.scandir(folder) as listing:
                    entries = list(listing)
            except OSError:
                continue
            for entry in entries:
                rel = prefix + entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((entry.path, rel + "/"))
                        continue
                    if entry.is_symlink():
                        target = Path(entry.path).resolve()
                        if not target.is_relative_to(real_root) or not target.is_file():
                            continue
                        st = target.stat()
                    elif entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                    else:
                        continue
                except OSError:
                    continue  # vanished between listing and stat: seen on a later tick, if it comes back
                skip = junk_reason(rel) or ("empty file" if st.st_size == 0 else None)
                yield InboxEntry(rel, st.st_size, st.st_mtime_ns, skip)

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

    def write(self, parts: tuple[str, ...], tables: dict[str, pl.DataFrame],
              documents: dict[str, Any] | None = None) -> Path:
        """Replace the folder `parts` with these tables (Parquet) and JSON documents."""
        final = self.folder(*parts)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.mkdir()
        try:
            for name, frame in tables.items():
                frame.write_parquet(tmp / f"{name}.parquet")
            for name, doc in (documents or {}).items():
                (tmp / name).write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")
            _swap_in(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def has(self, *parts: str) -> bool:
        return self.folder(*parts).is_dir()

    def table(self, parts: tuple[str, ...], name: str) -> pl.DataFrame:
        return pl.read_parquet(self.folder(*parts) / f"{name}.parquet")

    def document(self, parts: tuple[str, ...], name: str) -> Any:
        return json.loads((self.folder(*parts) / name).read_text(encoding="utf-8"))

    def manifest(self, drop: str) -> list[dict]:
        """The files of a drop as `raw_log_drops` recorded them: path, size, sha256, skip, duplicate_of."""
        return self.document(("drops", drop, "raw"), MANIFEST)["files"]

    def parsed(self, parts: tuple[str, ...]) -> ParsedLogs:
        folder = self.folder(*parts)
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
        latest = self.root / "latest"
        tmp = self.root / f".latest.tmp-{uuid.uuid4().hex[:8]}"
        shutil.copytree(version, tmp)
        _swap_in(tmp, latest)
        return latest


def _swap_in(tmp: Path, final: Path) -> None:
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)


def sweep_leftovers(folder: Path) -> list[str]:
    """Remove what interrupted writes left in `folder`; returns what was done, one line each.

    A `.name.tmp-…` folder is a write that never finished: removed. A `.name.old-…`
    folder is the previous version of `name` during a swap: removed, unless the
    swap was cut between its two renames and `name` is gone, then it is put back.
    """
    done = []
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return done
    for entry in entries:
        match = LEFTOVER.fullmatch(entry.name)
        if not match or not entry.is_dir():
            continue
        final = folder / match["name"]
        try:
            if match["kind"] == "old" and not final.exists():
                os.rename(entry, final)
                done.append(f"restored {final} from {entry.name}")
            else:
                shutil.rmtree(entry)
                done.append(f"removed {entry}")
        except OSError as exc:
            done.append(f"could not clear {entry}: {exc.strerror or exc}")
    return done


def sweep_when_alone(context: dg.InitResourceContext, folders: Iterable[Path]) -> None:
    """Sweep leftovers at the start of a run, unless another run may be writing (then the next run will)."""
    if context.instance is None or context.run is None:
        return
    others = set(context.instance.get_run_ids(dg.RunsFilter(statuses=WRITING))) - {context.run.run_id}
    if others:
        return
    for line in (line for folder in folders for line in sweep_leftovers(folder)):
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
