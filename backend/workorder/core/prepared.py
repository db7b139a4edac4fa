"""Server-side prepared statements for the SELECTs a connection runs again and again (PostgreSQL).

PostgreSQL plans every statement it receives. For the hot reads of this API (the token lookup of
every request, a list page: a 5-table join) planning costs more CPU than running the query: about
1 ms to plan against 0.25 ms to execute a task page (EXPLAIN ANALYZE on 100,000 tasks). psycopg2 sends
plain statements, so this execute wrapper (installed on every PostgreSQL connection by
core/apps.py) PREPAREs a SELECT the second time the same SQL text runs on a connection and from then
on sends `EXECUTE name(params)`: PostgreSQL plans it with the parameters for the first five runs and
then, when a generic plan costs about as much, stops planning it at all (plan_cache_mode = auto).

Only plain SELECTs outside transactions are prepared (the reads of views and authentication): a
PREPARE that failed inside a transaction would abort it. At most MAX_STATEMENTS per connection; a
plan that no longer fits the table ("cached plan must not change result type" after a migration) is
deallocated and the statement runs unprepared. Statements live and die with their connection.
"""

from __future__ import annotations

import re

from django.db.backends.signals import connection_created
from django.db.utils import NotSupportedError

MAX_STATEMENTS = 200
PREPARE_AT = 2  # the run of an SQL text on a connection at which it is prepared
_PLACEHOLDERS = re.compile(r"%%|%s")


class _State:
    def __init__(self, raw) -> None:
        self.raw = raw  # the psycopg2 connection these statements were prepared on
        self.runs: dict[str, int] = {}
        self.names: dict[str, str] = {}


def to_prepare_body(sql: str) -> tuple[str, int]:
    """Django's SQL (%s placeholders, %% for a literal %) as PREPARE's body ($1, $2, ...)."""
    count = 0

    def replace(match: re.Match) -> str:
        nonlocal count
        if match.group(0) == "%%":
            return "%"
        count += 1
        return f"${count}"

    return _PLACEHOLDERS.sub(replace, sql), count


def prepare_selects(execute, sql, params, many, context):
    connection = context["connection"]
    if many or connection.in_atomic_block or not connection.get_autocommit() or not sql.startswith("SELECT "):
        return execute(sql, params, many, context)
    state = getattr(connection, "_prepared_statements", None)
    if state is None or state.raw is not connection.connection:
        state = connection._prepared_statements = _State(connection.connection)
    name = state.names.get(sql)
    if name is None:
        runs = state.runs.get(sql, 0) + 1
        if runs < PREPARE_AT or len(state.names) >= MAX_STATEMENTS:
            if len(state.runs) < 10 * MAX_STATEMENTS:
                state.runs[sql] = runs
            return execute(sql, params, many, context)
        body, count = to_prepare_body(sql)
        if count != len(params or ()):
            return execute(sql, params, many, context)  # not a shape we understand: leave it alone
        name = f"workorder_{len(state.names) + 1}"
        execute(f"PREPARE {name} AS {body}", None, False, context)
        state.names[sql] = name
        state.runs.pop(sql, None)
    statement = f"EXECUTE {name}({', '.join(['%s'] * len(params))})" if params else f"EXECUTE {name}"
    try:
        return execute(statement, params, many, context)
    except NotSupportedError:  # "cached plan must not change result type": the table changed under it
        execute("DEALLOCATE ALL", None, False, context)
        connection._prepared_statements = None
        return execute(sql, params, many, context)


def install(sender, connection, **kwargs) -> None:
    """connection_created receiver: add the wrapper to PostgreSQL connections, once per wrapper."""
    if connection.vendor == "postgresql" and prepare_selects not in connection.execute_wrappers:
        connection.execute_wrappers.append(prepare_selects)


def connect() -> None:
    connection_created.connect(install, dispatch_uid="workorder.core.prepared.install")
