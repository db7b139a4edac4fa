"""Password hashers: Argon2id with OWASP's parameters, PBKDF2 for hashes made before it, and a cap on
how many hashes one process computes at once.

Argon2id (m = 19 MiB, t = 2, p = 1, OWASP's password storage recommendation) costs a few tens of ms of
CPU per check where PBKDF2 with Django's 1,000,000 iterations cost ~275 ms, so logins stop being a CPU
denial of service (tests/bench/password_hashers.py measures both; docs/runtime.md has the table). A
PBKDF2 hash still verifies and Django rehashes it with Argon2id at the next successful login.

Every encode/verify holds one slot of a per-process semaphore (WORKORDER_PASSWORD_HASH_CONCURRENCY,
default 1): memory stays below 19 MiB × cap × gunicorn workers, and a burst of logins queues instead
of starving every other request of CPU. A caller that waits longer than WORKORDER_PASSWORD_HASH_WAIT_MS
gets `Unavailable` (HTTP 503 with Retry-After).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

from django.conf import settings
from django.contrib.auth.hashers import Argon2PasswordHasher, PBKDF2PasswordHasher

from workorder.core.errors import Unavailable

_lock = threading.Lock()
_semaphore: threading.BoundedSemaphore | None = None
_semaphore_size: int | None = None


def hashing_semaphore() -> threading.BoundedSemaphore:
    """The process-wide semaphore, sized by WORKORDER_PASSWORD_HASH_CONCURRENCY (re-read if it changes)."""
    global _semaphore, _semaphore_size
    size = settings.WORKORDER_PASSWORD_HASH_CONCURRENCY
    if _semaphore is None or _semaphore_size != size:
        with _lock:
            if _semaphore is None or _semaphore_size != size:
                _semaphore, _semaphore_size = threading.BoundedSemaphore(size), size
    return _semaphore


@contextmanager
def hashing_slot():
    semaphore = hashing_semaphore()
    if not semaphore.acquire(timeout=settings.WORKORDER_PASSWORD_HASH_WAIT_MS / 1000):
        from .metrics import password_hashing_refused

        password_hashing_refused.inc()
        raise Unavailable("Too many logins at once; retry in a moment.", retry_after=1)
    try:
        yield
    finally:
        semaphore.release()


class BoundedArgon2PasswordHasher(Argon2PasswordHasher):
    """Argon2id, OWASP parameters: 19 MiB, 2 passes, 1 lane. Keeps Django's algorithm name, so hashes
    are interchangeable with django.contrib.auth.hashers.Argon2PasswordHasher."""

    memory_cost = 19456  # KiB = 19 MiB
    time_cost = 2
    parallelism = 1

    def encode(self, password, salt):
        with hashing_slot():
            return super().encode(password, salt)

    def verify(self, password, encoded):
        with hashing_slot():
            return super().verify(password, encoded)


class BoundedPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """Django's PBKDF2-SHA256, only to verify (and then replace) hashes made before Argon2id. Its
    verify() and harden_runtime() go through encode(), which takes the slot."""

    def encode(self, password, salt, iterations=None):
        with hashing_slot():
            return super().encode(password, salt, iterations)
