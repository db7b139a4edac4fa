"""Real processes: PostgreSQL, Redis, gunicorn (2 workers) and daphne; WebSocket clients via `websockets`.

Covers: notifications created through gunicorn's HTTP API (another process) reach every open WebSocket
of the recipient within a second; token refused with close code 4401; mark_read over the socket;
foreign Origin refused; the token never reaches daphne's log; /health/ and /ready/ (503 with Redis
stopped, 200 after restart) and push never failing a request while Redis is down; the WebSocket gauge.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from harness.app import DaphneServer, GunicornServer, wait_for
from harness.services import RedisServer, free_port
from tests.runtime_support import SETUP_USERS, create_database, manage, random_token, run_python, server_env

pytestmark = pytest.mark.services

ORIGIN = "http://localhost"


@pytest.fixture(scope="module")
def runtime(postgres_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runtime")
    redis = RedisServer(str(tmp / "redis")).start()
    database_url = create_database(postgres_server)
    env = server_env(tmp, database_url, redis.url())
    manage(env, "migrate", "--noinput")
    users = run_python(env, SETUP_USERS)
    gunicorn = GunicornServer(env, tmp / "gunicorn", port=free_port(), unix_socket=True, workers=2)
    daphne = DaphneServer(env, tmp / "daphne", port=free_port())
    try:
        gunicorn.start()
        daphne.start()
        yield {"env": env, "redis": redis, "gunicorn": gunicorn, "daphne": daphne, "users": users}
    finally:
        daphne.stop()
        gunicorn.stop()
        redis.cleanup()


def ws_connect(daphne: DaphneServer, token: str | None = None, *, mode: str = "query", origin: str = ORIGIN,
               extra_query: str = ""):
    url = f"{daphne.ws_url}/ws/notifications/"
    kwargs = {"origin": origin, "open_timeout": 10}
    if token is not None and mode == "query":
        url += f"?token={token}{extra_query}"
    elif token is not None and mode == "header":
        kwargs["additional_headers"] = {"Authorization": f"Token {token}"}
    elif token is not None and mode == "subprotocol":
        kwargs["subprotocols"] = ["workorder.v1", f"workorder.token.{token}"]
    return connect(url, **kwargs)


def api(server: GunicornServer, method: str, path: str, token: str, body=None):
    status, _, raw = server.request(method, path, headers={"Authorization": f"Token {token}"}, body=body)
    return status, (json.loads(raw) if raw else None)


def create_and_approve_work_order(runtime) -> tuple[int, float]:
    """The maker creates a work order, the supervisor approves it (notifies the maker). -> (id, t_approved)."""
    users, gunicorn = runtime["users"], runtime["gunicorn"]
    status, order = api(gunicorn, "POST", "/api/workorders/", users["rt_maker"]["token"], {
        "customer": users["customer"], "product": users["product"], "production_quantity": 5,
        "delivery_date": "2030-01-31", "priority": "normal"})
    assert status == 201, order
    status, body = api(gunicorn, "POST", f"/api/workorders/{order['id']}/approve/", users["rt_supervisor"]["token"])
    assert status == 200, body
    return order["id"], time.monotonic()


def wait_subscribed(*sockets) -> None:
    """Each socket answered a message, so its connect() has finished, group_add included: the consumer
    handles a connection's messages one after the other, connect first."""
    for ws in sockets:
        ws.send(json.dumps({"action": "ping"}))
        reply = json.loads(ws.recv(timeout=5))
        assert reply["type"] == "error" and "unknown action" in reply["error"], reply


def receive_notification(ws, timeout: float = 1.0) -> dict:
    message = json.loads(ws.recv(timeout=timeout))
    assert message["type"] == "notification", message
    return message


# --- authentication ------------------------------------------------------------------------------
@pytest.mark.parametrize("token", [None, "", "not-a-real-token", "0" * 40])
def test_missing_or_wrong_token_is_closed_with_4401(runtime, token):
    with ws_connect(runtime["daphne"], token) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


@pytest.mark.parametrize("mode", ["query", "header", "subprotocol"])
def test_valid_token_is_accepted_in_every_documented_way(runtime, mode):
    with ws_connect(runtime["daphne"], runtime["users"]["rt_maker"]["token"], mode=mode) as ws:
        if mode == "subprotocol":
            assert ws.subprotocol == "workorder.v1"
        ws.send(json.dumps({"action": "ping"}))
        reply = json.loads(ws.recv(timeout=5))
        assert reply["type"] == "error" and "unknown action" in reply["error"]


def test_foreign_origin_is_refused(runtime):
    with pytest.raises(InvalidStatus) as refused, \
            ws_connect(runtime["daphne"], runtime["users"]["rt_maker"]["token"], origin="http://evil.example"):
        pass
    assert refused.value.response.status_code == 403


def disconnects_logged(daphne) -> int:
    return daphne.log_text().count("WSDISCONNECT /ws/notifications/")


