"""Microbenchmarks of the floor's pure cores, for ``trustfabric bench floor`` to report.

:func:`measure_cores` times, in one run and on the same machine, the per-order cost
of the pure pieces on the hot path: the 15c3-5 risk check, signing the approval,
the router's approval verification, and adding a crossing order to a venue book.
It also times a plain dict lookup as the machine's baseline so the figures can be
read as ratios (machines are noisy; absolute microseconds are not asserted
anywhere). The timer is passed in.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from trustfabric.trading.approval import ApprovalKeyring, ApprovalSigner, ApprovalVerifier
from trustfabric.trading.book import OrderBook
from trustfabric.trading.messages import NewOrder
from trustfabric.trading.risk import PreTradeRiskChecker, RiskLimits


def measure_cores(n: int = 20_000, timer: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Mean microseconds per operation for each core step, plus the baseline."""
    big = 10**18
    checker = PreTradeRiskChecker(RiskLimits(dup_window_ns=0, rate_per_s=1e15, burst=10**12, firm_credit=big,
                                             default_agent_credit=big, default_account_credit=big,
                                             max_order_qty=10**9, max_order_notional=big))
    checker.update_reference("AAPL", 1_000_000, 0)
    agent = "spiffe://bench.acme/algos/meanrev"
    orders = [NewOrder(cl_ord_id=f"b{i}", account="ACC", agent=agent, symbol="AAPL",
                       side="buy" if i % 2 else "sell", qty=100, price=1_000_000) for i in range(n)]

    def per_op(fn) -> float:
        start = timer()
        fn()
        return (timer() - start) / n * 1e6

    baseline_map = {o.cl_ord_id: o for o in orders}
    results: dict[str, float] = {}
    results["baseline_dict_lookup_us"] = per_op(lambda: [baseline_map.get(o.cl_ord_id) for o in orders])
    results["risk_check_us"] = per_op(lambda: [checker.check(o, i) for i, o in enumerate(orders)])
    ring = ApprovalKeyring.generate("bench")
    signer = ApprovalSigner(ring)
    verifier = ApprovalVerifier(ring, max_seen=n + 1, validity_ns=10**18)
    approvals: list = []
    results["approval_sign_us"] = per_op(lambda: approvals.extend(signer.sign(o, agent, 1, 1) for o in orders))
    results["approval_verify_us"] = per_op(lambda: [verifier.verify(a, o, 2) for a, o in zip(approvals, orders)])
    book = OrderBook("AAPL", "BENCH")
    results["book_add_us"] = per_op(lambda: [book.add(o, "s", i) for i, o in enumerate(orders)])
    base = results["baseline_dict_lookup_us"] or 1e-9
    for key in ("risk_check_us", "approval_sign_us", "approval_verify_us", "book_add_us"):
        results[key.replace("_us", "_vs_baseline")] = results[key] / base
    return results
