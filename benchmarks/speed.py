"""How fast and how lean the product is, beside the seed tool it replaces. Prints figures; asserts nothing.

    python benchmarks/speed.py [--runs 3] [--scale 100] [--skip-big]

1. The whole CLI run on ../shared/real-logs (every output it writes by default)
   against the seed tool (../shared/baseline/run-seed-tool.sh), alternating the
   two, median of --runs each, and their ratio.
2. Reading alone: the real export and a generated export --scale times its size.
3. Both exports stage by stage (read, ledger, anomalies, summary, workbook with
   its cells per second, dashboard, CSV, and for the real export the auditor's
   pseudonymised workbook): each stage's seconds and the peak memory while it ran.
4. The whole CLI run on the big export.

Every measurement runs in its own process; peak memory is the largest resident
size of that process and its worker processes together, sampled every 20 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REAL_LOGS = SHARED / "real-logs"
SEED_TOOL = SHARED / "baseline" / "run-seed-tool.sh"
CLI = Path(sys.executable).with_name("calo-logs-analyzer")
REAL_TRANSACTIONS = 9088


# -- measuring a process tree -------------------------------------------------------------------------


def _tree_rss_kb(root: int) -> int:
    """Resident kB of `root` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/statm") as fh:
                pages = int(fh.read().split()[1])
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        rss[int(entry)] = pages * os.sysconf("SC_PAGE_SIZE") // 1024
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack += children.get(pid, [])
    return total


def run(command: list[str], cwd: Path | None = None) -> dict:
    """Run a command; its wall seconds, the peak resident MB of its process tree, and what it printed last."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], _tree_rss_kb(process.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    seconds = time.perf_counter() - started
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{err[-3000:]}")
    return {"seconds": seconds, "peak_mb": peak[0] / 1024, "stdout": out}


def child(code: str, *args: str) -> dict:
    """Run `code` in a fresh interpreter; it prints one JSON line of figures last."""
    done = run([sys.executable, "-c", code, *args], cwd=REPO)
    figures = json.loads(done["stdout"].strip().splitlines()[-1])
    return {**figures, "peak_mb": done["peak_mb"], "process_seconds": done["seconds"]}


# -- what is measured ------------------------------------------------------------------------------------

READ = r"""
import json, sys, time
from pathlib import Path
from calo_assets.reading import read_logs
if __name__ == "__main__":
    started = time.perf_counter()
    parsed = read_logs(Path(sys.argv[1]))
    seconds = time.perf_counter() - started
    files = parsed.files
    text = int(files["decompressedBytes"].sum() or 0) + int(files.filter(~files["gzip"])["size"].sum() or 0)
    print(json.dumps({"seconds": seconds, "text_mb": text / 1e6, "transactions": parsed.transactions.height}))
"""

STAGES = r"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, "benchmarks")
from reports import cells_in
from calo_assets.reading import read_logs
from calo_assets.ledger import build_ledger
from calo_assets.anomalies import detect_anomalies
from calo_assets.summary import build_summary
from calo_assets.analysis import Analysis
from calo_assets.settings import Settings
from calo_assets.reports import excel, html, csv_export
from calo_assets.downloads.pseudonymise import REWRITERS, Replacer, ids_from_xlsx
if __name__ == "__main__":
    folder, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    settings, marks = Settings(), []
    def stage(name, work):
        started = time.perf_counter()
        result = work()
        marks.append({"stage": name, "seconds": time.perf_counter() - started})
        print(json.dumps({"mark": name}), flush=True)
        return result
    parsed = stage("read", lambda: read_logs(folder))
    ledger = stage("ledger", lambda: build_ledger(parsed.transactions, parsed.sync_errors, settings))
    anomalies = stage("anomalies", lambda: detect_anomalies(ledger, parsed.events, settings))
    summary = stage("summary", lambda: build_summary(parsed, ledger, anomalies, settings))
    analysis = Analysis(parsed, ledger, anomalies, summary, settings, str(folder))
    xlsx = stage("workbook", lambda: excel.write_workbook(analysis, out / "report.xlsx"))
    stage("dashboard", lambda: html.write_dashboard(analysis, out / "report.html"))
    stage("csv", lambda: csv_export.write_raw_csv(analysis, out / "raw_parsed.csv"))
    if len(sys.argv) > 3:
        stage("auditor's workbook", lambda: REWRITERS["report.xlsx"](
            xlsx, out / "auditor.xlsx", Replacer(b"benchmark", ids_from_xlsx(xlsx))))
    print(json.dumps({"stages": marks, "transactions": ledger.height, "cells": cells_in(xlsx)}))
"""


