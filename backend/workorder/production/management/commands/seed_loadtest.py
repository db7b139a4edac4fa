"""workorder-manage seed_loadtest: users loadtest-<role>-NNNN (and optionally work orders) for Locust.

Refuses (exit status 1, a message) when the database looks like production unless --force
(seeding.production_like_reasons: DEBUG is off, or more than seeding.MAX_FOREIGN_USERS users are
neither load-test nor demo users).
"""

import time

from django.core.management.base import BaseCommand, CommandError

from workorder.accounts.models import Role
from workorder.production import seeding
from workorder.production.models import WorkOrder

PREFIX = seeding.LOADTEST_PREFIX


def loadtest_username(role: str, n: int) -> str:
    return f"{PREFIX}{role}-{n:04d}"


class Command(BaseCommand):
    help = ("Create/update load-test users loadtest-operator-0001..., loadtest-supervisor-0001..., "
            "loadtest-maker-0001... (round-robin over departments, all with --password) and optionally "
            "--work-orders N orders with tasks. Idempotent. Refuses on production-like databases without --force.")

    def add_arguments(self, parser):
        parser.add_argument("--operators", type=int, default=200)
        parser.add_argument("--supervisors", type=int, default=50)
        parser.add_argument("--makers", type=int, default=50)
        parser.add_argument("--password", required=True, help="Password of every load-test user.")
        parser.add_argument("--work-orders", type=int, default=0,
                            help="Make sure at least N work orders created by load-test makers exist (default 0).")
        parser.add_argument("--force", action="store_true",
                            help="Seed even though the database looks like production.")

    def handle(self, *args, operators, supervisors, makers, password, work_orders, force, **options):
        self.verbosity = options.get("verbosity", 1)
        for name, value in (("--operators", operators), ("--supervisors", supervisors), ("--makers", makers),
                            ("--work-orders", work_orders)):
            if value < 0 or value > 9999 and name != "--work-orders":
                raise CommandError(f"{name} must be between 0 and 9999")
        if not password:
            raise CommandError("--password must not be empty")
        reasons = seeding.production_like_reasons()
        if reasons and not force:
            raise CommandError(
                "refusing to seed load-test users: this database looks like production ("
                + "; ".join(reasons) + "). Pass --force if it really is a test system."
            )
        started = time.monotonic()
        catalog = seeding.seed_catalog()
        departments = catalog.departments
        specs = []
        for role, count in ((Role.OPERATOR, operators), (Role.SUPERVISOR, supervisors), (Role.MAKER, makers)):
            for n in range(1, count + 1):
                specs.append({"username": loadtest_username(role.value, n), "role": role,
                              "department": departments[(n - 1) % len(departments)]})
        users = seeding.upsert_users(specs, password)
        maker_users = [u for u in users if u.role == Role.MAKER]
        operator_users = [u for u in users if u.role == Role.OPERATOR]
        existing = WorkOrder.objects.filter(created_by__username__startswith=PREFIX).count()
        missing = max(0, work_orders - existing)
        created = seeding.seed_work_orders(missing, catalog, maker_users, operator_users, seed=existing + 4242)
        seeding.analyze()
        if self.verbosity:
            self.stdout.write(self.style.SUCCESS(
                f"seed_loadtest: {operators} operators, {supervisors} supervisors, {makers} makers over "
                f"{len(departments)} departments; {created} new work orders in {time.monotonic() - started:.1f}s"
            ))
