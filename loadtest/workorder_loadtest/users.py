"""The simulated users: four HTTP user classes with the original plan's weights and waits, and a
WebSocket user that measures assignment -> notification latency.

Every simulated user logs in as its own seeded account (see accounts.py) and only does what that
role may legitimately do, with data discovered through the API, so that every non-2xx answer is a
real error. Business conflicts that concurrency makes unavoidable (a lost claim race, a progress
report the previous routing step does not cover yet: HTTP 409) are recorded as conflicts, in their
own stats entry "<name> (conflict)", never as failures.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import gevent
from gevent.event import AsyncResult
from locust import FastHttpUser, between, task
from locust.contrib.fasthttp import FastHttpSession

from . import accounts as acc
from . import hooks
from .sla import LOGIN_NAME, WS_REQUEST_TYPE

log = logging.getLogger("workorder_loadtest")

PAGE_SIZE = 20
TASK_STATUSES = ("pending", "in_progress", "completed")
PRIORITIES = ("low", "normal", "high", "urgent")
WS_LATENCY_NAME = "[WS] assignment->notification"


def option(environment, name: str, default: Any) -> Any:
    opts = getattr(environment, "parsed_options", None)
    value = getattr(opts, name, None) if opts is not None else None
    return default if value is None else value


def ident(value: Any) -> int | None:
    """An id from a field that is either an id or a nested object with an id."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return ident(value.get("id"))
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


@dataclass
class Reply:
    ok: bool
    status: int
    data: Any = None
    conflict: bool = False


def _shape_error(shape: str | None, data: Any) -> str | None:
    if shape == "page":
        if not isinstance(data, dict) or not isinstance(data.get("results"), list) or "count" not in data:
            return "malformed body: expected a page {count, next, previous, results}"
    elif shape == "object":
        if not isinstance(data, dict):
            return "malformed body: expected a JSON object"
    elif shape == "list":
        if not isinstance(data, (list, dict)):
            return "malformed body: expected a JSON list or page"
    return None


def results_of(data: Any) -> list:
    if isinstance(data, dict):
        data = data.get("results", [])
    return [x for x in data if isinstance(x, dict)] if isinstance(data, list) else []


