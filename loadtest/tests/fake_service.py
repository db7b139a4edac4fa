"""A tiny in-memory stand-in for the workorder API (its paths and fields), on loopback.

Just enough to drive the Locust suite end to end in unit tests: token login, /me, tasks with
pagination and filters, claim/assign/progress with the real conflict rules, work orders, catalog,
users, notifications, statistics, and the notifications WebSocket. Knobs: ``delay`` (seconds added
to every request), ``password``, ``notify`` (push notifications), ``conflicts`` (every claim and
assignment answers 409).

Standard library only: the flake's loadtest-entry-point check runs it with a bare python3. That is
why the WebSocket side frames by hand (ws_send, ws_read) instead of using a library: websockets is
a test dependency of backend/ only, and websocket-client is a client.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import os
import re
import signal
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, urlsplit

DEPARTMENTS = (1, 2)


class State:
    def __init__(self, password: str = "secret", operators: int = 20, supervisors: int = 6, makers: int = 6,
                 tasks: int = 300, notify: bool = True, conflicts: bool = False, unavailable_every: int = 0):
        self.notify, self.conflicts = notify, conflicts
        # Idempotency-Key, as the real API keeps it: outcomes by (user, key); every Nth new keyed
        # write answers 503 without applying anything (unavailable_every, 0: never).
        self.unavailable_every = unavailable_every
        self.outcomes: dict[tuple, tuple[int, object]] = {}
        self.seen_keys: set[tuple] = set()
        self.keyed_writes = 0  # with a key not seen before
        self.unkeyed_writes = 0
        self.unavailable = 0
        self.replayed = 0
        self.lock = threading.Lock()
        self.password = password
        self.users: dict[str, dict] = {}
        uid = 0
        for role, count in (("operator", operators), ("supervisor", supervisors), ("maker", makers)):
            for n in range(1, count + 1):
                uid += 1
                dept = DEPARTMENTS[(n - 1) % len(DEPARTMENTS)] if role != "maker" else None
                name = f"loadtest-{role}-{n:04d}"
                self.users[name] = {"id": uid, "username": name, "role": role, "department": dept}
        self.tokens: dict[str, dict] = {}
        self.tasks = {
            i: {"id": i, "work_order": (i - 1) // 2 + 1, "process": 1 + (i % 2), "sequence": 1 + (i % 2),
                "assigned_department": DEPARTMENTS[i % 2], "assigned_operator": None, "status": "pending",
                "planned_quantity": 50, "completed_quantity": 0}
            for i in range(1, tasks + 1)
        }
        self.workorders = {i: {"id": i, "number": f"WO-{i:06d}", "customer": 1, "product": 1,
                               "production_quantity": 50, "priority": "normal", "created_by": None,
                               "approval_status": "approved", "status": "open"} for i in range(1, tasks // 2 + 1)}
        self.requests = 0
        self.logins = 0
        self.sockets: dict[int, list] = {}
        self.notifications = 0
        self.marked_read = 0


def page(items: list, query: dict) -> dict:
    size = int(query.get("page_size", ["20"])[0])
    number = int(query.get("page", ["1"])[0])
    pages = max(1, math.ceil(len(items) / size))
    if number < 1 or number > pages:
        raise LookupError("Invalid page.")
    return {"count": len(items), "next": None, "previous": None,
            "results": items[(number - 1) * size: number * size]}


def ws_send(conn, payload: bytes, opcode: int = 0x1) -> None:
    """One unmasked server frame (RFC 6455 5.2): FIN and opcode, the length, the payload."""
    wfile, lock = conn
    length = bytes([len(payload)]) if len(payload) < 126 else struct.pack("!BH", 126, len(payload))
    with lock:
        wfile.write(bytes([0x80 | opcode]) + length + payload)
        wfile.flush()


def ws_read(rfile) -> tuple[int, bytes]:
    """One client frame (always masked): (opcode, payload); a close (0x8) at end of stream."""
    head = rfile.read(2)
    if len(head) < 2:
        return 0x8, b""
    length = head[1] & 0x7F
    if length >= 126:
        length = int.from_bytes(rfile.read(2 if length == 126 else 8), "big")
    mask = rfile.read(4) if head[1] & 0x80 else bytes(4)
    return head[0] & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(rfile.read(length)))


def push(state: State, user_id: int, message: dict) -> None:
    for conn in list(state.sockets.get(user_id, [])):
        try:
            ws_send(conn, json.dumps(message).encode())
        except OSError:
            pass


def make_handler(state: State, delay: float):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args):  # keep test output quiet
            pass

        def reply(self, status: int, body) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def user(self):
            auth = self.headers.get("Authorization", "")
            return state.tokens.get(auth[6:]) if auth.startswith("Token ") else None

        def body(self):
            if not hasattr(self, "_raw_body"):  # read once: a reply that skips route() still drains it
                length = int(self.headers.get("Content-Length") or 0)
                self._raw_body = self.rfile.read(length) if length else b""
            return json.loads(self._raw_body or b"{}")

        def do_GET(self):
            if self.headers.get("Upgrade", "").lower() == "websocket":
                self.websocket()
                return
            self.handle_any("GET")

        def websocket(self) -> None:
            """The notifications consumer: token auth, pushes, mark_read, ping and close."""
            user = self.user() or state.tokens.get(parse_qs(urlsplit(self.path).query).get("token", [""])[0])
            if urlsplit(self.path).path != "/ws/notifications/" or user is None:
                return self.reply(403, {"detail": "forbidden"})
            key = self.headers["Sec-WebSocket-Key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", base64.b64encode(hashlib.sha1(key.encode()).digest()).decode())
            self.end_headers()
            self.wfile.flush()
            self.close_connection = True
            conn = (self.wfile, threading.Lock())
            with state.lock:
                state.sockets.setdefault(user["id"], []).append(conn)
            try:
                while (frame := ws_read(self.rfile))[0] != 0x8:
                    if frame[0] == 0x9:
                        ws_send(conn, frame[1], opcode=0xA)
                    elif frame[0] == 0x1 and json.loads(frame[1]).get("action") == "mark_read":
                        with state.lock:
                            state.marked_read += 1
                ws_send(conn, frame[1], opcode=0x8)
            except (OSError, ValueError):
                return
            finally:
                with state.lock:
                    state.sockets[user["id"]].remove(conn)

        def do_POST(self):
            self.handle_any("POST")

        def handle_any(self, method: str) -> None:
            if delay:
                time.sleep(delay)
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            path = parts.path
            key = self.headers.get("Idempotency-Key")
            self.__dict__.pop("_raw_body", None)  # a new request on this keep-alive connection
            if method == "POST":
                self.body()
            with state.lock:
                state.requests += 1
                me = self.user()
                scope = (me and me["id"], key)
                new_key = key is not None and scope not in state.seen_keys
                if method == "POST" and path != "/api/auth/login/":
                    state.keyed_writes += new_key
                    state.unkeyed_writes += key is None
                    state.seen_keys.add(scope)
                replay = state.outcomes.get(scope) if key is not None else None
                if replay is not None:
                    state.replayed += 1
                    status, body = replay
                elif new_key and state.unavailable_every and state.keyed_writes % state.unavailable_every == 0:
                    state.unavailable += 1
                    status, body = 503, {"detail": "The database is unavailable; retry in a moment."}
                else:
                    try:
                        status, body = self.route(method, path, query)
                    except LookupError as exc:
                        status, body = 404, {"detail": str(exc)}
                    if key is not None and status < 500:
                        state.outcomes[scope] = (status, body)
            self.reply(status, body)

        def route(self, method, path, query):
            if method == "POST" and path == "/api/auth/login/":
                data = self.body()
                state.logins += 1
                u = state.users.get(data.get("username"))
                if u is None or data.get("password") != state.password:
                    return 400, {"non_field_errors": ["Unable to log in with provided credentials."]}
                token = f"tok-{u['id']}"
                state.tokens[token] = u
                return 200, {"token": token}
            me = self.user()
            if me is None:
                return 401, {"detail": "Authentication credentials were not provided."}
            if method == "GET" and path == "/api/auth/me/":
                return 200, me
            if method == "GET" and path == "/api/tasks/":
                items = list(state.tasks.values())
                if me["role"] != "maker":
                    items = [t for t in items if t["assigned_department"] == me["department"]]
                for key in ("status", "assigned_department", "assigned_operator"):
                    if key in query:
                        value = query[key][0]
                        items = [t for t in items if str(t[key]) == value]
                return 200, page(items, query)
            m = re.fullmatch(r"/api/tasks/(\d+)/(?:(\w+)/)?", path)
            if m:
                t = state.tasks.get(int(m[1]))
                if t is None or (me["role"] != "maker" and t["assigned_department"] != me["department"]):
                    raise LookupError("Not found.")
                action = m[2]
                if method == "GET" and action is None:
                    return 200, t
                if method == "POST" and action == "claim":
                    if t["status"] != "pending" or t["assigned_operator"] is not None or state.conflicts:
                        return 409, {"detail": "Task is no longer claimable."}
                    t.update(assigned_operator=me["id"], status="in_progress")
                    return 200, t
                if method == "POST" and action == "assign":
                    operator_id = self.body().get("operator_id")
                    op = next((u for u in state.users.values() if u["id"] == operator_id), None)
                    if op is None or op["department"] != t["assigned_department"] or op["role"] != "operator":
                        return 400, {"operator_id": ["Not an operator of this task's department."]}
                    if t["status"] != "pending" or state.conflicts:
                        return 409, {"detail": "Task is not pending."}
                    t.update(assigned_operator=op["id"])
                    state.notifications += 1
                    if state.notify:
                        push(state, op["id"], {"type": "notification", "id": state.notifications,
                                               "kind": "task_assigned", "message": f"Task {t['id']} assigned to you",
                                               "object": {"type": "production.task", "id": t["id"]},
                                               "created_at": "2026-01-01T00:00:00Z"})
                    return 200, t
                if method == "POST" and action == "update_progress":
                    qty = self.body().get("quantity")
                    if not isinstance(qty, int) or qty <= 0:
                        return 400, {"quantity": ["Must be positive."]}
                    if t["assigned_operator"] != me["id"] or t["status"] != "in_progress":
                        return 409, {"detail": "Not your in-progress task."}
                    if t["completed_quantity"] + qty > t["planned_quantity"]:
                        return 409, {"detail": "Exceeds planned quantity."}
                    t["completed_quantity"] += qty
                    if t["completed_quantity"] == t["planned_quantity"]:
                        t["status"] = "completed"
                    return 200, t
                return 405, {"detail": "Method not allowed."}
            if path == "/api/workorders/":
                if method == "POST":
                    data = self.body()
                    if not all(k in data for k in ("customer", "product", "production_quantity", "delivery_date")):
                        return 400, {"detail": "missing fields"}
                    new_id = max(state.workorders) + 1
                    state.workorders[new_id] = dict(data, id=new_id, created_by=me["id"])
                    return 201, state.workorders[new_id]
                items = list(state.workorders.values())
                if me["role"] == "maker":
                    items = [w for w in items if w["created_by"] == me["id"]]
                return 200, page(items, query)
            if method == "GET" and path in ("/api/products/", "/api/customers/"):
                return 200, page([{"id": i, "name": f"item {i}"} for i in (1, 2, 3)], query)
            if method == "GET" and path == "/api/users/":
                items = [u for u in state.users.values()
                         if ("role" not in query or u["role"] == query["role"][0])
                         and ("department" not in query or str(u["department"]) == query["department"][0])]
                return 200, page(items, {"page_size": ["500"]})
            if method == "GET" and path == "/api/notifications/":
                return 200, {"count": 0, "next": None, "previous": None, "results": []}
            if method == "GET" and path.startswith("/api/statistics/"):
                return 200, {"overall": {"pending": 1}, "departments": []}
            raise LookupError("Not found.")

    return Handler


class FakeService:
    def __init__(self, delay: float = 0.0, **state_kwargs):
        self.state = State(**state_kwargs)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self.state, delay))
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # clients vanish at the end of a run
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def main(argv: list[str] | None = None) -> None:
    """`python fake_service.py --port-file FILE`: serve on a free loopback port (written to FILE)
    until SIGTERM; the flake's loadtest-entry-point check drives the wrapped workorder-loadtest
    against it."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port-file", required=True)
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FakeService() as service:
        with open(args.port_file + ".tmp", "w") as fh:
            fh.write(str(service.server.server_address[1]))
        os.replace(args.port_file + ".tmp", args.port_file)
        stop.wait()


if __name__ == "__main__":
    main()
