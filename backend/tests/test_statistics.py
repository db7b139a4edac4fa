"""Statistics endpoints: correct aggregates, cached for STATISTICS_CACHE_SECONDS or by their cost, with their age."""

import datetime as dt

import pytest
from django.core.cache import cache
from django.utils import timezone

from tests import domain_builders as b
from workorder.production import services
from workorder.production.models import Task
from workorder.production.states import TaskStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop(settings):
    settings.STATISTICS_CACHE_SECONDS = 0
    cache.clear()
    shop = b.Shop()
    # order A: cutting done (handed over), welding claimed
    shop.a = shop.approved(quantity=2)
    a1, a2 = shop.tasks(shop.a)
    services.claim_task(shop.cut_op, a1.pk)
    services.update_progress(shop.cut_op, a1.pk, 2)
    services.claim_task(shop.weld_op, a2.pk)
    # order B: nothing started
    shop.b = shop.approved(quantity=3)
    # a pending order (no tasks) does not count anywhere
    b.work_order(shop.maker, shop.product)
    return shop


def by_department(rows, shop):
    return {r["department"]: r for r in rows if r["department"] in (shop.cutting.pk, shop.welding.pk)}


def test_task_summary_counts_tasks_by_status_overall_and_per_department(shop):
    body = b.client(shop.cut_op).get("/api/statistics/task_summary/").json()
    # one count per task status, 0 where there is none (cancelled here)
    assert body["by_status"] == {**dict.fromkeys(TaskStatus.values, 0), "pending": 2, "in_progress": 1, "completed": 1}
    assert list(body["by_status"]) == list(TaskStatus.values)
    assert body["total"] == 4
    rows = by_department(body["departments"], shop)
    assert rows[shop.cutting.pk]["completed"] == 1 and rows[shop.cutting.pk]["pending"] == 1
    assert rows[shop.welding.pk]["in_progress"] == 1 and rows[shop.welding.pk]["total"] == 2
    assert rows[shop.cutting.pk]["department_name"] == shop.cutting.name


def test_department_workload_counts_pending_in_progress_completed_today_and_operators(shop):
    old = Task.objects.filter(work_order=shop.b, sequence=1).get()
    services.claim_task(shop.cut_op2, old.pk)
    services.update_progress(shop.cut_op2, old.pk, 3)
    Task.objects.filter(pk=old.pk).update(completed_at=timezone.now() - dt.timedelta(days=3))
    body = b.client(shop.maker).get("/api/statistics/department_workload/").json()
    rows = by_department(body["departments"], shop)
    cutting, welding = rows[shop.cutting.pk], rows[shop.welding.pk]
    assert (cutting["pending"], cutting["in_progress"], cutting["completed_today"]) == (0, 0, 1)
    assert cutting["operators"] == 2 and cutting["tasks_per_operator"] == 0
    assert (welding["pending"], welding["in_progress"], welding["completed_today"]) == (1, 1, 0)
    assert welding["operators"] == 1 and welding["tasks_per_operator"] == 2.0


def test_collaboration_counts_handoffs_between_departments_and_orders_waiting(shop):
    body = b.client(shop.weld_sup).get("/api/statistics/collaboration/").json()
    pairs = [h for h in body["handoffs"] if h["from_department"] == shop.cutting.pk]
    assert pairs == [{
        "from_department": shop.cutting.pk, "from_department_name": shop.cutting.name,
        "to_department": shop.welding.pk, "to_department_name": shop.welding.name,
        "handoffs": 2, "completed": 1, "pending": 1,
    }]
    waiting = {w["department"]: w["work_orders"] for w in body["waiting"]}
    assert waiting[shop.cutting.pk] == 1  # order B waits on cutting
    assert waiting[shop.welding.pk] == 1  # order A moved on to welding


def test_statistics_are_cached_for_the_configured_seconds(shop, settings):
    settings.STATISTICS_CACHE_SECONDS = 60
    api = b.client(shop.admin)
    before = api.get("/api/statistics/task_summary/").json()
    shop.approved()
    assert api.get("/api/statistics/task_summary/").json() == before  # served from cache
    settings.STATISTICS_CACHE_SECONDS = 0
    assert api.get("/api/statistics/task_summary/").json()["total"] == before["total"] + 2


def test_statistics_need_authentication(shop):
    assert b.client().get("/api/statistics/collaboration/").status_code == 401