class ApiUser(FastHttpUser):
    """Shared plumbing: timeouts, login as a pool account, JSON calls with strict checking."""

    abstract = True
    role = "operator"  # which account pool this user draws from

    def __init__(self, environment):
        timeout = float(option(environment, "request_timeout", 10.0))
        self.network_timeout = timeout
        self.connection_timeout = timeout
        super().__init__(environment)
        self.token: str | None = None
        self.me: dict = {}
        self.account: acc.Account | None = None
        self._next_login_attempt = 0.0
        self._login_client: FastHttpSession | None = None

    # --- requests ---------------------------------------------------------------------------
    def api(self, method: str, path: str, name: str, *, params: dict | None = None, json_body: Any = None,
            token: str | None = None, auth: bool = True, conflict_ok: bool = False,
            shape: str | None = "object", expected: tuple[int, ...] = (200, 201, 204), client=None) -> Reply:
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Token {token or self.token}"
        url = path + ("?" + urlencode(params) if params else "")
        with (client or self.client).request(method, url, name=name, json=json_body, headers=headers,
                                             catch_response=True) as resp:
            status = int(resp.status_code or 0)
            if status == 409 and conflict_ok:
                resp.request_meta["name"] = f"{name} (conflict)"
                resp.request_meta["context"]["conflict"] = True
                resp.success()
                return Reply(True, status, None, conflict=True)
            if status not in expected:
                if status == 0:
                    resp.failure(f"no response: {getattr(resp, 'error', None) or 'connection failed'}")
                else:
                    body = (resp.text or "")[:200] if status else ""
                    resp.failure(f"HTTP {status}: {body}")
                return Reply(False, status)
            data = None
            if shape is not None:
                try:
                    data = resp.json()
                except Exception:  # noqa: BLE001 - any decoding problem is a malformed body
                    resp.failure("malformed body: not JSON")
                    return Reply(False, status)
                problem = _shape_error(shape, data)
                if problem:
                    resp.failure(problem)
                    return Reply(False, status, data)
            resp.success()
            return Reply(True, status, data)

    # --- accounts ---------------------------------------------------------------------------
    @property
    def login_client(self) -> FastHttpSession:
        """A separate connection for logins, with --login-timeout: password hashing (PBKDF2) makes
        logins slow by design, and all users log in during the ramp-up."""
        if self._login_client is None:
            timeout = float(option(self.environment, "login_timeout", 60.0))
            kwargs = dict(base_url=self.host, user=self, network_timeout=timeout, connection_timeout=timeout,
                          max_retries=0, insecure=self.insecure)
            if "request_event" in inspect.signature(FastHttpSession.__init__).parameters:
                self._login_client = FastHttpSession(request_event=self.environment.events.request, **kwargs)
            else:  # Locust before 2.3x took the environment instead
                self._login_client = FastHttpSession(self.environment, **kwargs)
        return self._login_client

    def login(self, account: acc.Account) -> str | None:
        password = option(self.environment, "password", "")
        reply = self.api("POST", "/api/auth/login/", LOGIN_NAME, auth=False, client=self.login_client,
                         json_body={"username": account.username, "password": password})
        if reply.ok and isinstance(reply.data, dict) and isinstance(reply.data.get("token"), str):
            return reply.data["token"]
        if reply.ok:
            hooks.setup_error(self.environment, "login answered without a token (API contract: {\"token\": ...})")
        elif reply.status in (400, 401, 403):
            log.error("login rejected for %s (HTTP %s)", account.username, reply.status)
            hooks.setup_error(
                self.environment,
                f"login rejected for {account.role} accounts (HTTP {reply.status}; pool of "
                f"{hooks.account_pool(self.environment).sizes[account.role]}, see the log for usernames): seed them with "
                "`workorder-manage seed_loadtest` and pass the same --password and pool sizes")
        return None

    def fetch_me(self, token: str, expected_role: str) -> dict | None:
        reply = self.api("GET", "/api/auth/me/", "[Auth] Me", token=token)
        if not reply.ok:
            return None
        me = reply.data
        if me.get("role") != expected_role:
            hooks.setup_error(self.environment,
                              f"account {me.get('username')!r} has role {me.get('role')!r}, expected {expected_role!r}")
            return None
        if expected_role in ("operator", "supervisor") and ident(me.get("department")) is None:
            hooks.setup_error(self.environment, f"{expected_role} account {me.get('username')!r} has no department")
            return None
        return me

    def on_start(self):
        pool = hooks.account_pool(self.environment)
        try:
            self.account = pool.acquire(self.role)
        except LookupError as exc:
            hooks.setup_error(self.environment, str(exc))
            return
        if self.account.reused:
            hooks.warning(self.environment, f"{self.role} pool exhausted: simulated users share accounts "
                                            f"(seed more with seed_loadtest --{self.role}s N)")
        self.ensure_login()

    def on_stop(self):
        if self.account is not None:
            hooks.account_pool(self.environment).release(self.account)

    def ensure_login(self) -> bool:
        """Log in (again) if needed; False while the user has no session (then the task is skipped)."""
        if self.token and self.me:
            return True
        if self.account is None or time.monotonic() < self._next_login_attempt:
            return False
        self._next_login_attempt = time.monotonic() + 5.0  # back off after a failed attempt
        token = self.login(self.account)
        if token is None:
            return False
        me = self.fetch_me(token, self.account.role)
        if me is None:
            return False
        self.token, self.me = token, me
        return True

    @property
    def department(self) -> int | None:
        return ident(self.me.get("department"))

    def page_for(self, count: int | None, max_page: int) -> int:
        pages = max(1, math.ceil((count or 0) / PAGE_SIZE)) if count is not None else 1
        return random.randint(1, min(max_page, pages))


