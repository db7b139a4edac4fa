"""Page-number pagination with bounded page sizes and cheap counts.

Response shape: {"count", "next", "previous", "results"}.
- `page_size`: default 20 (settings.REST_FRAMEWORK["PAGE_SIZE"]), values above MAX_PAGE_SIZE (100)
  are clamped to 100; 0, negative or non-integer values are a 400.
- `page`: 1-based; a non-integer or < 1 is a 400, a page past the last one is a 404 (both JSON).
- `count` is exact but may be up to PAGINATION_COUNT_CACHE_SECONDS (default 5) old: the
  COUNT(*) of a given query is cached, because on 100k+ rows the count costs ~4x the rest of
  the request (see docs/api.md). A short first page (fewer rows than page_size) gives the exact
  count for free and refreshes the cache.

The cache key names the query without compiling it (compiling a 5-table join costs more CPU than
the rest of the count path): a view that defines `count_scope(request)` (e.g. the visibility scope
of `Task.objects.visibility_scope(user)`: equal scopes see equal rows) is keyed by its model, that
scope and the request's query parameters except page and page_size; other querysets by their SQL.
Two levels: this process's memory first, then the Django cache (Redis, shared by all workers and
nodes), both holding the value with the time it was counted, so the bound above holds for both.

List pages of views that define `page_rows` and `count_scope` (ListPageMixin) are read with SQL the
ORM compiled once per process: building and compiling a page's queryset (visibility, filters,
ordering, the serializer's columns and joins) costs ~0.8 ms of CPU, more than PostgreSQL spends
answering it. A page's statement is keyed by the view, the visibility scope, the query parameters
other than page and page_size, and the page's LIMIT/OFFSET: equal scopes see equal rows, so equal
keys compile to the same SQL and parameters (test_list_statements.py checks it for every user of the
seed). Only SQL text is kept, never rows: every request runs its statement and sees current data.
A key is only looked up once its filters validated (a 400 is never cached). A miss of the count cache
runs the COUNT statement the ORM ran for the same list key before (core/statements.py), without
building or compiling the queryset again.
"""

from __future__ import annotations

import hashlib
import threading
import time
from functools import cached_property

from django.conf import settings
from django.core.cache import cache
from django.core.paginator import InvalidPage, Page, Paginator
from django.db import DEFAULT_DB_ALIAS, connections
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import PageNumberPagination

from .statements import CountStatement, Statement

MAX_PAGE_SIZE = 100


def count_cache_seconds() -> int:
    return int(getattr(settings, "PAGINATION_COUNT_CACHE_SECONDS", 5))


NOT_PAGE_PARAMETERS = frozenset({"page", "page_size"})


def list_identity(request, view) -> tuple | None:
    """(view, visibility scope, query parameters but page and page_size): what decides a list's rows;
    None for views without `count_scope`, or a scope of None."""
    count_scope = getattr(view, "count_scope", None)
    if count_scope is None or request is None:
        return None
    scope = count_scope(request)
    if scope is None:
        return None
    parameters = tuple(sorted((name, tuple(values)) for name, values in request.query_params.lists()
                              if name not in NOT_PAGE_PARAMETERS))
    return (f"{type(view).__module__}.{type(view).__qualname__}", scope, parameters)


def count_cache_key(queryset, request=None, view=None, identity=None) -> str | None:
    """The cache key of `queryset`'s COUNT(*) (see the module docstring); None: do not cache."""
    if identity is None and getattr(view, "count_scope", None) is not None:
        identity = list_identity(request, view)
        if identity is None:
            return None
    if identity is not None:
        _, scope, parameters = identity
        text = repr((queryset.model._meta.label, scope, list(parameters)))
    else:
        try:
            sql, params = queryset.query.sql_with_params()
        except Exception:  # noqa: BLE001 - EmptyResultSet and friends: let the paginator count normally
            return None
        text = f"{connections[queryset.db or DEFAULT_DB_ALIAS].vendor}|{sql}|{params!r}"
    return f"pagecount:{hashlib.sha256(text.encode()).hexdigest()}"


