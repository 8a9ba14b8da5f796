"""The Dagster layer: one module per kind of definition, in the order a reader meets them.

- `resources.py`: the inbox, the storage folder, the reports folder and the failure webhook;
- `config.py`: the run config (the tunables of `calo_assets.settings.Settings`);
- `failures.py`: a failed run described as ops read it (job, drop, step, error);
- `coverage.py`: which drops are parsed, pending or given up, and the automation condition that waits for them;
- `assets.py`: raw_log_drops -> parsed_drop -> parsed_events -> sync_errors -> ledger -> anomalies -> reports;
- `checks.py`: blocking schema and reconciliation checks, the completeness check, WARN findings;
- `sensors.py`: the drop sensor, the automation sensor and the failure sensor.

The instance side (run monitoring, run retries, the run launcher) is in `dagster.yaml` and
`calo_assets/run_launcher.py`.

`calo_assets.definitions` loads this folder.
"""