class WorkOrderUser(ApiUser):
    """A read-mostly shop-floor user browsing tasks, work orders, notifications and the summary.

    It logs in with an operator account by default (--browser-role supervisor to change): operators
    are the largest pool and see their department's tasks, like the users of the floor terminals.
    """

    wait_time = between(1, 5)

    def __init__(self, environment):
        super().__init__(environment)
        self.role = option(environment, "browser_role", "operator")
        self.seen_task_ids: list[int] = []
        self.workorder_count: int | None = None

    @task(5)
    def task_list(self):
        if not self.ensure_login():
            return
        params: dict[str, Any] = {"page_size": PAGE_SIZE}
        if random.random() < 0.3:
            params["status"] = random.choice(TASK_STATUSES)
        reply = self.api("GET", "/api/tasks/", "[Tasks] List", params=params, shape="page")
        if reply.ok:
            ids = [ident(t.get("id")) for t in results_of(reply.data)]
            self.seen_task_ids = [i for i in ids if i is not None] or self.seen_task_ids

    @task(3)
    def workorder_list(self):
        if not self.ensure_login():
            return
        page = self.page_for(self.workorder_count, 3)
        reply = self.api("GET", "/api/workorders/", "[WorkOrders] List",
                         params={"page": page, "page_size": PAGE_SIZE}, shape="page")
        if reply.ok:
            self.workorder_count = int(reply.data.get("count") or 0)

    @task(2)
    def task_detail(self):
        if not self.ensure_login():
            return
        if not self.seen_task_ids:
            self.task_list()
            return
        task_id = random.choice(self.seen_task_ids)
        self.api("GET", f"/api/tasks/{task_id}/", "[Tasks] Detail")

    @task(1)
    def notifications(self):
        if self.ensure_login():
            self.api("GET", "/api/notifications/", "[Notifications] List", shape="list")

    @task(1)
    def task_summary(self):
        if self.ensure_login():
            self.api("GET", "/api/statistics/task_summary/", "[Stats] Task Summary", shape="object")


class SupervisorMixin:
    """Supervisor actions shared by SupervisorUser and NotificationUser."""

    def department_pending(self: ApiUser, token: str | None = None) -> list[dict]:
        reply = self.api("GET", "/api/tasks/", "[Supervisor] Department Tasks", token=token, shape="page",
                         params={"assigned_department": self.sup_department, "status": "pending",
                                 "page_size": PAGE_SIZE})
        return results_of(reply.data) if reply.ok else []

    def department_operators(self: ApiUser, token: str | None = None) -> list[dict]:
        reply = self.api("GET", "/api/users/", "[Users] Operators", token=token, shape="list",
                         params={"role": "operator", "department": self.sup_department, "page_size": 100})
        if not reply.ok:
            return []
        return [u for u in results_of(reply.data)
                if u.get("role", "operator") == "operator"
                and ident(u.get("department", self.sup_department)) == self.sup_department
                and ident(u.get("id")) is not None]


class SupervisorUser(SupervisorMixin, ApiUser):
    """Watches the department, assigns pending tasks to operators of the department."""

    wait_time = between(2, 6)
    role = "supervisor"

    def __init__(self, environment):
        super().__init__(environment)
        self.pending: list[dict] = []
        self.operators: list[dict] = []
        self.operators_fetched = 0.0

    @property
    def sup_department(self):
        return self.department

    @task(4)
    def department_tasks(self):
        if self.ensure_login():
            self.pending = self.department_pending()

    @task(3)
    def workload(self):
        if self.ensure_login():
            self.api("GET", "/api/statistics/department_workload/", "[Supervisor] Workload", shape=None)

    @task(2)
    def assign(self):
        if not self.ensure_login():
            return
        if not self.operators or time.monotonic() - self.operators_fetched > 60:
            self.operators = self.department_operators()
            self.operators_fetched = time.monotonic()
            if not self.operators:
                return
        # Look at the current list right before assigning (as a supervisor would): the backend lets
        # a supervisor re-assign an in-progress task, so assigning from a stale list could take a
        # task away from the operator who just claimed it.
        self.pending = self.department_pending()
        candidates = [t for t in self.pending if t.get("assigned_operator") in (None, "")]
        if not candidates:
            return
        chosen = random.choice(candidates)
        self.pending.remove(chosen)
        operator = random.choice(self.operators)
        self.api("POST", f"/api/tasks/{ident(chosen.get('id'))}/assign/", "[Supervisor] Assign Task",
                 json_body={"operator_id": ident(operator.get("id"))}, conflict_ok=True, shape=None)

    @task(1)
    def dashboard(self):
        if self.ensure_login():
            self.api("GET", "/api/statistics/collaboration/", "[Supervisor] Dashboard", shape=None)


