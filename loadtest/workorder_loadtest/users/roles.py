"""The four HTTP users, with the original plan's class weights (1:1:1:1), waits and task weights.
``SupervisorBase`` is the supervisor's session the WebSocket user shares."""

import datetime as dt
import math
import random
import time

from locust import between, task

from ..hooks import setup_error
from .base import PAGE_SIZE, ApiUser, body, ident, ids, items, page, page_for


class WorkOrderUser(ApiUser):
    """The read-mostly shop-floor terminal: tasks, work orders, notifications and the summary. It logs
    in as an operator by default (``--browser-role``): the largest pool."""

    wait_time = between(1, 5)

    def __init__(self, environment):
        super().__init__(environment)
        self.role = self.opts.browser_role
        self.seen_task_ids: list[int] = []
        self.workorder_count: int | None = None

    @task(5)
    def task_list(self):
        status = {"status": random.choice(("pending", "in_progress", "completed"))} if random.random() < 0.3 else {}
        tasks = self.get("/api/tasks/", "[Tasks] List", items, page_size=PAGE_SIZE, **status)
        self.seen_task_ids = ids(tasks) or self.seen_task_ids

    @task(3)
    def workorder_list(self):
        self.workorder_count = self.get("/api/workorders/", "[WorkOrders] List", page, page_size=PAGE_SIZE,
                                        page=page_for(self.workorder_count, 3)).get("count", self.workorder_count)

    @task(2)
    def task_detail(self):
        if not self.seen_task_ids:
            return self.task_list()
        self.get(f"/api/tasks/{random.choice(self.seen_task_ids)}/", "[Tasks] Detail", body)

    @task(1)
    def notifications(self):
        self.get("/api/notifications/", "[Notifications] List", items)

    @task(1)
    def task_summary(self):
        self.get("/api/statistics/task_summary/", "[Stats] Task Summary", body)


class SupervisorBase(ApiUser):
    """A supervisor's session and the department queries SupervisorUser and NotificationUser share."""

    abstract = True
    role = "supervisor"

    def department_pending(self) -> list[dict]:
        return self.unassigned_tasks("[Supervisor] Department Tasks")

    def department_operators(self) -> list[dict]:
        users = self.get("/api/users/", "[Users] Operators", items, role="operator", department=self.department,
                         page_size=100)
        return [u for u in users if ident(u) is not None and u.get("role", "operator") == "operator"
                and ident(u.get("department", self.department)) == self.department]

    def assign(self, chosen: dict, operator_id: int | None) -> bool:
        """Whether the assignment took (not a failure, not a conflict)."""
        with self.rest("POST", f"/api/tasks/{ident(chosen)}/assign/", name="[Supervisor] Assign Task",
                       json={"operator_id": operator_id}) as resp:
            return 200 <= resp.status_code < 300


class SupervisorUser(SupervisorBase):
    """Watches its department and assigns pending tasks to the department's operators."""

    wait_time = between(2, 6)

    def __init__(self, environment):
        super().__init__(environment)
        self.operators: list[dict] = []
        self.operators_fetched = -math.inf

    @task(4)
    def department_tasks(self):
        self.department_pending()

    @task(3)
    def workload(self):
        self.get("/api/statistics/department_workload/", "[Supervisor] Workload")

    @task(2)
    def assign_task(self):
        if time.monotonic() - self.operators_fetched > 60 or not self.operators:
            self.operators, self.operators_fetched = self.department_operators(), time.monotonic()
        # The current list right before assigning, as a supervisor would: the backend lets a
        # supervisor re-assign an in-progress task, so a stale list could take a claimed task away.
        pending = self.department_pending() if self.operators else []
        if pending:
            self.assign(random.choice(pending), ident(random.choice(self.operators)))

    @task(1)
    def dashboard(self):
        self.get("/api/statistics/collaboration/", "[Supervisor] Dashboard")


def remaining(t: dict) -> int:
    try:
        return int(t.get("planned_quantity") or 0) - int(t.get("completed_quantity") or 0)
    except (TypeError, ValueError):
        return 0


