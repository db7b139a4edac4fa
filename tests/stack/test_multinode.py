"""Two application nodes behind one nginx, on one PostgreSQL and one Redis (tests/harness/multinode.py).

Proves, on the Debian twin of a scaled-out deployment:
- nodes starting together apply a pending migration once (migrate_locked), the other finds nothing;
- a client address is believed from the balancer only: X-Real-IP sent by a peer at 127.0.0.2 straight
  to a node is ignored by gunicorn's application and by daphne, believed from 127.0.0.1 (nginx);
- a notification written through node 2 reaches a WebSocket held by node 1 (Redis channel layer);
- stopping node 1 (gunicorn and daphne, SIGTERM as `systemctl stop`) under 20 users: only requests
  in flight on node 1 fail, none 5 s after the stop, no acknowledged write is lost (the client's
  ledger against the database, writes of unknown outcome replayed with their Idempotency-Key), every
  WebSocket client that node 1 held reconnects (through nginx, to node 2) within 5 s.

Figures (requests/s, p95, failures during the stop, reconnect and recovery times) are printed and
written to reports/multinode/summary-<users>users.json. WORKORDER_MULTINODE_USERS / _SECONDS / _THINK
change the load (tests/run.sh's slow stage: 100 users for 60 s, 2 s between a user's requests). The
users are makers of the seeded pool (all but the last, which the notification test uses), shared
round-robin when there are more users than makers.

Run: .venv/bin/python -m pytest -c tests/pytest.ini --rootdir . tests/stack/test_multinode.py
"""

from __future__ import annotations

import http.client
import json
import math
import os
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field

import pytest
import requests

from harness.app import wait_for
from harness.multinode import MultiNodeStack
from harness.progress import Ticker
from harness.stack import REPO_ROOT

pytestmark = pytest.mark.stack

USERS = int(os.environ.get("WORKORDER_MULTINODE_USERS", "20"))
LOAD_SECONDS = float(os.environ.get("WORKORDER_MULTINODE_SECONDS", "20"))
AFTER_STOP_SECONDS = 10.0
THINK = float(os.environ.get("WORKORDER_MULTINODE_THINK", "0.2"))  # seconds between a user's requests
SPAWN_RATE = 10  # users started per second
LISTENERS = 8  # WebSocket clients through nginx
QUIET_AFTER_STOP = 5.0  # no failure may start this long after the stop
RECONNECT_SECONDS = 5.0
RETRY_STATUSES = {0, 502, 503, 504}
PENDING_MIGRATION = "production.0004_task_sequence_index"


@pytest.fixture(scope="module")
def cluster(full_size_options):
    options = full_size_options(monitoring=False, gunicorn_workers=2, rate_limit="5000r/s", rate_burst=10000,
                                nginx_access_log=False)
    stack = MultiNodeStack(options, nodes=2)
    t0 = time.monotonic()
    stack.start()
    print(f"\n[multinode] 2 nodes up in {time.monotonic() - t0:.0f}s behind {stack.url} ({stack.base})")
    try:
        yield stack
    finally:
        stack.stop()
        stack.collect_logs(REPO_ROOT / "reports" / "multinode" / "logs")
        stack.cleanup()


def login(base: str, username: str, password: str) -> str:
    response = requests.post(base + "/api/auth/login/", json={"username": username, "password": password}, timeout=30)
    response.raise_for_status()
    return response.json()["token"]


# --- migrations ----------------------------------------------------------------------------------------

def test_nodes_starting_together_apply_the_pending_migration_once(cluster):
    app, name = PENDING_MIGRATION.split(".")
    outputs = [node.migrate.stdout for node in cluster.nodes]
    appliers = [out for out in outputs if f"Applying {PENDING_MIGRATION}" in out]
    assert len(appliers) == 1, outputs
    assert sum("No migrations to apply." in out for out in outputs) == len(outputs) - 1, outputs
    rows = cluster.psql(f"SELECT count(*) FROM django_migrations WHERE app = '{app}' AND name = '{name}'")
    assert int(rows) == 1
    for node in cluster.nodes:  # and every node is ready: its schema is complete
        status, _, body = node.gunicorn.request("GET", "/ready/")
        assert status == 200 and json.loads(body)["checks"]["migrations"] == "ok", body


