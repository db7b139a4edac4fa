"""The authorization matrix: every endpoint and action x every kind of caller -> the expected status.

ONE table (MATRIX below) drives the test and the documentation: docs/authorization.md is rendered
from it, and test_authorization_doc_is_up_to_date fails when the table changed and the doc was not
regenerated. Regenerate with:

    cd backend && ../.venv/bin/python -m tests.test_authorization_matrix --write

The callers (columns): anonymous; the maker who created the work order; another maker; a supervisor
and an operator of the department of the task (for a work order: of a department with one of its
tasks); a supervisor and an operator of a department the object has nothing to do with; an admin
(a superuser). The objects are fresh for every cell (each cell runs in a savepoint that is rolled back),
so a state change by one caller never changes another caller's result.

For list endpoints the cell also says whether the object of the row is in the result
("200 listed") or not ("200 hidden"): objects of others are hidden from lists and 404 when asked for
directly, never leaked.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

SUBJECTS = ("anonymous", "maker", "other_maker", "supervisor", "other_supervisor", "operator", "other_operator",
            "admin")
SUBJECT_TITLES = {
    "anonymous": "anonymous",
    "maker": "maker (creator)",
    "other_maker": "another maker",
    "supervisor": "supervisor, right dept",
    "other_supervisor": "supervisor, other dept",
    "operator": "operator, right dept",
    "other_operator": "operator, other dept",
    "admin": "admin",
}
DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "authorization.md"


@dataclass(frozen=True)
class Row:
    action: str          # what the caller tries, in words
    method: str
    path: str            # template: {pending}, {approved}, {task}, {notification}, ... filled by the setup
    setup: str           # name of the fixture state the row needs (see World.prepare)
    expected: tuple      # one per SUBJECTS entry: int status, or "200 listed" / "200 hidden" for lists
    body: dict | None = None
    listed_key: str = ""  # for lists: the object whose presence in the results is checked
    note: str = ""
    group: str = ""

    def expect(self) -> dict:
        assert len(self.expected) == len(SUBJECTS), self.action
        return dict(zip(SUBJECTS, self.expected, strict=True))


L, H = "200 listed", "200 hidden"
ALL_200 = (401, 200, 200, 200, 200, 200, 200, 200)

MATRIX: list[Row] = [
    # --- auth ------------------------------------------------------------------------------------
    Row("who am I", "GET", "/api/auth/me/", "none", ALL_200, group="Authentication"),
    Row("log out (revokes own token)", "POST", "/api/auth/logout/", "none",
        (401, 204, 204, 204, 204, 204, 204, 204), group="Authentication"),
    Row("OpenAPI schema", "GET", "/api/schema/", "none", (200,) * 8, group="Authentication",
        note="public: describes the API, contains no data"),
    # --- work orders -----------------------------------------------------------------------------
    Row("list work orders: a pending order", "GET", "/api/workorders/?page_size=100", "pending",
        (401, L, H, L, L, H, H, L), listed_key="pending", group="Work orders",
        note="every supervisor sees orders awaiting approval (they have no department yet)"),
    Row("list work orders: an approved order", "GET", "/api/workorders/?page_size=100", "approved",
        (401, L, H, L, H, L, H, L), listed_key="approved", group="Work orders"),
    Row("read a pending order", "GET", "/api/workorders/{pending}/", "pending",
        (401, 200, 404, 200, 200, 404, 404, 200), group="Work orders"),
    Row("read an approved order", "GET", "/api/workorders/{approved}/", "approved",
        (401, 200, 404, 200, 404, 200, 404, 200), group="Work orders"),
    Row("create an order", "POST", "/api/workorders/", "catalog",
        (401, 201, 201, 201, 201, 403, 403, 201), group="Work orders",
        body={"customer": "{customer}", "product": "{product}", "production_quantity": 5,
              "delivery_date": "2030-01-31", "priority": "high"}),
    Row("change the schedule of a pending order", "PATCH", "/api/workorders/{pending}/", "pending",
        (401, 200, 404, 200, 200, 404, 404, 200), body={"priority": "urgent"}, group="Work orders"),
    Row("change the quantity of an approved order", "PATCH", "/api/workorders/{approved}/", "approved",
        (401, 409, 404, 409, 404, 403, 404, 409), body={"production_quantity": 7}, group="Work orders",
        note="the plan is frozen once approved: 409"),
    Row("delete an order", "DELETE", "/api/workorders/{pending}/", "pending",
        (401, 405, 405, 405, 405, 405, 405, 405), group="Work orders", note="not offered"),
    Row("approve a pending order", "POST", "/api/workorders/{pending}/approve/", "pending",
        (401, 403, 404, 200, 200, 404, 404, 200), group="Work orders"),
    Row("approve an approved order", "POST", "/api/workorders/{approved}/approve/", "approved",
        (401, 403, 404, 409, 404, 403, 404, 409), group="Work orders"),
    Row("reject a pending order", "POST", "/api/workorders/{pending}/reject/", "pending",
        (401, 403, 404, 200, 200, 404, 404, 200), body={"reason": "no capacity"}, group="Work orders"),
    Row("reject an approved order", "POST", "/api/workorders/{approved}/reject/", "approved",
        (401, 403, 404, 409, 404, 403, 404, 409), body={"reason": "too late"}, group="Work orders"),
    # --- tasks -----------------------------------------------------------------------------------
    Row("list tasks: a task of the order", "GET", "/api/tasks/?page_size=100", "approved",
        (401, L, H, L, H, L, H, L), listed_key="task", group="Tasks"),
    Row("read a task", "GET", "/api/tasks/{task}/", "approved",
        (401, 200, 404, 200, 404, 200, 404, 200), group="Tasks"),
    Row("claim a pending task", "POST", "/api/tasks/{task}/claim/", "approved",
        (401, 403, 404, 403, 404, 200, 404, 403), group="Tasks", note="operators of the task's department only"),
    Row("claim a task someone is working on", "POST", "/api/tasks/{task}/claim/", "in_progress",
        (401, 403, 404, 403, 404, 409, 404, 403), group="Tasks"),
    Row("assign a pending task to an operator of its department", "POST", "/api/tasks/{task}/assign/", "approved",
        (401, 403, 404, 200, 404, 403, 404, 200), body={"operator_id": "{operator}"}, group="Tasks"),
    Row("assign to an operator of another department", "POST", "/api/tasks/{task}/assign/", "approved",
        (401, 403, 404, 400, 404, 403, 404, 400), body={"operator_id": "{other_operator}"}, group="Tasks",
        note="400 names the department to choose from"),
    Row("assign a completed task", "POST", "/api/tasks/{task}/assign/", "completed",
        (401, 403, 404, 409, 404, 403, 404, 409), body={"operator_id": "{operator}"}, group="Tasks"),
    Row("report progress on a task in progress", "POST", "/api/tasks/{task}/update_progress/", "in_progress",
        (401, 403, 404, 403, 404, 200, 404, 403), body={"quantity": 1}, group="Tasks",
        note="only the assigned operator (here: the operator of the right department)"),
    Row("report more than planned", "POST", "/api/tasks/{task}/update_progress/", "in_progress",
        (401, 403, 404, 403, 404, 409, 404, 403), body={"quantity": 11}, group="Tasks",
        note="nothing is recorded"),
    Row("report progress on a pending task", "POST", "/api/tasks/{task}/update_progress/", "approved",
        (401, 409, 404, 409, 404, 409, 404, 409), body={"quantity": 1}, group="Tasks",
        note="the state is checked first: nobody can report on a task no one is working on"),
    Row("complete a task in progress", "POST", "/api/tasks/{task}/complete/", "in_progress",
        (401, 403, 404, 200, 404, 200, 404, 200), group="Tasks"),
    Row("complete a pending task", "POST", "/api/tasks/{task}/complete/", "approved",
        (401, 403, 404, 409, 404, 403, 404, 409), group="Tasks"),
    # --- notifications (the row's notification belongs to the maker) -----------------------------
    Row("list notifications: the maker's notification", "GET", "/api/notifications/", "notification",
        (401, L, H, H, H, H, H, H), listed_key="notification", group="Notifications",
        note="own notifications only, admins included"),
    Row("read the maker's notification", "GET", "/api/notifications/{notification}/", "notification",
        (401, 200, 404, 404, 404, 404, 404, 404), group="Notifications"),
    Row("mark the maker's notification read", "POST", "/api/notifications/{notification}/read/", "notification",
        (401, 200, 404, 404, 404, 404, 404, 404), group="Notifications"),
    Row("mark all own notifications read", "POST", "/api/notifications/read_all/", "notification",
        ALL_200, group="Notifications"),
    # --- catalog, users, statistics --------------------------------------------------------------
    Row("list products", "GET", "/api/products/", "catalog", ALL_200, group="Catalog and users"),
    Row("read a product", "GET", "/api/products/{product}/", "catalog", ALL_200, group="Catalog and users"),
    Row("list customers", "GET", "/api/customers/", "catalog", ALL_200, group="Catalog and users"),
    Row("read a customer", "GET", "/api/customers/{customer}/", "catalog", ALL_200, group="Catalog and users"),
    Row("list departments", "GET", "/api/departments/", "catalog", ALL_200, group="Catalog and users"),
    Row("read a department", "GET", "/api/departments/{department}/", "catalog", ALL_200,
        group="Catalog and users"),
    Row("list processes", "GET", "/api/processes/", "catalog", ALL_200, group="Catalog and users"),
    Row("read a process", "GET", "/api/processes/{process}/", "catalog", ALL_200, group="Catalog and users"),
    Row("list operators of a department", "GET", "/api/users/?role=operator&department={department}", "catalog",
        ALL_200, group="Catalog and users", note="the assignment directory"),
    Row("read a user", "GET", "/api/users/{operator}/", "catalog", ALL_200, group="Catalog and users"),
    Row("create a product", "POST", "/api/products/", "catalog", (401, 405, 405, 405, 405, 405, 405, 405),
        body={"name": "x"}, group="Catalog and users", note="the catalog is managed in /admin/"),
    Row("task summary", "GET", "/api/statistics/task_summary/", "none", ALL_200, group="Statistics",
        note="organisation-wide counts only, no rows"),
    Row("department workload", "GET", "/api/statistics/department_workload/", "none", ALL_200, group="Statistics"),
    Row("collaboration", "GET", "/api/statistics/collaboration/", "none", ALL_200, group="Statistics"),
]


# --- the documentation, rendered from MATRIX ----------------------------------------------------
def render_markdown() -> str:
    lines = [
        "# Authorization matrix",
        "",
        "<!-- Generated from backend/tests/test_authorization_matrix.py (MATRIX). Do not edit by hand:",
        "     cd backend && ../.venv/bin/python -m tests.test_authorization_matrix --write -->",
        "",
        "Who may do what through the API, as HTTP status codes. Every cell is checked by",
        "`backend/tests/test_authorization_matrix.py` against real requests on PostgreSQL (a fresh object",
        "per cell), and this page is generated from the same table, so it cannot drift from the code.",
        "",
        "**Callers.** *maker (creator)*: the maker who created the work order; *right dept*: a supervisor or",
        "operator of the department the task belongs to (for a work order: a department with one of its",
        "tasks; the work order's routing is cutting then welding, the task is the cutting step); *other",
        "dept*: a department the object has nothing to do with; *admin*: an admin, i.e. a superuser or a user",
        "with the role `admin` (`User.is_admin`). `is_staff` alone is not an admin: it only opens the Django",
        "admin, within the permissions given there (an upgrade gave staff users without a role the `admin`",
        "role, so nobody lost rights).",
        "",
        "**Reading the codes.** 200/201/204 allowed; 401 not signed in; 403 you can see the object but your",
        "role may not do this; 404 the object is not yours to see (the same answer as for an id that does",
        "not exist, so nothing leaks); 405 method not offered; 409 allowed in principle, but the object's",
        "state forbids it now; 400 invalid input. For lists, *listed*/*hidden* says whether the object",
        "appears in the results. Error bodies are always JSON: `{\"detail\", \"code\", \"errors\"}`.",
        "",
        "Order of checks: authentication (401), then visibility (404), then body validation (400), then",
        "role (403), then state (409); a caller who may not see an object never learns its state.",
        "Exception: progress reports check the task's state (409) before whether you are its operator.",
        "",
        "**Four eyes.** A supervisor may not approve a work order they created themselves: 403 (another",
        "supervisor or an admin approves it), unless `WORKORDER_ALLOW_SELF_APPROVAL=1`. The matrix's orders",
        "are created by the maker; `backend/tests/test_auth_security.py` tests self-approval.",
        "",
    ]
    header = "| action | request | " + " | ".join(SUBJECT_TITLES[s] for s in SUBJECTS) + " | note |"
    rule = "|" + "---|" * (len(SUBJECTS) + 3)
    group = None
    for row in MATRIX:
        if row.group != group:
            group = row.group
            lines += ["", f"## {group}", "", header, rule]
        cells = [str(v) for v in row.expected]
        request = f"`{row.method} {row.path}`"
        if row.body:
            request += " " + "`" + ", ".join(f"{k}" for k in row.body) + "`"
        lines.append(f"| {row.action} | {request} | " + " | ".join(cells) + f" | {row.note} |")
    lines += [
        "",
        "## Outside the API",
        "",
        "- `/admin/`: Django admin, staff users only (session login, with the same login lockout as the API).",
        "  The state of work orders and tasks is",
        "  read-only there; its actions (approve, reject, assign, complete) call the same services as the API,",
        "  with the same rules; tested in `backend/tests/test_admin_site.py`.",
        "- `/metrics/`: allowed only from `WORKORDER_METRICS_ALLOWED_NETWORKS` (loopback by default) or with",
        "  `Authorization: Bearer <WORKORDER_METRICS_TOKEN>`; anything else is 403. nginx denies `/metrics`",
        "  outright (403): Prometheus scrapes gunicorn's loopback listener. Tested in",
        "  `backend/tests/test_runtime_servers.py` and `tests/stack/test_edge.py`.",
        "- WebSocket `/ws/notifications/`: a valid API token is required (else closed with code 4401); see",
        "  `backend/tests/test_websocket_hostile.py`.",
        "",
    ]
    return "\n".join(lines)


# --- the test -----------------------------------------------------------------------------------
@dataclass
class World:
    shop: object
    users: dict = field(default_factory=dict)

    @classmethod
    def build(cls) -> World:
        from tests import domain_builders as b

        shop = b.Shop()
        elsewhere = b.department(b.unique("Painting"))
        world = cls(shop)
        world.elsewhere = elsewhere
        world.users = {
            "anonymous": None, "maker": shop.maker, "other_maker": shop.other_maker, "supervisor": shop.cut_sup,
            "other_supervisor": b.supervisor(elsewhere), "operator": shop.cut_op,
            "other_operator": b.operator(elsewhere), "admin": shop.admin,
        }
        world.customer = b.customer()
        return world

    def prepare(self, setup: str) -> dict:
        """Create the objects a row needs (inside the cell's savepoint); returns the path/body values."""
        from tests import domain_builders as b
        from workorder.notifications.services import notify
        from workorder.production import services

        shop = self.shop
        values = {"customer": self.customer.pk, "product": shop.product.pk, "department": shop.cutting.pk,
                  "process": shop.product.routing_steps.order_by("sequence").first().process_id,
                  "operator": shop.cut_op.pk, "other_operator": self.users["other_operator"].pk}
        if setup == "pending":
            values["pending"] = b.work_order(shop.maker, shop.product).pk
        elif setup in ("approved", "in_progress", "completed"):
            work_order = shop.approved(quantity=10)
            task, _second = shop.tasks(work_order)
            values.update(approved=work_order.pk, task=task.pk)
            if setup in ("in_progress", "completed"):
                services.claim_task(shop.cut_op, task.pk)
            if setup == "completed":
                services.update_progress(shop.cut_op, task.pk, 10)
        elif setup == "notification":
            values["notification"] = notify([shop.maker.pk], "task_assigned", "for the maker only")[0].pk
        return values


def fill(template, values: dict):
    if isinstance(template, str):
        if template.startswith("{") and template.endswith("}") and template[1:-1] in values:
            return values[template[1:-1]]
        return template.format(**values)
    if isinstance(template, dict):
        return {key: fill(value, values) for key, value in template.items()}
    return template


def observe(row: Row, world: World, subject: str):
    from django.db import transaction

    from tests import domain_builders as b

    savepoint = transaction.savepoint()
    try:
        values = world.prepare(row.setup)
        api = b.client(world.users[subject])
        path = fill(row.path, values)
        body = fill(row.body, values) if row.body is not None else None
        response = api.generic(row.method, path, data=__import__("json").dumps(body) if body is not None else "",
                               content_type="application/json")
        status = response.status_code
        content_type = response.get("Content-Type", "")
        if status >= 400 and path.startswith("/api/"):
            assert content_type.startswith("application/json"), (row.action, subject, status, content_type)
            assert response.json()["detail"], (row.action, subject, response.content[:200])
        if row.listed_key and status == 200:
            ids = [item["id"] for item in response.json()["results"]]
            return L if values[row.listed_key] in ids else H
        return status
    finally:
        transaction.savepoint_rollback(savepoint)


def test_authorization_matrix(db):
    world = World.build()
    mismatches = []
    cells = 0
    for row in MATRIX:
        for subject, expected in row.expect().items():
            actual = observe(row, world, subject)
            cells += 1
            if actual != expected:
                mismatches.append(f"{row.action} ({row.method} {row.path}) as {subject}: expected {expected}, got {actual}")
    print(f"\n[authorization] {len(MATRIX)} endpoint/actions x {len(SUBJECTS)} callers = {cells} cells checked")
    assert not mismatches, f"{len(mismatches)} cells differ from the matrix:\n" + "\n".join(mismatches)


def test_matrix_covers_every_api_operation():
    """Every operation of the OpenAPI schema appears in the matrix (new endpoints must be added)."""
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(public=True)
    import re

    def normalise(path: str) -> str:
        return re.sub(r"\{[^}]+\}", "{}", path.split("?")[0])

    covered = {(row.method, normalise(row.path)) for row in MATRIX}
    missing = [(method.upper(), path) for path, ops in schema["paths"].items() for method in ops
               if method in ("get", "post", "patch", "put", "delete")
               and (method.upper(), normalise(path)) not in covered
               and path != "/api/auth/login/"]  # login: anonymous by design, tested in test_api_errors
    assert not missing, f"operations missing from MATRIX: {missing}"


def test_authorization_doc_is_up_to_date():
    assert DOC_PATH.exists(), f"{DOC_PATH} is missing: run `python -m tests.test_authorization_matrix --write`"
    assert DOC_PATH.read_text() == render_markdown(), (
        "docs/authorization.md is out of date: cd backend && ../.venv/bin/python -m tests.test_authorization_matrix --write"
    )


if __name__ == "__main__":
    if "--write" in sys.argv:
        DOC_PATH.parent.mkdir(parents=True, exist_ok=True)
        DOC_PATH.write_text(render_markdown())
        print(f"wrote {DOC_PATH}")
    else:
        print(render_markdown())
