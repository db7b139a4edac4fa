"""The edge of the production topology: /metrics/ and /ready/ access, nginx rate limiting, body and
request-line limits (JSON answers from nginx), hostile URLs and Host headers, access-log escaping, and
the self-hosted API docs under their Content-Security-Policy.

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
import contextlib
import http.client
import json
import secrets
import socket
import time

import psutil
import pytest

from harness import deployment
from harness.app import wait_for
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
        "from workorder.accounts.tokens import issue_token\n"
        "u, _ = User.objects.get_or_create(username='edge-admin', defaults={'is_staff': True, 'is_superuser': True})\n"
        "print(issue_token(u, device='test_edge')[1])\n"))
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
    ("/api/tasks/?page_size=" + "9" * 5000, 414, "nginx-json"),  # over the 4k header buffers
    ("/api/tasks/?page_size=" + "9" * 3000, 200, "django"),
])
def test_hostile_urls_through_nginx_are_json_4xx(edge, path, expected, answered_by):
    status, headers, raw = via_nginx(edge, "GET" if "claim" not in path else "POST", path,
                                     headers={"Authorization": f"Token {edge['api_token']}"})
    assert status == expected, (path, status, raw[:200])
    if answered_by == "nginx":
        assert b"<center>nginx</center>" in raw, (path, raw[:200])
    elif answered_by == "nginx-json":
        assert headers["content-type"] == "application/json", (path, raw[:200])
        assert json.loads(raw)["code"] == "uri_too_long"
    else:
        assert headers["content-type"].startswith("application/json"), (path, headers.get("content-type"), raw[:200])


def request_line_of(length: int) -> str:
    """A path whose request line `GET <path> HTTP/1.1` is exactly `length` bytes."""
    prefix = "/api/tasks/?page_size=1&pad="
    return prefix + "x" * (length - len(f"GET {prefix} HTTP/1.1"))


def test_request_line_limit_is_answered_by_nginx_as_json_never_by_gunicorn(edge):
    """gunicorn refuses a request line over 4094 bytes with an HTML 414; nginx's 4k header buffers
    hold exactly that much, so the longest line gunicorn accepts still reaches the API and one byte
    more is nginx's JSON 414."""
    headers = {"Authorization": f"Token {edge['api_token']}"}
    status, _, raw = via_nginx(edge, "GET", request_line_of(4094), headers=headers)
    assert status == 200, raw[:200]
    status, response_headers, raw = via_nginx(edge, "GET", request_line_of(4095), headers=headers)
    assert status == 414 and response_headers["content-type"] == "application/json", raw[:200]
    assert json.loads(raw) == {"detail": "The request line is too long.", "code": "uri_too_long", "errors": {}}
    # gunicorn's own answer (its loopback listener) is the HTML one nginx now keeps from clients.
    status, _, raw = direct(edge, request_line_of(4095))
    assert status == 414 and b"Request Line is too large" in raw


def multipart_body(size: int) -> tuple[bytes, str]:
    boundary = "workorder-edge-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + b"x" * size + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_multipart_body_over_the_limit_is_413_json_through_nginx(edge):
    body, content_type = multipart_body(9 * 1024 * 1024)
    status, headers, raw = via_nginx(edge, "POST", "/api/auth/login/", body=body,
                                     headers={"Content-Type": content_type})
    assert status == 413, raw[:200]
    assert headers["content-type"] == "application/json"
    assert json.loads(raw)["code"] == "request_too_large"


def test_multipart_body_over_the_limit_is_refused_by_gunicorn_before_it_is_sent(edge):
    """Directly on gunicorn: the 413 JSON comes from the Content-Length alone, while the client has
    sent only the start of its 9 MiB (the server reads no more of it)."""
    body, content_type = multipart_body(9 * 1024 * 1024)
    head = (f"POST /api/auth/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", edge["stack"].gunicorn_metrics_port), timeout=15) as sock:
        sock.sendall(head + body[:65536])
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    status_line, _, rest = response.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), response[:300]
    assert b"Content-Type: application/json" in rest.split(b"\r\n\r\n")[0]
    assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["code"] == "request_too_large"