def stages(folder: Path, out: Path, auditor: bool) -> dict:
    """Seconds of each stage, the peak memory of the process tree while it ran, and the workbook's cells."""
    process = subprocess.Popen([sys.executable, "-c", STAGES, str(folder), str(out), *(["auditor"] if auditor else [])],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks: list[int] = [0]
    lines: list[str] = []

    def sample() -> None:
        while process.poll() is None:
            peaks[-1] = max(peaks[-1], _tree_rss_kb(process.pid))
            time.sleep(0.02)

    def read_marks() -> None:
        for line in process.stdout:
            lines.append(line)
            if line.startswith('{"mark"'):
                peaks.append(0)

    threads = [threading.Thread(target=sample, daemon=True), threading.Thread(target=read_marks, daemon=True)]
    for t in threads:
        t.start()
    process.wait()
    for t in threads:
        t.join()
    if process.returncode != 0:
        raise SystemExit(f"stages failed:\n{process.stderr.read()[-3000:]}")
    result = json.loads(lines[-1])
    result["stages"] = [{**mark, "peak_mb": peak / 1024} for mark, peak in zip(result["stages"], peaks)]
    return result


def show_stages(row, label: str, result: dict) -> None:
    for s in result["stages"]:
        note = ""
        if s["stage"] == "workbook":
            note = f"{result['cells']:,} cells, {result['cells'] / s['seconds'] / 1e6:.2f} M cells/s"
        row(f"  {label}: {s['stage']}", f"{s['seconds']:.2f} s", f"{s['peak_mb']:.0f} MB", note)


def cli_against_seed(runs: int, scratch: Path) -> tuple[list[dict], list[dict]]:
    product, seed = [], []
    for i in range(runs):
        seed.append(run(["bash", str(SEED_TOOL), str(REAL_LOGS), str(scratch / f"seed-{i}")]))
        product.append(run([str(CLI), str(REAL_LOGS), "--out", str(scratch / f"cli-{i}"), "--log-level", "WARNING"]))
    return product, seed


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs of each command in the side-by-side comparison")
    parser.add_argument("--scale", type=int, default=100, help="generated export size, as a multiple of the real one")
    parser.add_argument("--skip-big", action="store_true", help="leave out the generated export")
    args = parser.parse_args()
    table: list[tuple[str, str, str, str]] = []

    def row(what: str, seconds: str, memory: str, note: str = "") -> None:
        table.append((what, seconds, memory, note))
        print(f"{what:<48} {seconds:>22} {memory:>12}  {note}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        if REAL_LOGS.is_dir() and SEED_TOOL.is_file():
            run(["bash", str(SEED_TOOL), str(REAL_LOGS), str(scratch / "seed-warmup")])  # builds its venv once
            product, seed = cli_against_seed(args.runs, scratch)
            p, s = median(product, "seconds"), median(seed, "seconds")
            row(f"CLI on real logs, median of {args.runs}", f"{p:.2f} s", f"{median(product, 'peak_mb'):.0f} MB",
                "runs " + ", ".join(f"{r['seconds']:.2f}" for r in product))
            row(f"seed tool on real logs, median of {args.runs}", f"{s:.2f} s", f"{median(seed, 'peak_mb'):.0f} MB",
                "runs " + ", ".join(f"{r['seconds']:.2f}" for r in seed))
            row("ratio: seed tool / this product", f"{s / p:.1f}x faster", "", "same machine, alternating A B A B")
        else:
            print("../shared/real-logs or the seed tool is absent: the side-by-side comparison is skipped")
        if REAL_LOGS.is_dir():
            f = child(READ, str(REAL_LOGS))
            row("read real logs", f"{f['seconds']:.2f} s", f"{f['peak_mb']:.0f} MB",
                f"{f['text_mb']:.1f} MB text, {f['text_mb'] / f['seconds']:.0f} MB/s")
            show_stages(row, "real logs", stages(REAL_LOGS, scratch / "real-stages", auditor=True))
        if args.skip_big:
            return
        from calo_testkit.generator import generate_export

        big = scratch / "big"
        n = REAL_TRANSACTIONS * args.scale
        started = time.perf_counter()
        generate_export(big, transactions=n, seed=11)
        row(f"generate a {args.scale}x export", f"{time.perf_counter() - started:.1f} s", "", f"{n:,} transactions")
        f = child(READ, str(big))
        cores = len(os.sched_getaffinity(0))
        row(f"read the {args.scale}x export", f"{f['seconds']:.1f} s", f"{f['peak_mb']:.0f} MB",
            f"{f['text_mb']:.0f} MB text, {f['text_mb'] / f['seconds']:.0f} MB/s "
            f"({f['text_mb'] / f['seconds'] / cores:.0f} MB/s per core, {cores} cores)")
        show_stages(row, f"{args.scale}x", stages(big, scratch / "stages", auditor=False))
        whole = run([str(CLI), str(big), "--out", str(scratch / "big-out"), "--log-level", "WARNING"])
        row(f"CLI on the {args.scale}x export", f"{whole['seconds']:.1f} s", f"{whole['peak_mb']:.0f} MB")
    print("\n| what | time | peak memory | note |\n| --- | --- | --- | --- |")
    for what, seconds, memory, note in table:
        print(f"| {what.strip()} | {seconds} | {memory} | {note} |")


if __name__ == "__main__":
    main()
