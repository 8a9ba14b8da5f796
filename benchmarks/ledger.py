"""Benchmark: ledger, anomalies and summary on parsed tables. Prints figures; asserts nothing.

Each input runs in its own child process; after each stage it prints the wall and CPU seconds the stage
took and the process's peak memory (max RSS) so far, so a stage's own peak shows as the step up from
the line before. An input is a log folder (read first, not timed) or a folder of Parquet tables saved
by an earlier run with --save-tables (reading the 100x export takes minutes; its tables load in seconds).

    python benchmarks/ledger.py                          # the real export in ../shared/real-logs
    python benchmarks/ledger.py /path/x100 --save-tables /tmp/x100-tables
    python benchmarks/ledger.py /tmp/x100-tables         # later runs: no re-reading
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_LOGS = REPO.parent / "shared" / "real-logs"

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import polars as pl
from calo_assets.parsed import TABLES, ParsedLogs
from calo_assets.reading import read_logs
from calo_assets.ledger import build_ledger
from calo_assets.anomalies import detect_anomalies
from calo_assets.summary import build_summary
from calo_assets.settings import Settings

folder, save = Path(sys.argv[1]), sys.argv[2]
if (folder / "transactions.parquet").is_file():
    parsed = ParsedLogs.from_tables({name: pl.read_parquet(folder / f"{name}.parquet") for name in TABLES})
else:
    parsed = read_logs(folder)
if save:
    Path(save).mkdir(parents=True, exist_ok=True)
    for name, frame in parsed.tables().items():
        frame.write_parquet(Path(save) / f"{name}.parquet")

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def stage(name, run):
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    print(json.dumps({"stage": name, "seconds": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                      "peak_mb": peak_mb(), "rows": getattr(result, "height", None)}), flush=True)
    return result

settings = Settings()
print(json.dumps({"stage": "input", "seconds": 0, "cpu": 0, "peak_mb": peak_mb(),
                  "rows": parsed.transactions.height}), flush=True)
ledger = stage("ledger", lambda: build_ledger(parsed.transactions, parsed.sync_errors, settings))
anomalies = stage("anomalies", lambda: detect_anomalies(ledger, parsed.events, settings))
stage("summary", lambda: build_summary(parsed, ledger, anomalies, settings))
"""


def run(folder: Path, save: Path | None) -> None:
    print(f"{folder}:", flush=True)
    with subprocess.Popen([sys.executable, "-c", CHILD, str(folder), str(save or "")], stdout=subprocess.PIPE,
                          text=True, cwd=REPO) as child:
        for line in child.stdout:
            f = json.loads(line)
            rows = "" if f["rows"] is None else f"{f['rows']:>9,} rows"
            print(f"  {f['stage']:<10} {f['seconds']:7.2f} s wall {f['cpu']:7.2f} s CPU  peak {f['peak_mb']:6.0f} MB  "
                  f"{rows}", flush=True)
    if child.returncode:
        raise SystemExit(f"{folder}: failed with exit code {child.returncode}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", type=Path, help="log folders or folders of saved tables")
    parser.add_argument("--save-tables", type=Path, help="save the parsed tables of the (single) input here")
    args = parser.parse_args()
    inputs = args.inputs or ([REAL_LOGS] if REAL_LOGS.is_dir() else [])
    if not inputs:
        raise SystemExit("no input: give a log folder (../shared/real-logs is absent)")
    if args.save_tables and len(inputs) != 1:
        raise SystemExit("--save-tables takes exactly one input")
    for folder in inputs:
        run(folder, args.save_tables)


if __name__ == "__main__":
    main()