class OperatorUser(ApiUser):
    """Claims pending tasks of its department and reports progress on its own in-progress tasks."""

    wait_time = between(3, 8)
    role = "operator"

    def __init__(self, environment):
        super().__init__(environment)
        self.mine: dict[int, dict] = {}
        self.claimable: list[dict] = []

    def refresh_mine(self) -> None:
        reply = self.api("GET", "/api/tasks/", "[Operator] My Tasks", shape="page",
                         params={"assigned_operator": ident(self.me.get("id")), "status": "in_progress",
                                 "page_size": PAGE_SIZE})
        if reply.ok:
            self.mine = {ident(t.get("id")): t for t in results_of(reply.data)
                         if ident(t.get("id")) is not None
                         and ident(t.get("assigned_operator")) in (None, ident(self.me.get("id")))}

    def refresh_claimable(self) -> None:
        reply = self.api("GET", "/api/tasks/", "[Operator] Claimable Tasks", shape="page",
                         params={"assigned_department": self.department, "status": "pending",
                                 "page_size": PAGE_SIZE})
        if reply.ok:
            self.claimable = [t for t in results_of(reply.data) if t.get("assigned_operator") in (None, "")]

    @task(5)
    def my_tasks(self):
        if self.ensure_login():
            self.refresh_mine()

    @task(3)
    def claimable_tasks(self):
        if self.ensure_login():
            self.refresh_claimable()

    @task(2)
    def update_progress(self):
        if not self.ensure_login():
            return
        open_tasks = [t for t in self.mine.values() if self.remaining(t) > 0 and t.get("status") == "in_progress"]
        if not open_tasks:
            self.refresh_mine()
            return
        chosen = random.choice(open_tasks)
        remaining = self.remaining(chosen)
        planned = int(chosen.get("planned_quantity") or remaining)
        quantity = random.randint(1, max(1, min(remaining, math.ceil(planned / 5))))
        task_id = ident(chosen.get("id"))
        reply = self.api("POST", f"/api/tasks/{task_id}/update_progress/", "[Operator] Update Progress",
                         json_body={"quantity": quantity}, conflict_ok=True, shape=None)
        if reply.conflict:
            # The previous step has not completed enough yet (or the task changed): look again later.
            self.mine.pop(task_id, None)
        elif reply.ok:
            chosen["completed_quantity"] = int(chosen.get("completed_quantity") or 0) + quantity
            if self.remaining(chosen) <= 0:
                self.mine.pop(task_id, None)

    @staticmethod
    def remaining(t: dict) -> int:
        try:
            return int(t.get("planned_quantity") or 0) - int(t.get("completed_quantity") or 0)
        except (TypeError, ValueError):
            return 0

    @task(1)
    def claim(self):
        if not self.ensure_login():
            return
        if not self.claimable:
            self.refresh_claimable()
            return
        chosen = self.claimable.pop(random.randrange(len(self.claimable)))
        task_id = ident(chosen.get("id"))
        reply = self.api("POST", f"/api/tasks/{task_id}/claim/", "[Operator] Claim Task",
                         conflict_ok=True, shape=None)
        if reply.ok and not reply.conflict:
            chosen.update(status="in_progress", assigned_operator=ident(self.me.get("id")))
            self.mine[task_id] = chosen


class MakerUser(ApiUser):
    """Browses its own work orders and creates new ones for existing customers and products."""

    wait_time = between(5, 10)
    role = "maker"

    def __init__(self, environment):
        super().__init__(environment)
        self.customers: list[int] = []
        self.products: list[int] = []
        self.workorder_count: int | None = None

    def on_start(self):
        super().on_start()
        if self.token:
            self.load_catalog()

    def load_catalog(self) -> None:
        reply = self.api("GET", "/api/customers/", "[Catalog] Customers", shape="list")
        if reply.ok:
            self.customers = [i for i in (ident(c.get("id")) for c in results_of(reply.data)) if i is not None]
        self.products_list()
        if reply.ok and (not self.customers or not self.products):
            hooks.setup_error(self.environment, "no customers or products in the catalog: seed the database "
                                                "(workorder-manage seed_loadtest --work-orders N or seed_demo)")

    @task(4)
    def my_workorders(self):
        if not self.ensure_login():
            return
        page = self.page_for(self.workorder_count, 5)
        reply = self.api("GET", "/api/workorders/", "[Maker] My WorkOrders",
                         params={"page": page, "page_size": PAGE_SIZE}, shape="page")
        if reply.ok:
            self.workorder_count = int(reply.data.get("count") or 0)

    @task(1)
    def create_workorder(self):
        if not self.ensure_login():
            return
        if not self.customers or not self.products:
            self.load_catalog()
            return
        delivery = dt.date.today() + dt.timedelta(days=random.randint(7, 90))
        reply = self.api("POST", "/api/workorders/", "[Maker] Create WorkOrder", expected=(201, 200), json_body={
            "customer": random.choice(self.customers),
            "product": random.choice(self.products),
            "production_quantity": random.randint(10, 500),
            "delivery_date": delivery.isoformat(),
            "priority": random.choice(PRIORITIES),
        })
        if reply.ok and self.workorder_count is not None:
            self.workorder_count += 1

    @task(2)
    def products_list(self):
        if not self.ensure_login():
            return
        reply = self.api("GET", "/api/products/", "[Maker] Products List", shape="list")
        if reply.ok:
            self.products = [i for i in (ident(p.get("id")) for p in results_of(reply.data)) if i is not None]


