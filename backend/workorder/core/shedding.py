"""Overload is shed, not queued: a request that waited too long before Django saw it gets a fast 503.

nginx stamps every request it passes to gunicorn with `X-Request-Start: t=<seconds since the epoch,
millisecond resolution>` ($msec, the moment nginx read the request). When the service runs past its
capacity, requests queue in gunicorn (its accept backlog and each worker's connection queue); a request
that has already waited WORKORDER_QUEUE_DEADLINE_MS (default 800 ms) is answered 503 with
`Retry-After: 1` and the JSON error shape before anything else runs (~0.1 ms instead of a full request),
so the backlog drains and the requests still served keep their latency. Counted in
`workorder_requests_shed_total{reason="queue_deadline"}`; nginx's in-flight limit refuses requests
before they queue at all and mtail counts those under the same name with reason="in_flight_limit"
(nix/mtail). The `WorkorderSheddingLoad` alert and the SLO rules' shed ratio sum both (shed requests
are not in the API error ratio: that one measures requests the service answered).

Every stamped request's wait is also observed in `workorder_http_request_queue_seconds` (a histogram):
the time between nginx reading the request and Django seeing it, spent in gunicorn's accept backlog,
waiting for a free thread of the worker that holds nginx's kept-alive connection, and for the GIL.
It is where a latency tail that the view latency does not show comes from; `$msec` has millisecond
resolution, so each wait reads up to 1 ms long.

The header is believed only from a trusted peer (nginx: a unix-socket peer or
WORKORDER_TRUSTED_PROXY_NETWORKS, core/client_address.py); anyone else could stamp an old time to have
their own requests refused, nothing more. Clocks: nginx and gunicorn share the host's clock.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.http import JsonResponse
from prometheus_client import Counter, Histogram

from .client_address import is_trusted_proxy

requests_shed = Counter("workorder_requests_shed", "Requests answered 503 because the service was past its capacity",
                        ["reason"])
shed_past_deadline = requests_shed.labels("queue_deadline")  # exposed as 0 from the start
queue_wait = Histogram("workorder_http_request_queue_seconds",
                       "Seconds between nginx reading a request (X-Request-Start) and the application seeing it",
                       buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))

DETAIL = "The service is overloaded; retry in a moment."
NEVER_SHED = frozenset({"/health/"})  # liveness: an overloaded process is alive (outside balancers probe it)


def queue_wait_seconds(meta, now: float) -> float | None:
    """How long ago nginx received the request, or None when not stamped (or stamped by a stranger)."""
    stamp = meta.get("HTTP_X_REQUEST_START", "")
    if not stamp or not is_trusted_proxy(meta.get("REMOTE_ADDR")):
        return None
    try:
        started = float(stamp.removeprefix("t="))
    except ValueError:
        return None
    return now - started


class QueueDeadlineMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        waited = queue_wait_seconds(request.META, time.time())
        if waited is None:
            return self.get_response(request)
        queue_wait.observe(max(waited, 0.0))  # another clock step could make it negative
        deadline = settings.WORKORDER_QUEUE_DEADLINE_MS / 1000
        if 0 < deadline < waited and request.path_info not in NEVER_SHED:
            shed_past_deadline.inc()
            response = JsonResponse({"detail": DETAIL, "code": "overloaded", "errors": {}}, status=503)
            response["Retry-After"] = "1"
            return response
        return self.get_response(request)
