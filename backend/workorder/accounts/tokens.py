"""API tokens with a lifetime: one per login (device), stored as SHA-256 digests.

A key is `secrets.token_hex(20)` (40 hex characters, the shape clients knew from DRF's authtoken); the
database holds only sha256(key), so a database dump or backup holds no usable credential. A token is
valid while all of these hold:
- its user is active;
- it was used within WORKORDER_TOKEN_IDLE_SECONDS (default 12 h). `last_used_at` is written at most
  once per TOUCH_INTERVAL (a minute) per token, so the hot path is a read; a token may therefore
  expire up to a minute earlier than its true last use suggests;
- it is younger than WORKORDER_TOKEN_MAX_AGE_SECONDS (default 7 days; `expires_at`), however often used.
A user has at most WORKORDER_TOKENS_PER_USER tokens (default 10): a login beyond that revokes the
oldest. Logout revokes the token of the request; a password change or deactivation revokes them all
(accounts/receivers.py). Every revocation sends `signals.tokens_revoked` once the transaction commits
and tells every server process to drop its copies of the user's tokens (accounts/token_cache.py).

Why not django-rest-knox: it has one expiry (no idle timeout alongside an absolute lifetime), and past
its per-user limit it refuses the new login instead of revoking the oldest token.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone

from . import token_cache
from .models import AuthToken, User
from .signals import tokens_revoked

KEY_BYTES = 20  # secrets.token_hex(20): 40 hex characters
MAX_KEY_LENGTH = 64  # anything longer is refused before the database is asked
KEY_PREFIX_LENGTH = 8
TOUCH_INTERVAL = timedelta(minutes=1)
MAX_DEVICE_LENGTH = AuthToken._meta.get_field("device").max_length


def idle_timeout() -> timedelta:
    return timedelta(seconds=settings.WORKORDER_TOKEN_IDLE_SECONDS)


def max_age() -> timedelta:
    return timedelta(seconds=settings.WORKORDER_TOKEN_MAX_AGE_SECONDS)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def plausible_key(key: str | None) -> bool:
    """False for keys that cannot exist: empty, too long, or containing NUL (which psycopg2 refuses)."""
    return bool(key) and len(key) <= MAX_KEY_LENGTH and "\x00" not in key


def _send_revoked(user_id: int, token_ids: list[int] | None) -> None:
    token_cache.changed(user_id)  # in the revoking transaction: delivered when it commits
    transaction.on_commit(lambda: tokens_revoked.send(sender=AuthToken, user_id=user_id, token_ids=token_ids))


def issue_token(user: User, device: str = "") -> tuple[AuthToken, str]:
    """A new token for `user` (one per login/device); returns (token, key). The key is not stored and
    cannot be recovered: hand it to the client now. Revokes the user's expired tokens and, past
    WORKORDER_TOKENS_PER_USER, the oldest ones."""
    key = secrets.token_hex(KEY_BYTES)
    now = timezone.now()
    with transaction.atomic():
        # Serialise logins of one user so that two parallel logins cannot both keep 10 older tokens.
        User.objects.select_for_update().filter(pk=user.pk).values_list("pk", flat=True).first()
        token = AuthToken.objects.create(
            user=user, digest=digest(key), key_prefix=key[:KEY_PREFIX_LENGTH], device=(device or "")[:MAX_DEVICE_LENGTH],
            created_at=now, last_used_at=now, expires_at=now + max_age(),
        )
        stale = [
            t.pk for t in AuthToken.objects.filter(user=user).only("pk", "last_used_at", "expires_at")
            if t.deadline() <= now
        ]
        keep = settings.WORKORDER_TOKENS_PER_USER
        live = AuthToken.objects.filter(user=user).exclude(pk__in=stale).order_by("-created_at", "-pk")
        surplus = list(live.values_list("pk", flat=True)[keep:])
        revoked = stale + surplus
        if revoked:
            AuthToken.objects.filter(pk__in=revoked).delete()
            _send_revoked(user.pk, revoked)
    return token, key


def authenticate_key(key: str, *, touch: bool = True) -> tuple[User, AuthToken] | None:
    """(user, token) for a valid key; None if the key is unknown, expired or revoked, or its user is
    inactive. touch=True records the use (extending the idle deadline); WebSocket code passes False so
    that an open socket never keeps a token alive."""
    if not plausible_key(key):
        return None
    key_digest = digest(key)
    token, kept = _token_with_user(key_digest)
    now = timezone.now()
    if kept and (not token.user.is_active or token.deadline() <= now):
        # The process's copy says no (e.g. another process recorded a later use): ask the database.
        token_cache.cache.discard(key_digest)
        token, kept = _token_with_user(key_digest, fresh=True)
    if token is None or not token.user.is_active:
        return None
    if token.deadline() <= now:
        return None
    if touch and now - token.last_used_at >= TOUCH_INTERVAL:
        # Conditional: of parallel requests one writes, the rest see the new value and skip.
        AuthToken.objects.filter(pk=token.pk, last_used_at=token.last_used_at).update(last_used_at=now)
        token.last_used_at = now
        _keep_last_use(key_digest, now)  # also a row just read again and kept
    return token.user, token


@functools.cache
def _lookup_statement(alias: str) -> tuple[str, list[str], list[str], dict]:
    """`AuthToken.objects.select_related("user").filter(digest=...)`, compiled by the ORM once per
    process: the lookup runs on every API request, and compiling the join costs more CPU than the
    database spends answering it. Returns (sql, token columns, user columns, the column converters the
    backend needs, e.g. SQLite's text -> datetime), in select order."""
    query = AuthToken.objects.using(alias).select_related("user").filter(digest="")[:1].query
    compiler = query.get_compiler(alias)
    sql, params = compiler.as_sql()
    select = compiler.select
    token_columns = [field.attname for field in AuthToken._meta.concrete_fields]
    user_columns = [field.attname for field in User._meta.concrete_fields]
    if len(params) != 1 or len(select) != len(token_columns) + len(user_columns):
        raise RuntimeError("the token lookup's compiled SQL is not the expected join")  # a Django change
    converters = compiler.get_converters([expression for expression, _, _ in select])
    return sql, token_columns, user_columns, converters


def _token_with_user(key_digest: str, *, fresh: bool = False) -> tuple[AuthToken | None, bool]:
    """(the token with this digest and its user, whether they came from this process's copy): one
    query, as select_related would load them, unless the process keeps the row (token_cache.py)."""
    alias = DEFAULT_DB_ALIAS
    sql, token_columns, user_columns, converters = _lookup_statement(alias)
    cache = token_cache.cache
    keeping = cache.enabled()
    row = cache.get(key_digest) if keeping and not fresh else None
    kept = row is not None
    if row is None:
        generation = cache.generation()
        connection = connections[alias]
        with connection.cursor() as cursor:
            cursor.execute(sql, [key_digest])
            found = cursor.fetchone()
        if found is None:
            return None, False
        found = list(found)
        for position, (functions, expression) in converters.items():
            for convert in functions:
                found[position] = convert(found[position], expression, connection)
        row = tuple(found)
        if keeping and row[len(token_columns) + user_columns.index("is_active")]:
            cache.put(key_digest, row[token_columns.index("user_id")], row, generation)
    split = len(token_columns)
    token = AuthToken.from_db(alias, token_columns, row[:split])
    token.user = User.from_db(alias, user_columns, row[split:])
    return token, kept


def _keep_last_use(key_digest: str, when) -> None:
    """Record in the process's copy (if it keeps one) the last use just written, so that the next
    requests do not write it."""
    row = token_cache.cache.get(key_digest)
    if row is not None:
        _, token_columns, _, _ = _lookup_statement(DEFAULT_DB_ALIAS)
        position = token_columns.index("last_used_at")
        token_cache.cache.replace(key_digest, (*row[:position], when, *row[position + 1:]))


def revoke_token(token: AuthToken) -> None:
    """Revoke one token (logout)."""
    token_id, user_id = token.pk, token.user_id
    with transaction.atomic():
        AuthToken.objects.filter(pk=token_id).delete()
        _send_revoked(user_id, [token_id])


def revoke_all(user: User | int) -> None:
    """Revoke every token of `user` (password change, deactivation, an admin's decision)."""
    user_id = user if isinstance(user, int) else user.pk
    with transaction.atomic():
        AuthToken.objects.filter(user_id=user_id).delete()
        _send_revoked(user_id, None)
