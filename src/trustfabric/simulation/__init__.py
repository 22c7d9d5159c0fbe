"""Simulation: threat scenarios as data, run against the floor in perimeter and zero-trust modes.

Measured side by side: attempts, successes, blast radius, time to detect, time to contain.
``scenarios`` (data + checks), ``attacker`` (real sockets), ``effects`` (what services performed),
``measure`` (scoring), ``runner`` (the floor per mode), ``simulate`` (a whole run + report),
``report`` / ``results`` (HTML, charts, JSON). See ``README.md``.
"""
