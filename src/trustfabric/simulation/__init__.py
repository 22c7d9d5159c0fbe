"""Simulation: threat scenarios as data, run against the floor in perimeter and zero-trust modes.

Measured side by side: attempts, successes, blast radius, time to detect, time to contain.
"""
