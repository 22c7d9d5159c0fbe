"""SEC Rule 15c3-5 pre-trade risk checks, pure and fast.

Pre-trade risk in three layers: these checks; :class:`~trustfabric.trading.cores.RiskCore`,
the service core that adds approvals, the kill switch and feedback; and
:mod:`trustfabric.trading.services.risk`, the ``pre-trade-risk`` process around the core.

:class:`PreTradeRiskChecker` decides each :class:`~trustfabric.trading.messages.NewOrder`
against :class:`RiskLimits` and its own state, and returns an immutable
:class:`RiskResult` (approved, or the reason code of the first check that refused,
plus warnings and the limits version). Checks, in order (cheapest and most
protective first):

1. well-formed order (qty, price, tick, side, tif)                 ``order.*``
2. kill switch: HALTED refuses everything, REDUCING only orders that
   reduce an existing position (firm, account or agent scope)       ``risk.halted`` / ``risk.reducing_only``
3. message-rate throttle per agent (token bucket, injected time)   ``risk.throttle``
4. restricted list                                                 ``risk.restricted``
5. duplicate ClOrdID (per agent) and duplicate window (same agent,
   symbol, side, qty and price within ``dup_window_ns``)           ``risk.dup_clordid`` / ``risk.dup_window``
6. max quantity and max notional per order                         ``risk.max_qty`` / ``risk.max_notional``
7. price collar by band against the current reference price;
   no (or stale) reference is a reject                             ``risk.price_collar`` / ``risk.no_reference``
8. aggregate credit (notional) per agent, account and firm; a
   pre-alert warning once usage reaches 70% of a limit             ``risk.credit_*`` / warning ``risk.prealert_*``

Credit usage is the notional of working orders plus executed notional for the day
(:meth:`PreTradeRiskChecker.new_day` starts a new day):
an approval reserves ``qty * price``; a cancel or venue reject releases the leaves;
a fill moves notional from working to executed (usage unchanged). Positions (for
REDUCING) come from fills. All amounts are integers in 1/10,000 USD.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from trustfabric.trading import killswitch as ks
from trustfabric.trading.errors import RiskRejected
from trustfabric.trading.messages import BUY, PRICE_SCALE, SELL, TIFS, NewOrder

OK = "risk.ok"
ORDER_BAD_QTY = "order.bad_qty"
ORDER_BAD_PRICE = "order.bad_price"
ORDER_BAD_TICK = "order.bad_tick"
ORDER_BAD_SIDE = "order.bad_side"
ORDER_BAD_TIF = "order.bad_tif"
ORDER_BAD_FIELD = "order.bad_field"
HALTED = "risk.halted"
REDUCING_ONLY = "risk.reducing_only"
THROTTLE = "risk.throttle"
RESTRICTED = "risk.restricted"
DUP_CLORDID = "risk.dup_clordid"
DUP_WINDOW = "risk.dup_window"
MAX_QTY = "risk.max_qty"
MAX_NOTIONAL = "risk.max_notional"
PRICE_COLLAR = "risk.price_collar"
NO_REFERENCE = "risk.no_reference"
STALE_REFERENCE = "risk.stale_reference"
CREDIT_AGENT = "risk.credit_agent"
CREDIT_ACCOUNT = "risk.credit_account"
CREDIT_FIRM = "risk.credit_firm"
PREALERT_AGENT = "risk.prealert_agent"
PREALERT_ACCOUNT = "risk.prealert_account"
PREALERT_FIRM = "risk.prealert_firm"
PRINCIPAL_MISMATCH = "risk.principal_mismatch"
UNKNOWN_ORDER = "risk.unknown_order"
INTERNAL = "risk.internal"

DOLLAR = PRICE_SCALE


def tick_size(price: int) -> int:
    """Tick size in price units: $0.01 at or above $1, $0.0001 below."""
    return 100 if price >= DOLLAR else 1


def collar_percent(reference: int) -> int:
    """Collar width by band: 10% up to $5, 5% up to $50, 3% above."""
    if reference <= 5 * DOLLAR:
        return 10
    if reference <= 50 * DOLLAR:
        return 5
    return 3


class RiskLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The limits in force; ``version`` is stamped on every result and approval."""

    version: int = 1
    max_order_qty: int = 10_000
    max_order_notional: int = 1_000_000 * DOLLAR
    default_agent_credit: int = 5_000_000 * DOLLAR
    agent_credit: dict[str, int] = msgspec.field(default_factory=dict)
    default_account_credit: int = 10_000_000 * DOLLAR
    account_credit: dict[str, int] = msgspec.field(default_factory=dict)
    firm_credit: int = 50_000_000 * DOLLAR
    prealert_percent: int = 70
    dup_window_ns: int = 50_000_000  # 50 ms
    rate_per_s: float = 100.0
    burst: int = 100
    restricted: frozenset[str] = frozenset()
    max_reference_age_ns: int = 0  # 0: a reference never goes stale


