"""Calo Balance Analytics."""
