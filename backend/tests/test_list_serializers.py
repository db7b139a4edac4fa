"""The fast lists give exactly DRF's generic output, from exactly the columns the list query loads.

TaskSerializer and WorkOrderSerializer compile their fields into a fast to_representation and derive
the list's select_related()/only() from the same fields (core/serializers.py). Here both outputs are
compared row by row (keys, order and values) on seeded data: several hundred rows in every status,
with null fields, in three time zones. The generic output is computed without a single query, so the
derived only() covers every field the serializer reads.
"""

import datetime
import zoneinfo

import pytest
from django.db import connection
from django.db.models import Prefetch
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework import serializers

from tests import domain_builders as b
from workorder.core.serializers import FastModelSerializer, _converter
from workorder.production import seeding, services
from workorder.production.models import ProgressReport, Task, WorkOrder
from workorder.production.serializers import (
    TaskDetailSerializer,
    TaskSerializer,
    WorkOrderDetailSerializer,
    WorkOrderSerializer,
)
from workorder.production.states import ApprovalStatus, TaskStatus, WorkOrderStatus

pytestmark = pytest.mark.django_db

TIME_ZONES = ["UTC", "Asia/Kathmandu", "America/St_Johns"]  # +05:45 and -03:30 (-02:30 in summer)


def generic(serializer_class, instance) -> dict:
    """DRF's own Serializer.to_representation (the loop over every field), bypassing the fast one."""
    return serializers.ModelSerializer.to_representation(serializer_class(instance), instance)


@pytest.fixture
def seeded():
    catalog = seeding.seed_catalog()
    users = seeding.seed_demo_users(catalog, "pw-123456")
    seeding.seed_work_orders(150, catalog, users["makers"], users["operators"], seed=7)
    supervisor = users["supervisors"][0]
    # decided through the services, so approved_by is set too (seeding leaves it empty)
    for work_order in WorkOrder.objects.filter(approval_status=ApprovalStatus.PENDING).order_by("id")[:4]:
        services.approve_work_order(supervisor, work_order.pk)
    rejected = b.work_order(users["makers"][0], catalog.products[0])
    services.reject_work_order(supervisor, rejected.pk, "No capacity — Ünïcødé")
    # a state the seeding does not produce (yet) still gets rows
    for model, field, states in ((Task, "status", TaskStatus), (WorkOrder, "status", WorkOrderStatus),
                                 (WorkOrder, "approval_status", ApprovalStatus)):
        seen = set(model.objects.values_list(field, flat=True).distinct())
        for index, state in enumerate(state for state in states.values if state not in seen):
            model.objects.filter(pk__in=model.objects.order_by("id").values("pk")[index * 3:index * 3 + 3]).update(
                **{field: state})
    return users


def compare(serializer_class, rows, tuples=None) -> int:
    """Fast output (from instances, and from list_rows() tuples when given) == DRF's generic output."""
    compared = 0
    for position, row in enumerate(rows):
        with CaptureQueriesContext(connection) as queries:
            expected = generic(serializer_class, row)
        assert queries.captured_queries == [], f"the list query did not load everything: {queries.captured_queries}"
        fast = serializer_class(row).data
        assert list(fast.items()) == list(expected.items()), (row.pk, fast, expected)
        if tuples is not None:
            from_row = serializer_class(tuples[position]).data
            assert list(from_row.items()) == list(expected.items()), (row.pk, from_row, expected)
        compared += 1
    return compared


@pytest.mark.parametrize("zone", TIME_ZONES)
def test_task_list_fast_output_is_drfs_generic_output(seeded, zone):
    rows = list(TaskSerializer.list_queryset().order_by("id"))
    tuples = list(TaskSerializer.list_rows().order_by("id"))
    assert len(rows) >= 300 and all(type(row) is tuple for row in tuples)
    assert {row.status for row in rows} == set(TaskStatus.values)
    assert any(row.assigned_operator_id is None for row in rows) and any(row.completed_at is None for row in rows)
    with timezone.override(zoneinfo.ZoneInfo(zone)):
        assert compare(TaskSerializer, rows, tuples) == len(rows)
        sample = TaskSerializer(rows[0]).data
    if zone != "UTC":
        assert not sample["created_at"].endswith("Z")  # really rendered in that zone


@pytest.mark.parametrize("zone", TIME_ZONES)
def test_work_order_list_fast_output_is_drfs_generic_output(seeded, zone):
    rows = list(WorkOrderSerializer.list_queryset().order_by("id"))
    tuples = list(WorkOrderSerializer.list_rows().order_by("id"))
    assert len(rows) >= 150 and all(type(row) is tuple for row in tuples)
    assert {row.status for row in rows} == set(WorkOrderStatus.values)
    assert {row.approval_status for row in rows} == set(ApprovalStatus.values)
    assert any(row.approved_by_id is None for row in rows) and any(row.approved_by_id for row in rows)
    assert any(row.rejection_reason for row in rows) and any(row.completed_at is None for row in rows)
    with timezone.override(zoneinfo.ZoneInfo(zone)):
        assert compare(WorkOrderSerializer, rows, tuples) == len(rows)