def test_stale_statistics_are_recomputed_by_one_process_while_others_get_the_stale_value(settings, monkeypatch):
    from workorder.statistics import views

    settings.STATISTICS_CACHE_SECONDS = 5
    cache.clear()
    clock = [1000.0]
    monkeypatch.setattr(views.time, "time", lambda: clock[0])
    calls = []

    def compute():
        calls.append(1)
        return {"n": len(calls)}

    assert views.cached("probe", compute).value == {"n": 1}  # a cold cache: computed in the request
    assert views.cached("probe", compute).value == {"n": 1}  # fresh: no recompute
    clock[0] += 6  # stale now
    cache.add("statistics:probe:refresh", 1, timeout=30)  # another worker is refreshing
    assert views.cached("probe", compute).value == {"n": 1}
    assert calls == [1]
    cache.delete("statistics:probe:refresh")
    # This process wins the refresh: the request still answers at once with the stale value, and the
    # aggregates run in the refresher thread.
    assert views.cached("probe", compute).value == {"n": 1}
    views._refresher().submit(lambda: None).result(timeout=10)  # the refresh queued before it is done
    assert calls == [1, 1] and cache.get("statistics:probe:refresh") is None
    assert views.cached("probe", compute).value == {"n": 2}


def test_a_failed_background_refresh_keeps_the_stale_value_and_is_retried(settings, monkeypatch, caplog):
    from workorder.statistics import views

    settings.STATISTICS_CACHE_SECONDS = 5
    cache.clear()
    clock = [1000.0]
    monkeypatch.setattr(views.time, "time", lambda: clock[0])
    results = [{"n": 1}, RuntimeError("database went away"), {"n": 3}]

    def compute():
        result = results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    assert views.cached("probe", compute).value == {"n": 1}
    clock[0] += 6
    assert views.cached("probe", compute).value == {"n": 1}  # refresh fails in the background
    views._refresher().submit(lambda: None).result(timeout=10)
    assert "refreshing statistics:probe failed" in caplog.text
    assert views.cached("probe", compute).value == {"n": 1}  # still stale: tried again
    views._refresher().submit(lambda: None).result(timeout=10)
    assert views.cached("probe", compute).value == {"n": 3}


def test_an_expensive_statistic_stays_fresh_until_its_refresh_costs_at_most_the_configured_share(settings, monkeypatch):
    """0.3 s of computing at 2 %: fresh for 15 s, not the configured 5; a cheap one for the 5 s."""
    from workorder.statistics import views

    settings.STATISTICS_CACHE_SECONDS = 5
    settings.STATISTICS_REFRESH_PERCENT = 2
    cache.clear()
    clock, counter = [1000.0], [0.0]
    monkeypatch.setattr(views.time, "time", lambda: clock[0])
    monkeypatch.setattr(views.time, "perf_counter", lambda: counter[0])
    calls = {"expensive": 0, "cheap": 0}

    def computing(name, seconds):
        def compute():
            calls[name] += 1
            counter[0] += seconds
            return {"n": calls[name]}
        return compute

    expensive, cheap = computing("expensive", 0.3), computing("cheap", 0.01)
    views.cached("expensive", expensive), views.cached("cheap", cheap)
    clock[0] += 14
    assert views.cached("expensive", expensive).value == {"n": 1}
    assert views.cached("cheap", cheap).value == {"n": 1}  # stale: refreshed in the background
    views._refresher().submit(lambda: None).result(timeout=10)
    assert calls == {"expensive": 1, "cheap": 2}
    clock[0] += 1.5  # 15.5 s after the expensive one was computed
    assert views.cached("expensive", expensive).value == {"n": 1}
    views._refresher().submit(lambda: None).result(timeout=10)
    assert calls["expensive"] == 2

    settings.STATISTICS_REFRESH_PERCENT = 100  # no bound beyond the configured seconds
    cache.clear()
    views.cached("expensive", expensive)
    clock[0] += 6
    views.cached("expensive", expensive)
    views._refresher().submit(lambda: None).result(timeout=10)
    assert calls["expensive"] == 4


def test_statistics_answers_say_how_old_they_are_in_the_age_header(shop, settings, monkeypatch):
    from workorder.statistics import views

    settings.STATISTICS_CACHE_SECONDS = 60
    clock = [1000.0]
    monkeypatch.setattr(views.time, "time", lambda: clock[0])
    api = b.client(shop.admin)
    for path in ("/api/statistics/task_summary/", "/api/statistics/department_workload/",
                 "/api/statistics/collaboration/"):
        assert api.get(path)["Age"] == "0"
    clock[0] += 42.7
    assert api.get("/api/statistics/collaboration/")["Age"] == "42"
    settings.STATISTICS_CACHE_SECONDS = 0  # not cached: computed for this answer
    assert api.get("/api/statistics/collaboration/")["Age"] == "0"


def test_a_cached_statistic_without_its_computation_time_is_computed_again(settings):
    """An entry an earlier version wrote (value and expiry only) during a rolling upgrade."""
    from workorder.statistics import views

    settings.STATISTICS_CACHE_SECONDS = 60
    cache.set("statistics:probe", {"value": {"n": 1}, "expires": 4102444800.0}, 600)
    answer = views.cached("probe", lambda: {"n": 2})
    assert answer.value == {"n": 2} and cache.get("statistics:probe")["computed"] == answer.computed
