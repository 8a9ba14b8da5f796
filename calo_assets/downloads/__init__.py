"""Report downloads for accountants and auditors: a small read-only web app beside Dagster.

It lists the versions of the `reports` asset recorded in the Dagster instance and
serves their files to signed-in users: accountants get the files as recorded,
auditors the same files with user ids pseudonymised. Modules:

- `versions.py`: the `reports` materializations as plain dataclasses;
- `auth.py`: the users file (scrypt hashes), signed sessions, CSRF tokens, throttling;
- `pseudonymise.py`: the auditor's copies of the files;
- `app.py`: the Starlette app (`create_app(DownloadSettings.from_env())`);
- `__main__.py`: `python -m calo_assets.downloads serve | add-user`.
"""
