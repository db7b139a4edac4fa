"""Repeated SELECTs run as server-side prepared statements on PostgreSQL (core/prepared.py)."""

import pytest
from django.db import connection, transaction

from tests import domain_builders as b
from workorder.core import prepared
from workorder.production.models import Task

pytestmark = pytest.mark.django_db(transaction=True)


def prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE name LIKE 'workorder_%%'")
        return [row[0] for row in cursor.fetchall()]


def test_placeholders_become_numbered_parameters_and_literal_percent_signs_stay():
    assert prepared.to_prepare_body("SELECT a FROM t WHERE b = %s AND c LIKE '5%%' AND d = %s") == (
        "SELECT a FROM t WHERE b = $1 AND c LIKE '5%' AND d = $2", 2)


def test_a_select_repeated_on_a_connection_is_prepared_once_and_answers_the_same():
    shop = b.Shop()
    shop.approved()
    connection.close()  # a fresh connection: the wrapper is installed when it is created
    answers = [sorted(Task.objects.filter(assigned_department=shop.cutting).values_list("pk", flat=True))
               for _ in range(4)]
    assert answers[0] and all(answer == answers[0] for answer in answers)
    statements = prepared_statements()
    assert len([s for s in statements if '"production_task"' in s]) == 1, statements
    assert any("$1" in s for s in statements)


def test_the_api_answers_the_same_with_prepared_statements():
    shop = b.Shop()
    for _ in range(3):
        shop.approved()
    api = b.client(shop.admin)
    connection.close()
    bodies = [api.get("/api/tasks/?page_size=2").json() for _ in range(4)]
    assert all(body == bodies[0] for body in bodies)
    assert bodies[0]["count"] == 6
    assert any('"production_task"' in s for s in prepared_statements())


def test_nothing_is_prepared_inside_a_transaction():
    shop = b.Shop()
    shop.approved()
    connection.close()
    with transaction.atomic():
        for _ in range(4):
            list(Task.objects.filter(assigned_department=shop.welding).values_list("pk", flat=True))
    assert not [s for s in prepared_statements() if '"production_task"' in s]


def test_a_table_changed_under_a_prepared_plan_falls_back_to_a_plain_query():
    shop = b.Shop()
    shop.approved()
    connection.close()

    def query():
        return list(Task.objects.filter(assigned_department=shop.cutting).values_list("pk", "status"))

    expected = query()
    query()  # prepared now
    with connection.cursor() as cursor:  # the result type of the prepared plan changes
        cursor.execute("ALTER TABLE production_task ALTER COLUMN status TYPE varchar(30)")
    try:
        assert query() == expected
        assert not [s for s in prepared_statements() if '"production_task"' in s]  # deallocated, ran plain
        assert query() == expected
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE production_task ALTER COLUMN status TYPE varchar(12)")
