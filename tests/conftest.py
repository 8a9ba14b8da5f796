"""Shared fixtures: where the real export is (when ../shared is beside the checkout)."""

from pathlib import Path

import pytest

REAL_LOGS = Path(__file__).resolve().parents[1].parent / "shared" / "real-logs"


@pytest.fixture(scope="session")
def real_logs() -> Path:
    if not REAL_LOGS.is_dir():
        pytest.skip("../shared/real-logs is not beside this checkout")
    return REAL_LOGS
