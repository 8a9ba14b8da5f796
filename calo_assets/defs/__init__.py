"""The Dagster layer: one module per kind of definition, in the order a reader meets them.

- `resources.py`: the inbox, the storage folder and the reports folder;
- `config.py`: the run config (the tunables of `calo_assets.settings.Settings`);
- `assets.py`: raw_log_drops -> parsed_drop -> parsed_events -> sync_errors -> ledger -> anomalies -> reports;
- `checks.py`: blocking schema and reconciliation checks, WARN findings;
- `sensors.py`: the drop sensor and the automation sensor.

`calo_assets.definitions` loads this folder.
"""