class _CountCache:
    """(count, when counted) by key: this process's memory in front of the Django cache."""

    MAX_LOCAL_KEYS = 4096

    def __init__(self) -> None:
        self.local: dict[str, tuple[int, float]] = {}
        self.lock = threading.Lock()

    def get(self, key: str) -> int | None:
        now, ttl = time.time(), count_cache_seconds()
        entry = self.local.get(key)
        if entry is not None and now - entry[1] < ttl:
            return entry[0]
        stored = cache.get(key)
        if isinstance(stored, list) and len(stored) == 2 and now - stored[1] < ttl:
            self._keep(key, int(stored[0]), float(stored[1]))
            return int(stored[0])
        return None

    def set(self, key: str, value: int) -> None:
        ttl = count_cache_seconds()
        if ttl <= 0:
            return
        counted_at = time.time()
        self._keep(key, value, counted_at)
        cache.set(key, [value, counted_at], ttl)

    def _keep(self, key: str, value: int, counted_at: float) -> None:
        with self.lock:
            if len(self.local) >= self.MAX_LOCAL_KEYS:
                self.local.clear()
            self.local[key] = (value, counted_at)

    def clear_local(self) -> None:
        with self.lock:
            self.local.clear()


counts = _CountCache()


class _Statements:
    """Compiled list pages of this process, by (list identity, LIMIT/OFFSET), and their COUNTs, by list
    identity; bounded."""

    MAX_KEYS = 4096

    def __init__(self) -> None:
        self.pages: dict[tuple, Statement] = {}
        self.counts: dict[tuple, CountStatement] = {}
        self.validated: set[tuple] = set()  # identities whose filters validated once (no 400)

    def get(self, key: tuple) -> Statement | None:
        return self.pages.get(key)

    def put(self, key: tuple, statement: Statement) -> None:
        if len(self.pages) >= self.MAX_KEYS:
            self.clear()
        self.pages[key] = statement
        self.validated.add(key[0])

    def put_count(self, identity: tuple, statement: CountStatement) -> None:
        if len(self.counts) >= self.MAX_KEYS:
            self.counts.clear()
        self.counts[identity] = statement

    def clear(self) -> None:
        self.pages.clear()
        self.counts.clear()
        self.validated.clear()


statements = _Statements()


class PageSource:
    """What a ListPageMixin view paginates: its filtered queryset, built only when a page's statement
    is not compiled yet (or to count), and each slice read with its compiled statement."""

    ordered = True  # the view orders its queryset (Paginator warns about unordered lists)

    MAX_PARAMETER_CHARS = 512  # longer query strings are read without a kept statement (bounded memory)

    def __init__(self, view, identity: tuple | None, queryset=None) -> None:
        self.view = view
        self.identity = identity
        self.statement_identity = identity
        if identity is not None and sum(len(name) + sum(map(len, values)) for name, values in identity[2]) > (
                self.MAX_PARAMETER_CHARS):
            self.statement_identity = None
        self.model = view.queryset.model
        if queryset is not None:
            self.__dict__["queryset"] = queryset

    @classmethod
    def for_view(cls, view, request) -> PageSource:
        identity = list_identity(request, view)
        if identity is not None and identity in statements.validated:
            return cls(view, identity)
        # Build now: an invalid filter is a 400 here, before anything is compiled or cached.
        return cls(view, identity, view.filter_queryset(view.get_queryset()))

    @cached_property
    def queryset(self):
        """The view's visible, filtered and ordered queryset (what the COUNT runs on)."""
        return self.view.filter_queryset(self.view.get_queryset())

    def count(self) -> int:
        identity = self.statement_identity
        if identity is None:
            return self.queryset.count()
        statement = statements.counts.get(identity)
        if statement is not None:
            return statement.value()
        value, statement = CountStatement.count(self.queryset)
        if statement is not None:
            statements.put_count(identity, statement)
        return value

    def __getitem__(self, item):
        if not isinstance(item, slice) or item.step is not None:
            raise TypeError("a page source only takes slices")
        key = None if self.statement_identity is None else (self.statement_identity, item.start or 0, item.stop)
        statement = statements.get(key) if key is not None else None
        if statement is None:
            rows = self.view.page_rows(self.queryset)[item]
            statement = Statement.compile(rows) if key is not None else None
            if statement is None:
                return list(rows)
            statements.put(key, statement)
        return statement.rows()