def test_token_never_appears_in_daphne_log(runtime):
    token, daphne = runtime["users"]["rt_maker"]["token"], runtime["daphne"]
    before = disconnects_logged(daphne)
    with ws_connect(daphne, token, extra_query="&x=1") as ws:
        ws.send(json.dumps({"action": "mark_read", "id": 999999}))
        ws.recv(timeout=5)
    with ws_connect(daphne, "wrong" + token):
        pass
    wait_for(lambda: disconnects_logged(daphne) >= before + 2, timeout=10, what="both disconnects in daphne's log")
    log = daphne.log_text()
    assert token not in log


def test_token_in_a_plain_http_request_never_appears_in_daphne_log(runtime):
    """GET /ws/notifications/?token=... without an Upgrade: daphne serves it as HTTP (Django: 404) and
    logs the request without its query string (workorder.daphne_main's sanitising server)."""
    daphne, secret = runtime["daphne"], "plain-" + random_token()
    status, _, _ = daphne.request("GET", f"/ws/notifications/?token={secret}&x=1")
    assert status == 404
    line = wait_for(lambda: [line for line in daphne.log_text().splitlines()
                             if "GET /ws/notifications/" in line and '" 404 ' in line],
                    timeout=10, what="the request in daphne's access log")
    assert secret not in daphne.log_text(), line


# --- delivery ------------------------------------------------------------------------------------
def test_notification_from_gunicorn_reaches_both_connections_of_the_user_within_a_second(runtime):
    users, daphne = runtime["users"], runtime["daphne"]
    with ws_connect(daphne, users["rt_maker"]["token"]) as first, \
            ws_connect(daphne, users["rt_maker"]["token"], mode="header") as second, \
            ws_connect(daphne, users["rt_other"]["token"]) as bystander:
        wait_subscribed(first, second, bystander)
        order_id, approved_at = create_and_approve_work_order(runtime)
        got_first = receive_notification(first, timeout=1.0)
        got_second = receive_notification(second, timeout=1.0)
        assert time.monotonic() - approved_at < 1.5  # both were already there well within the second
        assert got_first == got_second
        assert got_first["kind"] == "work_order_approved"
        assert got_first["object"] == {"type": "production.workorder", "id": order_id}
        assert set(got_first) == {"type", "id", "kind", "message", "object", "created_at"}
        assert isinstance(got_first["id"], int) and got_first["message"]
        with pytest.raises(TimeoutError):
            bystander.recv(timeout=0.5)  # other users get nothing


# Counts the channel layer's group sends of the shell below (printed as "sent").
COUNT_GROUP_SENDS = (
    "from channels_redis.core import RedisChannelLayer\n"
    "original = RedisChannelLayer.group_send\n"
    "async def counting(self, group, message):\n"
    "    sent.append(group)\n"
    "    await original(self, group, message)\n"
    "RedisChannelLayer.group_send = counting\n"
)


def notify_in_a_shell(runtime, recipient_ids: list[int], text: str) -> dict:
    """notify() in a separate process (a management shell): {"ids": {recipient: notification id},
    "sent": the groups it sent to}."""
    code = (
        "import json; from django.db import transaction\n"
        "sent = []\n"
        + COUNT_GROUP_SENDS
        + "from workorder.notifications.services import notify\n"
        "with transaction.atomic():\n"
        f"    rows = notify({recipient_ids!r}, 'task_assigned', {text!r})\n"
        "print(json.dumps({'ids': {row.recipient_id: row.pk for row in rows}, 'sent': sent}))\n"
    )
    return run_python(runtime["env"], code)


def test_notification_created_in_another_process_by_notify(runtime):
    """notify() in a separate process (a management shell) pushes through Redis to daphne."""
    operator = runtime["users"]["rt_operator"]["id"]
    with ws_connect(runtime["daphne"], runtime["users"]["rt_operator"]["token"]) as ws:
        wait_subscribed(ws)
        created = notify_in_a_shell(runtime, [operator], "from a shell")
        message = receive_notification(ws, timeout=2.0)
    assert message["id"] == created["ids"][str(operator)]
    assert message["message"] == "from a shell" and message["object"] is None


def test_a_push_sends_only_to_recipients_with_an_open_socket(runtime):
    """notify() to a connected user and two users without a socket: one group_send, and it arrives."""
    users = runtime["users"]
    operator = users["rt_operator"]["id"]
    with ws_connect(runtime["daphne"], users["rt_operator"]["token"]) as ws:
        wait_subscribed(ws)
        created = notify_in_a_shell(runtime, [users["rt_maker"]["id"], operator, users["rt_other"]["id"]], "to three")
        message = receive_notification(ws, timeout=2.0)
    assert len(created["ids"]) == 3  # every recipient has the row
    assert created["sent"] == [f"notifications.user.{operator}"]
    assert message["id"] == created["ids"][str(operator)]


