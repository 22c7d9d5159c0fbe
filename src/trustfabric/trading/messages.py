"""The trading floor's wire messages: one frozen, tagged msgspec Struct per type.

Units are explicit and integer-only, so that no float ever rounds money:

* **price**: integer in units of 1/10,000 USD (``PRICE_SCALE``); $12.34 is ``123_400``.
  Tick sizes are therefore exact integers (0.01 USD = 100, 0.0001 USD = 1).
* **qty**: integer number of shares.
* **notional / cash**: ``qty * price``, again in 1/10,000 USD.
* **time**: ``time_ns``, integer Unix nanoseconds.

Every message is tagged (``"type"`` field holding the class name) so one decoder
for :data:`FloorMessage` reads any of them; :func:`encode` / :func:`decode` use
MessagePack. Sides are ``"buy"`` / ``"sell"``; time in force ``"day"``, ``"ioc"``,
``"gtc"``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal, Union

import msgspec

PRICE_SCALE = 10_000
"""Prices and amounts are integers in 1/PRICE_SCALE USD."""

BUY = "buy"
SELL = "sell"
Side = Literal["buy", "sell"]
Tif = Literal["day", "ioc", "gtc"]
TIFS = ("day", "ioc", "gtc")


def to_price(dollars: str | Decimal | int) -> int:
    """Exact conversion of a decimal dollar amount (``"12.34"``) to price units."""
    value = Decimal(dollars) * PRICE_SCALE
    if value != value.to_integral_value():
        raise ValueError(f"{dollars} is finer than 1/{PRICE_SCALE} USD")
    return int(value)


def to_dollars(units: int) -> Decimal:
    """Price units back to an exact Decimal dollar amount."""
    return Decimal(units) / PRICE_SCALE


def opposite(side: str) -> str:
    return SELL if side == BUY else BUY


class _Msg(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=True):
    """Base of floor messages (tagged by class name)."""


class Quote(_Msg, frozen=True):
    """Top of book for one symbol, from market data."""

    symbol: str
    bid: int
    bid_size: int
    ask: int
    ask_size: int
    time_ns: int
    seq: int = 0


class Trade(_Msg, frozen=True):
    """A printed trade, from market data."""

    symbol: str
    price: int
    qty: int
    time_ns: int
    seq: int = 0


class NewOrder(_Msg, frozen=True):
    """A limit order submitted by an agent (or the FIX gateway) to pre-trade risk."""

    cl_ord_id: str
    account: str
    agent: str  # originating principal (SPIFFE ID of the algo / gateway client)
    symbol: str
    side: Side
    qty: int
    price: int
    tif: Tif = "day"
    time_ns: int = 0


class CancelOrder(_Msg, frozen=True):
    cl_ord_id: str
    orig_cl_ord_id: str
    account: str
    agent: str
    symbol: str
    side: Side
    time_ns: int = 0
    reason: str = ""  # why, when the floor cancels on its own (e.g. ``killswitch.halted``): the client is told


class ReplaceOrder(_Msg, frozen=True):
    cl_ord_id: str
    orig_cl_ord_id: str
    account: str
    agent: str
    symbol: str
    side: Side
    qty: int
    price: int
    time_ns: int = 0


class RiskApproval(_Msg, frozen=True):
    """Pre-trade risk's approval, bound to one order by an HMAC-SHA256 ``mac``."""

    principal: str
    cl_ord_id: str
    symbol: str
    side: Side
    qty: int
    price: int
    limits_version: int
    issued_ns: int
    nonce: bytes
    key_id: str
    mac: bytes


class RoutedOrder(_Msg, frozen=True):
    """An approved order on its way to the router (order + approval), or a child to a venue."""

    order: NewOrder
    approval: RiskApproval | None = None
    venue: str = ""
    parent_cl_ord_id: str = ""


ExecType = Literal["new", "partial_fill", "fill", "canceled", "replaced", "rejected", "status"]
OrdStatus = Literal["new", "partially_filled", "filled", "canceled", "replaced", "rejected"]


class ExecutionReport(_Msg, frozen=True):
    cl_ord_id: str
    order_id: str
    exec_id: str
    venue: str
    account: str
    agent: str
    symbol: str
    side: Side
    exec_type: ExecType
    ord_status: OrdStatus
    order_qty: int
    price: int
    last_qty: int = 0
    last_px: int = 0
    leaves_qty: int = 0
    cum_qty: int = 0
    time_ns: int = 0
    reason: str = ""


class Fill(_Msg, frozen=True):
    """One execution against an order, for OMS and settlement."""

    exec_id: str
    cl_ord_id: str
    account: str
    agent: str
    symbol: str
    side: Side
    qty: int
    price: int
    venue: str
    time_ns: int


class PositionSnapshot(_Msg, frozen=True):
    account: str
    symbol: str
    qty: int  # signed: long > 0
    cost: int  # cost basis of the open position (price units * shares)
    realized_pnl: int
    unrealized_pnl: int
    mark: int
    time_ns: int


class SettlementInstruction(_Msg, frozen=True):
    """End-of-day net obligation of one account in one symbol."""

    account: str
    symbol: str
    net_qty: int  # shares to receive (> 0) or deliver (< 0)
    net_cash: int  # cash to receive (> 0) or pay (< 0), price units
    fills: int
    settle_date: str


class KillSwitchCommand(_Msg, frozen=True):
    """Operator command: ``halt``, ``reduce``, ``request_resume``, ``approve_resume``."""

    action: Literal["halt", "reduce", "request_resume", "approve_resume"]
    scope: Literal["firm", "account", "agent"]
    target: str  # account or agent id; "" for firm
    operator: str
    time_ns: int
    reason: str = ""


class Reject(_Msg, frozen=True):
    """A refusal with its dotted reason code (``risk.price_collar``...)."""

    ref_id: str  # the refused order's ClOrdID (or the command's id)
    reason: str
    detail: str = ""
    time_ns: int = 0


FloorMessage = Union[
    Quote,
    Trade,
    NewOrder,
    CancelOrder,
    ReplaceOrder,
    RiskApproval,
    RoutedOrder,
    ExecutionReport,
    Fill,
    PositionSnapshot,
    SettlementInstruction,
    KillSwitchCommand,
    Reject,
]

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(FloorMessage)


def encode(message: FloorMessage) -> bytes:
    """MessagePack bytes of one floor message."""
    return _encoder.encode(message)


def decode(data: bytes) -> FloorMessage:
    """Decode and validate one floor message (raises ``msgspec.ValidationError`` / ``DecodeError``)."""
    return _decoder.decode(data)
