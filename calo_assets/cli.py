"""The one-shot command line: `calo-logs-analyzer LOG_DIR --out OUT`.

A thin entry point over the same core the Dagster assets call, so both paths
give the same numbers. Exit codes: 0 done, 2 bad options or LOG_DIR missing,
3 no log in LOG_DIR, 4 OUT cannot be written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from calo_assets import __version__
from calo_assets.analysis import Analysis, analyze
from calo_assets.reading import read_logs
from calo_assets.outputs import write_all
from calo_assets.settings import OPTIONS, Settings, SettingsError

log = logging.getLogger("calo_assets")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="calo-logs-analyzer",
        description="Parse balance-sync Lambda logs into an auditable ledger with checks and reports.")
    p.add_argument("log_dir", nargs="?", help="folder containing log files (plain or gzipped, searched recursively)")
    p.add_argument("--log_dir", "--log-dir", dest="log_dir_opt", metavar="LOG_DIR", help="same as the positional LOG_DIR")
    p.add_argument("--out", default="./out", help="output folder, created if missing (default: ./out)")
    p.add_argument("--raw-csv", action="store_true", help="also export raw_parsed.csv")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="logging level (default: INFO)")
    for option in OPTIONS:  # every setting, as the Dagster launchpad has them too
        default = option.default()
        p.add_argument(option.flag, dest=option.name, type=option.kind, default=default, metavar=option.metavar,
                       help=option.help + (f" (default: {default})" if default != "" else ""))
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def settings_from_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> Settings:
    """Turn flags into Settings, refusing bad values with a message instead of a traceback."""
    try:
        return Settings.from_options({option.name: getattr(args, option.name) for option in OPTIONS})
    except SettingsError as exc:
        p.error(f"{next(o.flag for o in OPTIONS if o.name == exc.name)}: {exc.reason}")


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(message)s", stream=sys.stderr)
    raw_dir = args.log_dir_opt or args.log_dir
    if not raw_dir:
        p.error("LOG_DIR is required (positional or --log_dir)")
    settings = settings_from_args(p, args)
    log_dir, out = Path(raw_dir), Path(args.out)
    if not log_dir.is_dir():
        print(f"error: LOG_DIR {log_dir} does not exist or is not a folder", file=sys.stderr)
        return 2
    problem = _unwritable(out)
    if problem:
        print(f"error: cannot write to --out {out}: {problem}", file=sys.stderr)
        return 4
    parsed = read_logs(log_dir, settings.limits, progress=_progress_bar() if sys.stderr.isatty() else None)
    if not (parsed.files["status"] == "read").any():
        reasons = sorted(set(parsed.files["reason"].to_list()))[:3]
        print(f"error: no log file found in {log_dir} ({parsed.files.height} file(s) looked at, none could be "
              f"read as a log: {'; '.join(reasons) or 'the folder is empty'})", file=sys.stderr)
        return 3
    _report_bad_input(parsed)
    analysis = analyze(parsed, settings, str(log_dir))
    try:
        written = write_all(analysis, out, raw_csv=args.raw_csv)
    except OSError as exc:  # a read-only report file, a full disk
        print(f"error: cannot write to --out {out}: {exc.strerror or exc} ({exc.filename or out})", file=sys.stderr)
        return 4
    print(closing_screen(analysis, written))
    return 0


def _unwritable(out: Path) -> str | None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _progress_bar():
    """A one-line progress display on a terminal: files read so far and the current file."""
    def show(done: int, total: int, name: str) -> None:
        width = 30
        filled = width * done // max(total, 1)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} files  {name[-40:]:<40}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()
    return show


def _report_bad_input(parsed) -> None:
    """Each file or block that could not be used, by file and line, so a person can act on it."""
    for row in parsed.files.filter(parsed.files["status"].is_in(["refused"]) | parsed.files["truncated"]).iter_rows(named=True):
        log.warning("%s: %s", row["path"], row["reason"] or row["status"])
    for row in parsed.rejects.iter_rows(named=True):
        log.warning("%s:%s: %s", row["sourceFile"], row["line"], row["reason"])


def closing_screen(a: Analysis, written: dict[str, Path]) -> str:
    s = a.summary
    lines = [f"Calo Balance Analytics {a.version}: {s['transactions']:,} transactions, {s['users']:,} users, "
             f"{s['rejects']:,} rejects, {s['sync_errors']:,} sync errors",
             f"files: {s['files']['read']} read, {s['files']['skipped']} skipped, "
             f"{s['files']['truncated']} truncated, {s['files']['refused']} refused, {s['files']['duplicate']} duplicate",
             "", f"{'currency':<9}{'transactions':>13}{'users':>7}{'debit':>18}{'credit':>18}{'net':>18}"]
    for cur, c in s["currencies"].items():
        lines.append(f"{cur:<9}{c['transactions']:>13,}{c['users']:>7,}{c['debit']:>18}{c['credit']:>18}{c['net']:>18}")
    lines += ["", "checks: " + ", ".join(f"{k} {v}" for k, v in s["checks"].items()),
              "outcomes: " + ", ".join(f"{k} {v}" for k, v in s["outcomes"].items()),
              "anomalies: " + (", ".join(f"{k} {v}" for k, v in s["anomalies"].items()) or "none"), ""]
    lines += [f"wrote {path}" for path in written.values()]
    return "\n".join(lines)
