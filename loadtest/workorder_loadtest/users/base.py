"""What every simulated user shares: its own seeded account, its session, checked requests. A user
does only what its role may, on data found through the API, so every failed request is a real error.
Every write carries a fresh Idempotency-Key and is sent once more, with the same key, when it got no
answer from the application (502, 503, 504 or no response): the server applies it at most once."""

import contextlib
import functools
import math
import random
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from locust import FastHttpUser
from locust.contrib.fasthttp import FastHttpSession
from locust.exception import RescheduleTask
from locust.runners import WorkerRunner

from ..accounts import SEED_HINT, Account, AccountPool
from ..gate import LOGIN_NAME, RETRY_MARK
from ..hooks import setup_error, warning

PAGE_SIZE = 20
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# No answer from the application itself: a gateway error, the service unavailable, or no response.
RETRY_STATUSES = frozenset({0, 502, 503, 504})


@functools.cache
def account_pool(environment) -> AccountPool:
    """This process's pool; built at the first user start, when a worker knows its index and count."""
    opts, runner = environment.parsed_options, environment.runner
    sizes = {"operator": opts.operators, "supervisor": opts.supervisors, "maker": opts.makers}
    if isinstance(runner, WorkerRunner):
        return AccountPool(opts.account_prefix, sizes, runner.worker_index, opts.expect_workers)
    return AccountPool(opts.account_prefix, sizes)


def retry_after(value: str | None, cap: float = 2.0) -> float:
    """Seconds to wait before the retry: the answer's Retry-After (seconds), at most `cap`."""
    try:
        return min(max(float(value), 0.0), cap) if value else 0.0
    except ValueError:
        return 0.0


def ident(value: Any) -> int | None:
    """An id, from an id or from a nested object with one."""
    value = value.get("id") if isinstance(value, dict) else value
    return value if type(value) is int else None  # not a bool


def body(resp, paged: bool = False) -> dict:
    """A 2xx answer's JSON object, a page ``{count, results}`` if ``paged``; a wrong shape fails the
    request (an assertion in rest()'s block). {} for any other answer: it failed already."""
    if not 200 <= resp.status_code < 300:
        return {}
    js = resp.js
    assert isinstance(js, dict) and (not paged or "count" in js and isinstance(js.get("results"), list)), \
        f"malformed body: expected {'a page {count, next, previous, results}' if paged else 'a JSON object'}"
    return js


page = functools.partial(body, paged=True)  # a 2xx answer's page ``{count, results}``


def items(resp) -> list[dict]:
    """The results of a 2xx page."""
    return [item for item in page(resp).get("results", []) if isinstance(item, dict)]


def ids(objects: list[dict]) -> list[int]:
    return [i for i in map(ident, objects) if i is not None]


def page_for(count: int | None, max_page: int) -> int:
    """A random page number among the first ``max_page`` that exist."""
    return random.randint(1, min(max_page, max(1, math.ceil((count or 0) / PAGE_SIZE))))


