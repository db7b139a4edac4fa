"""WebSocket security against real processes: PostgreSQL, Redis, one gunicorn and TWO daphne processes.

Tokens are checked while a socket is open, not only at connect: a logout through gunicorn's API, a
deactivation in another process, or the token's own deadline closes the socket with 4401, on whichever
daphne it is (the revocation crosses processes through Redis); the sockets of the user's other tokens
stay open. Limits: at most WORKORDER_WS_MAX_CONNECTIONS_PER_USER sockets per user counted over both
daphnes (4429 beyond), a token bucket of client messages per socket (4429 beyond). Unknown /ws/ paths
are closed with 4404 and a bad Host is refused with 403, neither with a traceback in daphne's log.
The embedded default (no Redis: daphne serves the API too) enforces revocation and the cap in-process.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from harness.app import DaphneServer, GunicornServer
from harness.services import RedisServer, free_port
from tests.runtime_support import SETUP_USERS, create_database, manage, run_python, server_env

pytestmark = pytest.mark.services

ORIGIN = "http://localhost"
PATH = "/ws/notifications/"
PASSWORD = "runtime-pass-123"  # SETUP_USERS
MAX_PER_USER = 4
RATE, BURST = 5, 10
LIMITS = {"WORKORDER_WS_MAX_CONNECTIONS_PER_USER": MAX_PER_USER, "WORKORDER_WS_MESSAGES_PER_SECOND": RATE,
          "WORKORDER_WS_MESSAGE_BURST": BURST}
REVOCATION_SECONDS = 5  # the promise: a revoked token's sockets are closed within this time


@pytest.fixture(scope="module")
def servers(postgres_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ws-security")
    redis = RedisServer(str(tmp / "redis")).start()
    env = server_env(tmp, create_database(postgres_server, prefix="wo_ws_security"), redis.url(), **LIMITS)
    manage(env, "migrate", "--noinput")
    users = run_python(env, SETUP_USERS)
    gunicorn = GunicornServer(env, tmp / "gunicorn", port=free_port(), workers=1)
    daphnes = [DaphneServer(env, tmp / f"daphne-{n}", port=free_port()) for n in range(2)]
    try:
        gunicorn.start()
        for daphne in daphnes:
            daphne.start()
        yield {"env": env, "redis": redis, "gunicorn": gunicorn, "daphnes": daphnes, "users": users}
    finally:
        for daphne in daphnes:
            daphne.stop()
        gunicorn.stop()
        redis.cleanup()


def ws_connect(daphne: DaphneServer, token: str, path: str = PATH):
    return connect(f"{daphne.ws_url}{path}?token={token}", origin=ORIGIN, open_timeout=10)


def login(server, username: str) -> str:
    """A new token (one per login) through the API of `server` (gunicorn, or daphne on the embedded default)."""
    status, _, body = server.request("POST", "/api/auth/login/", body={"username": username, "password": PASSWORD})
    assert status == 200, body
    return json.loads(body)["token"]


def logout(server, token: str) -> None:
    status, _, body = server.request("POST", "/api/auth/logout/", headers={"Authorization": f"Token {token}"})
    assert status == 204, body


def assert_open(ws) -> None:
    """The socket answers (an unknown action gets an error reply), so it is open and connect() finished."""
    ws.send(json.dumps({"action": "ping"}))
    reply = json.loads(ws.recv(timeout=5))
    assert reply["type"] == "error" and "unknown action" in reply["error"], reply


def close_code(ws, timeout: float) -> tuple[int | None, list[dict]]:
    """Wait for the server to close the socket: (close code, messages received before it)."""
    messages = []
    deadline = time.monotonic() + timeout
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            messages.append(json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic()))))
    return (closed.value.rcvd.code if closed.value.rcvd else None), messages


def assert_clean_log(daphne: DaphneServer) -> None:
    log = daphne.log_text()
    assert "Traceback" not in log, log[-3000:]
    assert not [line for line in log.splitlines() if line.startswith(("ERROR", "CRITICAL"))], log[-3000:]


# --- revocation ------------------------------------------------------------------------------------
def test_logout_through_the_api_closes_that_tokens_sockets_on_every_daphne_with_4401(servers):
    gunicorn, daphnes = servers["gunicorn"], servers["daphnes"]
    token = login(gunicorn, "rt_maker")
    with ws_connect(daphnes[0], token) as first, ws_connect(daphnes[1], token) as second:
        assert_open(first)
        assert_open(second)
        logout(gunicorn, token)
        assert close_code(first, REVOCATION_SECONDS)[0] == 4401
        assert close_code(second, REVOCATION_SECONDS)[0] == 4401
    with ws_connect(daphnes[0], token) as again:  # and the token no longer opens one
        assert close_code(again, 5)[0] == 4401


def test_logout_of_one_token_leaves_the_sockets_of_the_users_other_tokens_open(servers):
    gunicorn, daphnes = servers["gunicorn"], servers["daphnes"]
    revoked, kept = login(gunicorn, "rt_supervisor"), login(gunicorn, "rt_supervisor")
    with contextlib.ExitStack() as stack:
        revoked_sockets = [stack.enter_context(ws_connect(daphne, revoked)) for daphne in daphnes[:1]]
        kept_sockets = [stack.enter_context(ws_connect(daphne, kept)) for daphne in daphnes]
        revoked_sockets.append(stack.enter_context(ws_connect(daphnes[1], revoked)))
        for ws in (*revoked_sockets, *kept_sockets):
            assert_open(ws)
        logout(gunicorn, revoked)
        # Both daphnes have handled the revocation message once its sockets are closed ...
        assert [close_code(ws, REVOCATION_SECONDS)[0] for ws in revoked_sockets] == [4401, 4401]
        for ws in kept_sockets:  # ... and the other token's sockets are still open
            assert_open(ws)
    logout(gunicorn, kept)


def test_deactivating_the_user_closes_their_sockets_with_4401(servers):
    daphnes, user = servers["daphnes"], servers["users"]["rt_other"]
    tokens = [login(servers["gunicorn"], "rt_other") for _ in range(2)]
    with ws_connect(daphnes[0], tokens[0]) as first, ws_connect(daphnes[1], tokens[1]) as second:
        assert_open(first)
        assert_open(second)
        run_python(servers["env"], (  # another process: the signal reaches daphne only through Redis
            "import json\nfrom workorder.accounts.models import User\n"
            f"u = User.objects.get(pk={user['id']}); u.is_active = False; u.save()\n"
            "print(json.dumps({}))\n"))
        assert close_code(first, REVOCATION_SECONDS)[0] == 4401
        assert close_code(second, REVOCATION_SECONDS)[0] == 4401


def test_socket_closes_itself_with_4401_at_the_tokens_deadline(servers):
    """No revocation message: the token simply reaches its absolute expiry while the socket is open."""
    token = login(servers["gunicorn"], "rt_operator")
    expires_in = 6
    run_python(servers["env"], (
        "import json, datetime\nfrom django.utils import timezone\n"
        "from workorder.accounts.models import AuthToken\nfrom workorder.accounts.tokens import digest\n"
        f"AuthToken.objects.filter(digest=digest({token!r})).update("
        f"expires_at=timezone.now() + datetime.timedelta(seconds={expires_in}))\n"
        "print(json.dumps({}))\n"))
    with ws_connect(servers["daphnes"][0], token) as ws:
        assert_open(ws)
        assert close_code(ws, expires_in + REVOCATION_SECONDS)[0] == 4401


def test_an_open_socket_never_extends_its_token(servers):
    """authenticate_key(touch=False): last_used_at, set an hour back, is the same after connecting and
    sending (an API request with the token would move it to now)."""
    token = login(servers["gunicorn"], "rt_operator")
    read_last_used = (
        "import json\nfrom workorder.accounts.models import AuthToken\nfrom workorder.accounts.tokens import digest\n"
        f"print(json.dumps(AuthToken.objects.get(digest=digest({token!r})).last_used_at.isoformat()))\n")
    run_python(servers["env"], (
        "import datetime\nfrom django.utils import timezone\n"
        "from workorder.accounts.models import AuthToken\nfrom workorder.accounts.tokens import digest\n"
        f"AuthToken.objects.filter(digest=digest({token!r})).update("
        "last_used_at=timezone.now() - datetime.timedelta(hours=1))\n" + read_last_used))
    before = run_python(servers["env"], read_last_used)
    with ws_connect(servers["daphnes"][1], token) as ws:
        assert_open(ws)
        assert_open(ws)
    assert run_python(servers["env"], read_last_used) == before
    status, _, _ = servers["gunicorn"].request("GET", "/api/auth/me/", headers={"Authorization": f"Token {token}"})
    assert status == 200
    assert run_python(servers["env"], read_last_used) != before  # the check above can see a change


# --- per-user cap ----------------------------------------------------------------------------------
def test_sockets_per_user_are_capped_over_all_daphne_processes_with_4429(servers):
    daphnes, token = servers["daphnes"], servers["users"]["rt_maker"]["token"]
    with contextlib.ExitStack() as stack:
        # MAX_PER_USER open sockets, spread over both processes
        sockets = [stack.enter_context(ws_connect(daphnes[n % 2], token)) for n in range(MAX_PER_USER)]
        for ws in sockets:
            assert_open(ws)
        for daphne in daphnes:
            with ws_connect(daphne, token) as extra:
                code, messages = close_code(extra, 5)
            assert code == 4429
            assert messages and "too many open connections" in messages[0]["error"], messages
        for ws in sockets:  # the refused ones disturbed nobody
            assert_open(ws)
        sockets.pop().close()
        deadline = time.monotonic() + 5  # the closed socket's place is released once daphne saw it go
        while True:
            with ws_connect(daphnes[1], token) as replacement:
                try:
                    assert_open(replacement)
                    break
                except ConnectionClosed:
                    assert time.monotonic() < deadline, "the place of a closed socket was never released"
                    time.sleep(0.1)


def test_stale_registry_entries_expire_and_do_not_count(servers):
    """Entries of a process that died without cleaning up (expired scores) do not fill the cap."""
    from workorder.notifications.connections import UserSocketRegistry

    user, token = servers["users"]["rt_supervisor"], servers["users"]["rt_supervisor"]["token"]
    client = servers["redis"].client()
    key = f"{UserSocketRegistry.KEY_PREFIX}{user['id']}"
    client.zadd(key, {f"dead-process-{n}": time.time() - 1 for n in range(MAX_PER_USER)})
    with ws_connect(servers["daphnes"][0], token) as ws:
        assert_open(ws)
        members = {member.decode() for member in client.zrange(key, 0, -1)}
    assert members and not any(member.startswith("dead-process-") for member in members), members


# --- message rate ----------------------------------------------------------------------------------
def test_messages_faster_than_the_rate_close_the_socket_with_4429(servers):
    with ws_connect(servers["daphnes"][0], servers["users"]["rt_maker"]["token"]) as ws:
        for n in range(4 * BURST):
            try:
                ws.send(json.dumps({"action": "mark_read", "id": 10_000_000 + n}))
            except ConnectionClosed:
                break
        code, messages = close_code(ws, 10)
    assert code == 4429
    answered = [m for m in messages if m["type"] == "mark_read"]
    assert BURST <= len(answered) < 4 * BURST, len(answered)
    assert "too many messages" in messages[-1]["error"], messages[-3:]


def test_messages_within_burst_and_rate_are_all_answered(servers):
    with ws_connect(servers["daphnes"][1], servers["users"]["rt_maker"]["token"]) as ws:
        for _ in range(2):  # a full burst, then again after the bucket refilled
            for n in range(BURST):
                ws.send(json.dumps({"action": "mark_read", "id": 10_000_000 + n}))
            assert [json.loads(ws.recv(timeout=5))["id"] for _ in range(BURST)] == [10_000_000 + n for n in range(BURST)]
            time.sleep(BURST / RATE + 0.5)
        assert_open(ws)


# --- unknown paths and bad handshakes ------------------------------------------------------------
@pytest.mark.parametrize("path", ["/ws/", "/ws/nope/", "/ws/notifications", "/ws/notifications/extra/",
                                  "/ws/%00/", "/elsewhere/"])
def test_unknown_websocket_paths_are_closed_with_4404(servers, path):
    with ws_connect(servers["daphnes"][0], servers["users"]["rt_maker"]["token"], path=path) as ws:
        assert close_code(ws, 5)[0] == 4404


def raw_handshake_status(daphne: DaphneServer, host: bytes | None, origin: bytes = ORIGIN.encode(),
                         token: str = "") -> bytes:
    """The status line daphne answers a WebSocket handshake with (the Host header exactly as given)."""
    with socket.create_connection(("127.0.0.1", daphne.port), timeout=10) as sock:
        sock.sendall(b"GET " + PATH.encode() + b"?token=" + token.encode() + b" HTTP/1.1\r\n"
                     + (b"Host: " + host + b"\r\n" if host is not None else b"")
                     + b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                     + b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: " + origin + b"\r\n\r\n")
        response = b""
        while b"\r\n" not in response:
            chunk = sock.recv(4096)
            if not chunk:
                break
            response += chunk
    return response.split(b"\r\n", 1)[0]


@pytest.mark.parametrize("host, origin", [
    (b"evil.example", ORIGIN.encode()), (b"", ORIGIN.encode()), (b"local host", ORIGIN.encode()),
    (b"\xc3\xa9.example", ORIGIN.encode()), (b"localhost\r\nHost: evil.example", ORIGIN.encode()),
    (b"evil.example", b"http://evil.example"), (b"localhost", b"http://evil.example"), (b"localhost", b"null"),
], ids=["foreign-host", "empty-host", "space", "non-ascii", "two-hosts", "foreign-both", "foreign-origin",
        "null-origin"])
def test_bad_host_or_origin_is_refused_with_403_before_the_upgrade(servers, host, origin):
    daphne, token = servers["daphnes"][1], servers["users"]["rt_maker"]["token"]
    assert raw_handshake_status(daphne, host, origin, token).startswith(b"HTTP/1.1 403 ")
    # the same handshake with a good Host and Origin is upgraded: the refusal was the Host/Origin's doing
    assert raw_handshake_status(daphne, b"localhost", ORIGIN.encode(), token).startswith(b"HTTP/1.1 101 ")


def test_no_tracebacks_or_errors_in_the_daphne_logs(servers):
    """Last in the module: every close, refusal and unknown path above was handled without an error."""
    for daphne in servers["daphnes"]:
        assert_clean_log(daphne)
    assert "Host header 'evil.example' is not in ALLOWED_HOSTS" in servers["daphnes"][1].log_text()


# --- embedded default: no Redis, one daphne serves the API and the WebSockets ----------------------
@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ws-security-embedded")
    env = server_env(tmp, **LIMITS)  # no DATABASE_URL, no REDIS_URL: SQLite, in-memory channel layer
    manage(env, "migrate", "--noinput")
    users = run_python(env, SETUP_USERS)
    daphne = DaphneServer(env, tmp / "daphne", port=free_port())
    try:
        daphne.start()
        yield {"daphne": daphne, "users": users}
    finally:
        daphne.stop()


def test_embedded_default_logout_closes_the_tokens_socket_with_4401(embedded):
    daphne = embedded["daphne"]
    revoked, kept = login(daphne, "rt_maker"), login(daphne, "rt_maker")
    with ws_connect(daphne, revoked) as revoked_ws, ws_connect(daphne, kept) as kept_ws:
        assert_open(revoked_ws)
        assert_open(kept_ws)
        logout(daphne, revoked)
        assert close_code(revoked_ws, REVOCATION_SECONDS)[0] == 4401
        assert_open(kept_ws)
    assert_clean_log(daphne)


def test_embedded_default_caps_sockets_per_user_with_4429(embedded):
    daphne, token = embedded["daphne"], embedded["users"]["rt_supervisor"]["token"]
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(ws_connect(daphne, token)) for _ in range(MAX_PER_USER)]
        for ws in sockets:
            assert_open(ws)
        with ws_connect(daphne, token) as extra:
            assert close_code(extra, 5)[0] == 4429
    assert_clean_log(daphne)
