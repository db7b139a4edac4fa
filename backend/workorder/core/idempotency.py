"""Retry-safe writes: the `Idempotency-Key` request header (IETF httpapi draft "The Idempotency-Key
HTTP Header Field", as Stripe implements it).

A state-changing request (POST, PUT, PATCH, DELETE) of an API view may carry `Idempotency-Key: <1-255
printable ASCII characters>`; keys belong to the authenticated user. ApiViewMixin.initial() calls
`guard()`, which wraps the view's handler in `_keyed()`:

- one transaction holds the handler's write AND the stored outcome (IdempotencyKey: method, path,
  sha256 of the body, status, response body): either both commit or neither does;
- a repeat with the same method, path and body after the first completed gets the stored status and
  body back, with `Idempotent-Replayed: true`, and writes nothing;
- a repeat while the first is still running gets 409 `idempotency_key_in_use` (Retry-After: 1),
  detected without waiting: PostgreSQL's pg_try_advisory_xact_lock on a hash of (user, key). On
  SQLite every transaction is IMMEDIATE (settings.py), so the repeat waits for the first one's commit
  and then finds its outcome: the same "applied once";
- the same key with another method, path or body: 422 `idempotency_key_reused`;
- 2xx and 4xx outcomes are stored; a 5xx is rolled back with the write, so the key stays usable;
- a key older than KEY_LIFETIME is a new request; `workorder-manage prune_idempotency_keys`
  deletes expired keys (a systemd timer in the NixOS module).

An invalid header value is a 400 on the `Idempotency-Key` field. Views opt out with
`idempotent_writes = False` (login and logout: the header is ignored there).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import re

from django.db import connection, transaction
from django.http import HttpResponse
from django.http.request import RawPostDataException
from django.utils import timezone
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from rest_framework import exceptions, status
from rest_framework.renderers import JSONRenderer

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
KEY_LIFETIME = dt.timedelta(hours=24)
MAX_KEY_LENGTH = 255
_VALID_KEY = re.compile(rf"[\x20-\x7e]{{1,{MAX_KEY_LENGTH}}}")
_LOCK_NAMESPACE = b"workorder.idempotency:"
GAUGE_COUNT_LIMIT = 1_000_000  # the bounded count when PostgreSQL has no estimate yet (and on SQLite)

replays = Counter("workorder_idempotency_replays_total",
                  "Keyed writes answered with the stored response of an earlier request (nothing applied)")
conflicts = Counter("workorder_idempotency_conflicts_total",
                    "Keyed writes refused: reason=in_flight (409, the first is still running) or "
                    "mismatch (422, the key was used for another method, path or body)", ["reason"])


class KeyInUse(exceptions.APIException):
    """409: a request with this key is still being processed."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "A request with this Idempotency-Key is still being processed; retry in a moment."
    default_code = "idempotency_key_in_use"
    wait = 1  # DRF's exception handler turns `wait` into Retry-After


class KeyReused(exceptions.APIException):
    """422: the key was used before for a different request."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = ("This Idempotency-Key was already used for a different request (method, path or body); "
                      "use a new key for a new request.")
    default_code = "idempotency_key_reused"


def validated_key(raw: str) -> str:
    if not _VALID_KEY.fullmatch(raw):
        raise exceptions.ValidationError(
            {HEADER: [f"Must be 1 to {MAX_KEY_LENGTH} printable ASCII characters."]})
    return raw


def _body_sha256(request) -> str:
    try:
        raw = request._request.body  # read once here; DRF parses it again from the cached copy
    except RawPostDataException:  # already streamed by a parser: hash what it parsed
        raw = json.dumps(request.data, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()


def guard(view, request) -> None:
    """Called once authentication and permissions passed: a keyed write's handler runs under `_keyed`."""
    if request.method not in WRITE_METHODS or not getattr(view, "idempotent_writes", True):
        return
    raw = request.META.get("HTTP_IDEMPOTENCY_KEY")
    if raw is None:
        return
    key = validated_key(raw)
    name = request.method.lower()
    handler = getattr(view, name, None) if name in view.http_method_names else None
    user = request.user
    if handler is None or not getattr(user, "is_authenticated", False):
        return  # 405, or a view open to anonymous callers: nothing to scope the key to
    request_ = (request.method, request.get_full_path(), _body_sha256(request))
    setattr(view, name, functools.partial(_keyed, view, handler, user.pk, key, request_))