class NotificationUser(SupervisorMixin, ApiUser):
    """Keeps an operator's /ws/notifications/ socket open and measures assignment -> notification.

    Design: the user holds two sessions. It logs in as a supervisor from the pool, finds the
    operators of the supervisor's department through /api/users/?role=operator&department=<id>,
    takes one of those seeded operator accounts (one no other simulated user of this process holds)
    and opens the WebSocket as that operator. Its task assigns a pending task of the department to
    that operator (as the supervisor) and waits for the notification about that task on the socket.
    The time from sending the assign request to the notification's arrival is recorded as request
    type "WS", name "[WS] assignment->notification" (a missing notification after --ws-timeout is a
    failure of that entry). "[WS] Connect" records the handshake; a dropped connection is a failure
    of "[WS] Connection". WS entries are gated separately from HTTP. Its HTTP calls are real load and
    count in the HTTP aggregate under the supervisor's request names.
    """

    wait_time = between(2, 6)
    role = "supervisor"
    fixed_count = 2  # replaced by --ws-users in the init hook

    def __init__(self, environment):
        super().__init__(environment)
        self.operator_account: acc.Account | None = None
        self.operator_token: str | None = None
        self.operator_id: int | None = None
        self.ws = None
        self.receiver = None
        self.closing = False
        self.waiters: dict[int, AsyncResult] = {}
        self.pending: list[dict] = []

    @property
    def sup_department(self):
        return self.department

    def on_start(self):
        super().on_start()  # supervisor session
        if self.token:
            self.setup_operator()
            if self.operator_token:
                self.connect()

    def setup_operator(self) -> None:
        prefix = option(self.environment, "account_prefix", "loadtest")
        pool = hooks.account_pool(self.environment)
        operators = self.department_operators()
        seeded = []
        for u in operators:
            parsed = acc.parse_username(prefix, u.get("username", ""))
            if parsed and parsed[0] == "operator" and parsed[1] <= pool.sizes["operator"]:
                seeded.append((parsed[1], u))
        if not seeded:
            hooks.setup_error(self.environment, f"no seeded operator ({prefix}-operator-NNNN) in department "
                                                f"{self.department} for the WebSocket user")
            return
        own = [s for s in seeded if (s[0] - 1) % pool.worker_count == pool.worker_index]
        seeded.sort(key=lambda s: (s not in own, -s[0]))  # own partition first, highest numbers first
        chosen = None
        for number, user in seeded:
            account = pool.claim("operator", number)
            if account is not None:
                chosen = (account, user)
                break
        if chosen is None:
            number, user = seeded[0]
            chosen = (acc.Account("operator", number, acc.username(prefix, "operator", number), reused=True), user)
            hooks.warning(self.environment, "WebSocket user shares an operator account with another simulated user")
        self.operator_account, operator = chosen
        token = self.login(self.operator_account)
        if token is None:
            return
        self.operator_token = token
        self.operator_id = ident(operator.get("id"))

    def ws_url(self) -> str:
        parts = urlsplit(self.host)
        scheme = "wss" if parts.scheme == "https" else "ws"
        path = parts.path.rstrip("/") + option(self.environment, "ws_path", "/ws/notifications/")
        return urlunsplit((scheme, parts.netloc, path, "", ""))

    def fire(self, name: str, started: float, exception: Exception | None = None, length: int = 0,
             response_time: float | None = None) -> None:
        self.environment.events.request.fire(
            request_type=WS_REQUEST_TYPE, name=name,
            response_time=(time.perf_counter() - started) * 1000 if response_time is None else response_time,
            response_length=length, exception=exception, context={}, response=None)

    def connect(self) -> None:
        import websocket  # websocket-client: pure Python, cooperative under gevent's monkey-patching

        timeout = float(option(self.environment, "request_timeout", 10.0))
        started = time.perf_counter()
        try:
            # The token goes in a header (kept out of URLs and access logs), as the consumer prefers.
            ws = websocket.create_connection(self.ws_url(), timeout=timeout,
                                             header=[f"Authorization: Token {self.operator_token}"])
        except Exception as exc:  # noqa: BLE001 - any handshake problem is a failed connect
            self.fire("[WS] Connect", started, exception=exc)
            return
        self.fire("[WS] Connect", started)
        ws.settimeout(None)
        self.ws = ws
        self.closing = False
        self.receiver = gevent.spawn(self.receive_loop, ws)

    def receive_loop(self, ws) -> None:
        while True:
            try:
                raw = ws.recv()
            except Exception as exc:  # noqa: BLE001
                if not self.closing:
                    self.fire("[WS] Connection", time.perf_counter(), exception=ConnectionError(f"WebSocket lost: {exc!r}"))
                    self.ws = None
                return
            arrived = time.perf_counter()
            if not raw:
                continue
            try:
                message = json.loads(raw)
            except ValueError:
                self.fire("[WS] Message", arrived, exception=ValueError(f"malformed WebSocket message: {raw[:100]!r}"))
                continue
            if not isinstance(message, dict) or message.get("type") != "notification":
                continue
            obj = message.get("object") or {}
            if not str(obj.get("type", "")).endswith("task"):
                continue
            waiter = self.waiters.get(ident(obj.get("id")))
            if waiter is not None and not waiter.ready():
                waiter.set((arrived, message, len(raw)))

    @task
    def assign_and_wait(self):
        if not self.ensure_login():
            return
        if self.operator_token is None:
            self.setup_operator()
            return
        if self.ws is None:
            self.connect()
            return
        self.pending = [t for t in self.department_pending() if t.get("assigned_operator") in (None, "")]
        if not self.pending:
            return
        chosen = self.pending.pop(random.randrange(len(self.pending)))
        task_id = ident(chosen.get("id"))
        waiter = AsyncResult()
        self.waiters[task_id] = waiter
        started = time.perf_counter()
        try:
            reply = self.api("POST", f"/api/tasks/{task_id}/assign/", "[Supervisor] Assign Task",
                             json_body={"operator_id": self.operator_id}, conflict_ok=True, shape=None)
            if not reply.ok or reply.conflict:
                return
            timeout = float(option(self.environment, "ws_timeout", 10.0))
            try:
                arrived, message, length = waiter.get(timeout=timeout)
            except gevent.Timeout:
                self.fire(WS_LATENCY_NAME, started,
                          exception=TimeoutError(f"no notification for task {task_id} within {timeout:g} s"))
                return
            self.fire(WS_LATENCY_NAME, started, length=length, response_time=(arrived - started) * 1000)
            if ident(message.get("id")) is not None and self.ws is not None:
                try:
                    self.ws.send(json.dumps({"action": "mark_read", "id": ident(message.get("id"))}))
                except Exception:  # noqa: BLE001 - a lost socket is reported by the receive loop
                    pass
        finally:
            self.waiters.pop(task_id, None)

    def on_stop(self):
        self.closing = True
        if self.ws is not None:
            try:
                self.ws.close(timeout=1)
            except Exception:  # noqa: BLE001
                pass
        if self.receiver is not None:
            self.receiver.kill(block=False)
        if self.operator_account is not None:
            hooks.account_pool(self.environment).release(self.operator_account)
        super().on_stop()


HTTP_USER_CLASSES = (WorkOrderUser, SupervisorUser, OperatorUser, MakerUser)
ALL_USER_CLASSES = HTTP_USER_CLASSES + (NotificationUser,)
__all__ = ["WorkOrderUser", "SupervisorUser", "OperatorUser", "MakerUser", "NotificationUser"]
