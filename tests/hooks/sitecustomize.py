"""A test hook, not a product feature: the end-to-end tests put this folder on the service's PYTHONPATH.

Python imports `sitecustomize` at start-up in every process of the service (webserver,
daemon, code server, run workers). Once `calo_assets.reading` and `calo_assets.outputs`
are imported, their `read_logs` and `write_all` are wrapped so a test can make a run
fail or stall at a chosen point, by creating files in the folder named by
CALO_TEST_HOOKS:

- `fail-parse`: while it exists, parsing a drop that holds a file whose name contains
  `parse-fails` raises;
- `hold-parse`: while it exists, a run that has parsed a drop writes its pid to
  `parsing.pid` and waits, before anything is stored (so the test can kill it);
- `hold-reports`: while it exists, a run that has written a report into its temporary
  folder writes its pid to `reporting.pid` and waits, before the folder is renamed.
"""

import importlib.abc
import os
import sys
import time
from pathlib import Path

HOOKS = Path(os.environ["CALO_TEST_HOOKS"]) if os.environ.get("CALO_TEST_HOOKS") else None


def _hold(flag: str, pid_file: str) -> None:
    if (HOOKS / flag).exists():
        (HOOKS / pid_file).write_text(str(os.getpid()))
        while (HOOKS / flag).exists():
            time.sleep(0.2)


def _patch_reading(module) -> None:
    real = module.read_logs

    def read_logs(*args, **kwargs):
        if (HOOKS / "fail-parse").exists() and any("parse-fails" in p for p in kwargs.get("only") or ()):
            raise RuntimeError("test hook: the parser raises on a file named parse-fails")
        parsed = real(*args, **kwargs)
        _hold("hold-parse", "parsing.pid")
        return parsed

    module.read_logs = read_logs


def _patch_outputs(module) -> None:
    real = module.write_all

    def write_all(*args, **kwargs):
        written = real(*args, **kwargs)
        _hold("hold-reports", "reporting.pid")
        return written

    module.write_all = write_all


PATCHES = {"calo_assets.reading": _patch_reading, "calo_assets.outputs": _patch_outputs}


class _Patcher(importlib.abc.MetaPathFinder):
    """Finds the modules of PATCHES with the other finders, and patches each once it has run."""

    def find_spec(self, name, path, target=None):
        if name not in PATCHES:
            return None
        spec = next((s for f in sys.meta_path if f is not self and hasattr(f, "find_spec")
                     for s in [f.find_spec(name, path, target)] if s is not None), None)
        if spec is None or spec.loader is None:
            return None
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            PATCHES[name](module)

        spec.loader.exec_module = exec_module
        return spec


if HOOKS is not None:
    sys.meta_path.insert(0, _Patcher())
