"""Writing without being seen half-done: into a temporary sibling, then renamed into place.

A reader sees the old file or folder, or the new one, never half of either. The
temporary sibling is named `.name.tmp-<8 hex>`; a folder that replaces another
is swapped with two renames, the old one parked as `.name.old-<8 hex>` between
them. What a killed process left under those names is recognised, and cleared
by `sweep`, by the next run.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: A write that never finished (`tmp`), or a folder's previous version parked during a swap (`old`).
LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-[0-9a-f]{8}")


def _sibling(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{secrets.token_hex(4)}")


@contextmanager
def new_file(path: Path, mode: int = 0o644) -> Iterator[Path]:
    """A temporary sibling of `path` (created empty, with `mode`) to write; on success it replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
    try:
        yield tmp
        os.replace(tmp, path)  # a blocked target fails cleanly here
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def new_folder(path: Path, replace: bool = True) -> Iterator[Path]:
    """A temporary sibling folder to fill; on success it becomes `path` whole.

    An existing `path` is swapped out when `replace`; otherwise the rename fails
    and `path` is left as it was (a version folder never replaces an earlier one).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    tmp.mkdir()
    try:
        yield tmp
        if replace and path.exists():
            old = _sibling(path, "old")
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sweep(folder: Path) -> list[str]:
    """Clear what interrupted writes left in `folder`; returns what was done, one line each.

    A `.name.tmp-…` is a write that never finished: removed. A `.name.old-…`
    folder is the previous version of `name` during a swap: removed, unless the
    swap was cut between its two renames and `name` is gone, then it is put back.
    """
    done = []
    try:
        entries = sorted(Path(folder).iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return done
    for entry in entries:
        match = LEFTOVER.fullmatch(entry.name)
        if not match:
            continue
        final = Path(folder) / match["name"]
        try:
            if match["kind"] == "old" and entry.is_dir() and not final.exists():
                os.rename(entry, final)
                done.append(f"restored {final} from {entry.name}")
            elif entry.is_dir():
                shutil.rmtree(entry)
                done.append(f"removed {entry}")
            else:
                entry.unlink()
                done.append(f"removed {entry}")
        except OSError as exc:
            done.append(f"could not clear {entry}: {exc.strerror or exc}")
    return done