def _lock_id(user_id: int, key: str) -> int:
    digest = hashlib.sha256(_LOCK_NAMESPACE + f"{user_id}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _try_lock(user_id: int, key: str) -> bool:
    """PostgreSQL: the (user, key) advisory lock until this transaction ends, without waiting. Other
    databases: True (SQLite's IMMEDIATE transactions already let one writer in at a time)."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_lock_id(user_id, key)])
        return bool(cursor.fetchone()[0])


def _replay(stored) -> HttpResponse:
    response = HttpResponse(stored.response_body.encode(), status=stored.status_code,
                            content_type="application/json" if stored.response_body else None)
    response[REPLAYED_HEADER] = "true"
    return response


def _rendered(response) -> str:
    data = getattr(response, "data", None)
    if data is None:
        return ""
    return JSONRenderer().render(data).decode()


def _keyed(view, handler, user_id: int, key: str, request_: tuple[str, str, str], request, *args, **kwargs):
    from .models import IdempotencyKey

    method, path, body_sha256 = request_
    with transaction.atomic():
        if not _try_lock(user_id, key):
            conflicts.labels("in_flight").inc()
            raise KeyInUse()
        stored = IdempotencyKey.objects.filter(user_id=user_id, key=key).first()
        if stored is not None and stored.created_at <= timezone.now() - KEY_LIFETIME:
            stored.delete()  # expired: this is a new request
            stored = None
        if stored is not None:
            if (stored.method, stored.path, stored.request_sha256) != (method, path, body_sha256):
                conflicts.labels("mismatch").inc()
                raise KeyReused()
            replays.inc()
            return _replay(stored)
        try:
            response = handler(request, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - turned into its response here, to decide what to store
            response = view.handle_exception(exc)
        if response.status_code >= 500:
            transaction.set_rollback(True)  # nothing of it stays, the key included: a retry runs again
            return response
        IdempotencyKey.objects.create(user_id=user_id, key=key, method=method, path=path,
                                      request_sha256=body_sha256, status_code=response.status_code,
                                      response_body=_rendered(response))
    return response


def prune_expired(now: dt.datetime | None = None, batch_size: int = 10_000) -> int:
    """Delete keys older than KEY_LIFETIME in batches (short transactions); how many were deleted."""
    from .models import IdempotencyKey

    cutoff = (now or timezone.now()) - KEY_LIFETIME
    deleted = 0
    while True:
        ids = list(IdempotencyKey.objects.filter(created_at__lte=cutoff).order_by("id")
                   .values_list("id", flat=True)[:batch_size])
        if not ids:
            return deleted
        deleted += IdempotencyKey.objects.filter(id__in=ids).delete()[0]


def gauges() -> list[GaugeMetricFamily]:
    """The number of stored keys: PostgreSQL's estimate (pg_class.reltuples, kept by autovacuum), a
    count bounded at GAUGE_COUNT_LIMIT where there is none yet (a never-analysed table, SQLite)."""
    from .models import IdempotencyKey

    table = IdempotencyKey._meta.db_table
    estimate = -1
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [table])
            row = cursor.fetchone()
            estimate = row[0] if row and row[0] is not None else -1
        if estimate < 0:
            quoted = connection.ops.quote_name(table)
            cursor.execute(f"SELECT count(*) FROM (SELECT 1 FROM {quoted} LIMIT %s) AS bounded",
                           [GAUGE_COUNT_LIMIT])
            estimate = cursor.fetchone()[0]
    return [GaugeMetricFamily("workorder_idempotency_keys",
                              "Stored idempotency keys (PostgreSQL's estimate; expired ones until pruned)",
                              value=estimate)]
