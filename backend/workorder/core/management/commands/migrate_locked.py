"""`workorder-manage migrate_locked`: Django's `migrate`, once per cluster of application nodes.

The NixOS module's workorder-migrate unit runs it on every node at every start. On PostgreSQL it
first takes a session advisory lock (core/migration_state.MIGRATION_LOCK_KEY) on the same connection
`migrate` then uses: of several nodes starting together one applies the migrations, the others wait
(a line every 10 s says so), then run `migrate` and find nothing to apply. The lock goes with the
session, so a node killed mid-migration frees it at once. Waiting longer than --lock-timeout seconds
is an error (exit 1, naming the wait). SQLite (the embedded default, one node) needs no lock.

An app node may start before its database host: the command first waits up to --wait-for-database
seconds (default 300) for PostgreSQL to accept connections, with a line every 10 s naming the error.

Every option of `migrate` works here too (`--check`, `--plan`, an app label and migration name).
A session-level lock needs a session: run it against PostgreSQL directly or through a pooler in
session mode, never through transaction pooling.
"""

from __future__ import annotations

import time

from django.core.management.base import CommandError
from django.core.management.commands.migrate import Command as MigrateCommand
from django.db import OperationalError, connections

from workorder.core.migration_state import MIGRATION_LOCK_KEY

POLL_SECONDS = 0.5
REPORT_EVERY_SECONDS = 10.0


class Command(MigrateCommand):
    help = ("Django's migrate under a PostgreSQL advisory lock: nodes starting together apply the "
            "migrations once; the others wait, then find nothing to apply.")

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--lock-timeout", type=float, default=900.0,
                            help="seconds to wait for another node's migration (default 900, the unit's start timeout)")
        parser.add_argument("--wait-for-database", type=float, default=300.0,
                            help="seconds to wait for the database to accept connections (default 300)")

    def handle(self, *args, **options):
        lock_timeout = options.pop("lock_timeout")
        wait_for_database = options.pop("wait_for_database")
        connection = connections[options["database"]]
        if connection.vendor != "postgresql":
            return super().handle(*args, **options)
        self._wait_for_database(connection, wait_for_database)
        started = time.monotonic()
        self._acquire(connection, lock_timeout)
        waited = time.monotonic() - started
        self.stdout.write(f"migrate_locked: holding the migration lock (waited {waited:.1f}s)")
        try:
            return super().handle(*args, **options)
        finally:
            self._release(connection)

    def _wait_for_database(self, connection, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        next_report = time.monotonic()
        while True:  # bounded by the deadline
            try:
                connection.ensure_connection()
                return
            except OperationalError as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                now = time.monotonic()
                if now >= deadline:
                    raise CommandError(f"the database did not accept connections within {timeout:g}s: {reason}") from None
                if now >= next_report:
                    self.stdout.write(f"migrate_locked: waiting for the database: {reason}")
                    next_report = now + REPORT_EVERY_SECONDS
                time.sleep(1.0)

    def _acquire(self, connection, lock_timeout: float) -> None:
        deadline = time.monotonic() + lock_timeout
        next_report = time.monotonic() + REPORT_EVERY_SECONDS
        while True:  # bounded by the deadline
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [MIGRATION_LOCK_KEY])
                if cursor.fetchone()[0]:
                    return
            now = time.monotonic()
            if now >= deadline:
                raise CommandError(f"another node has held the migration lock for over {lock_timeout:g}s "
                                   "(pg_locks: locktype 'advisory'); is its migrate stuck?")
            if now >= next_report:
                self.stdout.write("migrate_locked: another node is migrating; waiting for the lock")
                next_report = now + REPORT_EVERY_SECONDS
            time.sleep(POLL_SECONDS)

    @staticmethod
    def _release(connection) -> None:
        if connection.connection is None:  # the session ended, and its lock with it
            return
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_KEY])
        except Exception:  # noqa: BLE001, S110 - a broken session holds no lock any more
            pass