# --- client addresses ----------------------------------------------------------------------------------

def failed_login(host: str, port: int, source: str, real_ip: str) -> int:
    conn = http.client.HTTPConnection(host, port, timeout=10, source_address=(source, 0))
    try:
        conn.request("POST", "/api/auth/login/", body=json.dumps({"username": "nobody", "password": "wrong"}),
                     headers={"Content-Type": "application/json", "X-Real-IP": real_ip, "Host": "localhost"})
        return conn.getresponse().status
    finally:
        conn.close()


def websocket_handshake(port: int, source: str, real_ip: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as sock:
        sock.sendall((f"GET /ws/notifications/ HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      f"Sec-WebSocket-Version: 13\r\nOrigin: http://localhost\r\nX-Real-IP: {real_ip}\r\n\r\n").encode())
        return sock.recv(200)


def addresses_with_failures(cluster) -> set[str]:
    keys = cluster.redis.client().keys("*addrfail:*")
    return {key.decode().rsplit("addrfail:", 1)[1] for key in keys}


def test_client_address_is_believed_from_the_balancer_only(cluster):
    node = cluster.nodes[0]
    # gunicorn: the address failed logins are counted under (accounts/lockout.py, in Redis).
    assert failed_login("127.0.0.1", node.gunicorn_port, "127.0.0.2", "203.0.113.9") == 400
    assert failed_login("127.0.0.1", node.gunicorn_port, "127.0.0.1", "203.0.113.7") == 400
    assert failed_login("127.0.0.1", cluster.nginx.port, "127.0.0.1", "203.0.113.8") == 400
    seen = addresses_with_failures(cluster)
    assert "127.0.0.2" in seen and "203.0.113.9" not in seen  # a client talking to the node directly
    assert "203.0.113.7" in seen  # the balancer's address: its X-Real-IP names the client
    assert "203.0.113.8" not in seen and "127.0.0.1" in seen  # nginx overwrites X-Real-IP with the peer
    # daphne: the address in its access log (the scope's client, by the same rule).
    assert websocket_handshake(node.daphne_port, "127.0.0.2", "203.0.113.19").startswith(b"HTTP/1.1 ")
    assert websocket_handshake(node.daphne_port, "127.0.0.1", "203.0.113.17").startswith(b"HTTP/1.1 ")
    log = wait_for(lambda: (text := node.daphne.log_text()) and "203.0.113.17" in text and text, timeout=10,
                   what="daphne's access log line of the trusted handshake")
    assert "203.0.113.19" not in log
    assert any(line.startswith("127.0.0.2:") and "WSCONNECTING /ws/notifications/" in line
               for line in log.splitlines()), log[-2000:]


# --- notifications across nodes ---------------------------------------------------------------------------

def plan_pair(cluster) -> dict:
    """A maker, a supervisor of the first department of a product's routing, and that product."""
    password = cluster.options.password
    rows = cluster.psql("SELECT username, id, coalesce(department_id, 0) FROM accounts_user "
                        "WHERE username LIKE 'loadtest-supervisor-%' ORDER BY username")
    supervisors = [(name, int(uid), int(dept)) for name, uid, dept in (line.split("|") for line in rows.splitlines())]
    maker = "loadtest-maker-0050"
    maker_token = login(cluster.url, maker, password)
    headers = {"Authorization": f"Token {maker_token}"}
    products = requests.get(cluster.url + "/api/products/?page_size=100", headers=headers, timeout=10).json()["results"]
    customer = requests.get(cluster.url + "/api/customers/", headers=headers, timeout=10).json()["results"][0]["id"]
    for product in products:
        department = product["routing"][0]["department"]
        department = department["id"] if isinstance(department, dict) else department
        supervisor = next((s for s in supervisors if s[2] == department), None)
        if supervisor:
            return {"maker_token": maker_token, "supervisor_token": login(cluster.url, supervisor[0], password),
                    "product": product["id"], "customer": customer}
    raise AssertionError("no product whose first department has a supervisor")


def test_a_notification_written_through_node_2_reaches_a_socket_on_node_1(cluster):
    from websockets.sync.client import connect

    pair = plan_pair(cluster)
    node1, node2 = cluster.nodes[0], cluster.nodes[1]
    node2_url = node2.gunicorn.url
    with connect(f"ws://127.0.0.1:{node1.daphne_port}/ws/notifications/?token={pair['maker_token']}",
                 origin="http://localhost", open_timeout=10) as ws:
        time.sleep(0.5)  # the consumer joins the user's group just after accepting
        order = requests.post(node2_url + "/api/workorders/", timeout=20, headers={
            "Authorization": f"Token {pair['maker_token']}", "Host": "localhost"}, json={
            "customer": pair["customer"], "product": pair["product"], "production_quantity": 2,
            "delivery_date": "2031-01-31", "priority": "normal"})
        assert order.status_code == 201, order.text
        approved = requests.post(f"{node2_url}/api/workorders/{order.json()['id']}/approve/", timeout=20,
                                 headers={"Authorization": f"Token {pair['supervisor_token']}", "Host": "localhost"})
        assert approved.status_code == 200, approved.text
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("type") == "notification" and message.get("kind") == "work_order_approved":
                break
        else:  # pragma: no cover - recv raised TimeoutError first
            raise AssertionError("no notification")
    stored = cluster.psql(f"SELECT count(*) FROM notifications_notification WHERE id = {int(message['id'])}")
    assert int(stored) == 1


# --- a node stopped under load ----------------------------------------------------------------------------

@dataclass
class Load:
    """USERS makers through nginx: create a work order (Idempotency-Key, one retry with it when the
    application gave no answer), list their work orders, read their notifications."""

    base: str
    users: list[dict]
    events: list[tuple[float, str, int, float]] = field(default_factory=list)  # (t, what, status, seconds)
    acknowledged: list[int] = field(default_factory=list)  # work order ids the server acknowledged
    unknown: list[dict] = field(default_factory=list)  # writes whose outcome is unknown after the retry
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop_flag: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def send(self, session, user, method, path, body=None, key=None):
        headers = {"Authorization": f"Token {user['token']}"} | ({"Idempotency-Key": key} if key else {})
        started = time.monotonic()
        try:
            response = session.request(method, self.base + path, json=body, headers=headers, timeout=(5, 20))
            status = response.status_code
            data = response.json() if response.headers.get("Content-Type", "").startswith("application/json") else None
        except (requests.RequestException, ValueError):
            session.close()
            status, data = 0, None
        return status, data, time.monotonic() - started

    def request(self, session, user, method, path, what, body=None):
        key = str(uuid.uuid4()) if method == "POST" else None
        status, data, seconds = self.send(session, user, method, path, body, key)
        with self.lock:
            self.events.append((time.monotonic(), what, status, seconds))
        if key and status in RETRY_STATUSES:
            time.sleep(0.5)
            status, data, _ = self.send(session, user, method, path, body, key)
        if key and (status in RETRY_STATUSES or (status == 409 and (data or {}).get("code") == "idempotency_key_in_use")):
            with self.lock:
                self.unknown.append({"user": user, "path": path, "body": body, "key": key})
        elif key and 200 <= status < 300:
            with self.lock:
                self.acknowledged.append(data["id"])
        return status, data

    def run(self, user) -> None:
        try:
            session = requests.Session()
            while not self.stop_flag.is_set():
                self.request(session, user, "POST", "/api/workorders/", "create", {
                    "customer": user["customer"], "product": user["product"], "production_quantity": 1,
                    "delivery_date": "2031-01-31", "priority": "normal"})
                time.sleep(THINK)
                self.request(session, user, "GET", "/api/workorders/?page_size=20", "list")
                time.sleep(THINK)
                self.request(session, user, "GET", "/api/notifications/?page_size=20", "notifications")
                time.sleep(THINK)
        except BaseException:  # noqa: BLE001 - a dead load thread fails the test
            with self.lock:
                self.errors.append(traceback.format_exc())

    def start(self) -> None:
        """SPAWN_RATE users a second, like workorder-loadtest's default ramp: all at once would be a
        burst the queue deadline sheds (503 with Retry-After), not the steady load this test judges."""
        for user in self.users:
            thread = threading.Thread(target=self.run, args=(user,), daemon=True, name=user["name"])
            thread.start()
            self.threads.append(thread)
            time.sleep(1 / SPAWN_RATE)

    def stop(self) -> list[str]:
        self.stop_flag.set()
        for thread in self.threads:
            thread.join(30)
        return [t.name for t in self.threads if t.is_alive()]

    def replay(self) -> list[dict]:
        """Every write of unknown outcome once more with its key; those still unknown."""
        session, still = requests.Session(), []
        for write in self.unknown:
            status, data, _ = self.send(session, write["user"], "POST", write["path"], write["body"], write["key"])
            if 200 <= status < 300:
                self.acknowledged.append(data["id"])
            else:
                still.append({**write, "status": status})
        return still

    def window(self, t0: float, t1: float) -> list[tuple[float, str, int, float]]:
        with self.lock:
            return [e for e in self.events if t0 <= e[0] < t1]


class Listener:
    """A WebSocket client through nginx that reconnects 0.2 s after its socket closes."""

    def __init__(self, ws_url: str, token: str, name: str):
        self.url, self.token, self.name = ws_url, token, name
        self.connected_at: list[float] = []
        self.disconnected_at: list[float] = []
        self.error: str | None = None
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"ws-{name}")

    def _run(self) -> None:
        from websockets.exceptions import ConnectionClosed, InvalidHandshake
        from websockets.sync.client import connect

        try:
            while not self.stop_flag.is_set():
                try:
                    with connect(f"{self.url}?token={self.token}", origin="http://localhost", open_timeout=5,
                                 close_timeout=2) as ws:
                        self.connected_at.append(time.monotonic())
                        while not self.stop_flag.is_set():
                            try:
                                ws.recv(timeout=0.5)
                            except TimeoutError:
                                continue
                except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError):
                    pass
                if not self.stop_flag.is_set():
                    self.disconnected_at.append(time.monotonic())
                    time.sleep(0.2)
        except BaseException:  # noqa: BLE001
            self.error = traceback.format_exc()

    def reconnect_after(self, t: float) -> float | None:
        """Seconds from the first disconnect after t to the next connection; None: no disconnect."""
        drops = [d for d in self.disconnected_at if d >= t]
        if not drops:
            return None
        again = [c for c in self.connected_at if c > drops[0]]
        return (again[0] - drops[0]) if again else math.inf


def percentile(values: list[float], p: float) -> float | None:
    values = sorted(values)
    return values[min(len(values), max(1, math.ceil(p / 100 * len(values)))) - 1] if values else None


def test_stopping_a_node_under_load_fails_only_its_in_flight_requests_and_loses_no_write(cluster):
    password = cluster.options.password
    pair = plan_pair(cluster)
    products = {"product": pair["product"], "customer": pair["customer"]}
    makers = [f"loadtest-maker-{n:04d}" for n in range(1, min(USERS, cluster.options.makers - 1) + 1)]
    tokens = {name: login(cluster.url, name, password) for name in makers}
    users = [{"name": f"user-{n}", "token": tokens[makers[n % len(makers)]], **products} for n in range(USERS)]
    maker_ids = cluster.psql("SELECT string_agg(id::text, ',') FROM accounts_user WHERE username IN ("
                             + ",".join(f"'{name}'" for name in makers) + ")")
    node1_log_before = cluster.nodes[0].daphne.log_text().count("WSCONNECT ")
    ws_url = cluster.url.replace("http://", "ws://") + "/ws/notifications/"
    listeners = [Listener(ws_url, tokens[makers[i % len(makers)]], f"l{i}") for i in range(LISTENERS)]
    for listener in listeners:
        listener.thread.start()
    wait_for(lambda: all(listener.connected_at for listener in listeners), timeout=20, what="listeners connected")
    on_node1 = cluster.nodes[0].daphne.log_text().count("WSCONNECT ") - node1_log_before
    wall0 = time.time()
    load = Load(cluster.url, users)
    t_start = time.monotonic()
    load.start()
    try:
        with Ticker(10, lambda: f"{len(load.events)} requests, {len(load.acknowledged)} acknowledged writes",
                    prefix="[multinode] load"):
            time.sleep(LOAD_SECONDS)
            assert not load.errors, load.errors
            t_stop = time.monotonic()
            statuses = cluster.stop_node(cluster.nodes[0])
            t_stopped = time.monotonic()
            time.sleep(max(0.0, AFTER_STOP_SECONDS - (t_stopped - t_stop)))
    finally:
        stuck = load.stop()
        t_end = time.monotonic()
        for listener in listeners:
            listener.stop_flag.set()
        for listener in listeners:
            listener.thread.join(10)
    still_unknown = load.replay()
    acknowledged = set(load.acknowledged)
    in_db = {int(i) for i in cluster.psql(
        f"SELECT id FROM production_workorder WHERE created_by_id IN ({maker_ids}) "
        f"AND created_at >= to_timestamp({wall0 - 1})").split()}

    before = load.window(t_start, t_stop)
    during = load.window(t_stop, t_stop + QUIET_AFTER_STOP)
    after = load.window(t_stop + QUIET_AFTER_STOP, t_end)
    failed = lambda events: [e for e in events if not 200 <= e[2] < 300]
    answered = [e[3] * 1000 for e in before + during + after if 200 <= e[2] < 300]
    reconnects = [r for r in (listener.reconnect_after(t_stop) for listener in listeners) if r is not None]
    last_failure = max((e[0] for e in failed(during + after)), default=None)
    figures = {
        "users": USERS, "seconds": round(t_end - t_start, 1), "requests": len(before + during + after),
        "requests_per_second": round(len(before + during + after) / (t_end - t_start), 1),
        "p95_ms": round(percentile(answered, 95) or 0, 1), "p50_ms": round(percentile(answered, 50) or 0, 1),
        "failed_before_stop": len(failed(before)),
        "failed_within_5s_of_stop": len(failed(during)), "failed_after_5s": len(failed(after)),
        "failure_statuses": sorted({e[2] for e in failed(during + after)}),
        "recovery_seconds": round(last_failure - t_stop, 2) if last_failure else 0.0,
        "node1_stop_seconds": round(t_stopped - t_stop, 2), "node1_exit_statuses": statuses,
        "acknowledged_writes": len(acknowledged), "replayed": len(load.unknown), "still_unknown": len(still_unknown),
        "lost": len(acknowledged - in_db), "unacknowledged_in_db": len(in_db - acknowledged),
        "websocket_clients": LISTENERS, "websocket_on_node1": on_node1, "websocket_dropped": len(reconnects),
        "websocket_reconnect_max_seconds": round(max(reconnects), 2) if reconnects else None,
    }
    print(f"\n[multinode] {json.dumps(figures)}")
    out = REPO_ROOT / "reports" / "multinode"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"summary-{USERS}users.json").write_text(json.dumps(figures, indent=2) + "\n")

    assert not load.errors and not stuck, load.errors + stuck
    assert not [listener.error for listener in listeners if listener.error]
    assert len(before) > 100 and len(after) > 20, "too little load to judge"
    assert figures["failed_before_stop"] == 0, failed(before)[:5]
    # Only what node 1 held may fail: at most one request in flight per user.
    assert figures["failed_within_5s_of_stop"] <= USERS, failed(during)
    assert figures["failed_after_5s"] == 0, failed(after)[:5]
    assert not still_unknown, still_unknown[:3]
    assert figures["lost"] == 0 and figures["unacknowledged_in_db"] == 0, figures
    assert on_node1 >= 1 and figures["websocket_dropped"] >= on_node1, figures  # node 1 held sockets: they dropped
    assert figures["websocket_reconnect_max_seconds"] <= RECONNECT_SECONDS, figures
