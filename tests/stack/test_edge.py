"""The edge of the production topology: /metrics/ access, nginx rate limiting, body limits, hostile URLs.

A small `Stack` (tests/harness/stack.py) without seeding or monitoring, with the NixOS module's
default rate limit (10 r/s, burst 20 per client address). Its gunicorn gets a metrics allow-list
that does NOT contain loopback plus a bearer token file, so "a client outside the allowed networks"
can be tested on one machine: directly on gunicorn's loopback listener (the Prometheus port) and
through nginx (which denies /metrics outright, token or not).

Every test stands alone: the rate limit is per client address, so a test about the limit first
waits until the bucket is full again, and every other request through nginx retries a 429 (nginx
answers it without forwarding the request) until a deadline, whatever the tests before it spent.

Run: .venv/bin/python -m pytest -c tests/pytest.ini --rootdir . tests/stack/test_edge.py
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import secrets
import time

import pytest

from harness import deployment
from harness.stack import Stack, StackOptions

pytestmark = pytest.mark.stack

# The module's defaults (services.workorder.nginx.rateLimit), from nix/deployment.nix.
RATE, BURST = deployment.defaults()["nginx"]["rateLimit"], deployment.defaults()["nginx"]["rateBurst"]
RATE_PER_SECOND = int(RATE.removesuffix("r/s"))
ALLOWED_NETWORK = "10.255.255.0/24"  # loopback is outside it


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    token_file = tmp_path_factory.mktemp("edge-secrets") / "metrics_token"
    token = secrets.token_urlsafe(32)
    token_file.write_text(token + "\n")
    options = StackOptions(seed=False, monitoring=False, gunicorn_workers=2, rate_limit=RATE, rate_burst=BURST,
                           gunicorn_extra_env={"WORKORDER_METRICS_ALLOWED_NETWORKS": ALLOWED_NETWORK,
                                               "WORKORDER_METRICS_TOKEN_FILE": str(token_file)})
    stack = Stack(options)
    stack.start()
    created = stack.manage("shell", "-c", (
        "from workorder.accounts.models import User\n"
        "from rest_framework.authtoken.models import Token\n"
        "u, _ = User.objects.get_or_create(username='edge-admin', defaults={'is_staff': True, 'is_superuser': True})\n"
        "print(Token.objects.get_or_create(user=u)[0].key)\n"))
    try:
        yield {"stack": stack, "metrics_token": token, "api_token": created.stdout.strip().splitlines()[-1]}
    finally:
        stack.cleanup()


def raw_request(host: str, port: int, method: str, path: str, headers: dict | None = None, body=None,
                timeout: float = 15) -> tuple[int, dict, bytes]:
    """http.client sends the path exactly as given (no normalisation), unlike urllib."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def via_nginx(edge, method: str, path: str, retry_429: bool = True, **kw):
    """One request through nginx. Unless the test is about the rate limit (retry_429=False), a 429
    is retried: nginx refused the request before it reached gunicorn, so the retry is safe, and the
    bucket refills one request per 1/rate seconds, so it passes within a fraction of a second."""
    stack = edge["stack"]
    deadline = time.monotonic() + 10
    while True:
        status, headers, body = raw_request("127.0.0.1", stack.nginx.port, method, path, **kw)
        if status != 429 or not retry_429 or time.monotonic() > deadline:
            return status, headers, body
        time.sleep(0.05)


def direct(edge, path: str, **kw):
    stack = edge["stack"]
    return raw_request("127.0.0.1", stack.gunicorn_metrics_port, "GET", path, **kw)


def wait_for_full_bucket():
    """Before a test that measures the limit: nginx's bucket for 127.0.0.1 must be full again.
    nginx does not expose the bucket, and a probe request would spend from it, so this is the one
    wait computed rather than polled: the time the bucket takes to refill from empty (this stack's
    zone only ever ran at this rate, and refused requests add nothing, so it is never emptier)."""
    time.sleep(BURST / RATE_PER_SECOND + 0.5)


# --- /metrics/ ----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/metrics/", "/metrics", "/metrics/?x=1", "/metrics%2F", "/%6Detrics/",
                                  "/api/../metrics/", "//metrics/", "/metrics/../metrics/"])
