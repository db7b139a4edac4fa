"""The per-view HTTP metrics (core/request_metrics.py): the series the alert and recording rules read
(nix/prometheus/workorder.rules.yml) get the labels django-prometheus' middlewares gave them, for
answers of views, of the URL resolver and of exceptions; probes, scrapes and shed requests are not
counted. The same requests through django-prometheus' own middlewares give the same series."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Self

import pytest
from django.conf import settings
from django.http import HttpResponse
from django.test import Client, override_settings
from django.urls import resolve
from django.views.generic import RedirectView
from django_prometheus.conf import PROMETHEUS_LATENCY_BUCKETS
from prometheus_client import REGISTRY
from prometheus_client.utils import floatToGoString

from tests import domain_builders as b
from workorder.accounts.views import MeView
from workorder.core.request_metrics import RequestMetricsMiddleware

pytestmark = pytest.mark.django_db

LATENCY = "django_http_requests_latency_seconds_by_view_method"
RESPONSES = "django_http_responses_total_by_status_view_method"
REQUESTS = "django_http_requests_total_by_view_transport_method"
BY_STATUS = "django_http_responses_total_by_status"
EXCEPTIONS_BY_TYPE = "django_http_exceptions_total_by_type"
EXCEPTIONS_BY_VIEW = "django_http_exceptions_total_by_view"
CPU = "workorder_http_request_cpu_seconds"
FAMILIES = (LATENCY, RESPONSES, REQUESTS, BY_STATUS, EXCEPTIONS_BY_TYPE, EXCEPTIONS_BY_VIEW)

# The django-prometheus middlewares RequestMetricsMiddleware replaces, at their former places in MIDDLEWARE.
OLD_BEFORE = "django_prometheus.middleware.PrometheusBeforeMiddleware"
OLD_AFTER = "django_prometheus.middleware.PrometheusAfterMiddleware"
NEW = "workorder.core.request_metrics.RequestMetricsMiddleware"


def old_middleware() -> list[str]:
    assert settings.MIDDLEWARE[-1] == NEW, "RequestMetricsMiddleware must stay last"
    return [settings.MIDDLEWARE[0], OLD_BEFORE, *settings.MIDDLEWARE[1:-1], OLD_AFTER]


def snapshot() -> dict[tuple, float]:
    values = {}
    for family in REGISTRY.collect():
        if family.name in FAMILIES:
            for sample in family.samples:
                if not sample.name.endswith("_created"):
                    values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


class Recorded:
    """What a block of requests added to the families, by label set."""

    def __init__(self, before: dict, after: dict):
        self.delta = {key: value - before.get(key, 0.0) for key, value in after.items()
                      if value != before.get(key, 0.0)}

    def _counts(self, sample_name: str, *labels: str) -> Counter:
        found = Counter()
        for (name, label_items), value in self.delta.items():
            if name == sample_name:
                found[tuple(dict(label_items)[label] for label in labels)] += int(value)
        return found

    @property
    def responses(self) -> Counter:
        return self._counts(RESPONSES + "_total", "status", "view", "method")

    @property
    def requests(self) -> Counter:
        return self._counts(REQUESTS + "_total", "view", "transport", "method")

    @property
    def latency(self) -> Counter:
        return self._counts(LATENCY + "_count", "view", "method")

    @property
    def by_status(self) -> Counter:
        return self._counts(BY_STATUS + "_total", "status")

    @property
    def exceptions(self) -> tuple[Counter, Counter]:
        return self._counts(EXCEPTIONS_BY_TYPE + "_total", "type"), self._counts(EXCEPTIONS_BY_VIEW + "_total", "view")

    def counted(self) -> dict:
        """Everything but the latency buckets and sums (timing, not labels)."""
        return {"responses": self.responses, "requests": self.requests, "latency": self.latency,
                "by_status": self.by_status, "exceptions": self.exceptions}


class recording:
    def __enter__(self) -> Self:
        self._before = snapshot()
        return self

    def __exit__(self, *exc_info) -> None:
        self.recorded = Recorded(self._before, snapshot())


def anonymous() -> Client:
    return Client(raise_request_exception=False)


# --- the three families the rules read ---------------------------------------------------------
def test_a_view_answer_is_one_series_update_in_each_family_with_the_configured_buckets():
    api = b.client(b.maker())
    with recording() as r:
        assert api.get("/api/auth/me/").status_code == 200
    got = r.recorded
    assert got.responses == Counter({("200", "auth-me", "GET"): 1})
    assert got.requests == Counter({("auth-me", "http", "GET"): 1})
    assert got.latency == Counter({("auth-me", "GET"): 1})
    assert got.by_status == Counter({("200",): 1})
    assert got.exceptions == (Counter(), Counter())
    buckets = {dict(labels)["le"] for name, labels in got.delta if name == LATENCY + "_bucket"}
    expected = {floatToGoString(bound) for bound in PROMETHEUS_LATENCY_BUCKETS} | {"+Inf"}
    # prometheus_client writes every bucket (cumulative); the request fell in some of them
    family = next(f for f in REGISTRY.collect() if f.name == LATENCY)
    written = {s.labels["le"] for s in family.samples
               if s.name == LATENCY + "_bucket" and s.labels["view"] == "auth-me" and s.labels["method"] == "GET"}
    assert written == expected and buckets <= expected and "+Inf" in buckets


def test_statuses_views_and_methods_as_the_rules_see_them():
    api = b.client(b.maker())
    with recording() as r:
        assert api.get("/api/tasks/987654321/").status_code == 404  # a view's 404
        assert api.post("/api/auth/login/", {}, format="json").status_code == 400  # a POST, invalid
        assert b.client().get("/api/auth/me/").status_code == 401
        assert anonymous().get("/no-such-page/").status_code == 404  # no route at all
        assert anonymous().get("/api/no-such-thing/").status_code == 404  # the API's unnamed catch-all
    got = r.recorded
    catch_all = "workorder.api_urls.api_not_found"
    assert got.responses == Counter({
        ("404", "task-detail", "GET"): 1, ("400", "auth-login", "POST"): 1, ("401", "auth-me", "GET"): 1,
        ("404", "<unnamed view>", "GET"): 1, ("404", catch_all, "GET"): 1,
    })
    # a URL no route matches never reaches a view: a response, no request by view
    assert got.requests == Counter({
        ("task-detail", "http", "GET"): 1, ("auth-login", "http", "POST"): 1, ("auth-me", "http", "GET"): 1,
        (catch_all, "http", "GET"): 1,
    })
    assert got.latency == Counter({
        ("task-detail", "GET"): 1, ("auth-login", "POST"): 1, ("auth-me", "GET"): 1,
        ("<unnamed view>", "GET"): 1, (catch_all, "GET"): 1,
    })
    assert got.by_status == Counter({("404",): 3, ("400",): 1, ("401",): 1})


def test_an_exception_escaping_a_view_is_a_500_counted_once_with_its_type(monkeypatch):
    def boom(self, *args, **kwargs):
        raise RuntimeError("broken view")

    monkeypatch.setattr(RedirectView, "get_redirect_url", boom)  # "/" (name "root"): a plain Django view
    with recording() as r:
        assert anonymous().get("/").status_code == 500
    got = r.recorded
    assert got.responses == Counter({("500", "root", "GET"): 1})
    assert got.requests == Counter({("root", "http", "GET"): 1})
    assert got.latency == Counter({("root", "GET"): 1})
    assert got.exceptions == (Counter({("RuntimeError",): 1}), Counter({("root",): 1}))


def test_an_error_inside_an_api_view_is_its_500_without_an_exception_series(monkeypatch):
    def boom(self, request):
        raise RuntimeError("broken view")

    monkeypatch.setattr(MeView, "get", boom)
    api = b.client(b.maker())
    with recording() as r:
        assert api.get("/api/auth/me/").status_code == 500  # json_exception_handler answered it
    got = r.recorded
    assert got.responses == Counter({("500", "auth-me", "GET"): 1})
    assert got.exceptions == (Counter(), Counter())


def test_https_and_invented_methods():
    api = b.client(b.maker())
    with recording() as r:
        assert api.get("/api/auth/me/", secure=True).status_code == 200
        assert api.generic("BREW", "/api/auth/me/").status_code == 405
    got = r.recorded
    assert got.requests == Counter({("auth-me", "https", "GET"): 1, ("auth-me", "http", "<invalid method>"): 1})
    assert got.responses == Counter({("200", "auth-me", "GET"): 1, ("405", "auth-me", "<invalid method>"): 1})
    # django-prometheus labels the latency with the method as sent: kept, the series stay the same
    assert got.latency == Counter({("auth-me", "GET"): 1, ("auth-me", "BREW"): 1})


def test_probes_scrapes_and_shed_requests_are_not_counted():
    with recording() as r:
        assert anonymous().get("/health/").status_code == 200
        assert anonymous().get("/metrics/").status_code == 200  # the test client's REMOTE_ADDR is loopback
        assert anonymous().get("/metrics").status_code == 200
        shed = Client(REMOTE_ADDR="").get("/api/tasks/", HTTP_X_REQUEST_START="t=1")  # queued since 1970
        assert shed.status_code == 503
    assert r.recorded.delta == {}


# --- the same series as django-prometheus --------------------------------------------------------
def requests_of_every_kind(monkeypatch) -> None:
    """One of each kind of answer the rules distinguish, through MIDDLEWARE as it is set now."""
    user = b.maker()
    api, client = b.client(user), anonymous()
    assert api.get("/api/auth/me/").status_code == 200
    assert api.get("/api/auth/me/", secure=True).status_code == 200
    assert api.get("/api/tasks/987654321/").status_code == 404
    assert api.post("/api/auth/login/", {}, format="json").status_code == 400
    assert b.client().get("/api/tasks/").status_code == 401
    assert api.generic("BREW", "/api/auth/me/").status_code == 405
    assert client.get("/no-such-page/").status_code == 404
    assert client.get("/no-such-page").status_code == 404  # APPEND_SLASH finds no route with the slash
    assert client.get("/api/no-such-thing/").status_code == 404
    assert client.head("/api/docs/").status_code == 200
    assert Client(enforce_csrf_checks=True).post("/admin/login/", {}).status_code == 403  # refused in process_view
    assert client.get("/health/").status_code == 200
    with monkeypatch.context() as patch:
        patch.setattr(RedirectView, "get_redirect_url", lambda *args, **kwargs: 1 / 0)
        assert client.get("/").status_code == 500


def test_same_series_as_django_prometheus_middlewares(monkeypatch):
    with override_settings(MIDDLEWARE=old_middleware()), recording() as old:
        requests_of_every_kind(monkeypatch)
    with recording() as new:
        requests_of_every_kind(monkeypatch)
    old, new = old.recorded.counted(), new.recorded.counted()
    # django-prometheus observes a request whose view raised twice (process_exception, then its 500)
    assert old.pop("latency") == new.pop("latency") + Counter({("root", "GET"): 1})
    assert new == old
    assert new["responses"][("403", "admin:login", "POST")] == 1
    assert ("admin:login", "http", "POST") not in new["requests"]


def test_metric_families_are_django_prometheus_own():
    from django_prometheus.middleware import Metrics

    metrics = Metrics.get_instance()
    middleware = RequestMetricsMiddleware(lambda request: None)
    assert middleware._latency is metrics.requests_latency_by_view_method
    assert middleware._by_status_view_method is metrics.responses_by_status_view_method
    assert middleware._by_view_transport_method is metrics.requests_by_view_transport_method
    assert tuple(metrics.requests_latency_by_view_method._upper_bounds) == tuple(PROMETHEUS_LATENCY_BUCKETS)


def test_label_sets_are_cached_but_invented_methods_do_not_grow_the_cache(rf):
    match = resolve("/api/auth/me/")

    def view(request):
        request.resolver_match = match
        middleware.process_view(request, match.func, match.args, match.kwargs)
        return HttpResponse(status=200)

    middleware = RequestMetricsMiddleware(view)
    with recording() as r:
        for method in ("GET", "GET", "BREW", "MUNCH", "BREW"):
            middleware(rf.generic(method, "/api/auth/me/"))
    assert set(middleware._response_children) == {("auth-me", "GET", 200)}
    assert set(middleware._request_children) == {("auth-me", "http", "GET"), ("auth-me", "http", "<invalid method>")}
    assert r.recorded.responses == Counter({("200", "auth-me", "GET"): 2, ("200", "auth-me", "<invalid method>"): 3})
    assert r.recorded.latency == Counter({("auth-me", "GET"): 2, ("auth-me", "BREW"): 2, ("auth-me", "MUNCH"): 1})


def test_cpu_per_view_counts_the_serving_threads_cpu_and_not_its_waits(rf):
    match = resolve("/api/auth/me/")

    def busy(request):  # ~30 ms of CPU
        request.resolver_match = match
        deadline = time.thread_time() + 0.03
        while time.thread_time() < deadline:
            pass
        return HttpResponse(status=200)

    def waiting(request):  # ~100 ms asleep, next to no CPU
        request.resolver_match = match
        time.sleep(0.1)
        return HttpResponse(status=200)

    def cpu_seconds() -> float:
        return REGISTRY.get_sample_value(CPU + "_total", {"view": "auth-me", "method": "GET"}) or 0.0

    before = cpu_seconds()
    RequestMetricsMiddleware(busy)(rf.get("/api/auth/me/"))
    spent = cpu_seconds() - before
    assert 0.03 <= spent < 0.06
    before = cpu_seconds()
    RequestMetricsMiddleware(waiting)(rf.get("/api/auth/me/"))
    assert cpu_seconds() - before < 0.01


# --- prometheus_client multiprocess mode (gunicorn's workers) -------------------------------------
MULTIPROCESS_SCRIPT = """
import io, os, sys
import django
django.setup()
from django.core.handlers.wsgi import WSGIHandler

