"""Shared bits for the API views: the schema class, retry-safe writes (the Idempotency-Key header,
idempotency.py), integer filters that reject bad input (400) and reference lists kept per process."""

import time

import django_filters
from django import forms
from django.conf import settings
from rest_framework.response import Response

from . import idempotency
from .schema import ErrorResponseAutoSchema

MAX_ID = 2**63 - 1


class IdFilter(django_filters.NumberFilter):
    """An integer id filter: non-integers and out-of-range values are a 400, unknown ids match nothing."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)


class StrictBooleanFilter(django_filters.ChoiceFilter):
    """true/false/1/0 (anything else is a 400, unlike django-filter's BooleanFilter which ignores it)."""

    def __init__(self, *args, **kwargs):
        kwargs["choices"] = [("true", "true"), ("false", "false"), ("1", "1"), ("0", "0")]
        super().__init__(*args, **kwargs)

    @staticmethod
    def as_bool(value: str) -> bool:
        return value in ("true", "1")


class ApiViewMixin:
    schema = ErrorResponseAutoSchema()
    # Any id-like path segment (also "1.5", "abc") reaches the view and becomes a JSON 404 there.
    lookup_value_regex = "[^/]+"
    # Writes accept an Idempotency-Key header (idempotency.py); False ignores it (login, logout).
    idempotent_writes = True

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)  # authentication, permissions, throttles
        idempotency.guard(self, request)


class ReferenceListMixin:
    """list() answers kept in each server process for REFERENCE_CACHE_SECONDS
    (WORKORDER_REFERENCE_CACHE_SECONDS, default 10; 0 disables it).

    For reference data every signed-in user sees alike and that changes only when someone edits it in
    the admin (the catalog, the user directory): an edit shows in these lists within that time. Writes
    never read these answers (a work order's product, an assignment's operator are checked in the
    database). Kept by view, scheme and host (the page links are absolute) and query string; only
    200s; permissions are checked before list() runs."""

    MAX_ENTRIES = 512
    MAX_QUERY_CHARS = 512  # longer query strings are answered without keeping the answer
    _answers: dict[tuple, tuple[float, object]] = {}

    def list(self, request, *args, **kwargs):
        seconds = int(getattr(settings, "REFERENCE_CACHE_SECONDS", 10))
        query = request.META.get("QUERY_STRING", "")
        if seconds <= 0 or len(query) > self.MAX_QUERY_CHARS:
            return super().list(request, *args, **kwargs)
        key = (type(self), request.scheme, request.get_host(), query)
        now = time.monotonic()
        kept = self._answers.get(key)
        if kept is not None and kept[0] > now:
            return Response(kept[1])
        response = super().list(request, *args, **kwargs)
        if response.status_code == 200:
            if len(self._answers) >= self.MAX_ENTRIES:
                self._answers.clear()
            self._answers[key] = (now + seconds, response.data)
        return response
