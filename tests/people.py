"""People on the floor for tests: enrolled with a password and TOTP, each call of ``code()`` a fresh time step.

A TOTP code is accepted once (``user.totp_replay``) and only within the allowed drift, so
a person has two safely usable codes at a time (the current and the next step: the
previous one may have left the window by the time a slow machine checks it); a test
that needs more requests enrols more people.
"""

from __future__ import annotations

import time

import pyotp
from argon2 import PasswordHasher, Type

PASSWORD = "correct horse battery staple"


def cheap_hasher() -> PasswordHasher:
    """argon2id at its cheapest for tests: the same code paths, about a millisecond a hash."""
    return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=Type.ID)


class Person:
    def __init__(self, name: str, role: str, secret: str) -> None:
        self.name, self.role, self.totp = name, role, pyotp.TOTP(secret)
        self._step = 0

    def code(self) -> str:
        """The next unused code (steps 0, +1 around now)."""
        if self._step > 1:
            raise AssertionError(f"{self.name} has used the codes of this window: enrol another person")
        code = self.totp.at(time.time() + 30 * self._step)
        self._step += 1
        return code

    def wrong_code(self) -> str:
        valid = {self.totp.at(time.time() + 30 * k) for k in (-1, 0, 1)}
        return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


def enrol(users, name: str, role: str, password: str = PASSWORD) -> Person:
    """``users`` is a :class:`~trustfabric.identity.users.UserDirectory`."""
    return Person(name, role, users.enrol(name, role, password, time.time()).totp_secret)


class Pool:
    """People of one role enrolled on demand: ``args()`` is ``--user NAME --totp CODE`` with an unused code."""

    def __init__(self, users, role: str = "security_officer", prefix: str = "officer") -> None:
        self.users, self.role, self.prefix = users, role, prefix
        self.people: list[Person] = []
        self._uses = 0

    def person(self) -> Person:
        if not self.people or self._uses >= 2:
            self.people.append(enrol(self.users, f"{self.prefix}{len(self.people)}", self.role))
            self._uses = 0
        self._uses += 1
        return self.people[-1]

    def args(self) -> list[str]:
        person = self.person()
        return ["--user", person.name, "--totp", person.code()]