class ListPageMixin:
    """list() for views with `page_rows(queryset)` (rows for the serializer) and `count_scope(request)`:
    a page is counted on the plain queryset and read with a compiled statement (see the module
    docstring)."""

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(PageSource.for_view(self, request))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


class CachedCountPaginator(Paginator):
    """A Django Paginator whose `count` comes from the cache when the same query was counted recently."""

    def __init__(self, object_list, per_page, *args, count_key: str | None = None, count_queryset=None, **kwargs):
        super().__init__(object_list, per_page, *args, **kwargs)
        if count_key is None and hasattr(object_list, "query"):
            count_key = count_cache_key(object_list)
        self.count_key = count_key
        # The same rows without the page's joins (see StandardPagination.paginate_queryset).
        self.count_queryset = count_queryset

    @cached_property
    def count(self) -> int:
        if self.count_key is not None:
            cached = counts.get(self.count_key)
            if cached is not None:
                return cached
        value = self.count_queryset.count() if self.count_queryset is not None else super().count
        if self.count_key is not None:
            counts.set(self.count_key, value)
        return value

    def remember_exact_count(self, value: int) -> None:
        """Store a count known to be exact (a short first page) without a COUNT query."""
        if self.count_key is not None:
            counts.set(self.count_key, value)
        self.__dict__["count"] = value


class StandardPagination(PageNumberPagination):
    django_paginator_class = CachedCountPaginator
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE
    page_query_param = "page"

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None or raw == "":
            return self.page_size
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise ValidationError({"page_size": ["A positive integer is required."]}) from None
        if value < 1:
            raise ValidationError({"page_size": ["A positive integer is required."]})
        return min(value, self.max_page_size)

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        page_size = self.get_page_size(request)
        raw = request.query_params.get(self.page_query_param) or "1"
        try:
            number = int(raw)
        except (TypeError, ValueError):
            raise ValidationError({"page": ["A positive integer is required."]}) from None
        if number < 1:
            raise ValidationError({"page": ["A positive integer is required."]})

        count_queryset = None
        identity = None
        if isinstance(queryset, PageSource):
            # The view filtered and ordered a plain queryset; the page is read as rows with the columns
            # (and joins) of its serializer, the COUNT runs on the plain one: the same rows (the joins
            # follow foreign keys, inner ones only where the key is NOT NULL), without joining four
            # tables for each of them (a department's task count: ~22 ms with the joins).
            count_queryset, identity = queryset, queryset.identity
        paginator = self.django_paginator_class(queryset, page_size, count_queryset=count_queryset,
                                                count_key=count_cache_key(queryset, request, view, identity))
        if number == 1:
            # Fetch the first page without counting; a short page *is* the count.
            rows = list(queryset[: page_size + 1])
            if len(rows) <= page_size:
                paginator.remember_exact_count(len(rows))
            elif paginator.count < len(rows):
                # A cached count older than the rows we can see: never claim fewer than that.
                paginator.remember_exact_count(len(rows))
                paginator.__dict__.pop("num_pages", None)
            self.page = Page(rows[:page_size], 1, paginator)
        else:
            try:
                self.page = paginator.page(number)
            except InvalidPage:
                raise NotFound("Invalid page: there are fewer pages.") from None
        if paginator.num_pages > 1 and self.template is not None:
            self.display_page_controls = True
        return list(self.page)

    def get_paginated_response_schema(self, schema):
        response = super().get_paginated_response_schema(schema)
        response["required"] = ["count", "next", "previous", "results"]
        return response

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["description"] = f"Rows per page (default {self.page_size}, values above {MAX_PAGE_SIZE} are clamped)."
                parameter["schema"] = {"type": "integer", "minimum": 1}
            if parameter["name"] == self.page_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1}
        return parameters
