"""List pages read with statements compiled once per process (core/pagination.py, ListPageMixin)."""

import pytest
from django.core.cache import cache
from django.db.models.sql.compiler import SQLCompiler

from tests import domain_builders as b
from workorder.core import pagination
from workorder.production.models import Task, TaskStatus

pytestmark = pytest.mark.django_db

PATHS = [
    "/api/tasks/",
    "/api/tasks/?status=pending",
    "/api/tasks/?ordering=-sequence&page_size=3&page=2",
    "/api/tasks/?process=1&assigned_operator=2",
    "/api/workorders/",
    "/api/workorders/?approval_status=approved&page_size=2&page=3",
    "/api/workorders/?ordering=delivery_date",
]


@pytest.fixture
def shop():
    cache.clear()
    pagination.counts.clear_local()
    pagination.statements.clear()
    shop = b.Shop()
    shop.cut_sup2 = b.supervisor(shop.cutting)
    shop.work_order = b.work_order(shop.maker, shop.product)  # awaiting approval: supervisors see it
    for _ in range(6):
        shop.approved()  # 12 tasks, 6 orders
    return shop


def users(shop):
    return [shop.cut_op, shop.cut_op2, shop.weld_op, shop.cut_sup, shop.cut_sup2, shop.weld_sup, shop.maker,
            shop.other_maker, shop.admin]


def compiled(user, path):
    """The statements one request of `user` compiles, from an empty cache: {key: (sql, params)}, pages
    and COUNTs."""
    pagination.statements.clear()
    cache.clear()
    pagination.counts.clear_local()
    response = b.client(user).get(path)
    assert response.status_code in (200, 404), response.content  # 404: a page past this user's last
    return {**{key: (statement.sql, statement.params) for key, statement in pagination.statements.pages.items()},
            **{("count", key): (statement.sql, statement.params)
               for key, statement in pagination.statements.counts.items()}}


@pytest.mark.parametrize("path", PATHS)
def test_users_with_equal_visibility_scopes_compile_the_same_statement(shop, path):
    """A page's statement is shared by every user with the page's key (view, scope, parameters, slice):
    each user's own compilation must give the same SQL and parameters, or one would read another's rows."""
    seen = {}
    for user in users(shop):
        statements = compiled(user, path)
        for key, statement in statements.items():
            assert seen.setdefault(key, statement) == statement, (key, user.username)
    scopes = {key[1][1] if key[0] == "count" else key[0][1] for key in seen}
    assert len(scopes) >= 3, scopes  # every view and page: several scopes (admins, departments, makers)
    if "page=" in path:  # a later page needs the COUNT: it was kept too
        assert any(key[0] == "count" for key in seen)


@pytest.mark.parametrize("path", PATHS)
def test_a_compiled_page_answers_what_a_freshly_built_one_answers(shop, path):
    api = b.client(shop.cut_sup)
    first = api.get(path).json()
    assert pagination.statements.pages
    again = api.get(path).json()  # the statement from the cache
    pagination.statements.clear()
    fresh = api.get(path).json()  # built and compiled again
    assert first == again == fresh


def test_a_compiled_page_builds_and_compiles_nothing_and_reads_current_rows(shop, monkeypatch):
    api = b.client(shop.cut_sup)
    path = "/api/tasks/?status=pending&page_size=5"
    before = api.get(path).json()
    compiles = []
    original = SQLCompiler.as_sql
    monkeypatch.setattr(SQLCompiler, "as_sql", lambda self, *a, **kw: compiles.append(self) or original(self, *a, **kw))

    def no_building(self):
        raise AssertionError("get_queryset ran for a compiled page")

    from workorder.production.views import TaskViewSet

    monkeypatch.setattr(TaskViewSet, "get_queryset", no_building)
    first_row = before["results"][0]
    Task.objects.filter(pk=first_row["id"]).update(status=TaskStatus.CANCELLED)
    after = api.get(path).json()
    assert compiles == []  # the count came from the count cache, the page from its statement
    assert first_row["id"] not in [row["id"] for row in after["results"]]  # current rows, not remembered ones
    assert [row["id"] for row in after["results"]][:4] == [row["id"] for row in before["results"]][1:]


