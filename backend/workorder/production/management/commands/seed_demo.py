"""workorder-manage seed_demo [--work-orders 2000] [--password PW] [--reset-passwords] [--force]:
idempotent demo data.

Refuses (exit status 1, one line) when the database looks like production unless --force: the rule
seed_loadtest applies too (seeding.production_like_reasons). Users that already exist keep their
password (the command names them) unless --reset-passwords: a re-run never silently hands the
documented development password to an existing account, `admin` (a superuser) above all.
"""

import time

from django.core.management.base import BaseCommand, CommandError

from workorder.production import events, seeding
from workorder.production.models import WorkOrder

DEV_PASSWORD = "workorder-dev"  # dev only: never on a reachable server


class Command(BaseCommand):
    help = ("Seed departments, processes, routings, products, customers, the users admin, test_supervisor, "
            "test_operator, test_maker (+ operators and supervisors per department) and work orders with "
            "tasks in every state. Idempotent: re-running tops work orders up to --work-orders. Existing users "
            "keep their passwords unless --reset-passwords. Refuses on production-like databases without --force.")

    def add_arguments(self, parser):
        parser.add_argument("--work-orders", type=int, default=2000,
                            help="Total number of work orders wanted (default 2000).")
        parser.add_argument("--password", default=DEV_PASSWORD,
                            help=f'Password of the demo users it creates (default "{DEV_PASSWORD}", for '
                                 "development only).")
        parser.add_argument("--reset-passwords", action="store_true",
                            help="Also set --password on demo users that already exist (admin included).")
        parser.add_argument("--force", action="store_true",
                            help="Seed even though the database looks like production.")

    def handle(self, *args, work_orders: int, password: str, reset_passwords: bool, force: bool, **options):
        self.verbosity = options.get("verbosity", 1)
        if work_orders < 0:
            raise CommandError("--work-orders must be >= 0")
        if not password:
            raise CommandError("--password must not be empty")
        reasons = seeding.production_like_reasons()
        if reasons and not force:
            raise CommandError(
                "refusing to seed demo data: this database looks like production ("
                + "; ".join(reasons) + "). Pass --force if it really is a test system."
            )
        started = time.monotonic()
        catalog = seeding.seed_catalog()
        users = seeding.seed_demo_users(catalog, password, reset_passwords=reset_passwords)
        self.report_passwords(users)
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

    def report_passwords(self, users) -> None:
        """Say whose password was kept or set: existing accounts are never changed without a word."""
        if users["kept_passwords"]:
            self.stdout.write(self.style.WARNING(
                f"seed_demo: {len(users['kept_passwords'])} demo users already existed and kept their passwords "
                f"({_names(users['kept_passwords'])}); pass --reset-passwords to set --password on them."
            ))
        if users["reset_passwords"]:
            self.stdout.write(self.style.WARNING(
                f"seed_demo: set --password on {len(users['reset_passwords'])} existing demo users "
                f"({_names(users['reset_passwords'])}) because of --reset-passwords."
            ))

    def step(self, message: str) -> None:
        if self.verbosity >= 2:
            self.stdout.write(f"  {message}", ending="\n")
            self.stdout.flush()


def _names(usernames: list[str], shown: int = 5) -> str:
    first = ", ".join(usernames[:shown])
    return first if len(usernames) <= shown else f"{first} and {len(usernames) - shown} more"