handler = WSGIHandler()

def get(path):
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "localhost",
               "SERVER_PORT": "80", "HTTP_HOST": "localhost", "REMOTE_ADDR": "127.0.0.1",
               "wsgi.input": io.BytesIO(b""), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr}
    status = []
    body = b"".join(handler(environ, lambda s, headers: status.append(s)))
    return status[0], body

for _ in range(3):
    assert get("/api/auth/me/")[0].startswith("401"), "no token: 401"
pid = os.fork()  # a second process writes its own file; /metrics/ sums both
if pid == 0:
    get("/api/auth/me/")
    os._exit(0)
os.waitpid(pid, 0)
status, body = get("/metrics/")
assert status.startswith("200"), status
sys.stdout.write(body.decode())
"""


def test_multiprocess_mode_sums_the_series_of_all_processes(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "multiproc"),
           "DJANGO_SETTINGS_MODULE": "tests.django_settings", "WORKORDER_STATE_DIR": str(tmp_path / "state"),
           "DJANGO_ALLOWED_HOSTS": "localhost"}
    (tmp_path / "multiproc").mkdir()
    backend = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", MULTIPROCESS_SCRIPT], cwd=backend, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert f'{RESPONSES}_total{{method="GET",status="401",view="auth-me"}} 4.0' in lines
    assert f'{REQUESTS}_total{{method="GET",transport="http",view="auth-me"}} 4.0' in lines
    assert f'{LATENCY}_count{{method="GET",view="auth-me"}} 4.0' in lines
    assert f'{BY_STATUS}_total{{status="401"}} 4.0' in lines