def test_a_count_cache_miss_on_a_compiled_list_builds_and_compiles_nothing_and_counts_current_rows(
        shop, monkeypatch):
    api = b.client(shop.admin)
    path = "/api/tasks/?page_size=5&page=2"
    assert api.get(path).json()["count"] == 12
    assert len(pagination.statements.counts) == 1
    shop.approved()  # 14 tasks
    cache.clear()
    pagination.counts.clear_local()  # the count cache misses: the kept statement counts
    compiles = []
    original = SQLCompiler.as_sql
    monkeypatch.setattr(SQLCompiler, "as_sql", lambda self, *a, **kw: compiles.append(self) or original(self, *a, **kw))

    from workorder.production.views import TaskViewSet

    monkeypatch.setattr(TaskViewSet, "get_queryset", lambda self: pytest.fail("get_queryset ran for a kept COUNT"))
    body = api.get(path).json()
    assert compiles == []
    assert body["count"] == 14 and len(body["results"]) == 5


def test_a_count_that_ran_no_statement_keeps_none_and_one_that_ran_one_keeps_it(shop):
    from workorder.core.statements import CountStatement

    queryset = Task.objects.none()
    assert CountStatement.count(queryset) == (0, None)  # known empty: no SQL ran
    value, statement = CountStatement.count(Task.objects.all())
    assert value == 12 and statement.value() == 12 and "COUNT" in statement.sql.upper()


def test_an_invalid_filter_is_a_400_every_time_and_compiles_nothing(shop):
    api = b.client(shop.cut_sup)
    for _ in range(2):
        response = api.get("/api/tasks/?process=abc")
        assert response.status_code == 400 and "process" in response.json()["errors"]
    assert pagination.statements.pages == {}
    assert api.get("/api/tasks/?process=1").status_code == 200
    assert api.get("/api/tasks/?process=0").status_code == 400  # a known view and scope, new parameters


def test_the_last_page_reads_every_row_when_the_count_grows(shop):
    api = b.client(shop.admin)
    path = "/api/tasks/?page_size=5&page=3"
    assert len(api.get(path).json()["results"]) == 2  # 12 tasks
    shop.approved()  # 14 tasks
    cache.clear()
    pagination.counts.clear_local()
    body = api.get(path).json()
    assert body["count"] == 14 and len(body["results"]) == 4


def test_the_statement_cache_is_bounded(shop, monkeypatch):
    monkeypatch.setattr(pagination._Statements, "MAX_KEYS", 3)
    api = b.client(shop.admin)
    for size in range(1, 6):
        assert api.get(f"/api/tasks/?page_size={size}").status_code == 200
    assert 0 < len(pagination.statements.pages) <= 3


def test_a_long_query_string_is_answered_without_keeping_a_statement(shop):
    api = b.client(shop.admin)
    long = "x" * 600
    body = api.get(f"/api/tasks/?page_size=5&note={long}").json()
    assert body["count"] == 12 and len(body["results"]) == 5
    assert pagination.statements.pages == {}


# --- a task, a write's answer: statements with the primary key as parameter (core/statements.py) -------
def test_users_with_equal_visibility_scopes_compile_the_same_task_statement(shop):
    from workorder.core import statements

    task = shop.tasks(shop.approved())[0]
    seen = {}
    for user in users(shop):
        statements.clear()
        b.client(user).get(f"/api/tasks/{task.pk}/")  # 200 or 404: compiled either way
        for shape, template in statements._templates.items():
            if template is not None:
                compiled = (template.statement.sql, template.statement.params, template.index)
                assert seen.setdefault(shape, compiled) == compiled, (shape, user.username)
    assert len({shape[1] for shape in seen if shape[0] == "task-detail"}) >= 4


def test_a_task_reads_what_the_orm_and_drf_read(shop):
    import json

    from django.db.models import Prefetch
    from rest_framework.renderers import JSONRenderer

    from workorder.production import services
    from workorder.production.models import ProgressReport
    from workorder.production.serializers import TaskDetailSerializer

    first, second = shop.tasks(shop.approved(quantity=9))
    services.claim_task(shop.cut_op, first.pk)
    for quantity in (2, 3, 1):
        services.update_progress(shop.cut_op, first.pk, quantity)
    for task in (first, second):
        for _ in range(2):  # compiled, then from the statement
            body = b.client(shop.admin).get(f"/api/tasks/{task.pk}/").json()
            reference = TaskDetailSerializer(Task.objects.prefetch_related(Prefetch(
                "progress_reports", ProgressReport.objects.select_related("operator").order_by("-created_at", "-id"),
            )).get(pk=task.pk)).data
            assert body == json.loads(JSONRenderer().render(reference))
    assert [report["quantity"] for report in body["progress_reports"]] == []
    assert [r["quantity"] for r in b.client(shop.cut_op).get(f"/api/tasks/{first.pk}/").json()["progress_reports"]] == [
        1, 3, 2]


