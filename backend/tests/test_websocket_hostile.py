"""Hostile WebSocket clients against a real daphne (workorder-daphne) with real Redis and PostgreSQL.

Malformed frames, oversized messages, garbage handshakes, unauthenticated and junk-token connections
are refused or closed, and none of it affects the other connections: a healthy client opened at the
start answers after every attack and still receives a notification pushed from another process at
the end. Servers are started like backend/tests/test_runtime_realtime.py does (tests/harness/app.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from harness.app import DaphneServer
from harness.services import RedisServer, free_port
from tests.runtime_support import SETUP_USERS, create_database, manage, run_python, server_env

pytestmark = pytest.mark.services

ORIGIN = "http://localhost"
PATH = "/ws/notifications/"


@pytest.fixture(scope="module")
def server(postgres_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ws-hostile")
    redis = RedisServer(str(tmp / "redis")).start()
    database_url = create_database(postgres_server, prefix="wo_ws_hostile")
    # The healthy socket answers after every attack, faster than the default message rate allows; the
    # rate limit itself is tested in test_websocket_security.py.
    env = server_env(tmp, database_url, redis.url(), WORKORDER_WS_MESSAGES_PER_SECOND=1000,
                     WORKORDER_WS_MESSAGE_BURST=1000)
    manage(env, "migrate", "--noinput")
    users = run_python(env, SETUP_USERS)
    daphne = DaphneServer(env, tmp / "daphne", port=free_port())
    try:
        daphne.start()
        yield {"env": env, "daphne": daphne, "users": users}
    finally:
        daphne.stop()
        redis.cleanup()


@pytest.fixture(scope="module")
def healthy(server):
    """A legitimate client that stays connected through every attack in this module."""
    with connect(f"{server['daphne'].ws_url}{PATH}?token={server['users']['rt_operator']['token']}", origin=ORIGIN,
                 open_timeout=10) as ws:
        yield ws


def assert_healthy(ws) -> None:
    """The healthy connection still answers (an unknown action gets an error reply)."""
    ws.send(json.dumps({"action": "ping"}))
    reply = json.loads(ws.recv(timeout=5))
    assert reply["type"] == "error" and "unknown action" in reply["error"], reply


def ws_url(server, token: str | None) -> str:
    return f"{server['daphne'].ws_url}{PATH}" + (f"?token={token}" if token is not None else "")


def closed_code(ws, timeout: float = 5.0) -> int | None:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=timeout)
    return closed.value.rcvd.code if closed.value.rcvd else None


# --- raw frames (websockets refuses to send malformed ones, so these are written by hand) -----------
def raw_handshake(server, token: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server["daphne"].port), timeout=5)
    request = (f"GET {PATH}?token={token} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               f"Sec-WebSocket-Version: 13\r\nOrigin: {ORIGIN}\r\n\r\n")
    sock.sendall(request.encode())
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        assert chunk, response
        response += chunk
    assert response.startswith(b"HTTP/1.1 101"), response[:200]
    return sock


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, masked: bool = True,
          declared_length: int | None = None) -> bytes:
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    length = len(payload) if declared_length is None else declared_length
    if length < 126:
        header = struct.pack("!BB", first, (0x80 if masked else 0) | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, (0x80 if masked else 0) | 126, length)
    else:
        header = struct.pack("!BBQ", first, (0x80 if masked else 0) | 127, length)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def server_closes(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Read until the server closes the TCP connection; returns everything it sent (close frame)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
            if data[:1] and data[0] & 0x0F == 0x8:  # a close frame: the server is closing
                return data
    except (ConnectionResetError, BrokenPipeError):
        return data
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open (received {data[:100]!r})") from None
    finally:
        sock.close()
    raise AssertionError("the server kept the connection open")


MALFORMED = {
    "unmasked client frame": frame(0x1, b'{"action": "ping"}', masked=False),
    "reserved bits set": frame(0x1, b"{}", rsv=0b111),
    "unknown opcode 0x3": frame(0x3, b"x"),
    "invalid UTF-8 in a text frame": frame(0x1, b"\xff\xfe\xfd"),
    "fragmented control frame": frame(0x9, b"ping", fin=False),
    "control frame over 125 bytes": frame(0x9, b"p" * 200),
    "continuation without a start": frame(0x0, b"orphan"),
    "declared 2^63 bytes": frame(0x1, b"", declared_length=2**63 - 1),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_frames_close_only_that_connection(server, healthy, name):
    sock = raw_handshake(server, server["users"]["rt_maker"]["token"])
    sock.sendall(MALFORMED[name])
    server_closes(sock)
    assert_healthy(healthy)


def test_garbage_after_the_handshake_closes_only_that_connection(server, healthy):
    sock = raw_handshake(server, server["users"]["rt_maker"]["token"])
    sock.sendall(os.urandom(4096))
    server_closes(sock)
    assert_healthy(healthy)


# --- oversized and junk messages -------------------------------------------------------------------
def test_oversized_message_is_refused(server, healthy):
    """2 MiB in one message (daphne caps messages at 64 KiB): the server drops that connection. Its close
    frame (1009) never arrives: the server closes with most of the message unread, so the kernel resets
    the connection and the client sees it end without a close frame."""
    with connect(ws_url(server, server["users"]["rt_maker"]["token"]), origin=ORIGIN, open_timeout=10,
                 max_size=None) as ws:
        try:
            ws.send("x" * (2 * 1024 * 1024))
            code = closed_code(ws)
        except ConnectionClosed as closed:  # closed while the message was still being sent
            code = closed.rcvd.code if closed.rcvd else None
        except (ConnectionResetError, BrokenPipeError):
            code = None
    assert code is None, code
    assert_healthy(healthy)


def test_oversized_message_in_raw_frames_is_refused(server, healthy):
    sock = raw_handshake(server, server["users"]["rt_maker"]["token"])
    try:
        sock.sendall(frame(0x1, b"x" * (1024 * 1024)))
    except (ConnectionResetError, BrokenPipeError):
        pass
    server_closes(sock)
    assert_healthy(healthy)


SMALL_JSON = {"type": "error", "error": "expected a small JSON text message"}
NOT_AN_OBJECT = {"type": "error", "error": "expected a JSON object"}
INVALID_JSON = {"type": "error", "error": "invalid JSON"}
NEEDS_AN_ID = {"type": "error", "error": "mark_read needs an integer id"}


@pytest.mark.parametrize("message, reply", [
    ("x" * 5000, SMALL_JSON),  # above the consumer's 4096 characters, below the frame cap
    (b"\x00\x01binary", SMALL_JSON),  # binary frames are not part of the protocol
    ("not json", INVALID_JSON), ("[1, 2]", NOT_AN_OBJECT), ("null", NOT_AN_OBJECT), ('"str"', NOT_AN_OBJECT),
    # an id no row can have: looked up, not found, not a crash
    (json.dumps({"action": "mark_read", "id": 2**70}), {"type": "mark_read", "id": 2**70, "ok": False}),
    (json.dumps({"action": "mark_read", "id": -1}), NEEDS_AN_ID),
    (json.dumps({"action": "mark_read", "id": True}), NEEDS_AN_ID),
    (json.dumps({"action": "\x00" * 100}), {"type": "error", "error": f"unknown action {chr(0) * 50!r}"}),
    ("[" * 1500 + "]" * 1500, INVALID_JSON),  # nested deeper than the JSON parser's recursion limit
    ('{"a":' * 800 + "1" + "}" * 800, SMALL_JSON),  # 4801 characters
], ids=["too-long", "binary", "not-json", "array", "null", "string", "id-overflow", "id-negative", "id-bool",
        "nul-action", "deep-array", "deep-object"])
def test_junk_messages_get_an_error_reply_and_the_connection_stays(server, healthy, message, reply):
    with connect(ws_url(server, server["users"]["rt_maker"]["token"]), origin=ORIGIN, open_timeout=10) as ws:
        ws.send(message)
        assert json.loads(ws.recv(timeout=5)) == reply
        assert_healthy(ws)  # this connection is still usable, too
    assert_healthy(healthy)


def test_a_burst_of_messages_is_answered_in_order(server, healthy):
    with connect(ws_url(server, server["users"]["rt_maker"]["token"]), origin=ORIGIN, open_timeout=10) as ws:
        for n in range(200):
            ws.send(json.dumps({"action": "mark_read", "id": 10_000_000 + n}))
        replies = [json.loads(ws.recv(timeout=10)) for _ in range(200)]
    assert [r["id"] for r in replies] == [10_000_000 + n for n in range(200)]
    assert_healthy(healthy)


# --- unauthenticated and junk tokens -----------------------------------------------------------------
@pytest.mark.parametrize("token", [None, "", "x", "0" * 40, "0" * 41, "a" * 10_000, "%00", "abc%00def",
                                   "%FF%FE", "'%20OR%201=1--", "%E2%80%AE" * 10],
                         ids=["none", "empty", "short", "wrong", "41-chars", "10k", "nul", "nul-inside",
                              "bad-utf8", "sql", "rtl"])
def test_unauthenticated_connections_are_closed_with_4401(server, healthy, token):
    with connect(ws_url(server, token), origin=ORIGIN, open_timeout=10) as ws:
        assert closed_code(ws) == 4401
    assert_healthy(healthy)


def test_many_unauthenticated_connections_at_once_do_not_disturb_others(server, healthy):
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(connect(ws_url(server, "not-a-token"), origin=ORIGIN, open_timeout=10))
                   for _ in range(50)]
        codes = [closed_code(ws) for ws in sockets]
    assert codes == [4401] * 50
    assert_healthy(healthy)


def test_foreign_origin_is_refused_before_upgrade(server, healthy):
    with pytest.raises(InvalidStatus) as refused, \
            connect(ws_url(server, server["users"]["rt_maker"]["token"]), origin="http://evil.example",
                    open_timeout=10):
        pass
    assert refused.value.response.status_code == 403
    assert_healthy(healthy)


def test_plain_http_and_half_open_handshakes_do_not_block_others(server, healthy):
    port = server["daphne"].port
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(20)]  # never send
    partial = socket.create_connection(("127.0.0.1", port), timeout=5)
    partial.sendall(b"GET /ws/notifications/ HTTP/1.1\r\nHost: localhost\r\n")  # and stop
    plain = socket.create_connection(("127.0.0.1", port), timeout=5)
    plain.sendall(b"GET /ws/notifications/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
    plain.settimeout(10)
    answer = plain.recv(4096)
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:100]  # served as plain HTTP: no upgrade, no crash
    # while those hang around, a new legitimate client connects and works
    with connect(ws_url(server, server["users"]["rt_maker"]["token"]), origin=ORIGIN, open_timeout=10) as ws:
        assert_healthy(ws)
    assert_healthy(healthy)
    for sock in (*idle, partial, plain):
        sock.close()


def test_healthy_client_still_receives_notifications_after_all_attacks(server, healthy):
    """Last in the module: a notification created in another process reaches the healthy socket."""
    user_id = server["users"]["rt_operator"]["id"]
    code = (
        "import json; from django.db import transaction\n"
        "from workorder.notifications.services import notify\n"
        "with transaction.atomic():\n"
        f"    rows = notify([{user_id}], 'task_assigned', 'after the attacks')\n"
        "print(json.dumps({'id': rows[0].pk}))\n"
    )
    created = run_python(server["env"], code)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = json.loads(healthy.recv(timeout=max(0.1, deadline - time.monotonic())))
        if message.get("type") == "notification":
            break
    assert message["type"] == "notification" and message["id"] == created["id"], message
    log = server["daphne"].log_text()
    assert "Traceback" not in log, log[-3000:]
