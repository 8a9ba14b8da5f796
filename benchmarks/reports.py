"""Benchmark: the workbook, the auditor's copy of it and the dashboard from one analysis. Prints figures only.

    python benchmarks/reports.py [LOG_DIR]     # default ../shared/real-logs; e.g. ../scratch/x100

LOG_DIR is read and analysed once (benchmarks/speed.py times that part), then each report
is written and timed in CPU seconds (user + sys of this process: the figure to compare on a shared
machine) and wall seconds, with the peak resident memory while it is written, above what the
analysis already holds (sampled every 10 ms):
- report.xlsx, with the cells it holds (counted in its sheets' XML) and cells per CPU second;
- the auditor's pseudonymised copy of that workbook (user ids collected, then every text rewritten);
- report.html.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_LOGS = REPO.parent / "shared" / "real-logs"


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@contextmanager
def measured(label: str, figures: dict):
    """Time the block (CPU and wall) and sample the process's memory while it runs."""
    base, peak, done = rss_mb(), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            done.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu, wall = time.process_time(), time.perf_counter()
    yield
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    done.set()
    sampler.join()
    figures.update(cpu=cpu, wall=wall, peak=max(peak[0], rss_mb()) - base)
    print(f"{label:<28} cpu {cpu:7.2f} s  wall {wall:7.2f} s  peak +{figures['peak']:6.0f} MB", flush=True)


def cells_in(path: Path) -> int:
    """Cells holding a value: `<c ...>...</c>` in every sheet (an empty cell is written `<c .../>`)."""
    count = 0
    with zipfile.ZipFile(path) as book:
        for name in book.namelist():
            if name.startswith("xl/worksheets/") and name.endswith(".xml"):
                with book.open(name) as fh:
                    tail = b""
                    while block := fh.read(1 << 24):
                        block = tail + block
                        count += block.count(b"</c>")
                        tail = block[-3:]  # a tag cut by the block boundary is counted with the next block
                        count -= tail.count(b"</c>")
                    count += tail.count(b"</c>")
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log_dir", nargs="?", type=Path, default=REAL_LOGS)
    args = parser.parse_args()

    from calo_assets.analysis import analyze_folder
    from calo_assets.downloads.pseudonymise import REWRITERS, Replacer, ids_from_xlsx
    from calo_assets.reports import excel, html
    from calo_assets.settings import Settings

    start = time.perf_counter()
    analysis = analyze_folder(args.log_dir, Settings())
    print(f"read and analysed {analysis.ledger.height:,} transactions in {time.perf_counter() - start:.1f} s; "
          f"RSS {rss_mb():,.0f} MB", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        xlsx = Path(tmp) / "report.xlsx"
        workbook: dict = {}
        with measured("report.xlsx", workbook):
            excel.write_workbook(analysis, xlsx)
        workbook["cells"] = cells_in(xlsx)
        print(f"{'':<28} {workbook['cells']:,} cells, {workbook['cells'] / workbook['cpu']:,.0f} cells per CPU second, "
              f"{xlsx.stat().st_size / 1e6:,.1f} MB")
        with measured("auditor's copy of the xlsx", {}):
            REWRITERS["report.xlsx"](xlsx, Path(tmp) / "auditor.xlsx", Replacer(b"benchmark", ids_from_xlsx(xlsx)))
        with measured("report.html", {}):
            html.write_dashboard(analysis, Path(tmp) / "report.html")


if __name__ == "__main__":
    main()
