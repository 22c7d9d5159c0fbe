"""End-of-day netting per account and symbol, and a double-entry cash ledger.

:func:`net_fills` reduces a day's fills to one
:class:`~trustfabric.trading.messages.SettlementInstruction` per (account, symbol):
net shares to receive or deliver, and net cash (sells bring cash in, buys pay it
out). Netting conserves exactly: the instructions' quantities and cash sum to the
fills' signed quantities and cash flows.

:class:`CashLedger` is double entry: every :class:`JournalEntry` is a set of
postings that sum to zero, applied all-or-nothing. A balance never goes negative
silently: an entry that would overdraw an account without an explicit overdraft
allowance is refused with ``ledger.insufficient_funds`` and leaves every balance
unchanged. Amounts are integers in 1/10,000 USD.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from trustfabric.trading.errors import LedgerError
from trustfabric.trading.messages import BUY, Fill, SettlementInstruction

INSUFFICIENT_FUNDS = "ledger.insufficient_funds"
UNBALANCED = "ledger.unbalanced"
UNKNOWN_ACCOUNT = "ledger.unknown_account"
DUPLICATE_ENTRY = "ledger.duplicate_entry"
BAD_AMOUNT = "ledger.bad_amount"

CLEARING = "clearing"  # the clearing house's account: counterparty of every settlement


def net_fills(fills: Iterable[Fill], settle_date: str) -> list[SettlementInstruction]:
    """One instruction per (account, symbol), sorted; exact integer sums."""
    acc: dict[tuple[str, str], list[int]] = {}
    for f in fills:
        slot = acc.get((f.account, f.symbol))
        if slot is None:
            slot = acc[(f.account, f.symbol)] = [0, 0, 0]
        if f.side == BUY:
            slot[0] += f.qty
            slot[1] -= f.qty * f.price
        else:
            slot[0] -= f.qty
            slot[1] += f.qty * f.price
        slot[2] += 1
    return [
        SettlementInstruction(account=a, symbol=s, net_qty=q, net_cash=c, fills=n, settle_date=settle_date)
        for (a, s), (q, c, n) in sorted(acc.items())
    ]


class Posting(msgspec.Struct, frozen=True):
    account: str
    amount: int  # > 0 credit to the account's balance, < 0 debit


class JournalEntry(msgspec.Struct, frozen=True):
    entry_id: str
    postings: tuple[Posting, ...]
    memo: str = ""


class CashLedger:
    """Balances per account, moved only by balanced journal entries."""

    def __init__(self) -> None:
        self.balances: dict[str, int] = {}
        self.overdraft: dict[str, int] = {}
        self.journal: list[JournalEntry] = []
        self._ids: set[str] = set()

    def open_account(self, account: str, overdraft_limit: int = 0) -> None:
        """Create an account; ``overdraft_limit`` > 0 lets it go that far below zero, explicitly."""
        if overdraft_limit < 0:
            raise LedgerError("negative overdraft limit", reason=BAD_AMOUNT)
        self.balances.setdefault(account, 0)
        self.overdraft[account] = overdraft_limit

    def balance(self, account: str) -> int:
        if account not in self.balances:
            raise LedgerError(f"no account {account}", reason=UNKNOWN_ACCOUNT)
        return self.balances[account]

    def post(self, entry: JournalEntry) -> None:
        """Apply a balanced entry atomically, or refuse it and change nothing."""
        if entry.entry_id in self._ids:
            raise LedgerError(f"entry {entry.entry_id} already posted", reason=DUPLICATE_ENTRY)
        if not entry.postings or sum(p.amount for p in entry.postings) != 0:
            raise LedgerError(f"entry {entry.entry_id} does not balance", reason=UNBALANCED)
        delta: dict[str, int] = {}
        for p in entry.postings:
            if type(p.amount) is not int:
                raise LedgerError("amounts are integers", reason=BAD_AMOUNT)
            if p.account not in self.balances:
                raise LedgerError(f"no account {p.account}", reason=UNKNOWN_ACCOUNT)
            delta[p.account] = delta.get(p.account, 0) + p.amount
        for account, change in delta.items():
            after = self.balances[account] + change
            if change < 0 and after < -self.overdraft[account]:
                raise LedgerError(
                    f"{account} would go to {after} (overdraft {self.overdraft[account]})",
                    reason=INSUFFICIENT_FUNDS,
                )
        for account, change in delta.items():
            self.balances[account] += change
        self._ids.add(entry.entry_id)
        self.journal.append(entry)

    def transfer(self, entry_id: str, debit: str, credit: str, amount: int, memo: str = "") -> None:
        if type(amount) is not int or amount <= 0:
            raise LedgerError("transfer amount must be a positive integer", reason=BAD_AMOUNT)
        self.post(JournalEntry(entry_id, (Posting(debit, -amount), Posting(credit, amount)), memo))

    def total(self) -> int:
        """Always zero: money is only moved, never created (apart from opening deposits via funding)."""
        return sum(self.balances.values())

    def settle(self, instructions: Iterable[SettlementInstruction]) -> list[JournalEntry]:
        """Post each instruction's net cash against the clearing account, all or nothing."""
        instructions = list(instructions)
        if CLEARING not in self.balances:
            raise LedgerError("no clearing account", reason=UNKNOWN_ACCOUNT)
        postings: list[Posting] = []
        for ins in instructions:
            if ins.net_cash:
                postings.append(Posting(ins.account, ins.net_cash))
                postings.append(Posting(CLEARING, -ins.net_cash))
        if not postings:
            return []
        date = instructions[0].settle_date
        entry = JournalEntry(f"settle-{date}-{len(self.journal)}", tuple(postings), memo=f"settlement {date}")
        self.post(entry)
        return [entry]
