"""Django's PostgreSQL backend, with a connection health check that does not ask the server.

With persistent connections (CONN_MAX_AGE) and CONN_HEALTH_CHECKS, Django checks the connection at
the first query of every request, and its PostgreSQL backend does that with `SELECT 1`: a round trip
per request, ~0.15 ms of wall time and ~0.06 ms of the worker's CPU plus the server's, to learn what
the socket already tells. A connection is idle between requests, so the server has nothing to say
on it unless it is going away: a server that shuts down or terminates the backend (restart,
pg_terminate_backend, idle timeouts) first sends its FATAL message, a dead backend's socket reads EOF.
So an idle connection whose socket has nothing to read is usable; one with something to read, or
not idle, or already closed, gets Django's own check (`SELECT 1`), which a dead connection fails.

ENGINE = "workorder.core.postgresql" (settings.py); everything else is Django's backend.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base

IDLE = 0  # psycopg2's TRANSACTION_STATUS_IDLE and psycopg's TransactionStatus.IDLE


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self):
        connection = self.connection
        if connection is None or connection.closed:
            return False
        try:
            idle = connection.info.transaction_status == IDLE
            readable, _, _ = select.select([connection.fileno()], [], [], 0)
        except (OSError, ValueError, AttributeError):
            return super().is_usable()
        if idle and not readable:
            return True
        return super().is_usable()