@pytest.mark.parametrize("key", ["abc", "0", "-1", "1.5", "99999999999999999999", "%20"])
def test_a_task_key_no_row_can_have_is_a_404(shop, key):
    response = b.client(shop.admin).get(f"/api/tasks/{key}/")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_a_task_outside_your_scope_is_a_404_even_once_compiled(shop):
    cutting, welding = shop.tasks(shop.approved())
    api = b.client(shop.cut_op)
    assert api.get(f"/api/tasks/{cutting.pk}/").status_code == 200
    assert api.get(f"/api/tasks/{welding.pk}/").status_code == 404
    assert b.client(shop.weld_op).get(f"/api/tasks/{welding.pk}/").status_code == 200


def test_a_write_answers_the_task_as_the_list_shows_it(shop):
    first, _ = shop.tasks(shop.approved())
    api = b.client(shop.cut_sup)
    answer = api.post(f"/api/tasks/{first.pk}/assign/", {"operator_id": shop.cut_op.pk}, format="json").json()
    [listed] = [row for row in api.get("/api/tasks/?page_size=100").json()["results"] if row["id"] == first.pk]
    assert answer == listed and answer["assigned_operator"] == shop.cut_op.pk


def test_a_shape_whose_key_is_not_one_parameter_is_read_through_the_orm(shop):
    from django.db.models import Q

    from workorder.core import statements
    from workorder.production.serializers import TaskSerializer

    first, second = shop.tasks(shop.approved())

    def queryset_for(key):  # the key twice among the parameters: no template
        return TaskSerializer.list_rows(Task.objects.filter(Q(pk=key) | Q(pk=key + 0)))

    for task in (first, second):
        [row] = statements.rows_by_pk(("test-two-keys",), queryset_for, task.pk)
        assert row[0] == task.pk
    assert statements._templates[("test-two-keys",)] is None


def test_writes_check_visibility_with_one_statement_per_scope_and_404_outside_it(shop):
    """A write's 404 check is shared by the users of one visibility scope: each user's own compilation
    gives the same SQL, and a row outside a user's scope stays a 404 after another user's request
    compiled the shape (the writes below change nothing: 404, 400 or 409)."""
    from workorder.core import statements

    cutting, welding = shop.tasks(shop.approved())
    order = shop.work_order  # awaiting approval
    writes = [f"/api/tasks/{cutting.pk}/complete/", f"/api/tasks/{welding.pk}/complete/",
              f"/api/workorders/{order.pk}/reject/"]  # no reason: a 400 once visible
    seen, answers = {}, {}
    for user in users(shop):
        statements.clear()
        answers[user.username] = [b.client(user).post(path, {}, format="json").status_code for path in writes]
        for shape, template in statements._templates.items():
            if template is not None and shape[0].endswith("-visible"):
                compiled = (template.statement.sql, template.statement.params, template.index)
                assert seen.setdefault(shape, compiled) == compiled, (shape, user.username)
    assert len({shape[1] for shape in seen if shape[0] == "production.task-visible"}) >= 4
    assert answers[shop.cut_op.username][:2] == [403, 404] and answers[shop.weld_op.username][:2] == [404, 403]
    assert answers[shop.other_maker.username] == [404, 404, 404]
    assert answers[shop.admin.username] == [409, 409, 400]
    for user in users(shop):  # every shape compiled now, by whoever came first: the same answers
        assert [b.client(user).post(path, {}, format="json").status_code for path in writes] == answers[user.username]


def test_department_supervisors_read_by_statement_follow_the_current_rows(shop):
    """The recipients of a task event: compiled once, read fresh each time (a supervisor deactivated or
    added since counts at once), equal to the ORM's answer for one or several departments."""
    from workorder.accounts.models import Role, User
    from workorder.notifications.handlers import supervisor_ids

    def orm(*departments):
        return list(User.objects.filter(role=Role.SUPERVISOR, is_active=True, department__in=departments)
                    .order_by("id").values_list("id", flat=True))

    cutting = shop.cutting.pk
    assert supervisor_ids([cutting]) == orm(cutting) == [shop.cut_sup.pk, shop.cut_sup2.pk]
    User.objects.filter(pk=shop.cut_sup.pk).update(is_active=False)
    newcomer = b.supervisor(shop.cutting)
    assert supervisor_ids([cutting]) == orm(cutting) == [shop.cut_sup2.pk, newcomer.pk]
    assert supervisor_ids({cutting, shop.welding.pk}) == orm(cutting, shop.welding.pk)
    assert supervisor_ids([shop.welding.pk]) == orm(shop.welding.pk) == [shop.weld_sup.pk]
