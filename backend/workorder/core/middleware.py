"""Operational endpoints answered before host validation and the HTTPS redirect.

/health/, /ready/ and /metrics/ are probed on gunicorn's loopback port by systemd, the test harness and
Prometheus with whatever Host header they have (e.g. 127.0.0.1:8001) and over plain HTTP. They produce
no URLs, so host-header validation protects nothing there; /metrics/ has its own access control.
Place this near the top of MIDDLEWARE, before the edge middlewares (core/edge.py). Its answers
never reach RequestMetricsMiddleware (core/request_metrics.py, last), so probes and scrapes are not
counted as API requests.
"""

from __future__ import annotations


class OperationalEndpointsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        from .health import health, ready
        from .metrics import metrics

        self.views = {"/health/": health, "/ready/": ready, "/metrics/": metrics, "/metrics": metrics}

    def __call__(self, request):
        view = self.views.get(request.path_info)
        if view is not None and request.method in ("GET", "HEAD"):
            return view(request)
        return self.get_response(request)
