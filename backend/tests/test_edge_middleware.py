"""The HTTP edge in-process: self-hosted API docs under a strict Content-Security-Policy, bodies over
the limit refused by Content-Length, JSON (and form-encoded) bodies only, bad Host headers as 400 JSON.
The same behaviour through nginx and a real gunicorn: tests/stack/test_edge.py."""

from __future__ import annotations

import logging
from html.parser import HTMLParser

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024


def references(html: str) -> list[str]:
    found: list[str] = []

    class Collector(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.extend(value for name, value in attrs if name in ("src", "href", "spec-url", "action") and value)

    Collector().feed(html)
    return found


def csp(response) -> dict[str, str]:
    return dict(part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";"))


def assert_strict_policy(response):
    policy = csp(response)
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval', no other origin
    assert policy["frame-ancestors"] == "'none'" and policy["base-uri"] == "'none'"
    assert "http" not in response["Content-Security-Policy"]


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/"])
def test_api_docs_reference_only_this_origin_and_the_files_exist(client, page):
    response = client.get(page)
    assert response.status_code == 200
    html = response.content.decode()
    assert "<script>" not in html  # every script is a file: script-src 'self' suffices
    urls = references(html)
    assert any(url.startswith("/static/drf_spectacular_sidecar/") for url in urls), urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        if url.startswith("/static/"):
            assert finders.find(url.removeprefix("/static/")), f"{url} is in no static directory"
        else:
            assert url.startswith(("/api/schema/", "/api/docs/?")), url
    assert_strict_policy(response)


def test_swagger_init_script_is_served_as_javascript_from_this_origin(client):
    html = client.get("/api/docs/").content.decode()
    script = next(url for url in references(html) if url.startswith("/api/docs/?"))
    response = client.get(script)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle(" in response.content and b"/api/schema/" in response.content


def test_admin_pages_have_the_strict_policy_and_no_inline_script(client):
    response = client.get("/admin/login/")
    assert response.status_code == 200
    assert_strict_policy(response)
    for url in references(response.content.decode()):
        if url.startswith("/static/"):
            assert finders.find(url.removeprefix("/static/")), url
    assert "<script>" not in response.content.decode()


def test_json_api_answers_carry_no_page_policy(client):
    assert "Content-Security-Policy" not in client.get("/api/auth/me/")


def multipart(size: int) -> tuple[bytes, str]:
    boundary = "edge-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + b"x" * size + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("path", ["/api/auth/login/", "/api/workorders/", "/admin/login/", "/no-such-page/"])
def test_multipart_body_over_the_limit_is_413_json(client, path):
    body, content_type = multipart(9 * MIB)
    response = client.generic("POST", path, body, content_type=content_type)
    assert response.status_code == 413, response.content[:200]
    assert response.json() == {"detail": "The request body is larger than 1048576 bytes.",
                               "code": "request_too_large", "errors": {}}


def test_body_just_at_the_limit_is_judged_on_its_content(client):
    body = b'{"username": "' + b"u" * (MIB - 40) + b'", "password": "x"}'
    assert len(body) <= MIB
    response = client.generic("POST", "/api/auth/login/", body, content_type="application/json")
    assert response.status_code != 413


def test_multipart_body_under_the_limit_is_415(client):
    body, content_type = multipart(100)
    response = client.generic("POST", "/api/auth/login/", body, content_type=content_type)
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "a b", "[::1", ""])
def test_disallowed_host_is_400_json_and_no_error_is_logged(host, caplog):
    caplog.set_level(logging.INFO)
    for method, path in (("GET", "/api/tasks/"), ("POST", "/api/auth/login/"), ("GET", "/admin/")):
        response = Client(HTTP_HOST=host).generic(method, path)
        assert response.status_code == 400, (host, path, response.content[:200])
        assert response.json()["code"] == "invalid_host"
    # django.request's one-line WARNING "Bad Request: <path>" (every 4xx) stays; no ERROR, no traceback.
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR], caplog.text
    assert all(record.exc_info is None for record in caplog.records), caplog.text
    assert "refused a request for host" in caplog.text


def test_probes_answer_whatever_the_host(client):
    assert Client(HTTP_HOST="127.0.0.1:8001").get("/health/").status_code == 200


# --- the admin's session middlewares are not run for the API --------------------------------------
def test_api_requests_get_no_session_and_no_message_storage_while_the_admin_gets_both():
    from tests import domain_builders as b
    from workorder.accounts.tokens import issue_token

    user = b.admin()
    browser = Client()
    browser.force_login(user)
    admin_page = browser.get("/admin/")
    assert admin_page.status_code == 200
    assert admin_page.wsgi_request.session.session_key and admin_page.wsgi_request.user == user
    assert hasattr(admin_page.wsgi_request, "_messages")

    # The same browser, its session cookie and a token: the API reads neither the session nor messages.
    api = browser.get("/api/auth/me/", HTTP_AUTHORIZATION=f"Token {issue_token(user)[1]}")
    assert api.status_code == 200 and api.json()["username"] == user.username
    assert not hasattr(api.wsgi_request, "session") and not hasattr(api.wsgi_request, "_messages")
    assert "Set-Cookie" not in api and "Cookie" not in api.get("Vary", "")


def test_the_admin_still_finds_its_session_authentication_and_message_middlewares():
    from django.core import checks

    errors = [e.id for e in checks.run_checks() if e.id in ("admin.E408", "admin.E409", "admin.E410")]
    assert errors == []