def test_metrics_403_through_nginx_even_with_the_token(edge, path):
    """nginx decodes and normalises each spelling to /metrics or /metrics/ (merge_slashes, dot
    segments) before matching locations, so every one lands in a closed location."""
    status, _, _ = via_nginx(edge, "GET", path)
    assert status == 403, (path, status)
    status, _, _ = via_nginx(edge, "GET", path, headers={"Authorization": f"Bearer {edge['metrics_token']}"})
    assert status == 403, (path, status)


def test_path_above_the_root_is_400_from_nginx(edge):
    status, _, raw = via_nginx(edge, "GET", "/../metrics/")
    assert status == 400 and b"<center>nginx</center>" in raw, (status, raw[:200])


def test_metrics_403_directly_from_outside_the_allowed_networks(edge):
    status, _, body = direct(edge, "/metrics/")
    assert status == 403, body[:200]
    assert b"django_http" not in body


@pytest.mark.parametrize("headers", [
    {"X-Forwarded-For": "10.255.255.7"}, {"X-Real-IP": "10.255.255.7"}, {"Forwarded": "for=10.255.255.7"},
    {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer "}, {"Authorization": "Token x"},
], ids=["xff-spoof", "x-real-ip-spoof", "forwarded-spoof", "wrong-token", "empty-token", "api-token-scheme"])
def test_metrics_403_directly_with_spoofed_addresses_or_wrong_tokens(edge, headers):
    status, _, body = direct(edge, "/metrics/", headers=headers)
    assert status == 403, (headers, status, body[:200])


def test_metrics_200_directly_with_the_bearer_token(edge):
    status, _, body = direct(edge, "/metrics/", headers={"Authorization": f"Bearer {edge['metrics_token']}"})
    assert status == 200
    assert b"# TYPE workorder_websocket_connections gauge" in body


# --- nginx rate limiting ---------------------------------------------------------------------------
def test_rate_limit_answers_429_beyond_rate_and_burst(edge):
    """A bounded burst of 60 parallel requests from one address: at most burst + a few pass, the rest
    get 429; after a pause (the bucket refills at 10 r/s) requests pass again."""
    wait_for_full_bucket()
    headers = {"Authorization": f"Token {edge['api_token']}"}
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda _: via_nginx(edge, "GET", "/api/auth/me/", retry_429=False,
                                                     headers=headers)[0], range(60)))
    elapsed = time.monotonic() - t0
    counts = {s: statuses.count(s) for s in set(statuses)}
    print(f"\n[edge] 60 parallel requests at {RATE} burst {BURST} in {elapsed:.2f}s: {counts}")
    assert set(counts) <= {200, 429}, counts
    allowed = BURST + 1 + int(RATE_PER_SECOND * elapsed) + 1
    assert BURST <= counts.get(200, 0) <= allowed, counts  # a full burst passes, no more
    assert counts.get(429, 0) >= 60 - allowed, counts
    # The bucket refills: within a deadline a request passes again.
    deadline = time.monotonic() + 10
    while (status := via_nginx(edge, "GET", "/api/auth/me/", retry_429=False, headers=headers)[0]) == 429:
        assert time.monotonic() < deadline, "still 429 10 s after the burst"
        time.sleep(0.05)
    assert status == 200


def test_rate_limit_applies_to_websocket_upgrades_but_not_to_health_or_static(edge):
    wait_for_full_bucket()
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        health = list(pool.map(lambda _: via_nginx(edge, "GET", "/health/", retry_429=False)[0], range(60)))
    assert health == [200] * 60, {s: health.count(s) for s in set(health)}
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        static = list(pool.map(lambda _: via_nginx(edge, "GET", "/static/admin/css/base.css", retry_429=False)[0],
                               range(60)))
    assert static == [200] * 60
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": edge["stack"].url}
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        ws = list(pool.map(lambda _: via_nginx(edge, "GET", "/ws/notifications/?token=x", retry_429=False,
                                               headers=upgrade, timeout=5)[0], range(60)))
    counts = {s: ws.count(s) for s in set(ws)}
    allowed = BURST + 1 + int(RATE_PER_SECOND * (time.monotonic() - t0)) + 1
    assert set(counts) <= {101, 429}, counts  # 101: daphne accepted (then closes: the token is invalid)
    assert BURST <= counts.get(101, 0) <= allowed, counts
    assert counts.get(429, 0) >= 60 - allowed, counts


