"""Demo and load-test data: catalog, users, and work orders with tasks in every state.

Everything is inserted with bulk_create in batches (50,000 work orders take a few minutes at
most), then ANALYZE refreshes PostgreSQL's planner statistics. Re-running is idempotent: rows
are matched by their natural keys (names, usernames) and work orders are only topped up to the
requested number.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
from dataclasses import dataclass, field

from django.contrib.auth.hashers import make_password
from django.db import connection, transaction
from django.utils import timezone

from workorder.accounts.models import Role, User
from workorder.catalog.models import Customer, Department, Process, Product, RoutingStep

from .models import (
    ApprovalStatus,
    Priority,
    ProgressReport,
    Task,
    TaskStatus,
    WorkOrder,
    WorkOrderStatus,
)
from .services import format_work_order_number, reserve_numbers, work_order_number_prefix

DEPARTMENTS = [  # (name, code, processes) in the order work flows through the shop
    ("Cutting", "cutting", ["Laser cutting", "Sawing"]),
    ("Machining", "machining", ["CNC milling", "Turning"]),
    ("Welding", "welding", ["MIG welding"]),
    ("Painting", "painting", ["Powder coating"]),
    ("Assembly", "assembly", ["Final assembly", "Packing"]),
]
PRODUCTS = [
    ("BRK-100", "Wall bracket"), ("FRM-200", "Steel frame"), ("GAT-300", "Garden gate"),
    ("RCK-400", "Storage rack"), ("TBL-500", "Workbench"), ("SHF-600", "Drive shaft"),
    ("HSG-700", "Pump housing"), ("RAL-800", "Stair railing"), ("CRT-900", "Transport cart"),
    ("PNL-110", "Control panel enclosure"), ("BAS-120", "Machine base"), ("LDR-130", "Access ladder"),
]
CUSTOMERS = [
    "Acme Industrial", "Baltic Machinery", "Cobalt Builders", "Delta Farms", "Elbe Logistics",
    "Fjord Marine", "Granite Works", "Harbor Cranes", "Iris Interiors", "Jura Tools",
    "Kappa Energy", "Lumen Lighting", "Meridian Rail", "Nordic Foods", "Orbit Packaging",
    "Pioneer Mining", "Quarry Co", "Rhine Chemicals", "Sierra Solar", "Tundra Trucks",
    "Umbra Shading", "Vega Aerospace", "Willow Furniture", "Xenon Labs", "Yukon Timber",
    "Zenith Hospitals", "Alpine Resorts", "Boreal Paper", "Cascade Water", "Dune Glass",
]
DEMO_USERS = ("admin", "test_supervisor", "test_operator", "test_maker")
LOADTEST_PREFIX = "loadtest-"
# More users than this that no seed command creates: the database holds real people.
MAX_FOREIGN_USERS = 5
DEMO_OPERATORS_PER_DEPARTMENT = 4
BATCH = 2000


@dataclass
class Catalog:
    departments: list[Department]
    processes: dict[str, Process]
    products: list[Product]
    routings: dict[int, list[Process]]  # product id -> processes in routing order
    customers: list[Customer]


def seed_catalog() -> Catalog:
    with transaction.atomic():
        departments, processes = [], {}
        for name, code, process_names in DEPARTMENTS:
            department, _ = Department.objects.get_or_create(code=code, defaults={"name": name})
            departments.append(department)
            for process_name in process_names:
                process, _ = Process.objects.get_or_create(name=process_name, defaults={"department": department})
                processes[process_name] = process
        ordered = [processes[p] for _, _, names in DEPARTMENTS for p in names]
        rng = random.Random(7)
        products = []
        for sku, name in PRODUCTS:
            product, created = Product.objects.get_or_create(sku=sku, defaults={"name": name})
            products.append(product)
            if created or not RoutingStep.objects.filter(product=product).exists():
                steps = sorted(rng.sample(range(len(ordered)), rng.randint(2, 5)))
                RoutingStep.objects.bulk_create(
                    [RoutingStep(product=product, process=ordered[i], sequence=(n + 1) * 10)
                     for n, i in enumerate(steps)]
                )
        customers = []
        existing = {c.name: c for c in Customer.objects.filter(name__in=CUSTOMERS)}
        missing = [Customer(name=n, email=f"orders@{n.lower().replace(' ', '-')}.example") for n in CUSTOMERS
                   if n not in existing]
        Customer.objects.bulk_create(missing)
        existing.update({c.name: c for c in Customer.objects.filter(name__in=CUSTOMERS)})
        customers = [existing[n] for n in CUSTOMERS]
    routings: dict[int, list[Process]] = {}
    for step in RoutingStep.objects.select_related("process").order_by("product_id", "sequence"):
        routings.setdefault(step.product_id, []).append(step.process)
    products = [p for p in Product.objects.order_by("id") if routings.get(p.pk)]
    return Catalog(departments, processes, products, routings, customers)


def production_like_reasons() -> list[str]:
    """Why this database looks like production (empty: a development or test database).

    The one rule both seed commands apply before writing: DEBUG is off, or more than
    MAX_FOREIGN_USERS users are neither load-test users nor users the demo seeding creates."""
    from django.conf import settings

    reasons = []
    if not settings.DEBUG:
        reasons.append("DEBUG is off")
    foreign = (
        User.objects.exclude(username__startswith=LOADTEST_PREFIX).exclude(username__in=DEMO_USERS)
        .exclude(username__regex=r"^(operator-|supervisor-|maker-)").count()
    )
    if foreign > MAX_FOREIGN_USERS:
        reasons.append(f"{foreign} users are neither load-test nor demo users")
    return reasons


class UpsertedUsers(list):
    """The users in spec order, plus the usernames that already existed and whose password was kept
    (reset_passwords=False) or set again (reset_passwords=True)."""

    def __init__(self, users, *, kept_passwords=(), reset_passwords=()):
        super().__init__(users)
        self.kept_passwords = list(kept_passwords)
        self.reset_passwords = list(reset_passwords)


def upsert_users(specs: list[dict], password: str, *, reset_passwords: bool = True) -> UpsertedUsers:
    """Create or update users by username (bulk). New users get `password` (hashed once); existing
    ones get it too only with reset_passwords, otherwise they keep the password they have."""
    hashed = make_password(password)
    usernames = [s["username"] for s in specs]
    existing = {u.username: u for u in User.objects.filter(username__in=usernames)}
    to_create, to_update = [], []
    fields = ["role", "department", "is_staff", "is_superuser", "is_active", "first_name", "last_name", "email"]
    if reset_passwords:
        fields.append("password")
    for spec in specs:
        values = {"password": hashed, "role": "", "department": None, "is_staff": False, "is_superuser": False,
                  "is_active": True, "first_name": "", "last_name": "", "email": "", **spec}
        user = existing.get(spec["username"])
        if user is None:
            to_create.append(User(**values))
        else:
            for key, value in values.items():
                if key != "password" or reset_passwords:
                    setattr(user, key, value)
            to_update.append(user)
    with transaction.atomic():
        User.objects.bulk_create(to_create, batch_size=1000)
        User.objects.bulk_update(to_update, fields, batch_size=1000)
    by_name = {u.username: u for u in User.objects.filter(username__in=usernames)}
    updated = sorted(user.username for user in to_update)
    return UpsertedUsers((by_name[name] for name in usernames), kept_passwords=[] if reset_passwords else updated,
                         reset_passwords=updated if reset_passwords else [])


def seed_demo_users(catalog: Catalog, password: str, *, reset_passwords: bool = True) -> dict[str, list]:
    first = catalog.departments[0]
    specs = [
        {"username": "admin", "is_staff": True, "is_superuser": True, "first_name": "Ada", "last_name": "Admin"},
        {"username": "test_supervisor", "role": Role.SUPERVISOR, "department": first, "first_name": "Sam",
         "last_name": "Supervisor"},
        {"username": "test_operator", "role": Role.OPERATOR, "department": first, "first_name": "Olga",
         "last_name": "Operator"},
        {"username": "test_maker", "role": Role.MAKER, "first_name": "Max", "last_name": "Maker"},
    ]
    for department in catalog.departments:
        specs.append({"username": f"supervisor-{department.code}", "role": Role.SUPERVISOR,
                      "department": department})
        for n in range(1, DEMO_OPERATORS_PER_DEPARTMENT + 1):
            specs.append({"username": f"operator-{department.code}-{n}", "role": Role.OPERATOR,
                          "department": department})
    for n in range(1, 3):
        specs.append({"username": f"maker-{n}", "role": Role.MAKER})
    users = upsert_users(specs, password, reset_passwords=reset_passwords)
    return {
        "kept_passwords": users.kept_passwords,
        "reset_passwords": users.reset_passwords,
        "makers": [u for u in users if u.role == Role.MAKER],
        "operators": [u for u in users if u.role == Role.OPERATOR],
        "supervisors": [u for u in users if u.role == Role.SUPERVISOR],
        "all": users,
    }


@dataclass
class Plan:
    """Rows for one batch, linked by list position until the database hands out ids."""

    work_orders: list[WorkOrder] = field(default_factory=list)
    tasks: list[tuple[int, Task]] = field(default_factory=list)  # (work order index, task)
    reports: list[tuple[int, ProgressReport]] = field(default_factory=list)  # (task index, report)


STATE_WEIGHTS = [
    ("pending", 10), ("rejected", 5), ("cancelled", 3), ("approved_open", 20), ("in_progress", 42),
    ("completed", 20),
]


def _split(total: int, rng: random.Random) -> list[int]:
    parts = rng.randint(1, min(3, total))
    cuts = sorted(rng.sample(range(1, total), parts - 1)) if parts > 1 else []
    bounds = [0, *cuts, total]
    return [b - a for a, b in itertools.pairwise(bounds)]


def _plan_batch(count: int, numbers: list[str], catalog: Catalog, makers: list[User],
                operators_by_department: dict[int, list[User]], rng: random.Random, now: dt.datetime) -> Plan:
    plan = Plan()
    states = [s for s, _ in STATE_WEIGHTS]
    weights = [w for _, w in STATE_WEIGHTS]
    today = timezone.localdate()
    for i in range(count):
        state = rng.choices(states, weights)[0]
        product = rng.choice(catalog.products)
        quantity = rng.choice([10, 20, 25, 50, 100, 200, 500])
        created = now - dt.timedelta(days=rng.uniform(0, 60))
        maker = rng.choice(makers)
        work_order = WorkOrder(
            number=numbers[i], customer=rng.choice(catalog.customers), product=product,
            production_quantity=quantity, delivery_date=today + dt.timedelta(days=rng.randint(-10, 60)),
            priority=rng.choices([p.value for p in Priority], [20, 50, 20, 10])[0],
            created_by=maker, created_at=created, updated_at=created,
        )
        plan.work_orders.append(work_order)
        if state == "pending":
            continue
        decided = created + dt.timedelta(hours=rng.uniform(1, 48))
        work_order.approved_at = min(decided, now)
        if state == "rejected":
            work_order.approval_status = ApprovalStatus.REJECTED
            work_order.status = WorkOrderStatus.CANCELLED
            work_order.rejection_reason = rng.choice(["Customer credit limit exceeded", "Material not available",
                                                      "Duplicate order", "Price not agreed"])
            continue
        work_order.approval_status = ApprovalStatus.APPROVED
        processes = catalog.routings[product.pk]
        done_upstream = quantity
        if state == "in_progress":
            # at least one unfinished step so the order is really in progress
            dones = []
            for _ in processes:
                done_upstream = rng.choice([done_upstream, done_upstream, rng.randint(0, done_upstream)])
                dones.append(done_upstream)
            if all(d == quantity for d in dones):
                dones[-1] = rng.randint(0, quantity - 1)
            work_order.status = WorkOrderStatus.IN_PROGRESS
        elif state == "completed":
            dones = [quantity] * len(processes)
            work_order.status = WorkOrderStatus.COMPLETED
            work_order.completed_at = min(work_order.approved_at + dt.timedelta(days=rng.uniform(0.5, 20)), now)
        else:
            dones = [0] * len(processes)
            work_order.status = WorkOrderStatus.CANCELLED if state == "cancelled" else WorkOrderStatus.OPEN
        started = False
        for sequence, (process, done) in enumerate(zip(processes, dones, strict=True), start=1):
            department_id = process.department_id
            task = Task(process=process, sequence=sequence, assigned_department_id=department_id,
                        planned_quantity=quantity, completed_quantity=done, created_at=work_order.approved_at,
                        updated_at=work_order.approved_at)
            pool = operators_by_department.get(department_id) or []
            if state == "cancelled":
                task.status = TaskStatus.CANCELLED
            elif done == quantity:
                task.status = TaskStatus.COMPLETED
            elif done > 0 or (state == "in_progress" and pool and rng.random() < 0.3):
                task.status = TaskStatus.IN_PROGRESS
            else:
                task.status = TaskStatus.PENDING
            if task.status in (TaskStatus.IN_PROGRESS, TaskStatus.COMPLETED):
                if not pool:  # nobody can do it: leave it waiting
                    task.status, task.completed_quantity, done = TaskStatus.PENDING, 0, 0
                else:
                    started = True
                    task.assigned_operator = rng.choice(pool)
                    task.started_at = min(work_order.approved_at + dt.timedelta(hours=rng.uniform(0, 24)), now)
                    task.updated_at = task.started_at
            if task.status == TaskStatus.COMPLETED:
                end = max(work_order.completed_at or now, task.started_at)
                task.completed_at = end if rng.random() < 0.5 else task.started_at + (end - task.started_at) / 2
                task.updated_at = task.completed_at
            plan.tasks.append((i, task))
            if done > 0:
                when = task.started_at
                for part in _split(done, rng):
                    when = min(when + dt.timedelta(minutes=rng.uniform(5, 240)), now)
                    plan.reports.append((len(plan.tasks) - 1, ProgressReport(
                        operator=task.assigned_operator, quantity=part, created_at=when)))
        if state == "in_progress" and not started:
            work_order.status = WorkOrderStatus.OPEN
    return plan


def seed_work_orders(count: int, catalog: Catalog, makers: list[User], operators: list[User],
                     seed: int = 42, progress=None) -> int:
    """Insert `count` work orders (with tasks and progress reports) in batches; returns how many."""
    if count <= 0 or not makers or not catalog.products:
        return 0
    rng = random.Random(seed)
    operators_by_department: dict[int, list[User]] = {}
    for operator in operators:
        if operator.department_id:
            operators_by_department.setdefault(operator.department_id, []).append(operator)
    now = timezone.now()
    year = timezone.localdate().year
    first = reserve_numbers(work_order_number_prefix(year), count)
    created = 0
    while created < count:
        size = min(BATCH, count - created)
        numbers = [format_work_order_number(year, first + created + n) for n in range(size)]
        plan = _plan_batch(size, numbers, catalog, makers, operators_by_department, rng, now)
        with transaction.atomic():
            WorkOrder.objects.bulk_create(plan.work_orders)
            tasks = []
            for index, task in plan.tasks:
                task.work_order_id = plan.work_orders[index].pk
                tasks.append(task)
            Task.objects.bulk_create(tasks, batch_size=5000)
            reports = []
            for index, report in plan.reports:
                report.task_id = tasks[index].pk
                reports.append(report)
            ProgressReport.objects.bulk_create(reports, batch_size=5000)
        created += size
        if progress:
            progress(created)
    return created


def analyze() -> None:
    """Refresh planner statistics after bulk inserts (PostgreSQL), or the planner picks slow plans."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # every table of the database: all apps' seeded rows
