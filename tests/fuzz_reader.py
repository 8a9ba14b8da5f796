"""A longer fuzzing campaign than the one `make test` runs: mutated logs read both ways, nothing lost.

    .venv/bin/python -m tests.fuzz_reader --examples 5000 [--seed 1]

Each example applies one to four mutations (cut records, duplicated and
shuffled lines, random bytes, unbalanced braces and quotes, huge numbers, deep
nesting, odd time stamps, invalid UTF-8) to a file holding every kind of block
and message, then checks what `tests/test_reading_paths.py` checks. Prints how
many examples ran and what they produced; exits non-zero on the first failure,
with the seed and mutations that reproduce it.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tests.test_reading_paths import MUTATIONS, check_mutated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz_reader")
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    totals: Counter[str] = Counter()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        for n in range(args.examples):
            seed = rng.randrange(2**32)
            hows = [rng.choice(MUTATIONS) for _ in range(rng.randint(1, 4))]
            try:
                parsed = check_mutated(Path(scratch) / str(n), seed, hows)
            except Exception:  # noqa: BLE001 - report how to reproduce, then fail
                print(f"FAILED at example {n}: seed={seed} mutations={hows}", file=sys.stderr)
                raise
            rec = parsed.reconciliation()
            totals["examples"] += 1
            totals["transaction blocks seen"] += rec["transaction_blocks_seen"]
            totals["transactions"] += rec["transactions"]
            totals["rejected blocks"] += rec["rejected_blocks"]
            totals["other rejects"] += rec["other_rejects"]
            totals["files not read (skipped or refused)"] += int((parsed.files["status"] != "read").sum())
    elapsed = time.perf_counter() - started
    for name, count in totals.items():
        print(f"{name:>38}: {count:,}")
    print(f"{'seconds':>38}: {elapsed:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