class OperatorUser(ApiUser):
    """Claims pending tasks of its department and reports progress on its own tasks."""

    wait_time = between(3, 8)
    role = "operator"

    def __init__(self, environment):
        super().__init__(environment)
        self.mine: dict[int, dict] = {}  # its in-progress tasks, by id
        self.claimable: list[dict] = []

    @task(5)
    def refresh_mine(self):
        tasks = self.get("/api/tasks/", "[Operator] My Tasks", items, assigned_operator=ident(self.me),
                         status="in_progress", page_size=PAGE_SIZE)
        self.mine = {ident(t): t for t in tasks if ident(t) is not None}

    @task(3)
    def refresh_claimable(self):
        self.claimable = self.unassigned_tasks("[Operator] Claimable Tasks")

    @task(2)
    def update_progress(self):
        open_tasks = [t for t in self.mine.values() if remaining(t) > 0 and t.get("status") == "in_progress"]
        if not open_tasks:
            return self.refresh_mine()
        chosen = random.choice(open_tasks)
        planned = int(chosen.get("planned_quantity") or remaining(chosen))
        quantity = random.randint(1, max(1, min(remaining(chosen), math.ceil(planned / 5))))
        with self.rest("POST", f"/api/tasks/{ident(chosen)}/update_progress/", name="[Operator] Update Progress",
                       json={"quantity": quantity}) as resp:
            if 200 <= resp.status_code < 300:
                chosen["completed_quantity"] = int(chosen.get("completed_quantity") or 0) + quantity
            if resp.status_code == 409 or remaining(chosen) <= 0:  # 409: the previous step lags; later
                self.mine.pop(ident(chosen), None)

    @task(1)
    def claim(self):
        if not self.claimable:
            return self.refresh_claimable()
        chosen = self.claimable.pop(random.randrange(len(self.claimable)))
        with self.rest("POST", f"/api/tasks/{ident(chosen)}/claim/", name="[Operator] Claim Task") as resp:
            if 200 <= resp.status_code < 300:
                chosen.update(status="in_progress", assigned_operator=ident(self.me))
                self.mine[ident(chosen)] = chosen


class MakerUser(ApiUser):
    """Browses its own work orders and creates new ones for existing customers and products."""

    wait_time = between(5, 10)
    role = "maker"

    def __init__(self, environment):
        super().__init__(environment)
        self.customers: list[int] = []
        self.products: list[int] = []
        self.workorder_count: int | None = None

    def on_start(self):
        super().on_start()
        if self.token:
            self.load_catalog()

    def load_catalog(self) -> None:
        """An empty catalog makes the run pointless; a failed request (overload) is retried later."""
        customers = self.get("/api/customers/", "[Catalog] Customers", page)
        products = self.get("/api/products/", "[Maker] Products List", page)
        self.customers = ids(customers.get("results", []))
        self.products = ids(products.get("results", []))
        if customers and products and not (self.customers and self.products):
            setup_error(self.environment, "no customers or products in the catalog: seed it (seed_loadtest, seed_demo)")

    @task(4)
    def my_workorders(self):
        self.workorder_count = self.get("/api/workorders/", "[Maker] My WorkOrders", page, page_size=PAGE_SIZE,
                                        page=page_for(self.workorder_count, 5)).get("count", self.workorder_count)

    @task(1)
    def create_workorder(self):
        if not (self.customers and self.products):
            return self.load_catalog()
        order = {"customer": random.choice(self.customers), "product": random.choice(self.products),
                 "production_quantity": random.randint(10, 500),
                 "priority": random.choice(("low", "normal", "high", "urgent")),
                 "delivery_date": (dt.date.today() + dt.timedelta(days=random.randint(7, 90))).isoformat()}
        with self.rest("POST", "/api/workorders/", name="[Maker] Create WorkOrder", json=order) as resp:
            if body(resp) and self.workorder_count is not None:
                self.workorder_count += 1

    @task(2)
    def products_list(self):
        self.products = ids(self.get("/api/products/", "[Maker] Products List", items))
