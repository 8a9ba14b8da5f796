"""Calo Balance Analytics: an auditable wallet ledger from the balance-sync Lambda logs."""

__version__ = "0.1.0"
