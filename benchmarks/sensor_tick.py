"""How long a drop-sensor tick takes on an inbox of 10,000 files (a benchmark, not a test).

    .venv/bin/python benchmarks/sensor_tick.py [--files 10000]

Ticks measured, each through the real sensor with `dg.build_sensor_context`:
1. first sight of every file (stat only: nothing settled yet);
2. every file settled: each is read once to fingerprint it, one drop of all;
3. steady state: nothing new (the tick the service repeats every 15 s);
4. one new file among the 10,000 (first sight), 5. that file settled (a one-file drop).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import dagster as dg

from calo_assets.defs.resources import InboxFolder
from calo_assets.defs.sensors import log_drop_sensor

LINE = "2024-02-17T15:18:23.103Z END RequestId: ab3aecb4-99af-5ced-b873-b2fe49df5559\n\n"


def make_inbox(root: Path, count: int) -> None:
    """An export-like layout: one folder per stream, one small file in each."""
    for i in range(count):
        folder = root / "balance-sync-logs" / "a3fb6cdb" / f"2024-02-{i % 28 + 1:02d}-[$LATEST]{i:032x}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "000000").write_text(LINE * (1 + i % 20) + f"{i}\n")


def tick(instance: dg.DagsterInstance, inbox: InboxFolder, cursor: str | None) -> tuple[float, str | None, str]:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"inbox": inbox})
    started = time.perf_counter()
    result = log_drop_sensor(context)
    took = time.perf_counter() - started
    if isinstance(result, dg.SkipReason):
        return took, cursor, result.skip_message or ""
    what = (f"drop {result.run_requests[0].partition_key}" if result.run_requests
            else (result.skip_reason.skip_message if result.skip_reason else ""))
    return took, result.cursor or cursor, what


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "inbox"
        make_inbox(root, args.files)
        inbox = InboxFolder(path=str(root), settle_seconds=0)
        instance = dg.DagsterInstance.ephemeral()
        cursor = None
        steps = ["first sight", "settled: hash + one drop", "steady state", "one new file", "it settled"]
        for i, name in enumerate(steps):
            if name == "one new file":
                extra = root / "late" / "000000"
                extra.parent.mkdir()
                extra.write_text(LINE + "late\n")
                os.utime(extra, ns=(time.time_ns() - 60_000_000_000,) * 2)
            took, cursor, what = tick(instance, inbox, cursor)
            print(f"tick {i + 1} ({name}): {took * 1000:8.1f} ms  cursor {len(cursor or '') / 1e6:5.2f} MB  "
                  f"-> {what[:90]}")


if __name__ == "__main__":
    main()