def test_multipart_body_under_the_limit_is_415_the_api_takes_json(edge):
    body, content_type = multipart_body(1000)
    status, _, raw = via_nginx(edge, "POST", "/api/auth/login/", body=body, headers={"Content-Type": content_type})
    assert status == 415, raw[:200]
    assert json.loads(raw)["code"] == "unsupported_media_type"


@pytest.mark.parametrize("path", ["/ready/", "/ready/?x=1", "//ready/", "/%72eady/", "/api/../ready/"])
def test_ready_403_through_nginx_200_on_the_loopback_listener(edge, path):
    assert via_nginx(edge, "GET", path)[0] == 403
    status, _, raw = direct(edge, "/ready/")
    assert status == 200 and json.loads(raw)["checks"] == {"database": "ok", "redis": "ok", "migrations": "ok"}


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "a..b", "[::1", "x" * 300])
def test_disallowed_host_is_400_json_without_a_traceback(edge, host):
    for answer in (via_nginx(edge, "GET", "/api/auth/me/", headers={"Host": host}),
                   via_nginx(edge, "POST", "/admin/login/", headers={"Host": host}),
                   raw_request("127.0.0.1", edge["stack"].gunicorn_metrics_port, "GET", "/api/tasks/",
                               headers={"Host": host})):
        status, headers, raw = answer
        if status == 400 and b"<center>nginx</center>" in raw:
            continue  # nginx refuses some malformed hosts itself ([::1, a..b)
        assert status == 400, (host, status, raw[:200])
        assert headers["content-type"] == "application/json" and json.loads(raw)["code"] == "invalid_host"
    log = edge["stack"].gunicorn.log_text()
    assert "ERROR django.security.DisallowedHost" not in log and "Traceback" not in log, log[-2000:]


def test_decoded_control_characters_cannot_forge_access_log_lines(edge):
    forged = "/api/x%0aINFO%20gunicorn.access%20forged-line%0d%1b[31m"
    assert via_nginx(edge, "GET", forged)[0] == 404
    assert direct(edge, forged)[0] == 404
    escaped = "/api/x\\x0aINFO gunicorn.access forged-line\\x0d\\x1b[31m"
    # gunicorn writes an access line after it has sent the response: wait until both are in the log
    # (the assertions below say what is missing if they never are).
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: edge["stack"].gunicorn.log_text().count(escaped) >= 2, timeout=10, interval=0.1)
    log = edge["stack"].gunicorn.log_text()
    assert "\nINFO gunicorn.access forged-line" not in log and "\x1b" not in log
    assert log.count(escaped) == 2, log[-2000:]


def test_api_docs_load_nothing_from_other_origins_under_a_strict_csp(edge):
    """Swagger UI (/api/docs/) and Redoc (/api/redoc/) from drf-spectacular-sidecar's collected static
    files, served by nginx from STATIC_ROOT; every script and style they reference resolves there."""
    for page in ("/api/docs/", "/api/redoc/", "/admin/login/"):
        status, headers, raw = via_nginx(edge, "GET", page)
        assert status == 200, (page, raw[:200])
        policy = dict(directive.strip().split(" ", 1) for directive in headers["content-security-policy"].split(";"))
        assert policy["script-src"] == "'self'" and policy["default-src"] == "'none'", policy
        references = page_references(raw.decode())
        assert references, page
        assert any(url.startswith("/static/") for url in references), (page, references)
        for url in references:
            if url.startswith("#"):
                continue  # an anchor in the page itself
            assert url.startswith("/") and not url.startswith("//"), (page, url)
            if not url.startswith(("/static/", "/api/")):
                continue  # a link to another page of the admin
            status, asset_headers, _ = via_nginx(edge, "GET", url)
            assert status == 200, (page, url, status)
            if url.split("?")[0].endswith(".js") or "script" in url:
                assert "javascript" in asset_headers["content-type"], (url, asset_headers["content-type"])
        assert "<script>" not in raw.decode(), page  # no inline script: script-src 'self' suffices