def test_detail_serializers_add_their_nested_lists_to_the_fast_fields(seeded):
    tasks = list(TaskSerializer.list_queryset().filter(completed_quantity__gt=0).order_by("id")[:30].prefetch_related(
        Prefetch("progress_reports", queryset=ProgressReport.objects.select_related("operator"))))
    orders = list(WorkOrderSerializer.list_queryset().filter(tasks__isnull=False).distinct().order_by("id")[:30]
                  .prefetch_related(Prefetch("tasks", queryset=Task.objects.select_related("process"))))
    with timezone.override(zoneinfo.ZoneInfo("Asia/Kathmandu")):
        assert compare(TaskDetailSerializer, tasks) == 30
        assert compare(WorkOrderDetailSerializer, orders) == 30
    assert all(TaskDetailSerializer(task).data["progress_reports"] for task in tasks)


def test_the_list_query_joins_what_the_fields_read_and_loads_nothing_else():
    query = str(TaskSerializer.list_queryset().query)
    for table in ("production_workorder", "catalog_process", "catalog_department", "accounts_user"):
        assert f'JOIN "{table}"' in query
    for unread in ('"production_workorder"."rejection_reason"', '"accounts_user"."password"',
                   '"catalog_process"."description"', '"catalog_department"."code"'):
        assert unread not in query


def test_a_relation_that_is_none_follows_drfs_rules(db):
    """Through a null foreign key: a field with a default gives it, a nullable one gives None, a
    read-only one without either is left out, like DRF's SkipField."""

    class Probe(FastModelSerializer):
        with_default = serializers.CharField(source="assigned_operator.username", read_only=True, default="nobody")
        nullable = serializers.CharField(source="assigned_operator.email", read_only=True, allow_null=True)
        left_out = serializers.CharField(source="assigned_operator.first_name", read_only=True)

        class Meta:
            model = Task
            fields = ["id", "assigned_operator", "with_default", "nullable", "left_out", "started_at"]

    shop = b.Shop()
    first, _ = shop.tasks(shop.approved())
    task = Probe.list_queryset().get(pk=first.pk)
    row = Probe.list_rows().get(pk=first.pk)
    assert Probe(task).data == Probe(row).data == generic(Probe, task) == {
        "id": first.pk, "assigned_operator": None, "with_default": "nobody", "nullable": None, "started_at": None}
    services.claim_task(shop.cut_op, first.pk)
    task = Probe.list_queryset().get(pk=first.pk)
    row = Probe.list_rows().get(pk=first.pk)
    assert Probe(task).data == Probe(row).data == generic(Probe, task)
    assert Probe(task).data["left_out"] == shop.cut_op.first_name


def test_list_rows_fall_back_to_instances_when_a_field_needs_drfs_generic_code(db):
    class WithMethod(FastModelSerializer):
        label = serializers.SerializerMethodField()

        class Meta:
            model = Task
            fields = ["id", "label"]

        def get_label(self, task):
            return f"task {task.pk}"

    assert WithMethod.list_rows().query.values_select == ()  # model instances, not rows
    assert TaskSerializer.list_rows().query.values_select  # every task list field is compiled


@pytest.mark.parametrize("zone", TIME_ZONES)
def test_the_compiled_datetime_converter_renders_what_drfs_datetimefield_renders(zone):
    drf_field = serializers.DateTimeField()
    convert, zoned = _converter(drf_field)
    assert zoned  # the fast path is the one under test
    utc = datetime.UTC
    values = [
        datetime.datetime(2026, 3, 29, 0, 59, 59, 999999, tzinfo=utc),  # European DST change
        datetime.datetime(2026, 11, 1, 5, 30, tzinfo=utc),  # North American DST change
        datetime.datetime(2026, 6, 1, 12, 0, tzinfo=zoneinfo.ZoneInfo("Asia/Kathmandu")),
        datetime.datetime(1, 1, 1, 0, 0, tzinfo=utc),
        datetime.datetime(2026, 6, 1, 12, 0),  # naive: DRF's make_aware path
        "2026-06-01T12:00:00Z",  # strings pass through
    ]
    with timezone.override(zoneinfo.ZoneInfo(zone)):
        current = timezone.get_current_timezone()
        for value in values:
            try:
                expected = drf_field.to_representation(value)
            except serializers.ValidationError as error:  # year 1 west of UTC: DRF's overflow error
                with pytest.raises(serializers.ValidationError) as raised:
                    convert(value, current)
                assert raised.value.detail == error.detail
                continue
            assert convert(value, current) == expected, value


def test_datetime_fields_with_their_own_format_or_zone_keep_drfs_code():
    for drf_field in (serializers.DateTimeField(format="%Y"), serializers.DateTimeField(default_timezone=datetime.UTC),
                      serializers.DateTimeField(format=None)):
        convert, zoned = _converter(drf_field)
        assert not zoned and convert == drf_field.to_representation