def test_mark_read_over_the_socket_only_for_own_notifications(runtime):
    users, gunicorn = runtime["users"], runtime["gunicorn"]
    with ws_connect(runtime["daphne"], users["rt_maker"]["token"]) as ws:
        wait_subscribed(ws)
        create_and_approve_work_order(runtime)
        notification = receive_notification(ws)
        # someone else cannot mark it read
        with ws_connect(runtime["daphne"], users["rt_other"]["token"]) as other:
            other.send(json.dumps({"action": "mark_read", "id": notification["id"]}))
            assert json.loads(other.recv(timeout=5)) == {"type": "mark_read", "id": notification["id"], "ok": False}
        ws.send(json.dumps({"action": "mark_read", "id": notification["id"]}))
        assert json.loads(ws.recv(timeout=5)) == {"type": "mark_read", "id": notification["id"], "ok": True}
        for bad in ("not json", json.dumps([1]), json.dumps({"action": "mark_read", "id": "7"})):
            ws.send(bad)
            assert json.loads(ws.recv(timeout=5))["type"] == "error"
    status, body = api(gunicorn, "GET", "/api/notifications/?unread=true", users["rt_maker"]["token"])
    assert status == 200
    assert notification["id"] not in [row["id"] for row in body["results"]]


def test_the_connection_count_sent_last_is_the_current_one_when_redis_answers_out_of_order():
    """Two sockets closing at once: the SET of the older count (1) cannot land after the newer one (0)."""
    from workorder.notifications.connections import ConnectionCounter

    class SlowFirstSet:  # the first SET would be applied after the second if the second were sent
        def __init__(self):
            self.value, self.sent, self.second_applied = None, [], asyncio.Event()

        async def set(self, key, value, ex):
            self.sent.append(value)
            if len(self.sent) == 1:
                try:
                    await asyncio.wait_for(self.second_applied.wait(), 0.3)
                except TimeoutError:
                    pass
            else:
                self.second_applied.set()
            self.value = value

    redis = SlowFirstSet()
    counter = ConnectionCounter()
    counter._redis = lambda: redis
    counter.count = 2

    async def close_both():
        await asyncio.gather(counter.change(-1), counter.change(-1))

    asyncio.run(close_both())
    assert counter.count == 0
    assert redis.sent == [1, 0] and redis.value == 0


def test_websocket_connection_gauge_counts_open_sockets(runtime):
    gunicorn = runtime["gunicorn"]

    def gauge():
        status, _, body = gunicorn.request("GET", "/metrics/")
        assert status == 200
        for line in body.decode().splitlines():
            if line.startswith("workorder_websocket_connections "):
                return float(line.split()[1])
        return None

    base = gauge()
    assert base is not None
    with ws_connect(runtime["daphne"], runtime["users"]["rt_maker"]["token"]), \
            ws_connect(runtime["daphne"], runtime["users"]["rt_other"]["token"]):
        wait_for(lambda: gauge() == base + 2, timeout=5, what="gauge +2")
    wait_for(lambda: gauge() == base, timeout=5, what="gauge back")
    text = gunicorn.request("GET", "/metrics/")[2].decode()
    for name in ('workorder_tasks{status="pending"}', "workorder_open_work_orders ",
                 "workorder_unread_notifications "):
        assert name in text


# --- health and readiness (the outage test restarts Redis and proves delivery works again before it ends) ---
def test_health_and_ready(runtime):
    gunicorn = runtime["gunicorn"]
    status, _, body = gunicorn.request("GET", "/health/", headers={"Host": "not-an-allowed-host.example"})
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, _, body = gunicorn.request("GET", "/ready/")
    assert status == 200, body
    assert json.loads(body) == {"status": "ok", "checks": {"database": "ok", "redis": "ok", "migrations": "ok"}}


def test_ready_is_503_naming_redis_while_it_is_down_and_requests_still_succeed(runtime):
    gunicorn, redis = runtime["gunicorn"], runtime["redis"]
    redis.stop()
    try:
        status, _, body = gunicorn.request("GET", "/ready/")
        data = json.loads(body)
        assert status == 503, data
        assert data["failed"] == ["redis"] and data["checks"]["database"] == "ok"
        # A notifying request still succeeds: the row is stored, the push is skipped with one log line.
        create_and_approve_work_order(runtime)
        assert gunicorn.request("GET", "/health/")[0] == 200
    finally:
        redis.start()
    wait_for(lambda: gunicorn.request("GET", "/ready/")[0] == 200, timeout=10, what="ready again")
    assert "realtime push of 1 notification(s) skipped" in gunicorn.log_text()
    # and delivery works again after Redis is back (daphne reconnects by itself)
    with ws_connect(runtime["daphne"], runtime["users"]["rt_maker"]["token"]) as ws:
        wait_subscribed(ws)
        create_and_approve_work_order(runtime)
        assert receive_notification(ws, timeout=2.0)["kind"] == "work_order_approved"
