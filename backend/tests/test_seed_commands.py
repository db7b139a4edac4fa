"""seed_demo and seed_loadtest: consistent data in every state, idempotent, production guard."""

import io

import pytest
from django.contrib.auth import authenticate
from django.core.management import CommandError, call_command
from django.db.models import Sum

from workorder.accounts.models import User
from workorder.production.models import ProgressReport, Task, WorkOrder

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _development_settings(settings):
    """The seed commands run on development databases (DEBUG on, like run-dev.sh); the production-guard
    tests below switch DEBUG off themselves."""
    settings.DEBUG = True


def assert_consistent():
    # reports sum to completed quantities
    sums = dict(ProgressReport.objects.values("task").annotate(s=Sum("quantity")).values_list("task", "s"))
    for task in Task.objects.all():
        assert task.completed_quantity == sums.get(task.pk, 0)
        assert task.completed_quantity <= task.planned_quantity
        if task.status in ("in_progress", "completed"):
            assert task.assigned_operator is not None
            assert task.assigned_operator.department_id == task.assigned_department_id
        if task.status == "completed":
            assert task.completed_at is not None
    # step gating: a step never has more than the previous one
    for wo in WorkOrder.objects.filter(approval_status="approved").prefetch_related("tasks"):
        done = [t.completed_quantity for t in sorted(wo.tasks.all(), key=lambda t: t.sequence)]
        assert done and done == sorted(done, reverse=True)
        statuses = {t.status for t in wo.tasks.all()}
        if wo.status == "completed":
            assert statuses == {"completed"}
        if wo.status == "cancelled":
            assert statuses == {"cancelled"}
    assert not Task.objects.exclude(work_order__approval_status="approved").exists()


def test_seed_demo_creates_catalog_users_and_orders_in_every_state_consistently():
    call_command("seed_demo", "--work-orders", "150", "--password", "demo-pass-1", verbosity=0)
    assert WorkOrder.objects.count() == 150
    assert set(WorkOrder.objects.values_list("status", flat=True)) == {"open", "in_progress", "completed", "cancelled"}
    assert set(WorkOrder.objects.values_list("approval_status", flat=True)) == {"pending", "approved", "rejected"}
    assert set(Task.objects.values_list("status", flat=True)) == {"pending", "in_progress", "completed", "cancelled"}
    assert WorkOrder.objects.filter(approval_status="rejected").exclude(rejection_reason="").exists()
    for username in ("test_supervisor", "test_operator", "test_maker", "admin"):
        assert authenticate(username=username, password="demo-pass-1") is not None
    assert User.objects.get(username="admin").is_superuser
    assert User.objects.get(username="test_operator").department_id is not None
    numbers = list(WorkOrder.objects.values_list("number", flat=True))
    assert len(set(numbers)) == 150 and all(n.startswith("WO-") for n in numbers)
    assert_consistent()


def test_seed_demo_is_idempotent_and_tops_up():
    call_command("seed_demo", "--work-orders", "20", "--password", "pw-one-234", verbosity=0)
    users = User.objects.count()
    call_command("seed_demo", "--work-orders", "20", "--password", "pw-one-234", verbosity=0)
    assert WorkOrder.objects.count() == 20 and User.objects.count() == users
    call_command("seed_demo", "--work-orders", "30", "--password", "pw-two-234", verbosity=0)
    assert WorkOrder.objects.count() == 30
    assert authenticate(username="test_maker", password="pw-one-234") is not None  # kept: no --reset-passwords
    call_command("seed_demo", "--work-orders", "30", "--password", "pw-two-234", "--reset-passwords", verbosity=0)
    assert authenticate(username="test_maker", password="pw-two-234") is not None
    assert_consistent()


def test_seed_demo_refuses_production_like_database_without_force(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="refusing to seed demo data: this database looks like production "
                                           r"\(DEBUG is off\)"):
        call_command("seed_demo", "--work-orders", "0", verbosity=0)
    assert not User.objects.filter(username="admin").exists()
    call_command("seed_demo", "--work-orders", "0", "--password", "forced-pw-1", "--force", verbosity=0)
    assert authenticate(username="admin", password="forced-pw-1") is not None