class RiskResult(msgspec.Struct, frozen=True):
    """The immutable outcome of one pre-trade check."""

    approved: bool
    reason: str
    cl_ord_id: str
    limits_version: int
    warnings: tuple[str, ...] = ()
    detail: str = ""

    def raise_for_reject(self) -> None:
        if not self.approved:
            raise RiskRejected(self.detail or self.cl_ord_id, reason=self.reason)


@dataclass(slots=True)
class WorkingOrder:
    cl_ord_id: str
    account: str
    agent: str
    symbol: str
    side: str
    price: int
    leaves: int


@dataclass(slots=True)
class _Bucket:
    tokens: float
    last_ns: int


class PreTradeRiskChecker:
    """15c3-5 checks with their state (usage, positions, references, throttles, duplicates)."""

    def __init__(self, limits: RiskLimits, killswitch: ks.KillSwitch | None = None) -> None:
        self.limits = limits
        self.killswitch = killswitch or ks.KillSwitch()
        self.references: dict[str, tuple[int, int]] = {}  # symbol -> (price, time_ns)
        self.usage_agent: dict[str, int] = {}
        self.usage_account: dict[str, int] = {}
        self.usage_firm = 0
        self.working: dict[str, WorkingOrder] = {}  # key: agent + "\x00" + cl_ord_id
        self.positions: dict[tuple[str, str, str], int] = {}  # (scope, target, symbol) -> signed qty
        self._seen_ids: set[tuple[str, str]] = set()
        self._recent: dict[tuple[str, str, str, int, int], int] = {}
        self._buckets: dict[str, _Bucket] = {}

    # --- inputs from other services -----------------------------------------------------------
    def set_limits(self, limits: RiskLimits) -> None:
        if limits.version <= self.limits.version:
            raise ValueError("new limits must carry a higher version")
        self.limits = limits

    def update_reference(self, symbol: str, price: int, time_ns: int) -> None:
        if price > 0:
            self.references[symbol] = (price, time_ns)

    def on_fill(self, agent: str, cl_ord_id: str, qty: int, price: int) -> None:
        """A fill: leaves shrink (usage stays, now executed) and positions move."""
        order = self.working.get(agent + "\x00" + cl_ord_id)
        if order is None:
            return
        qty = min(qty, order.leaves)
        order.leaves -= qty
        if order.leaves == 0:
            del self.working[agent + "\x00" + cl_ord_id]
        # Executed at a better price than reserved: release the difference.
        self._release(order, qty * (order.price - price) if order.side == BUY else 0)
        signed = qty if order.side == BUY else -qty
        positions = self.positions
        for key in ((ks.FIRM, "", order.symbol), (ks.ACCOUNT, order.account, order.symbol),
                    (ks.AGENT, order.agent, order.symbol)):
            positions[key] = positions.get(key, 0) + signed

    def on_order_done(self, agent: str, cl_ord_id: str) -> None:
        """Cancel, expiry or venue reject: release the reserved notional of the leaves."""
        order = self.working.pop(agent + "\x00" + cl_ord_id, None)
        if order is not None:
            self._release(order, order.leaves * order.price)

    def _release(self, order: WorkingOrder, amount: int) -> None:
        if amount <= 0:
            return
        self.usage_agent[order.agent] = self.usage_agent.get(order.agent, 0) - amount
        self.usage_account[order.account] = self.usage_account.get(order.account, 0) - amount
        self.usage_firm -= amount

    def new_day(self) -> None:
        """Start a trading day: ClOrdIDs and the duplicate window start over and executed
        notional is forgotten; working orders keep their reservations and positions carry over."""
        self._seen_ids.clear()
        self._recent.clear()
        self.usage_agent, self.usage_account, self.usage_firm = {}, {}, 0
        for w in self.working.values():
            amount = w.leaves * w.price
            self.usage_agent[w.agent] = self.usage_agent.get(w.agent, 0) + amount
            self.usage_account[w.account] = self.usage_account.get(w.account, 0) + amount
            self.usage_firm += amount

    def is_working(self, agent: str, cl_ord_id: str) -> bool:
        return (agent + "\x00" + cl_ord_id) in self.working

    def working_refs(self) -> list[ks.WorkingOrderRef]:
        return [ks.WorkingOrderRef(w.cl_ord_id, w.account, w.agent, w.symbol) for w in self.working.values()]

    # --- the check ---------------------------------------------------------------------------------
    def check(self, order: NewOrder, now_ns: int) -> RiskResult:
        """Decide one order; on approval, reserve its notional. Never raises for bad input."""
        try:
            return self._check(order, now_ns)
        except Exception as exc:  # fail closed: any surprise is a reject, never an approval
            return RiskResult(False, INTERNAL, str(getattr(order, "cl_ord_id", "")), self.limits.version,
                              detail=type(exc).__name__)

    def _reject(self, order: NewOrder, reason: str, detail: str = "") -> RiskResult:
        return RiskResult(False, reason, order.cl_ord_id, self.limits.version, detail=detail)

    def _check(self, order: NewOrder, now_ns: int) -> RiskResult:
        limits = self.limits
        qty = order.qty
        price = order.price
        side = order.side
        # 1. well-formed
        if type(qty) is not int or qty <= 0:
            return self._reject(order, ORDER_BAD_QTY)
        if type(price) is not int or price <= 0:
            return self._reject(order, ORDER_BAD_PRICE)
        if price >= DOLLAR and price % 100:  # tick_size() inlined: $0.01 at or above $1
            return self._reject(order, ORDER_BAD_TICK, f"price {price} off tick {tick_size(price)}")
        if side != BUY and side != SELL:
            return self._reject(order, ORDER_BAD_SIDE)
        if order.tif not in TIFS:
            return self._reject(order, ORDER_BAD_TIF)
        agent = order.agent
        account = order.account
        symbol = order.symbol
        if not order.cl_ord_id or not agent or not account or not symbol:
            return self._reject(order, ORDER_BAD_FIELD)
        # 2. kill switch
        state = self.killswitch.effective_state(account, agent)
        if state != ks.ACTIVE:
            if state == ks.HALTED:
                return self._reject(order, HALTED)
            if not self._reduces_risk(order):
                return self._reject(order, REDUCING_ONLY)
        # 3. throttle (every message that reaches here spends a token)
        bucket = self._buckets.get(agent)
        if bucket is None:
            bucket = self._buckets[agent] = _Bucket(float(limits.burst), now_ns)
        else:
            elapsed = now_ns - bucket.last_ns
            if elapsed > 0:
                bucket.tokens = min(float(limits.burst), bucket.tokens + elapsed * limits.rate_per_s / 1e9)
                bucket.last_ns = now_ns
        if bucket.tokens < 1.0:
            return self._reject(order, THROTTLE)
        bucket.tokens -= 1.0
        # 4. restricted list
        if symbol in limits.restricted:
            return self._reject(order, RESTRICTED)
        # 5. duplicates
        id_key = (agent, order.cl_ord_id)
        if id_key in self._seen_ids:
            return self._reject(order, DUP_CLORDID)
        self._seen_ids.add(id_key)
        dup_key = (agent, symbol, side, qty, price)
        last = self._recent.get(dup_key)
        if last is not None and now_ns - last < limits.dup_window_ns:
            return self._reject(order, DUP_WINDOW)
        self._recent[dup_key] = now_ns
        if len(self._recent) > 100_000:
            self._prune_recent(now_ns)
        # 6. per-order size
        if qty > limits.max_order_qty:
            return self._reject(order, MAX_QTY)
        notional = qty * price
        if notional > limits.max_order_notional:
            return self._reject(order, MAX_NOTIONAL)
        # 7. price collar
        ref = self.references.get(symbol)
        if ref is None:
            return self._reject(order, NO_REFERENCE)
        ref_price, ref_ns = ref
        if limits.max_reference_age_ns and now_ns - ref_ns > limits.max_reference_age_ns:
            return self._reject(order, STALE_REFERENCE)
        band = 10 if ref_price <= 5 * DOLLAR else 5 if ref_price <= 50 * DOLLAR else 3  # collar_percent() inlined
        if abs(price - ref_price) * 100 > ref_price * band:
            return self._reject(order, PRICE_COLLAR, f"price {price} vs reference {ref_price}")
        # 8. aggregate credit
        agent_limit = limits.agent_credit.get(agent, limits.default_agent_credit)
        account_limit = limits.account_credit.get(account, limits.default_account_credit)
        agent_use = self.usage_agent.get(agent, 0) + notional
        account_use = self.usage_account.get(account, 0) + notional
        firm_use = self.usage_firm + notional
        if agent_use > agent_limit:
            return self._reject(order, CREDIT_AGENT)
        if account_use > account_limit:
            return self._reject(order, CREDIT_ACCOUNT)
        if firm_use > limits.firm_credit:
            return self._reject(order, CREDIT_FIRM)
        pct = limits.prealert_percent
        warnings: tuple[str, ...] = ()
        if agent_use * 100 >= agent_limit * pct:
            warnings += (PREALERT_AGENT,)
        if account_use * 100 >= account_limit * pct:
            warnings += (PREALERT_ACCOUNT,)
        if firm_use * 100 >= limits.firm_credit * pct:
            warnings += (PREALERT_FIRM,)
        # approved: reserve
        self.usage_agent[agent] = agent_use
        self.usage_account[account] = account_use
        self.usage_firm = firm_use
        self.working[agent + "\x00" + order.cl_ord_id] = WorkingOrder(
            order.cl_ord_id, account, agent, symbol, side, price, qty
        )
        return RiskResult(True, OK, order.cl_ord_id, limits.version, warnings)

    def _prune_recent(self, now_ns: int) -> None:
        window = self.limits.dup_window_ns
        self._recent = {k: t for k, t in self._recent.items() if now_ns - t < window}

    def _reduces_risk(self, order: NewOrder) -> bool:
        """True if the order only shrinks the position at every REDUCING scope that applies."""
        for scope, target in self.killswitch.reducing_scopes(order.account, order.agent):
            position = self.positions.get((scope, target, order.symbol), 0)
            same_side_working = 0
            for w in self.working.values():
                if w.symbol != order.symbol or w.side != order.side:
                    continue
                if scope == ks.FIRM or (scope == ks.ACCOUNT and w.account == target) or (
                    scope == ks.AGENT and w.agent == target
                ):
                    same_side_working += w.leaves
            total = order.qty + same_side_working
            if order.side == SELL:
                if not (position > 0 and total <= position):
                    return False
            elif not (position < 0 and total <= -position):
                return False
        return True
