"""Stage 6, reports: the workbook (`excel`, written by `xlsx` and `zip_stream`), the dashboard (`html`) and the
raw CSV (`csv_export`), each rendered from one `Analysis`; `tables` chooses the rows both reports show, `columns`
the Ledger sheet's columns, `safe_text` makes log text harmless. `calo_assets.outputs` writes them all.

Pure rendering: nothing here knows about Dagster, and nothing recomputes a
figure; every number comes from the ledger, the findings or the summary.
"""
