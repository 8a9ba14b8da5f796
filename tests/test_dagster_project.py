"""Dagster's project conventions: `dg` finds the project through pyproject.toml's [tool.dg] and loads the
same definitions as `dagster dev -w workspace.yaml` (the module `calo_assets.definitions`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from calo_assets.definitions import defs

REPO = Path(__file__).resolve().parents[1]
DG = Path(sys.executable).with_name("dg")

pytestmark = pytest.mark.skipif(not DG.exists(), reason="no dg next to this Python (the test extra installs it)")


def dg(*args: str, home: Path) -> subprocess.CompletedProcess:
    """`dg ARGS` from the repository's root, as a person runs it there with the virtualenv active."""
    env = {**os.environ, "DAGSTER_HOME": str(home), "VIRTUAL_ENV": sys.prefix}
    done = subprocess.run([str(DG), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_dg_check_defs_loads_the_definitions(tmp_path):
    done = dg("check", "defs", home=tmp_path)
    assert "All definitions loaded successfully" in done.stdout + done.stderr


def test_dg_list_defs_lists_what_the_workspace_loads(tmp_path):
    listed = json.loads(dg("list", "defs", "--json", home=tmp_path).stdout)
    graph = defs.resolve_asset_graph()
    assert sorted(a["asset_key"] for a in listed["assets"]) == sorted(
        key.to_user_string() for key in graph.get_all_asset_keys())
    assert sorted(c["key"] for c in listed["asset_checks"]) == sorted(
        key.to_user_string() for key in graph.asset_check_keys)
    assert sorted(j["name"] for j in listed["jobs"]) == sorted(j.name for j in defs.resolve_all_job_defs()
                                                              if not j.name.startswith("__"))
    assert sorted(s["name"] for s in listed["sensors"]) == sorted(s.name for s in defs.sensors)
    assert sorted(r["name"] for r in listed["resources"]) == sorted(defs.resources)
