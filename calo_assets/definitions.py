"""The Dagster entry point (`workspace.yaml` loads this module): everything in `calo_assets/defs/`.

Like the CLI, it is a thin layer over the domain core: it defines when and
where things run, never how a log is read or a balance is checked.
"""

from __future__ import annotations

import warnings

import dagster as dg

import calo_assets.defs
from calo_assets.defs.resources import resources_from_env


def load_defs() -> dg.Definitions:
    """Every asset, check, job and sensor found in `calo_assets.defs`, bound to the folders of the environment.

    Runs execute in one process: their steps follow one another anyway (each reads
    what the previous one wrote), and a process per step would import Polars and
    pandera again for each of the 18 steps of a rebuild.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)  # the loader is marked preview; its behaviour is plain
        return dg.load_definitions_from_package_module(calo_assets.defs, resources=resources_from_env(),
                                                       executor=dg.in_process_executor)


defs = load_defs()
