"""Where the firm's policies live when nobody says otherwise: the repository's ``policies/`` folder.

The one place that locates it (``floor.toml``, the Cedar schema and policies, the policy
tests); every default in the CLI, the control plane, posture and the benches reads it from here.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["POLICIES_DIR", "FLOOR_MANIFEST"]

POLICIES_DIR = Path(__file__).resolve().parents[3] / "policies"
FLOOR_MANIFEST = POLICIES_DIR / "floor.toml"
