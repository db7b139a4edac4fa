"""Dashboard statistics: organisation-wide aggregates (counts only, no rows) for every signed-in user,
cached for settings.STATISTICS_CACHE_SECONDS (WORKORDER_STATISTICS_CACHE_SECONDS, default 5) or longer
when computing them is expensive (settings.STATISTICS_REFRESH_PERCENT); every answer says how old it is
in its `Age` header."""

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from django.conf import settings
from django.core.cache import cache
from django.db import close_old_connections
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from workorder.core.api import ApiViewMixin

from . import queries
from .serializers import CollaborationSerializer, DepartmentWorkloadSerializer, TaskSummarySerializer

logger = logging.getLogger(__name__)


class Answer(NamedTuple):
    value: dict
    computed: float  # time.time() when the aggregates were computed

    def response(self) -> Response:
        return Response(self.value, headers={"Age": str(max(0, int(time.time() - self.computed)))})


def cached(name: str, compute) -> Answer:
    """Serve `compute()` from the cache while it is fresh.

    Fresh for STATISTICS_CACHE_SECONDS, or longer when computing took long: the next refresh waits
    until the last one's duration is at most STATISTICS_REFRESH_PERCENT of the time between them (2 %:
    a 0.3-s computation stays fresh for 15 s), so the aggregates over the whole task table cost a
    bounded share of the database however large that table grows, and less often when the database
    is busy (a computation takes longer then).

    Stale-while-revalidate: the value is kept 10x longer than it is fresh; when it is stale, one
    process (the one that wins cache.add on a short lock key) recomputes it while everyone, that
    process's request included, keeps answering with the stale value: the aggregates run in a
    background thread, never while a request holds one of the worker's few threads. Only a value
    nobody has yet (a cold cache) is computed in the request.
    """
    seconds = int(getattr(settings, "STATISTICS_CACHE_SECONDS", 5))
    if seconds <= 0:
        return Answer(compute(), time.time())
    key = f"statistics:{name}"
    entry = cache.get(key)
    if entry is not None and "computed" not in entry:  # written by a version that did not keep it
        entry = None
    if entry is not None and entry["expires"] > time.time():
        return Answer(entry["value"], entry["computed"])
    if entry is None:
        return _store(key, compute, seconds)
    if cache.add(f"{key}:refresh", 1, timeout=30):  # nobody else is refreshing it
        _refresher().submit(_refresh, key, compute, seconds)
    return Answer(entry["value"], entry["computed"])


def _store(key: str, compute, seconds: int) -> Answer:
    started = time.perf_counter()
    value = compute()
    took = time.perf_counter() - started
    fresh_for = max(seconds, took * 100 / settings.STATISTICS_REFRESH_PERCENT)
    computed = time.time()
    cache.set(key, {"value": value, "computed": computed, "expires": computed + fresh_for},
              int(fresh_for * 10) + 1)
    return Answer(value, computed)


def _refresh(key: str, compute, seconds: int) -> None:
    # The refresher thread keeps its database connection between refreshes; like a request it drops
    # one that is too old or broken first.
    close_old_connections()
    try:
        _store(key, compute, seconds)
    except Exception:  # the stale value stays; the next stale read tries again
        logger.warning("refreshing %s failed; the previous value is served meanwhile", key, exc_info=True)
    finally:
        cache.delete(f"{key}:refresh")


_executor: ThreadPoolExecutor | None = None
_executor_pid: int | None = None
_executor_lock = threading.Lock()


def _refresher() -> ThreadPoolExecutor:
    """One refresh thread per process, created at first use (per PID: a forked worker never inherits a
    thread that did not survive the fork)."""
    global _executor, _executor_pid
    with _executor_lock:
        if _executor is None or _executor_pid != os.getpid():
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="workorder-statistics")
            _executor_pid = os.getpid()
        return _executor


# The response header every statistics answer carries.
AGE = OpenApiParameter("Age", int, OpenApiParameter.HEADER, response=[200],
                       description="Seconds since these figures were computed (they are cached).")


class TaskSummaryView(ApiViewMixin, APIView):
    @extend_schema(responses={200: TaskSummarySerializer}, parameters=[AGE],
                   summary="Tasks by status, overall and per department")
    def get(self, request):
        return cached("task_summary", queries.task_summary).response()


class DepartmentWorkloadView(ApiViewMixin, APIView):
    @extend_schema(responses={200: DepartmentWorkloadSerializer}, parameters=[AGE],
                   summary="Per department: pending, in progress, completed today, operators, tasks per operator")
    def get(self, request):
        return cached("department_workload", queries.department_workload).response()


class CollaborationView(ApiViewMixin, APIView):
    @extend_schema(responses={200: CollaborationSerializer}, parameters=[AGE],
                   summary="Hand-offs between departments and work orders waiting on each department")
    def get(self, request):
        return cached("collaboration", queries.collaboration).response()
