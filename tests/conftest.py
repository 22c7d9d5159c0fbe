"""What every test shares: in-process tests hash passwords with a cheap argon2id profile.

The production profile (argon2-cffi's RFC 9106 low-memory defaults, about 0.15 s a hash on
these machines) is what a person's password gets; tests enrol and log in hundreds of people,
so in this process ``users.default_hasher`` returns :func:`tests.people.cheap_hasher`'s
profile instead. The production profile itself is checked in ``tests/identity/test_users.py``
through :data:`PRODUCTION_DEFAULT_HASHER`. Processes a test starts (floors, CLI
subprocesses) keep the production profile.
"""

from __future__ import annotations

from tests.people import cheap_hasher
from trustfabric.identity import users

PRODUCTION_DEFAULT_HASHER = users.default_hasher
users.default_hasher = cheap_hasher
