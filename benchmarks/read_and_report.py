"""Benchmark: reading speed and the whole CLI run, with peak memory. Prints figures; asserts nothing.

Each measurement runs in a child process so its peak memory (max RSS) is its own:
  1. read the real export in ../shared/real-logs (when present)
  2. the whole CLI run on it (read, ledger, anomalies, every report)
  3. read a generated export --scale times the real one (default 100x, ~900k transactions)
  4. the whole CLI run on that export (skip with --no-big-cli)

    python benchmarks/read_and_report.py [--scale 100] [--no-big-cli]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_LOGS = REPO.parent / "shared" / "real-logs"
REAL_TRANSACTIONS = 9088

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
mode, folder, out = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
start = time.perf_counter()
if mode == "read":
    from calo_assets.reading import read_logs
    parsed = read_logs(folder)
    figures = {"transactions": parsed.transactions.height,
               "decompressed_mb": int(parsed.files["decompressedBytes"].sum() or 0) / 1e6,
               "bytes_on_disk_mb": int(parsed.files["size"].sum() or 0) / 1e6}
    # plain files have no decompressed count: their size is their text
    plain = parsed.files.filter(~parsed.files["gzip"])
    figures["text_mb"] = figures["decompressed_mb"] + int(plain["size"].sum() or 0) / 1e6
else:
    from calo_assets.cli import main
    code = main([str(folder), "--out", out, "--raw-csv", "--log-level", "WARNING"])
    summary = json.loads((Path(out) / "summary.json").read_text())
    figures = {"exit": code, "transactions": summary["transactions"]}
figures["seconds"] = time.perf_counter() - start
figures["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(figures))
"""


def measure(mode: str, folder: Path, out: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, mode, str(folder), str(out)], capture_output=True, text=True,
                          cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{mode} on {folder} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def show(label: str, f: dict) -> None:
    line = f"{label:<34} {f['seconds']:8.1f} s  peak {f['peak_mb']:7.0f} MB  {f['transactions']:>9,} tx"
    if "text_mb" in f:
        line += f"  {f['text_mb'] / f['seconds']:6.1f} MB/s  {f['transactions'] / f['seconds']:9,.0f} tx/s"
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=100, help="generated export size as a multiple of the real one")
    parser.add_argument("--no-big-cli", action="store_true", help="skip the whole CLI run on the generated export")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if REAL_LOGS.is_dir():
            show("read real logs", measure("read", REAL_LOGS, tmp / "o1"))
            show("CLI run on real logs", measure("cli", REAL_LOGS, tmp / "o2"))
        else:
            print("../shared/real-logs absent: real-log figures skipped")
        from calo_assets.generator import generate_export

        start = time.perf_counter()
        n = REAL_TRANSACTIONS * args.scale
        generate_export(tmp / "big", transactions=n, seed=11)
        print(f"{'generate ' + str(args.scale) + 'x export':<34} {time.perf_counter() - start:8.1f} s  "
              f"{n:>9,} tx requested", flush=True)
        show(f"read {args.scale}x generated export", measure("read", tmp / "big", tmp / "o3"))
        if not args.no_big_cli:
            show(f"CLI run on {args.scale}x export", measure("cli", tmp / "big", tmp / "o4"))


if __name__ == "__main__":
    main()
