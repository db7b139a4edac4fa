"""Per-view HTTP metrics with a handful of metric updates per request.

django-prometheus' PrometheusBeforeMiddleware and PrometheusAfterMiddleware update about fifteen
series per request (methods, transports, body sizes, charsets, a second latency histogram...). In
prometheus_client's multiprocess mode every update is a locked write to a memory-mapped file;
with the header parsing and two more middleware layers they cost 0.1-0.2 ms of CPU per request
(an authenticated GET /api/auth/me/ takes about 2 ms of the process's CPU). The alert and recording rules
(nix/prometheus/workorder.rules.yml), docs/monitoring.md and the stack tests read three families
only; this middleware records those, under django-prometheus' names, help texts, buckets and label
values, so the rules and dashboards see the same series as before:

    django_http_requests_latency_seconds_by_view_method{view, method}          histogram
    django_http_responses_total_by_status_view_method{status, view, method}    counter
    django_http_requests_total_by_view_transport_method{view, transport, method} counter

plus django_http_responses_total_by_status{status} (backend/tests/test_runtime_servers.py sums it
over gunicorn workers) and, for exceptions escaping a view, django_http_exceptions_total_by_type
and django_http_exceptions_total_by_view. One family is this project's own:

    workorder_http_request_cpu_seconds_total{view, method}                     counter

the CPU time of the worker thread that served the request (time.thread_time(): not the other thread
of a gthread worker, not waits on PostgreSQL or Redis), from here to the response. Divided by the
responses of the same view it is each view's CPU per request under the real mix of traffic
(tests/bench/capacity.py prints it per load step). Work handed to another thread (the live push of
notifications runs on its own event loop) is not in it.

The metric objects are django-prometheus' own (Metrics.get_instance()), so each family is
registered once per process, whichever of the two middlewares is installed; the families this one
leaves alone are still exposed, unlabelled ones at 0. Labelled children are cached per label set:
prometheus_client's labels() takes a lock and builds a tuple on every call.

Place it last in MIDDLEWARE, where PrometheusAfterMiddleware was: the latency is measured around the
URL resolution, every middleware's process_view and the view, and only requests that get this far
are counted. /health/, /ready/ and /metrics/ (OperationalEndpointsMiddleware), requests shed with 503
(QueueDeadlineMiddleware, counted in workorder_requests_shed_total) and those refused at the edge
(413, bad Host) are answered before and are in none of these families, as before.

One difference from django-prometheus: when a view raises, django-prometheus observes the latency
in process_exception and again for the 500 (or 429) response built from the exception, so the
histogram counts that request twice; here every request is observed once, with its response.
"""

from __future__ import annotations

import time
from timeit import default_timer

from django_prometheus.middleware import Metrics
from prometheus_client import Counter

UNNAMED_VIEW = "<unnamed view>"
INVALID_METHOD = "<invalid method>"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "OPTIONS", "CONNECT", "PATCH"})
# Cached label sets per process: views x methods x statuses stays in the hundreds. The cap only
# guards against a status code or view name that is not from a small set.
MAX_CACHED = 4096

request_cpu = Counter("workorder_http_request_cpu_seconds_total",
                      "CPU seconds of the worker thread serving the request, by view and method", ["view", "method"])


def _response_view(request) -> str:
    """The view label of the response and latency series (django-prometheus' _get_view_name)."""
    match = getattr(request, "resolver_match", None)
    if match is not None and match.view_name is not None:
        return match.view_name
    return UNNAMED_VIEW


def _resolved_view(request) -> str:
    """The view label where the view is known to be resolved (django-prometheus' process_view and
    process_exception)."""
    return request.resolver_match.view_name or UNNAMED_VIEW


class RequestMetricsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        metrics = Metrics.get_instance()
        self._latency = metrics.requests_latency_by_view_method
        self._by_status_view_method = metrics.responses_by_status_view_method
        self._by_status = metrics.responses_by_status
        self._by_view_transport_method = metrics.requests_by_view_transport_method
        self._exceptions_by_type = metrics.exceptions_by_type
        self._exceptions_by_view = metrics.exceptions_by_view
        # (view, request.method, status) -> (latency, responses by status/view/method, responses by status,
        # CPU by view/method)
        self._response_children: dict[tuple, tuple] = {}
        # (view, transport, method) -> requests by view/transport/method
        self._request_children: dict[tuple, object] = {}

    def __call__(self, request):
        started, cpu_started = default_timer(), time.thread_time()
        response = self.get_response(request)
        elapsed, cpu = default_timer() - started, time.thread_time() - cpu_started
        method = request.method
        status = response.status_code
        key = (_response_view(request), method, status)
        children = self._response_children.get(key)
        if children is None:
            children = self._response_series(key)
        latency, by_status_view_method, by_status, cpu_seconds = children
        latency.observe(elapsed)
        by_status_view_method.inc()
        by_status.inc()
        cpu_seconds.inc(cpu)
        return response

    def _response_series(self, key: tuple) -> tuple:
        view, method, status = key
        status = str(status)
        children = (
            # django-prometheus labels the histogram with the method as sent, the counters with the
            # normalised one; both are kept so that the series stay the same.
            self._latency.labels(view=view, method=method),
            self._by_status_view_method.labels(
                status=status, view=view, method=method if method in METHODS else INVALID_METHOD
            ),
            self._by_status.labels(status=status),
            request_cpu.labels(view=view, method=method if method in METHODS else INVALID_METHOD),
        )
        # A method outside METHODS is one a client invented: not cached, so that such requests cannot
        # grow the cache.
        if method in METHODS and len(self._response_children) < MAX_CACHED:
            self._response_children[key] = children
        return children

    def process_view(self, request, view_func, view_args, view_kwargs):
        # Runs after every other middleware's process_view (this one is last): a request refused there
        # (e.g. CSRF) has a response series but no request series, as with django-prometheus.
        method = request.method
        if method not in METHODS:
            method = INVALID_METHOD
        key = (_resolved_view(request), "https" if request.is_secure() else "http", method)
        child = self._request_children.get(key)
        if child is None:
            child = self._by_view_transport_method.labels(view=key[0], transport=key[1], method=key[2])
            if len(self._request_children) < MAX_CACHED:
                self._request_children[key] = child
        child.inc()

    def process_exception(self, request, exception):
        # Rare (DRF views turn their exceptions into responses): no cache. The latency is observed
        # with the response Django builds from the exception, in __call__.
        self._exceptions_by_type.labels(type=type(exception).__name__).inc()
        self._exceptions_by_view.labels(view=_resolved_view(request)).inc()
