"""One declaration per list: a ModelSerializer's fields also decide what the list query loads, and are
compiled once into a fast to_representation.

    class TaskSerializer(FastModelSerializer):
        process_name = serializers.CharField(source="process.name", read_only=True)
        class Meta:
            model = Task
            fields = ["id", "process", "process_name", "status", ...]

    TaskSerializer.list_queryset(Task.objects.all())   # select_related("process").only("id", "process", ...)

Adding a field to the list is one entry in Meta.fields (plus a declared field for a related value):
the view's `.only()`/`select_related()` and the output follow. to_representation() gives exactly what
DRF's generic ModelSerializer.to_representation gives (same keys, order and values: the same field
objects format dates, datetimes in the current time zone and choices), without DRF's per-field
machinery on every row (~1.8 ms for a 20-row task page, tests/bench/profile_endpoints.py; the compiled
plan is about 3x faster than that, within ~25 % of a hand-written dict). tests/test_list_serializers.py
compares both on seeded data.

Compiled: model fields and dotted sources through foreign keys (e.g. "work_order.number"). Any other
field (a nested serializer, a method field) keeps DRF's generic per-field code and loads its own data
(the view prefetches it); it is not part of list_queryset().
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, NamedTuple

from django.core.exceptions import ObjectDoesNotExist
from django.db import models
from rest_framework import serializers
from rest_framework.fields import SkipField, empty
from rest_framework.relations import PKOnlyObject

_SKIP = object()  # leave the key out (DRF's SkipField)
_GENERIC = object()  # let DRF's generic code produce the value (and its error)


class _Column(NamedTuple):
    """One compiled field: `get(instance)`, then `convert` (None: pass through, for primary keys)."""

    name: str
    get: Callable[[Any], Any] | None  # None: a field left to DRF's generic code
    convert: Callable[[Any], Any] | None
    attrs: tuple[str, ...]
    when_missing: Any  # the output when a relation on the way is None: None, a default, _SKIP or _GENERIC


@dataclass
class _Plan:
    entries: list[_Column] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)  # for QuerySet.only()
    relations: list[str] = field(default_factory=list)  # for QuerySet.select_related()


def _model_path(model, attrs) -> list[models.Field] | None:
    """The model fields along `attrs` (every step but the last a forward foreign key), or None."""
    path = []
    for index, attr in enumerate(attrs):
        try:
            model_field = model._meta.get_field(attr)
        except Exception:  # noqa: BLE001 - FieldDoesNotExist and friends: not a model field path
            return None
        if not model_field.concrete or model_field.many_to_many:
            return None
        path.append(model_field)
        if index < len(attrs) - 1:
            if not model_field.many_to_one:
                return None
            model = model_field.related_model
    return path


def _converter(serializer_field):
    if type(serializer_field) is serializers.IntegerField:
        return int
    if type(serializer_field) is serializers.CharField:
        return str
    return serializer_field.to_representation


def _when_missing(serializer_field):
    """DRF's Field.get_attribute() when a relation on the way is None (AttributeError)."""
    if serializer_field.default is not empty:
        default = serializer_field.get_default()
        return None if default is None else serializer_field.to_representation(default)
    if serializer_field.allow_null:
        return None
    if not serializer_field.required:
        return _SKIP
    return _GENERIC


def _compile(serializer_class) -> _Plan:
    model = serializer_class.Meta.model
    template = serializer_class(context={})
    plan = _Plan(columns=[model._meta.pk.name])
    for serializer_field in template._readable_fields:
        name, attrs = serializer_field.field_name, tuple(serializer_field.source_attrs)
        path = _model_path(model, attrs) if attrs else None
        is_pk = isinstance(serializer_field, serializers.PrimaryKeyRelatedField)
        if path is None or (is_pk and (serializer_field.pk_field is not None or len(path) != 1)):
            plan.entries.append(_Column(name, None, None, attrs, _GENERIC))  # data loaded by the caller
            continue
        if is_pk:  # DRF's pk-only optimisation reads the foreign key column, e.g. work_order_id
            plan.entries.append(_Column(name, attrgetter(path[0].attname), None, (path[0].attname,), None))
        else:
            when_missing = _when_missing(serializer_field) if len(path) > 1 else None
            plan.entries.append(_Column(name, attrgetter(".".join(attrs)), _converter(serializer_field), attrs,
                                        when_missing))
        column = "__".join(attrs)
        if column not in plan.columns:
            plan.columns.append(column)
        for depth in range(1, len(path)):
            relation = "__".join(attrs[:depth])
            if relation not in plan.relations:
                plan.relations.append(relation)
    return plan


_plans: dict[type, _Plan] = {}


class FastModelSerializer(serializers.ModelSerializer):
    """A ModelSerializer whose fields are the single declaration of a list (see the module docstring)."""

    @classmethod
    def _plan(cls) -> _Plan:
        plan = _plans.get(cls)
        if plan is None:
            plan = _plans[cls] = _compile(cls)
        return plan

    @classmethod
    def list_queryset(cls, queryset: models.QuerySet | None = None) -> models.QuerySet:
        """`queryset` (default: every row) loading exactly the columns and relations the fields read."""
        plan = cls._plan()
        queryset = cls.Meta.model._default_manager.all() if queryset is None else queryset
        return queryset.select_related(*plan.relations).only(*plan.columns)

    def to_representation(self, instance):
        out = {}
        for name, get, convert, attrs, when_missing in (_plans.get(type(self)) or self._plan()).entries:
            if get is None:
                self._generic(name, instance, out)
                continue
            try:
                value = get(instance)
            except AttributeError:  # a relation on the way is None: DRF's rules
                value = self._missing(attrs, when_missing, instance)
                if value is _SKIP:
                    continue
                if value is _GENERIC:
                    self._generic(name, instance, out)
                    continue
            out[name] = value if value is None or convert is None else convert(value)
        return out

    @staticmethod
    def _missing(attrs, when_missing, instance):
        value = instance
        for attr in attrs:
            if value is None:
                return when_missing
            try:
                value = getattr(value, attr)
            except ObjectDoesNotExist:  # DRF's get_attribute() answers None
                return None
        raise AttributeError(f"{type(instance).__name__}.{'.'.join(attrs)}")  # not a None on the way: a real error

    def _generic(self, name: str, instance, out: dict) -> None:
        """One field the way Serializer.to_representation does it."""
        serializer_field = self.fields[name]
        try:
            attribute = serializer_field.get_attribute(instance)
        except SkipField:
            return
        check_for_none = attribute.pk if isinstance(attribute, PKOnlyObject) else attribute
        out[name] = None if check_for_none is None else serializer_field.to_representation(attribute)
