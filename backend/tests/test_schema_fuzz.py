"""Schema-driven fuzzing of the whole API with schemathesis, as every role.

The OpenAPI schema is the project's own (`GET /api/schema/`, drf-spectacular), loaded through the
WSGI application in-process. For each role (maker, supervisor, operator, admin) every operation gets
hypothesis-generated requests in two modes:
- positive: data that fits the schema, with path ids both random and taken from real rows the role
  can see (so approve/assign/claim/update_progress/... reach the business rules, not only 404s);
- negative: data that violates the schema (wrong types, out-of-range numbers, missing fields, ...).
Every response must not be a 5xx and must conform to the schema: documented status code, JSON
content type, body matching the documented response schema, documented headers.

Bounded for CI: WORKORDER_FUZZ_EXAMPLES (default 8) examples per operation, mode and id source,
generated once and replayed as each role (generation costs more than the requests), no shrinking, a
fixed seed (derandomize) so a CI failure reproduces. The long run with more examples and
random seeds: `tests/fuzz/long_fuzz.sh` (see docs/reliability.md).

`POST /api/auth/logout/` is not fuzzed (it revokes the token every other request uses); its
behaviour is covered by tests/test_authorization_matrix.py.
"""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest

# schemathesis is not packaged in nixpkgs (nix/python-versions.json: "PyPI only"): the Nix check
# of this suite skips the fuzzing; the Debian CI, which installs it from PyPI, runs it.
pytest.importorskip("schemathesis", reason="schemathesis is PyPI only (not in nixpkgs)")

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests import domain_builders as b
from workorder.production.models import Task, WorkOrder

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = int(os.environ.get("WORKORDER_FUZZ_EXAMPLES", "8"))
DERANDOMIZE = os.environ.get("WORKORDER_FUZZ_RANDOM", "") != "1"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
SKIPPED = {("POST", "/api/auth/logout/")}
ROLES = ("maker", "supervisor", "operator", "admin")

STATS: Counter = Counter()


def build_world():
    """A small shop: orders in every state, tasks pending/in progress/completed, notifications."""
    shop = b.Shop()
    pending = [b.work_order(shop.maker, shop.product, quantity=5) for _ in range(3)]
    approved = [shop.approved(quantity=20) for _ in range(3)]
    first, _second = shop.tasks(approved[0])
    from workorder.production import services

    services.claim_task(shop.cut_op, first.pk)
    services.update_progress(shop.cut_op, first.pk, 5)
    first2, _ = shop.tasks(approved[1])
    services.assign_task(shop.cut_sup, first2.pk, shop.cut_op.pk)
    rejected = b.work_order(shop.maker, shop.product)
    services.reject_work_order(shop.cut_sup, rejected.pk, "no capacity")
    users = {"maker": shop.maker, "supervisor": shop.cut_sup, "operator": shop.cut_op, "admin": shop.admin}
    tokens = {}
    from workorder.accounts.tokens import issue_token

    for role, user in users.items():
        tokens[role] = issue_token(user)[1]
    return shop, users, tokens, pending


def real_ids(path: str, user) -> list[int]:
    """Ids of rows this operation's path refers to (all of them: visibility is what is being tested)."""
    from workorder.accounts.models import User
    from workorder.catalog.models import Customer, Department, Process, Product
    from workorder.notifications.models import Notification

    models = {"/api/tasks/": Task, "/api/workorders/": WorkOrder, "/api/products/": Product,
              "/api/customers/": Customer, "/api/departments/": Department, "/api/processes/": Process,
              "/api/users/": User}
    if path.startswith("/api/notifications/"):
        return list(Notification.objects.filter(recipient=user).values_list("id", flat=True)[:20]) or [1]
    for prefix, model in models.items():
        if path.startswith(prefix):
            return list(model.objects.order_by("id").values_list("id", flat=True)[:50])
    return []


def generate_cases(operation, mode: GenerationMode, path_ids: list[int] | None) -> list:
    """Up to EXAMPLES cases for one operation and mode (generated once, replayed for every role)."""
    kwargs = {}
    if path_ids:
        kwargs["path_parameters"] = {"id": st.sampled_from([str(i) for i in path_ids])}
    strategy = operation.as_strategy(generation_mode=mode, **kwargs)
    cases = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=DERANDOMIZE,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def collect(case):
        cases.append(case)

    try:
        collect()
    except Unsatisfiable:  # e.g. negative data for an operation without parameters or body
        pass
    return cases


def replay(case, mode: GenerationMode, token: str, role: str, failures: list) -> None:
    headers = {"Authorization": f"Token {token}"}
    STATS["requests"] += 1
    response = case.call(headers=headers)
    STATS[f"status {response.status_code}"] += 1
    try:
        case.validate_response(response, checks=CHECKS, headers=headers)
    except BaseException as exc:  # schemathesis' FailureGroup is a BaseExceptionGroup
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        failures.append(
            f"{case.operation.method.upper()} {case.operation.path} [{mode.value}, as {role}] -> "
            f"{response.status_code}\n  request: {case.as_curl_command(headers=headers)}\n"
            f"  body: {response.content[:400]!r}\n  {str(exc)[:1500]}"
        )


@pytest.fixture
def schema():
    from django.core.wsgi import get_wsgi_application

    return schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())


def test_schema_fuzz_as_every_role(schema):
    _shop, users, tokens, _pending = build_world()
    t0 = time.monotonic()
    plan = []  # (operation, mode, cases)
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIPPED:
            continue
        plan.append((operation, GenerationMode.POSITIVE, generate_cases(operation, GenerationMode.POSITIVE, None)))
        plan.append((operation, GenerationMode.NEGATIVE, generate_cases(operation, GenerationMode.NEGATIVE, None)))
        if "{id}" in operation.path:
            ids = sorted({i for user in users.values() for i in real_ids(operation.path, user)})
            plan.append((operation, GenerationMode.POSITIVE, generate_cases(operation, GenerationMode.POSITIVE, ids)))
    operations = len({(op.method, op.path) for op, _, _ in plan})
    generated = sum(len(cases) for _, _, cases in plan)
    print(f"\n[fuzz] {operations} operations, {generated} cases generated in {time.monotonic() - t0:.1f}s "
          f"(up to {EXAMPLES} per operation, mode and id source; derandomized={DERANDOMIZE})")
    failures: list[str] = []
    for role in ROLES:
        t_role = time.monotonic()
        before = STATS["requests"]
        for _operation, mode, cases in plan:
            for case in cases:
                replay(case, mode, tokens[role], role, failures)
        print(f"[fuzz] as {role}: {STATS['requests'] - before} requests in {time.monotonic() - t_role:.1f}s")
    statuses = {k: v for k, v in sorted(STATS.items()) if k.startswith("status")}
    print(f"[fuzz] {STATS['requests']} requests in {time.monotonic() - t0:.1f}s; statuses: {statuses}")
    assert operations >= 30, "the schema lost operations"
    assert not failures, f"{len(failures)} schema/5xx failures:\n\n" + "\n\n".join(failures[:30])
