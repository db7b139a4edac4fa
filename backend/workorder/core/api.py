"""Shared bits for the API views: the schema class, retry-safe writes (the Idempotency-Key header,
idempotency.py) and integer filters that reject bad input (400)."""

import django_filters
from django import forms

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
