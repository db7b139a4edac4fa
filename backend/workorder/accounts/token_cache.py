"""Valid token lookups kept in each server process, dropped in every process of every node when a
change of the token or its user commits.

Every API request looks up its token and user (accounts/tokens.py: one indexed join). A process keeps
the rows of tokens it found valid for at most WORKORDER_TOKEN_CACHE_SECONDS (default 30; 0 turns this
off), and only while it listens on PostgreSQL's notification channel `workorder_auth`:

- a change that can end or narrow a token's validity sends the user's id on that channel in the same
  transaction (`changed()`): a revocation (logout, password change, deactivation, the per-user limit),
  a saved or deleted user (role, department, is_active ...). PostgreSQL delivers it when that
  transaction commits, to every listening process of every node, and each drops the user's entries;
  the process that made the change drops them at once as well;
- a lookup that was under way when a change arrived is not kept (a generation counter), so a row read
  just before a revocation cannot outlive it;
- a process uses its copies only while its listening connection answers: it drops every copy when
  that connection fails or stays silent for more than HEARTBEAT_SECONDS x 3, and asks the database
  for every request until it listens again (changes sent meanwhile are not lost: nothing is kept then);
- only valid answers are kept, as the row; each request builds its own token and user from it, and a
  copy that says expired or inactive is asked of the database again.

Without PostgreSQL (the embedded default's SQLite) nothing is kept. What bypasses model signals and
the token functions (a bulk QuerySet.update() of users, SQL by hand) must call `changed()` or
tokens.revoke_all(), as it already must to revoke tokens.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

logger = logging.getLogger(__name__)

CHANNEL = "workorder_auth"
HEARTBEAT_SECONDS = 5.0  # the listener's round trip when nothing arrives; silent for 3x this: not used
RETRY_SECONDS = (0.5, 1, 2, 5)  # between attempts to listen again
MAX_ENTRIES = 20_000  # past this many kept tokens the process starts over (one row is ~1 KiB)
ALL = None  # drop() argument: every entry
APPLICATION_NAME = "workorder token cache"  # the listener in pg_stat_activity


def seconds() -> int:
    return int(getattr(settings, "WORKORDER_TOKEN_CACHE_SECONDS", 0))


class TokenCache:
    """One per process (`cache`); thread-safe. Entries: digest -> (expires at, user id, row)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, int, tuple]] = {}
        self._generation = 0
        self._heard_at = 0.0  # monotonic time of the listener's last answer; 0: not listening
        self._pid: int | None = None

    # --- requests -------------------------------------------------------------------------------
    def enabled(self) -> bool:
        if seconds() <= 0 or connections[DEFAULT_DB_ALIAS].vendor != "postgresql":
            return False
        if self._pid != os.getpid():  # first use in this process (gunicorn forks its workers)
            self._start_listening()
        return True

    def listening(self) -> bool:
        return time.monotonic() - self._heard_at < HEARTBEAT_SECONDS * 3

    def generation(self) -> int:
        """Read before a lookup, handed to put(): a change that arrives in between voids the lookup."""
        return self._generation

    def get(self, key_digest: str) -> tuple | None:
        entry = self._entries.get(key_digest)
        if entry is None or entry[0] <= time.monotonic() or not self.listening():
            return None
        return entry[2]

    def put(self, key_digest: str, user_id: int, row: tuple, generation: int) -> None:
        with self._lock:
            if generation != self._generation or not self.listening():
                return
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key_digest] = (time.monotonic() + seconds(), user_id, row)

    def replace(self, key_digest: str, row: tuple) -> None:
        """A kept row with newer values of the same token (its last use)."""
        with self._lock:
            entry = self._entries.get(key_digest)
            if entry is not None:
                self._entries[key_digest] = (entry[0], entry[1], row)

    def discard(self, key_digest: str) -> None:
        with self._lock:
            self._entries.pop(key_digest, None)

    # --- changes --------------------------------------------------------------------------------
    def drop(self, user_ids: set[int] | None) -> None:
        """Forget the entries of these users (ALL: every entry) and void the lookups under way."""
        with self._lock:
            self._generation += 1
            if user_ids is ALL:
                self._entries.clear()
            elif self._entries:
                self._entries = {k: v for k, v in self._entries.items() if v[1] not in user_ids}

    def _heard(self) -> None:
        self._heard_at = time.monotonic()

    def _deaf(self) -> None:
        self._heard_at = 0.0
        self.drop(ALL)

    # --- the listener -----------------------------------------------------------------------------
    def _start_listening(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._entries.clear()
            self._heard_at = 0.0
        threading.Thread(target=self._listen_forever, name="token-cache-listener", daemon=True).start()

    def _listen_forever(self) -> None:
        failures = 0
        while True:
            try:
                self._listen()
            except Exception as exc:  # noqa: BLE001 - any failure: stop using copies, listen again
                if failures == 0 or failures % 60 == 0:
                    logger.warning("token cache: not listening on %s (%s: %s); tokens are looked up in the "
                                   "database until it listens again", CHANNEL, type(exc).__name__, exc)
                failures += 1
            self._deaf()
            time.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])

    def _listen(self) -> None:
        wrapper = connections.create_connection(DEFAULT_DB_ALIAS)  # this thread's own, never shared
        params = {**wrapper.get_connection_params(), "application_name": APPLICATION_NAME}
        if params.get("host") and not str(params["host"]).startswith("/"):
            # TCP: notice a peer that vanished without closing (the heartbeat's read would wait).
            params.update(keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3)
        connection = wrapper.get_new_connection(params)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f"LISTEN {CHANNEL}")
                self.drop(ALL)  # whatever was sent while nobody listened
                self._heard()
                while True:
                    readable, _, _ = select.select([connection], [], [], HEARTBEAT_SECONDS)
                    if not readable:
                        cursor.execute("SELECT 1")
                    connection.poll()
                    if connection.notifies:
                        users = {int(n.payload) for n in connection.notifies if n.payload.isdigit()}
                        connection.notifies.clear()
                        self.drop(users)
                    self._heard()
        finally:
            connection.close()


cache = TokenCache()


def changed(user_id: int, using: str = DEFAULT_DB_ALIAS) -> None:
    """The tokens of `user_id` may have become invalid: every process drops its copies once the current
    transaction commits (at once outside one); this process at once."""
    cache.drop({user_id})
    connection = connections[using]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, str(user_id)])
