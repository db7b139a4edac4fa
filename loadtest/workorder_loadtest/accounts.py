"""Seeded accounts (``<prefix>-<role>-NNNN``) handed out to simulated users without duplicates.
Worker ``w`` of ``n`` hands out ``w+1, w+1+n, ...`` (``n``: ``--expect-workers``, set by
``--processes``), so workers never share one; an exhausted pool wraps around (``reused``, a warning
in the summary). Users are greenlets and nothing here yields: no lock needed."""

import re
from dataclasses import dataclass

SEED_HINT = ("seed the accounts with: workorder-manage seed_loadtest --operators N --supervisors N --makers N "
             "--password PASSWORD (and pass the same --password and pool sizes here)")


def username(prefix: str, role: str, number: int) -> str:
    return f"{prefix}-{role}-{number:04d}"


def seeded_number(prefix: str, role: str, name: str | None) -> int | None:
    """The number in a seeded account's name (``loadtest-operator-0007`` -> 7); None for other names."""
    match = re.fullmatch(rf"{re.escape(prefix)}-{role}-(\d{{4,}})", name or "")
    return int(match[1]) if match else None


@dataclass(frozen=True)
class Account:
    role: str
    number: int
    username: str
    reused: bool = False


class AccountPool:
    def __init__(self, prefix: str, sizes: dict[str, int], worker_index: int = 0, worker_count: int = 1):
        self.prefix, self.sizes = prefix, sizes
        self.worker_index, self.worker_count = worker_index, max(worker_count, worker_index + 1)
        self.taken: dict[str, set[int]] = {role: set() for role in sizes}
        self.wraps = dict.fromkeys(sizes, 0)

    def own(self, role: str) -> range:  # this worker's numbers of the role, in hand-out order
        return range(self.worker_index + 1, self.sizes[role] + 1, self.worker_count)

    def acquire(self, role: str) -> Account:
        """The next free account of ``role`` (shared round-robin once all are taken)."""
        if self.sizes[role] <= 0:
            raise LookupError(f"the {role} pool is empty (pool size 0)")
        for number in self.own(role):
            if account := self.claim(role, number):
                return account
        numbers = self.own(role) or range(1, self.sizes[role] + 1)
        number = numbers[self.wraps[role] % len(numbers)]
        self.wraps[role] += 1
        return Account(role, number, username(self.prefix, role, number), reused=True)

    def claim(self, role: str, number: int) -> Account | None:
        """That account, unless this process handed it out already."""
        if number in self.taken[role]:
            return None
        self.taken[role].add(number)
        return Account(role, number, username(self.prefix, role, number))

    def release(self, account: Account) -> None:
        if not account.reused:
            self.taken[account.role].discard(account.number)