def page_references(html: str) -> list[str]:
    from html.parser import HTMLParser

    found: list[str] = []

    class Collector(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.extend(value for name, value in attrs if name in ("src", "href", "spec-url") and value)

    Collector().feed(html)
    return found


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
    # Without keep-alive every connection closes after its request: none stays. With it, at most the
    # pool of each nginx worker (earlier tests' parallel requests may have filled more than one).
    workers = len(psutil.Process(stack.nginx.process.pid).children())
    pool = deployment.defaults()["nginx"]["upstreamKeepalive"] * workers
    assert 1 <= idle <= pool, f"{idle} connections to gunicorn stay open after 30 requests (pool {pool})"


def test_no_server_errors_in_the_gunicorn_log(edge):
    log = edge["stack"].gunicorn.log_text()
    assert "Traceback" not in log, log[-3000:]


def test_websocket_token_in_the_query_string_reaches_no_nginx_log_while_daphne_is_down(edge):
    """nginx writes the request line (with ?token=) into each error line of a request: "connect() failed
    ... request: ..." while daphne is down (ECONNREFUSED on a stale socket file, ENOENT without one) and
    limit_req refusals. The /ws/ location logs neither (access_log off, error_log at emerg)."""
    stack = edge["stack"]
    secret = "wssecret" + secrets.token_hex(16)
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": stack.url}
    wait_for_full_bucket()
    stack.daphne.stop()
    try:
        statuses = []
        for remove_socket in (False, True):
            if remove_socket:
                stack.daphne_socket.unlink(missing_ok=True)
            with concurrent.futures.ThreadPoolExecutor(10) as pool:
                statuses += list(pool.map(
                    lambda n: via_nginx(edge, "GET", f"/ws/notifications/?token={secret}&n={n}", retry_429=False,
                                        headers=upgrade, timeout=5)[0], range(BURST + 10)))
        assert set(statuses) == {502, 429}, statuses  # both kinds of error happened
    finally:
        stack.daphne.start(timeout=60)
    # A marker request through a logged location: once it is in the access log, the buffer was flushed.
    marker = "/api/?marker=" + secrets.token_hex(8)
    via_nginx(edge, "GET", marker)
    logs = [stack.nginx.base / name for name in ("access.log", "error.log", "nginx.stderr.log")]
    deadline = time.monotonic() + 10
    while marker not in logs[0].read_text(errors="replace"):
        assert time.monotonic() < deadline, "the access log was never flushed"
        time.sleep(0.1)
    for log in logs:
        assert secret not in log.read_text(errors="replace"), log


# --- login lockout, per client address as nginx sees it -----------------------------------------
def login_from(edge, source: str, username: str, password: str) -> tuple[int, dict, bytes]:
    """POST /api/auth/login/ through nginx from the local address `source` (127.0.0.1 or 127.0.0.2:
    both loopback, so nginx sees two clients). nginx's own 429 (its rate limit, an HTML page without
    Retry-After from the app) is waited out; the app's lockout 429 is JSON and returned."""
    stack = edge["stack"]
    body = json.dumps({"username": username, "password": password})
    deadline = time.monotonic() + 30
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", stack.nginx.port, timeout=15, source_address=(source, 0))
        try:
            conn.request("POST", "/api/auth/login/", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            status, headers, payload = response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()
        from_nginx = status == 429 and "retry-after" not in headers
        if not from_nginx or time.monotonic() > deadline:
            return status, headers, payload
        time.sleep(0.2)


def test_thirty_wrong_passwords_lock_the_account_from_that_address_only_through_nginx(edge):
    stack = edge["stack"]
    password = "Edge-lockout-" + secrets.token_urlsafe(8)
    stack.manage("shell", "-c", (
        "from workorder.accounts.models import User\n"
        "u, _ = User.objects.get_or_create(username='edge-lockout', defaults={'role': 'operator'})\n"
        f"u.set_password({password!r}); u.save()\n"))
    statuses = [login_from(edge, "127.0.0.1", "edge-lockout", "wrong-password")[0] for _ in range(30)]
    assert statuses[:29] == [400] * 29, statuses
    assert statuses[29] == 429, statuses

    status, headers, body = login_from(edge, "127.0.0.1", "edge-lockout", password)
    assert status == 429, body  # the right password, from the locked address: still refused
    assert 800 <= int(headers["retry-after"]) <= 900
    assert json.loads(body)["detail"]

    status, _, body = login_from(edge, "127.0.0.2", "edge-lockout", password)
    assert status == 200, body  # the same account from another address logs in
    assert json.loads(body)["token"]

    stack.manage("unlock_login", "--username", "edge-lockout", "--address", "127.0.0.1")
    status, _, body = login_from(edge, "127.0.0.1", "edge-lockout", password)
    assert status == 200, body


# --- overload: requests that queued past the deadline are shed ---------------------------------
def test_requests_queued_past_the_deadline_get_a_fast_503_with_retry_after_then_service_resumes(edge):
    """gunicorn frozen (SIGSTOP) stands in for a saturated server: requests queue behind it. Once it
    runs again, everything that waited past WORKORDER_QUEUE_DEADLINE_MS (0.8 s) is refused at once
    with 503 + Retry-After, counted in workorder_requests_shed_total, and new requests are served.
    Their waits, stamped by nginx, are in workorder_http_request_queue_seconds, past its 1-second bucket."""
    import os
    import signal

    stack = edge["stack"]
    headers = {"Authorization": f"Token {edge['api_token']}"}
    shed_before = metric_value(edge, "workorder_requests_shed_total")
    waits_before = queue_waits(edge)
    wait_for_full_bucket()
    frozen = [stack.gunicorn.pid, *(child.pid for child in psutil.Process(stack.gunicorn.pid).children())]
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(via_nginx, edge, "GET", "/api/tasks/?page_size=1", False, headers=headers)
                       for _ in range(8)]
            time.sleep(2.5)
            resumed = time.monotonic()
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
            answers = [future.result(timeout=30) for future in futures]
            drained = time.monotonic() - resumed
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    assert [status for status, _, _ in answers] == [503] * 8, answers
    assert all(headers_["retry-after"] == "1" and json.loads(body)["code"] == "overloaded"
               for _, headers_, body in answers)
    assert drained < 2.0, f"shedding 8 queued requests took {drained:.2f} s"
    assert metric_value(edge, "workorder_requests_shed_total") == shed_before + 8
    waits = queue_waits(edge)
    def past_one_second(buckets):
        return buckets.get("+Inf", 0.0) - buckets.get("1.0", 0.0)

    assert past_one_second(waits) == past_one_second(waits_before) + 8, (waits_before, waits)
    status, _, _ = via_nginx(edge, "GET", "/api/tasks/?page_size=1", headers=headers)
    assert status == 200


def queue_waits(edge) -> dict[str, float]:
    """gunicorn's workorder_http_request_queue_seconds buckets {le: requests}, summed over its workers."""
    prefix = 'workorder_http_request_queue_seconds_bucket{le="'
    return {line[len(prefix):].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in metrics_lines(edge) if line.startswith(prefix)}


def metrics_lines(edge) -> list[str]:
    status, _, body = direct(edge, "/metrics/", headers={"Authorization": f"Bearer {edge['metrics_token']}"})
    assert status == 200, body
    return body.decode().splitlines()


def metric_value(edge, name: str) -> float:
    for line in metrics_lines(edge):
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
