"""NotificationUser: a supervisor session plus a seeded operator of its department whose
notification WebSocket it opens; its task assigns a pending task to that operator and waits for the
notification. Request type ``WS``: ``[WS] assignment->notification`` (send of the assignment to
arrival; a failure after ``--ws-timeout``), ``[WS] Connect``, ``[WS] Connection`` (a dropped socket),
``[WS] Message`` (a malformed one). websocket-client is pure Python: cooperative under gevent."""

import contextlib
import json
import random
import time
from urllib.parse import urlsplit, urlunsplit

import gevent
import websocket
from gevent.event import AsyncResult
from locust import between, events, task

from ..accounts import Account, seeded_number, username
from ..gate import WS
from ..hooks import setup_error, warning
from .base import account_pool, ident
from .roles import SupervisorBase

LATENCY_NAME = "[WS] assignment->notification"
SOCKET_ERRORS = (OSError, websocket.WebSocketException)


def task_of(message) -> int | None:
    """The task a notification message is about; None for anything else."""
    if isinstance(message, dict) and message.get("type") == "notification":
        about = message.get("object")
        if isinstance(about, dict) and str(about.get("type")).endswith("task"):
            return ident(about)
    return None


class NotificationUser(SupervisorBase):
    wait_time = between(2, 6)
    fixed_count = 2  # --ws-users, set at init

    def __init__(self, environment):
        super().__init__(environment)
        self.operator: Account | None = None
        self.operator_id: int | None = None
        self.operator_token: str | None = None
        self.ws: websocket.WebSocket | None = None
        self.waiters: dict[int | None, AsyncResult] = {}

    def on_start(self):
        super().on_start()
        if self.token:
            self.connect()

    def take_operator(self) -> Account | None:
        """A seeded operator of the department no other user of this process holds: this worker's own
        numbers first (other workers hand theirs out), highest first (its OperatorUsers start low)."""
        pool = account_pool(self.environment)
        users = {seeded_number(pool.prefix, "operator", u.get("username")): u for u in self.department_operators()}
        seeded = {n: u for n, u in users.items() if n is not None and n <= pool.sizes["operator"]}
        if not seeded:
            return setup_error(self.environment, f"no seeded operator ({pool.prefix}-operator-NNNN) in department "
                                                 f"{self.department} for the WebSocket user")
        order = sorted(seeded, key=lambda n: ((n - 1) % pool.worker_count != pool.worker_index, -n))
        account = next(filter(None, (pool.claim("operator", n) for n in order)), None)
        if account is None:
            warning("the WebSocket user shares an operator account with another simulated user")
            account = Account("operator", order[0], username(pool.prefix, "operator", order[0]), reused=True)
        self.operator_id = ident(seeded[account.number])
        return account

    def connect(self) -> None:
        self.operator = self.operator or self.take_operator()
        self.operator_token = self.operator_token or (self.operator and self.login(self.operator))
        if not self.operator_token:
            return
        parts = urlsplit(self.host)
        url = urlunsplit(("wss" if parts.scheme == "https" else "ws", parts.netloc,
                          parts.path.rstrip("/") + self.opts.ws_path, "", ""))
        with self.environment.events.request.measure(WS, "[WS] Connect"):  # a failure on any exception
            self.ws = websocket.create_connection(url, timeout=self.opts.request_timeout,
                                                  header=[f"Authorization: Token {self.operator_token}"])
            self.ws.settimeout(None)
            gevent.spawn(self.receive, self.ws)  # ends when the socket does

    def receive(self, ws: websocket.WebSocket) -> None:
        while True:
            try:
                raw = ws.recv()
            except Exception as exc:  # noqa: BLE001 - whatever ends the socket ends this loop
                if self.ws is ws:  # not closed by on_stop
                    self.ws = None
                    self.fire("[WS] Connection", 0, exception=ConnectionError(f"WebSocket lost: {exc!r}"))
                return
            arrived = time.perf_counter()
            try:
                message = json.loads(raw) if raw else {}
            except ValueError:
                self.fire("[WS] Message", 0, exception=ValueError(f"malformed WebSocket message: {raw[:100]!r}"))
                continue
            waiter = self.waiters.get(task_of(message))
            if waiter is not None and not waiter.ready():
                waiter.set((arrived, message, len(raw)))

    def fire(self, name: str, ms: float, exception: Exception | None = None, length: int = 0) -> None:
        self.environment.events.request.fire(request_type=WS, name=name, response_time=ms, response_length=length,
                                             exception=exception, context={}, response=None)

    @task
    def assign_and_wait(self):
        if self.ws is None:
            return self.connect()
        pending = self.department_pending()
        if not pending:
            return
        chosen = random.choice(pending)
        waiter = self.waiters[ident(chosen)] = AsyncResult()
        started = time.perf_counter()
        try:
            if not self.assign(chosen, self.operator_id):
                return
            try:
                arrived, message, length = waiter.get(timeout=self.opts.ws_timeout)
            except gevent.Timeout:
                return self.fire(LATENCY_NAME, self.opts.ws_timeout * 1000, exception=TimeoutError(
                    f"no notification for task {ident(chosen)} within {self.opts.ws_timeout:g} s"))
            self.fire(LATENCY_NAME, (arrived - started) * 1000, length=length)
            if self.ws is not None and ident(message) is not None:
                with contextlib.suppress(*SOCKET_ERRORS):  # a lost socket is reported by receive()
                    self.ws.send(json.dumps({"action": "mark_read", "id": ident(message)}))
        finally:
            self.waiters.pop(ident(chosen), None)

    def on_stop(self):
        ws, self.ws = self.ws, None
        if ws is not None:
            with contextlib.suppress(*SOCKET_ERRORS):
                ws.close(timeout=1)
        if self.operator is not None:
            account_pool(self.environment).release(self.operator)
        super().on_stop()


@events.init.add_listener
def set_ws_users(environment, **_kwargs) -> None:
    """``--ws-users``: how many NotificationUsers run, taken out of ``--users`` (0: none)."""
    NotificationUser.fixed_count = max(0, environment.parsed_options.ws_users)
    NotificationUser.weight = 1 if NotificationUser.fixed_count else 0
