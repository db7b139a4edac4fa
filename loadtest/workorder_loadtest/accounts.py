"""Hand out seeded accounts (loadtest-<role>-NNNN) to simulated users without duplicates.

Each process numbers its own users per role (0, 1, 2, ...). In a distributed run (``--processes``
or master/worker), worker ``w`` of ``n`` takes the account numbers ``w+1, w+1+n, w+1+2n, ...``, so
two workers never hand out the same account as long as ``n`` (Locust's ``--expect-workers``, set
automatically by ``--processes``) is right. When a role's pool is exhausted, numbering wraps around
and accounts are shared; that is reported as a warning in the summary.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

ROLES = ("operator", "supervisor", "maker")


def username(prefix: str, role: str, number: int) -> str:
    return f"{prefix}-{role}-{number:04d}"


def parse_username(prefix: str, name: str) -> tuple[str, int] | None:
    match = re.fullmatch(re.escape(prefix) + r"-(operator|supervisor|maker)-(\d{4,})", name or "")
    return (match[1], int(match[2])) if match else None


@dataclass(frozen=True)
class Account:
    role: str
    number: int
    username: str
    reused: bool = False


class AccountPool:
    def __init__(self, prefix: str, sizes: dict[str, int], worker_index: int = 0, worker_count: int = 1):
        if worker_count < 1 or not 0 <= worker_index < max(worker_count, worker_index + 1):
            raise ValueError("bad worker index/count")
        self.prefix = prefix
        self.sizes = {role: int(sizes.get(role, 0)) for role in ROLES}
        self.worker_index = worker_index
        self.worker_count = max(worker_count, worker_index + 1)
        self._next = {role: 0 for role in ROLES}
        self._in_use: dict[str, set[int]] = {role: set() for role in ROLES}
        self._lock = threading.Lock()

    def _own_numbers(self, role: str):
        """This worker's account numbers for ``role``, in hand-out order."""
        return range(self.worker_index + 1, self.sizes[role] + 1, self.worker_count)

    def acquire(self, role: str) -> Account:
        """The next free account of ``role`` for this process (wraps around when exhausted)."""
        size = self.sizes[role]
        if size <= 0:
            raise LookupError(f"the {role} pool is empty (pool size 0)")
        with self._lock:
            own = self._own_numbers(role)
            for number in own:
                if number not in self._in_use[role]:
                    self._in_use[role].add(number)
                    return Account(role, number, username(self.prefix, role, number))
            # Exhausted: share accounts, round-robin over this worker's numbers (or the whole pool).
            pool = list(own) or list(range(1, size + 1))
            number = pool[self._next[role] % len(pool)]
            self._next[role] += 1
            return Account(role, number, username(self.prefix, role, number), reused=True)

    def claim(self, role: str, number: int) -> Account | None:
        """Take a specific account if this process has not handed it out yet."""
        with self._lock:
            if number in self._in_use[role] or not 1 <= number <= max(self.sizes[role], number):
                return None
            self._in_use[role].add(number)
            return Account(role, number, username(self.prefix, role, number))

    def release(self, account: Account) -> None:
        if not account.reused:
            with self._lock:
                self._in_use[account.role].discard(account.number)

    def in_use(self, role: str) -> set[int]:
        with self._lock:
            return set(self._in_use[role])