def test_seed_demo_refuses_when_many_real_users_exist_even_in_debug():
    for n in range(8):
        User.objects.create_user(username=f"real-person-{n}", password="x")
    with pytest.raises(CommandError, match="8 users are neither load-test nor demo users"):
        call_command("seed_demo", "--work-orders", "0", verbosity=0)
    assert not User.objects.filter(username="test_operator").exists()


def test_seed_demo_keeps_an_existing_superusers_password_and_says_so():
    User.objects.create_superuser(username="admin", password="the-real-admin-secret")
    out = io.StringIO()
    call_command("seed_demo", "--work-orders", "0", stdout=out, verbosity=0)
    assert authenticate(username="admin", password="the-real-admin-secret") is not None
    assert authenticate(username="admin", password="workorder-dev") is None
    assert authenticate(username="test_operator", password="workorder-dev") is not None  # new users get it
    assert "1 demo users already existed and kept their passwords (admin)" in out.getvalue()
    assert "--reset-passwords" in out.getvalue()


def test_seed_demo_resets_existing_passwords_only_with_the_flag_and_says_so():
    User.objects.create_superuser(username="admin", password="the-real-admin-secret")
    out = io.StringIO()
    call_command("seed_demo", "--work-orders", "0", "--password", "new-demo-pw", "--reset-passwords", stdout=out,
                 verbosity=0)
    assert authenticate(username="admin", password="new-demo-pw") is not None
    assert "set --password on 1 existing demo users (admin) because of --reset-passwords" in out.getvalue()


def test_seeded_numbers_do_not_collide_with_later_api_created_orders():
    call_command("seed_demo", "--work-orders", "5", "--password", "pw-one-234", verbosity=0)
    from workorder.production import services

    number = services.next_work_order_number()
    assert not WorkOrder.objects.filter(number=number).exists()


def test_seed_loadtest_creates_numbered_users_round_robin_over_departments():
    call_command("seed_loadtest", "--operators", "7", "--supervisors", "3", "--makers", "2", "--password", "lt-pass",
                 "--work-orders", "25", "--force", verbosity=0)
    operators = list(User.objects.filter(username__startswith="loadtest-operator-").order_by("username"))
    assert [u.username for u in operators] == [f"loadtest-operator-{n:04d}" for n in range(1, 8)]
    assert {u.role for u in operators} == {"operator"}
    assert len({u.department_id for u in operators}) == 5  # 7 spread over 5 departments
    assert User.objects.filter(username="loadtest-supervisor-0003", role="supervisor").exists()
    assert User.objects.filter(username="loadtest-maker-0002", role="maker").exists()
    assert authenticate(username="loadtest-operator-0007", password="lt-pass") is not None
    assert WorkOrder.objects.filter(created_by__username__startswith="loadtest-maker-").count() == 25
    assert_consistent()
    call_command("seed_loadtest", "--operators", "7", "--supervisors", "3", "--makers", "2", "--password", "lt-pass",
                 "--work-orders", "25", "--force", verbosity=0)
    assert User.objects.filter(username__startswith="loadtest-").count() == 12
    assert WorkOrder.objects.count() == 25


def test_seed_loadtest_refuses_production_like_database_without_force(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="looks like production"):
        call_command("seed_loadtest", "--operators", "1", "--supervisors", "1", "--makers", "1",
                     "--password", "x", verbosity=0)
    assert not User.objects.filter(username__startswith="loadtest-").exists()


def test_seed_loadtest_refuses_when_many_real_users_exist_even_in_debug(settings):
    settings.DEBUG = True
    for n in range(8):
        User.objects.create_user(username=f"real-person-{n}", password="x")
    with pytest.raises(CommandError, match="8 users are neither"):
        call_command("seed_loadtest", "--operators", "1", "--supervisors", "1", "--makers", "1",
                     "--password", "x", verbosity=0)
    call_command("seed_loadtest", "--operators", "1", "--supervisors", "1", "--makers", "1",
                 "--password", "x", "--force", verbosity=0)
    assert User.objects.filter(username="loadtest-operator-0001").exists()


def test_seed_loadtest_allowed_in_debug_on_a_fresh_database(settings):
    settings.DEBUG = True
    call_command("seed_loadtest", "--operators", "2", "--supervisors", "1", "--makers", "1", "--password", "x",
                 verbosity=0)
    assert User.objects.filter(username__startswith="loadtest-").count() == 4
