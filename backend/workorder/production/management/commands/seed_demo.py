"""workorder-manage seed_demo [--work-orders 2000] [--password PW]: idempotent demo data."""

import time

from django.core.management.base import BaseCommand, CommandError

from workorder.production import events, seeding
from workorder.production.models import WorkOrder

DEV_PASSWORD = "workorder-dev"  # dev only: never on a reachable server


class Command(BaseCommand):
    help = ("Seed departments, processes, routings, products, customers, the users admin, test_supervisor, "
            "test_operator, test_maker (+ operators and supervisors per department) and work orders with "
            "tasks in every state. Idempotent: re-running tops work orders up to --work-orders.")

    def add_arguments(self, parser):
        parser.add_argument("--work-orders", type=int, default=2000,
                            help="Total number of work orders wanted (default 2000).")
        parser.add_argument("--password", default=DEV_PASSWORD,
                            help=f'Password for every demo user (default "{DEV_PASSWORD}", for development only).')

    def handle(self, *args, work_orders: int, password: str, **options):
        self.verbosity = options.get("verbosity", 1)
        if work_orders < 0:
            raise CommandError("--work-orders must be >= 0")
        if not password:
            raise CommandError("--password must not be empty")
        started = time.monotonic()
        catalog = seeding.seed_catalog()
        users = seeding.seed_demo_users(catalog, password)
        missing = max(0, work_orders - WorkOrder.objects.count())
        self.step(f"catalog and {len(users['all'])} users ready; {missing} work orders to create")

        def progress(done):
            self.step(f"{done}/{missing} work orders")

        created = seeding.seed_work_orders(missing, catalog, users["makers"], users["operators"],
                                           seed=WorkOrder.objects.count() + 42, progress=progress)
        events.publish(events.DemoDataSeeded(users["all"]))  # e.g. a few notifications per user
        self.step("refreshing the planner statistics")
        seeding.analyze()
        if self.verbosity:
            self.stdout.write(self.style.SUCCESS(
                f"seed_demo: {len(catalog.departments)} departments, {len(catalog.products)} products, "
                f"{len(users['all'])} users, {created} new work orders ({WorkOrder.objects.count()} total) "
                f"in {time.monotonic() - started:.1f}s"
            ))

    def step(self, message: str) -> None:
        if self.verbosity >= 2:
            self.stdout.write(f"  {message}", ending="\n")
            self.stdout.flush()