# --- bodies and URLs through nginx ----------------------------------------------------------------
def test_body_over_nginx_limit_is_413_from_nginx(edge):
    status, _, _ = via_nginx(edge, "POST", "/api/workorders/", body=b"x" * (11 * 1024 * 1024),
                             headers={"Content-Type": "application/json", "Authorization": f"Token {edge['api_token']}"})
    assert status == 413


def test_body_over_django_limit_is_413_json(edge):
    body = json.dumps({"customer": "x" * (2 * 1024 * 1024)}).encode()
    status, headers, raw = via_nginx(edge, "POST", "/api/workorders/", body=body,
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Token {edge['api_token']}"})
    assert status == 413, raw[:200]
    assert headers["content-type"].startswith("application/json")
    assert json.loads(raw)["code"] == "request_too_large"


@pytest.mark.parametrize("path, expected, answered_by", [
    ("/api/tasks/%00/", 400, "nginx"),  # nginx refuses a NUL byte in the decoded path
    ("/api/tasks/?status=%00", 400, "django"), ("/api/tasks/1.5/claim/", 404, "django"),
    ("/api/tasks/?page=99999999999999999999", 404, "django"), ("/api/%E2%80%AE/", 404, "django"),
    ("/api/tasks/?page_size=" + "9" * 5000, 414, "gunicorn"),  # limit_request_line (4094 bytes)
    ("/api/tasks/?page_size=" + "9" * 3000, 200, "django"),
])
def test_hostile_urls_through_nginx_are_json_4xx(edge, path, expected, answered_by):
    status, headers, raw = via_nginx(edge, "GET" if "claim" not in path else "POST", path,
                                     headers={"Authorization": f"Token {edge['api_token']}"})
    assert status == expected, (path, status, raw[:200])
    if answered_by == "nginx":
        assert b"<center>nginx</center>" in raw, (path, raw[:200])
    elif answered_by == "gunicorn":
        assert b"Request Line is too large" in raw, (path, raw[:200])
    else:
        assert headers["content-type"].startswith("application/json"), (path, headers.get("content-type"), raw[:200])


def test_deeply_nested_json_through_nginx_is_400(edge):
    status, _, raw = via_nginx(edge, "POST", "/api/workorders/", body=b"[" * 200_000 + b"]" * 200_000,
                               headers={"Content-Type": "application/json",
                                        "Authorization": f"Token {edge['api_token']}"})
    assert status == 400, raw[:200]
    assert json.loads(raw)["code"] == "parse_error"


def test_root_redirects_to_the_api_docs(edge):
    status, headers, _ = via_nginx(edge, "GET", "/")
    assert status == 302 and headers["location"].endswith("/api/docs/")


def test_metrics_prefix_closes_only_metrics_paths(edge):
    """`/metrics` and everything below it are closed; `/metricsX` is another path (no 403)."""
    assert via_nginx(edge, "GET", "/metrics")[0] == 403
    assert via_nginx(edge, "GET", "/metrics/x")[0] == 403
    assert via_nginx(edge, "GET", "/metricsX")[0] == 404


def established_unix_connections(path: str) -> int:
    """Connected sockets bound to a unix socket path (the server side of accepted connections)."""
    count = 0
    with open("/proc/net/unix") as table:
        next(table)
        for line in table:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == path and fields[5] == "03":
                count += 1
    return count


def test_nginx_reuses_upstream_connections_to_gunicorn(edge):
    """`proxy_set_header Connection ""` in the gunicorn locations: after a run of requests the
    connections nginx opened stay open in its keepalive pool instead of one per request."""
    stack = edge["stack"]
    for _ in range(30):
        assert via_nginx(edge, "GET", "/health/")[0] == 200
    idle = established_unix_connections(str(stack.gunicorn_socket))
    assert 1 <= idle < 30, f"{idle} connections to gunicorn stay open after 30 requests"


def test_no_server_errors_in_the_gunicorn_log(edge):
    log = edge["stack"].gunicorn.log_text()
    assert "Traceback" not in log, log[-3000:]
