"""Login throttling and lockout, for the API login and the admin login alike.

Two limits, both counted in Django's cache (Redis in production: shared by every worker and node,
INCR is atomic and keeps the key's expiry; in-process on the embedded default):
- per account and address: WORKORDER_LOGIN_FAILURES_PER_ACCOUNT failures (30) for one username from one
  client address within WORKORDER_LOGIN_FAILURE_WINDOW_SECONDS (15 min) lock that pair for
  WORKORDER_LOGIN_LOCKOUT_SECONDS (15 min). A success resets the pair's count.
- per address: WORKORDER_LOGIN_FAILURES_PER_ADDRESS failures (300) from one address over all usernames
  (password spraying) lock that address. Only failures count: hundreds of users logging in from one
  address (a load test, an office behind NAT) are never refused for succeeding.
A username alone is never locked: that would let anyone lock anybody out.

While a lock holds, every attempt for it is refused (429 with Retry-After) before the password is
checked, even with the right password. Each lockout logs one WARNING line on the `workorder.audit`
logger and counts in workorder_login_lockouts_total. `workorder-manage unlock_login` lifts locks.

The window is fixed (it starts at the first failure), the simplest form that INCR with an expiry gives.
If the cache is unreachable the limits are not enforced (a warning is logged): logins keep working.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.core.cache import cache

from workorder.core.client_address import request_client_address
from workorder.core.errors import TooManyAttempts, Unavailable
from workorder.core.exceptions import domain_error_response

from . import metrics

logger = logging.getLogger(__name__)
audit = logging.getLogger("workorder.audit")

PREFIX = "login"
LOCKED_MESSAGE = "Too many failed logins; try again later."


def _generations(username: str) -> tuple[int, int]:
    """(all, this username): bumped by unlock_login to orphan every older counter and lock at once."""
    keys = [f"{PREFIX}:gen", f"{PREFIX}:gen:{_digest(username.casefold())}"]
    values = cache.get_many(keys)
    return int(values.get(keys[0], 0)), int(values.get(keys[1], 0))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class _Keys:
    def __init__(self, username: str, address: str):
        every, user = _generations(username)
        pair = _digest(f"{username.casefold()}\x00{address}")
        self.pair_failures = f"{PREFIX}:{every}:{user}:fail:{pair}"
        self.pair_lock = f"{PREFIX}:{every}:{user}:lock:{pair}"
        self.address_failures = f"{PREFIX}:{every}:addrfail:{address}"
        self.address_lock = f"{PREFIX}:{every}:addrlock:{address}"


def _increment(key: str, timeout: int) -> int:
    """Atomically add one to a counter that expires `timeout` seconds after its first increment."""
    for _ in range(2):
        if cache.add(key, 1, timeout=timeout):
            return 1
        try:
            return cache.incr(key)
        except ValueError:  # expired between add() and incr(): start a new window
            continue
    return 1


def _retry_after(until: float) -> int:
    return max(1, math.ceil(until - time.time()))


def check_not_locked(username: str, address: str) -> None:
    """Raise TooManyAttempts if the pair or the address is locked."""
    keys = _Keys(username, address)
    locks = cache.get_many([keys.pair_lock, keys.address_lock])
    until = max((float(value) for value in locks.values()), default=0.0)
    if until > time.time():
        raise TooManyAttempts(LOCKED_MESSAGE, retry_after=_retry_after(until))


def record_failure(username: str, address: str) -> None:
    """Count a failed login; raise TooManyAttempts when this failure reaches a limit (starting the lock)."""
    metrics.login_failures.inc()
    keys = _Keys(username, address)
    window = settings.WORKORDER_LOGIN_FAILURE_WINDOW_SECONDS
    until = time.time() + settings.WORKORDER_LOGIN_LOCKOUT_SECONDS
    locked = False
    for scope, counter, lock, limit in (
        ("account", keys.pair_failures, keys.pair_lock, settings.WORKORDER_LOGIN_FAILURES_PER_ACCOUNT),
        ("address", keys.address_failures, keys.address_lock, settings.WORKORDER_LOGIN_FAILURES_PER_ADDRESS),
    ):
        count = _increment(counter, window)
        if count < limit:
            continue
        locked = True
        if cache.add(lock, until, timeout=settings.WORKORDER_LOGIN_LOCKOUT_SECONDS):
            cache.delete(counter)  # the next window starts after the lock
            metrics.login_lockouts.labels(scope=scope).inc()
            audit.warning("login locked out: scope=%s username=%r address=%s until=%s", scope,
                          username if scope == "account" else "*", address,
                          time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(until)))
    if locked:
        raise TooManyAttempts(LOCKED_MESSAGE, retry_after=_retry_after(until))


def record_success(username: str, address: str) -> None:
    cache.delete(_Keys(username, address).pair_failures)


def unlock(*, username: str | None = None, address: str | None = None, everything: bool = False) -> None:
    """Lift locks and reset failure counts: everything; one username (from every address); one pair;
    or one address (its address-wide lock and count)."""
    if everything:
        _bump(f"{PREFIX}:gen")
    elif username is not None and address is not None:
        keys = _Keys(username, address)
        cache.delete_many([keys.pair_failures, keys.pair_lock])
    elif username is not None:
        _bump(f"{PREFIX}:gen:{_digest(username.casefold())}")
    elif address is not None:
        keys = _Keys("", address)
        cache.delete_many([keys.address_failures, keys.address_lock])
    else:
        raise ValueError("unlock() needs a username, an address or everything=True")


def _bump(key: str) -> None:
    if not cache.add(key, 1, timeout=None):
        cache.incr(key)


def _degraded(action: str, exc: Exception) -> None:
    logger.warning("login throttling skipped (%s): cache unavailable: %s: %s", action, type(exc).__name__, exc)


class LockoutModelBackend(ModelBackend):
    """ModelBackend that refuses locked-out logins before checking the password and counts failures.
    Without a request (e.g. `createsuperuser`, the test client's login()) it is plain ModelBackend."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None or username is None or password is None:
            return super().authenticate(request, username=username, password=password, **kwargs)
        address = request_client_address(request)
        try:
            check_not_locked(username, address)
        except TooManyAttempts:
            raise
        except Exception as exc:  # noqa: BLE001 - the cache is down: let the login through unthrottled
            _degraded("check", exc)
        user = super().authenticate(request, username=username, password=password, **kwargs)
        try:
            if user is None:
                record_failure(username, address)
            else:
                record_success(username, address)
        except TooManyAttempts:
            raise
        except Exception as exc:  # noqa: BLE001 - the cache is down: the login's outcome stands
            _degraded("record", exc)
        return user


class LoginLockedOutMiddleware:
    """Outside DRF (the admin login form), a lockout or a saturated hasher escapes the view as an
    exception: answer 429/503 with Retry-After and the API's JSON error body instead of a 500."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, (TooManyAttempts, Unavailable)):
            return domain_error_response(exception)
        return None
