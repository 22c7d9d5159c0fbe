"""Measurements, each returning plain results (the CLI only prints them)."""
