"""The layers drawn in pyproject.toml ([tool.importlinter]) hold: every import points down,
and cedarpy is imported by policy.cedar alone.

Runs import-linter's layers contract over the package as installed from src/, function-level
imports included, so an upward or circular edge fails the suite where it is introduced.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_layers_only_point_down():
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                               "sys.exit(lint_imports(no_cache=True, no_logo=True))"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout and " kept" in result.stdout
