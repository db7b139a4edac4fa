"""Page-number pagination with bounded page sizes and cheap counts.

Response shape: {"count", "next", "previous", "results"}.
- `page_size`: default 20 (settings.REST_FRAMEWORK["PAGE_SIZE"]), values above MAX_PAGE_SIZE (100)
  are clamped to 100; 0, negative or non-integer values are a 400.
- `page`: 1-based; a non-integer or < 1 is a 400, a page past the last one is a 404 (both JSON).
- `count` is exact but may be up to PAGINATION_COUNT_CACHE_SECONDS (default 5) old: the
  COUNT(*) of a given query (its SQL and parameters, which include the caller's visibility
  filter) is cached in the Django cache, because on 100k+ rows the count costs ~4x the rest of
  the request (see docs/api.md). A short first page (fewer rows than page_size) gives the exact
  count for free and refreshes the cache.
"""

from __future__ import annotations

import hashlib
from functools import cached_property

from django.conf import settings
from django.core.cache import cache
from django.core.paginator import InvalidPage, Paginator
from django.db import DEFAULT_DB_ALIAS, connections
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import PageNumberPagination

MAX_PAGE_SIZE = 100


def count_cache_seconds() -> int:
    return int(getattr(settings, "PAGINATION_COUNT_CACHE_SECONDS", 5))


def _count_cache_key(queryset) -> str | None:
    try:
        sql, params = queryset.query.sql_with_params()
    except Exception:  # noqa: BLE001 - EmptyResultSet and friends: let the paginator count normally
        return None
    vendor = connections[queryset.db or DEFAULT_DB_ALIAS].vendor
    digest = hashlib.sha256(f"{vendor}|{sql}|{params!r}".encode()).hexdigest()
    return f"pagecount:{digest}"


class CachedCountPaginator(Paginator):
    """A Django Paginator whose `count` comes from the cache when the same query was counted recently."""

    @cached_property
    def count(self) -> int:
        key = _count_cache_key(self.object_list) if hasattr(self.object_list, "query") else None
        if key is not None:
            cached = cache.get(key)
            if cached is not None:
                return cached
        value = super().count
        if key is not None:
            cache.set(key, value, count_cache_seconds())
        return value

    def remember_exact_count(self, value: int) -> None:
        """Store a count known to be exact (a short first page) without a COUNT query."""
        key = _count_cache_key(self.object_list) if hasattr(self.object_list, "query") else None
        if key is not None:
            cache.set(key, value, count_cache_seconds())
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

        paginator = self.django_paginator_class(queryset, page_size)
        if number == 1:
            # Fetch the first page without counting; a short page *is* the count.
            rows = list(queryset[: page_size + 1])
            if len(rows) <= page_size:
                paginator.remember_exact_count(len(rows))
            elif paginator.count < len(rows):
                # A cached count older than the rows we can see: never claim fewer than that.
                paginator.remember_exact_count(len(rows))
                paginator.__dict__.pop("num_pages", None)
            self.page = paginator.page(1)
            self.page.object_list = rows[:page_size]
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
