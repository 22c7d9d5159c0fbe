"""Shared by the policy lifecycle tests: a floor with a new algo (no grants yet) and its paper-trading window."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from trustfabric.policy import synthetic
from trustfabric.policy.topology import Topology

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
NEW_ALGO = "algo-pairs"
NEW_ALGO_BLOCK = f'''[[service]]
name = "{NEW_ALGO}"
segment = "algo"
account = "acct-pairs"
symbols = ["KO", "PEP"]

'''


def floor_with_new_algo(target: Path) -> Path:
    """The reference policies with ``algo-pairs`` in the topology and nothing granting it anything."""
    shutil.copytree(POLICY_DIR, target)
    manifest = target / "floor.toml"
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text(text.replace('[[service]]\nname = "pre-trade-risk"',
                                     NEW_ALGO_BLOCK + '[[service]]\nname = "pre-trade-risk"', 1), encoding="utf-8")
    return target


def paper_trading_audit(policies: Path, target: Path, seconds: int = 60) -> Path:
    """A central log holding ``seconds`` of the new algo's paper trading (every request refused: no grant)."""
    topology = Topology.load(policies / "floor.toml")
    synthetic.write(target, synthetic.paper_trading(topology, NEW_ALGO, seconds=seconds, rng=random.Random(3)))
    return target