class ApiUser(FastHttpUser):
    abstract = True
    role = "operator"  # the pool this user's account comes from

    def __init__(self, environment):
        self.opts = environment.parsed_options
        self.network_timeout = self.connection_timeout = self.opts.request_timeout
        super().__init__(environment)
        self.account: Account | None = None
        self.token: str | None = None
        self.me: dict = {}
        self.next_login = 0.0
        # Logins hash passwords (slow by design, all at ramp-up): own connection, own timeout.
        self.login_session = FastHttpSession(self.host, environment.events.request, self, insecure=self.insecure,
                                             network_timeout=self.opts.login_timeout, max_retries=0,
                                             connection_timeout=self.opts.login_timeout)

    @contextmanager
    def rest(self, method, url, headers=None, **kwargs):
        """Locust's ``rest()`` as this user; a 409 (a business conflict) is a success named
        "<name> (conflict)". A write gets a fresh Idempotency-Key; when the first attempt got no
        answer from the application (RETRY_STATUSES) it stays a failure and the block runs on a
        second attempt with the same key, named "<name> (retry)". Without a session the task ends
        here (RescheduleTask)."""
        if not self.ensure_login():
            raise RescheduleTask()
        headers = {"Authorization": f"Token {self.token}", **(headers or {})}
        if method.upper() in WRITE_METHODS:
            headers.setdefault("Idempotency-Key", str(uuid.uuid4()))
            with super().rest(method, url, headers=headers, **kwargs) as resp:
                if resp.status_code not in RETRY_STATUSES:
                    yield self._conflict_is_an_answer(resp)
                    return
                wait = retry_after(resp.headers.get("Retry-After") if resp.headers else None)
            if wait:
                time.sleep(wait)  # gevent's: only this user waits
            kwargs["name"] = f"{kwargs.get('name') or url}{RETRY_MARK}"  # the first one was recorded as failed
        with super().rest(method, url, headers=headers, **kwargs) as resp:
            yield self._conflict_is_an_answer(resp)

    @staticmethod
    def _conflict_is_an_answer(resp):
        if resp.status_code == 409:
            resp.request_meta["name"] += " (conflict)"
            resp.success()
        return resp

    def login(self, account: Account) -> str | None:
        """A token for ``account``; a rejected login is a setup error, a failed one is retried."""
        credentials = {"username": account.username, "password": self.opts.password}
        with self.login_session.request("POST", "/api/auth/login/", name=LOGIN_NAME, json=credentials,
                                        catch_response=True) as resp:
            token = None
            with contextlib.suppress(ValueError, AttributeError):  # not JSON, or not an object
                token = resp.json().get("token") if resp.status_code == 200 else None
            if resp.status_code == 200 and not isinstance(token, str):
                resp.failure("login answered without a token")
                setup_error(self.environment, 'login answered without a token (expected {"token": ...})')
        if resp.status_code in (400, 401, 403):
            setup_error(self.environment, f"login rejected for {account.role} accounts (HTTP {resp.status_code}, "
                                          f"e.g. {account.username}); {SEED_HINT}")
        return token if isinstance(token, str) else None

    def on_start(self):
        try:
            self.account = account_pool(self.environment).acquire(self.role)
        except LookupError as exc:
            setup_error(self.environment, str(exc))
            return
        if self.account.reused:
            warning(f"{self.role} pool exhausted: simulated users share accounts (seed more: --{self.role}s N)")
        self.ensure_login()

    def on_stop(self):
        if self.account is not None:
            account_pool(self.environment).release(self.account)

    def ensure_login(self) -> bool:
        """Whether this user has a session; logs in (again) at most every 5 s."""
        if self.token or self.account is None or time.monotonic() < self.next_login:
            return bool(self.token)
        self.next_login = time.monotonic() + 5.0
        self.token = self.login(self.account)
        self.me = self.get("/api/auth/me/", "[Auth] Me", body) if self.token else {}
        name, role = self.me.get("username"), self.me.get("role")
        if self.me and role != self.account.role:
            setup_error(self.environment, f"account {name!r} has role {role!r}, expected {self.account.role!r}")
        elif self.me and role != "maker" and self.department is None:
            setup_error(self.environment, f"{role} account {name!r} has no department")
        elif self.me:
            return True
        self.token = None
        return False

    def get(self, path: str, name: str, check: Callable[[Any], Any] | None = None, **params) -> Any:
        """GET ``path``: ``check(resp)`` (``page``, ``items``, ``body``: they fail a wrong shape) or the JSON."""
        with self.rest("GET", path, name=name, params=params or None) as resp:
            return check(resp) if check else resp.js

    def unassigned_tasks(self, name: str) -> list[dict]:
        """The department's pending tasks without an operator."""
        tasks = self.get("/api/tasks/", name, items, assigned_department=self.department, status="pending",
                         page_size=PAGE_SIZE)
        return [t for t in tasks if t.get("assigned_operator") in (None, "")]

    @property
    def department(self) -> int | None:
        return ident(self.me.get("department"))
