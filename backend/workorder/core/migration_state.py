"""Does the database have every migration this code needs? And running `migrate` once per cluster.

Several application nodes share one PostgreSQL. Each node's `workorder-migrate` runs
`workorder-manage migrate_locked`: Django's `migrate` inside a PostgreSQL session advisory lock
(`MIGRATION_LOCK_KEY`), so nodes that start together apply the migrations once; the others wait for
the lock, then find nothing to apply. A node whose code expects a newer schema than the database has
refuses to serve: gunicorn exits 2 at start (workorder.gunicorn_conf) and /ready/ answers 503 naming
"migrations" (core/health.py). A node with older code on a newer schema keeps serving: migrations are
backward compatible for one release (docs/runtime.md, "Rolling upgrades").
"""

from __future__ import annotations

import threading

# pg_advisory_lock(bigint): one number for the whole cluster, the same in every version of the code.
# (The digits spell "workorder migrate"; any constant works, as long as nothing else takes it.)
MIGRATION_LOCK_KEY = 0x574F_4D49_4752_4154 & 0x7FFF_FFFF_FFFF_FFFF


class PendingMigrations(Exception):  # /ready/ reports it by name: "error: PendingMigrations"
    """The database lacks migrations this code needs."""

    def __init__(self, names: list[str]):
        self.names = names
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        super().__init__(f"the database lacks {len(names)} migration(s) this code needs ({shown}); "
                         "run `workorder-manage migrate_locked` (the workorder-migrate unit) first")


def pending_migrations(connection) -> list[str]:
    """The migrations of this code not yet applied to `connection`'s database, as app.name, in the
    order `migrate` would apply them. Applied migrations this code does not know (a newer node
    migrated already) are not a problem and not listed."""
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [f"{migration.app_label}.{migration.name}" for migration, backwards in plan if not backwards]


_complete = threading.Event()  # once the schema is complete it stays so for this process


def check_schema_complete(connection) -> str:
    """For /ready/: "ok", or raises PendingMigrations. A complete schema is remembered per process
    (migrations only move forward while a node runs), so a ready node's probe costs nothing here."""
    if _complete.is_set():
        return "ok"
    names = pending_migrations(connection)
    if names:
        raise PendingMigrations(names)
    _complete.set()
    return "ok"
