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

Lists go one step further when every field is compiled: `list_rows(queryset)` is a values_list() of
exactly the columns the fields read (plus the foreign keys of nullable relations, to tell "no
operator" from a NULL column), and to_representation() turns such a row tuple into the same dict
without building a model instance per table and row (a 20-row task page builds 100 of them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any, NamedTuple

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import models
from django.utils import timezone
from rest_framework import ISO_8601, serializers
from rest_framework.fields import SkipField, empty
from rest_framework.relations import PKOnlyObject
from rest_framework.settings import api_settings

_SKIP = object()  # leave the key out (DRF's SkipField)
_GENERIC = object()  # let DRF's generic code produce the value (and its error)


class _Column(NamedTuple):
    """One compiled field: `get(instance)`, then `convert` (None: pass through, for primary keys)."""

    name: str
    get: Callable[[Any], Any] | None  # None: a field left to DRF's generic code
    convert: Callable[..., Any] | None  # (value) or, when `zoned`, (value, current time zone)
    attrs: tuple[str, ...]
    when_missing: Any  # the output when a relation on the way is None: None, a default, _SKIP or _GENERIC
    zoned: bool = False


class _RowColumn(NamedTuple):
    """One field read from a values_list() row: row[index], unless a nullable relation on the way is
    None (a row[guard] is None): then `when_missing`."""

    name: str
    index: int
    convert: Callable[..., Any] | None
    guards: tuple[int, ...]
    when_missing: Any
    zoned: bool = False


@dataclass
class _Plan:
    entries: list[_Column] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)  # for QuerySet.only()
    relations: list[str] = field(default_factory=list)  # for QuerySet.select_related()
    row_columns: list[str] = field(default_factory=list)  # for QuerySet.values_list(); [] = no row path
    row_entries: list[_RowColumn] = field(default_factory=list)
    zoned: bool = False  # some converter needs the current time zone


def _plan_rows(plan: _Plan, paths: dict[str, list[models.Field]]) -> None:
    """Fill plan.row_columns/row_entries, or leave them empty when a field needs DRF's generic code."""
    columns: list[str] = []

    def index_of(column: str) -> int:
        if column not in columns:
            columns.append(column)
        return columns.index(column)

    entries = []
    for entry in plan.entries:
        path = paths.get(entry.name)
        if entry.get is None or path is None:
            return
        if len(path) == 1:  # a column of the model itself (a foreign key: its attname, e.g. work_order_id)
            column = path[0].attname if path[0].many_to_one else path[0].name
            entries.append(_RowColumn(entry.name, index_of(column), entry.convert, (), None, entry.zoned))
            continue
        guards = []
        for depth, step in enumerate(path[:-1]):
            if step.null:  # a nullable relation: its foreign key column says whether it is there
                guards.append(index_of("__".join([*entry.attrs[:depth], step.attname])))
        if guards and entry.when_missing is _GENERIC:
            return  # DRF would raise for a missing relation: only the instance path reproduces that
        entries.append(_RowColumn(entry.name, index_of("__".join(entry.attrs)), entry.convert, tuple(guards),
                                  entry.when_missing, entry.zoned))
    plan.row_columns, plan.row_entries = columns, entries


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


def _converter(serializer_field) -> tuple[Callable[..., Any], bool]:
    """(convert, zoned): zoned converters take the current time zone as a second argument."""
    if type(serializer_field) is serializers.IntegerField:
        return int, False
    if type(serializer_field) is serializers.CharField:
        return str, False
    if _plain_iso_datetime(serializer_field):
        return _iso_datetime(serializer_field.to_representation), True
    return serializer_field.to_representation, False


def _plain_iso_datetime(serializer_field) -> bool:
    """A DateTimeField rendered the default way: ISO 8601 in the current time zone."""
    return (
        type(serializer_field) is serializers.DateTimeField
        and not hasattr(serializer_field, "timezone")
        and str(getattr(serializer_field, "format", api_settings.DATETIME_FORMAT)).lower() == ISO_8601
        and settings.USE_TZ
    )


def _iso_datetime(generic: Callable[[Any], Any]) -> Callable[[Any, Any], Any]:
    """DateTimeField.to_representation for an aware datetime, with the current time zone looked up once
    per serializer (a list page's rows share their child serializer) instead of once per value (the
    lookup is most of DRF's cost: a 20-row task page renders 80 datetimes). Anything else (naive values, strings, a time zone overflow) takes DRF's own code."""

    def convert(value, zone):
        if type(value) is datetime and value.tzinfo is not None:
            try:
                text = value.astimezone(zone).isoformat()
            except OverflowError:
                return generic(value)  # DRF's "overflow" validation error
            return text[:-6] + "Z" if text.endswith("+00:00") else text
        return generic(value)

    return convert


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
    paths: dict[str, list[models.Field]] = {}
    for serializer_field in template._readable_fields:
        name, attrs = serializer_field.field_name, tuple(serializer_field.source_attrs)
        path = _model_path(model, attrs) if attrs else None
        if path is not None:
            paths[name] = path
        is_pk = isinstance(serializer_field, serializers.PrimaryKeyRelatedField)
        if path is None or (is_pk and (serializer_field.pk_field is not None or len(path) != 1)):
            plan.entries.append(_Column(name, None, None, attrs, _GENERIC))  # data loaded by the caller
            continue
        if is_pk:  # DRF's pk-only optimisation reads the foreign key column, e.g. work_order_id
            plan.entries.append(_Column(name, attrgetter(path[0].attname), None, (path[0].attname,), None))
        else:
            when_missing = _when_missing(serializer_field) if len(path) > 1 else None
            convert, zoned = _converter(serializer_field)
            plan.entries.append(_Column(name, attrgetter(".".join(attrs)), convert, attrs, when_missing, zoned))
        column = "__".join(attrs)
        if column not in plan.columns:
            plan.columns.append(column)
        for depth in range(1, len(path)):
            relation = "__".join(attrs[:depth])
            if relation not in plan.relations:
                plan.relations.append(relation)
    _plan_rows(plan, paths)
    plan.zoned = any(entry.zoned for entry in plan.entries)
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

    @classmethod
    def list_rows(cls, queryset: models.QuerySet | None = None) -> models.QuerySet:
        """`queryset` as values_list() rows of exactly what the fields read (to_representation() takes
        them); list_queryset() if some field needs model instances."""
        plan = cls._plan()
        if not plan.row_columns:
            return cls.list_queryset(queryset)
        queryset = cls.Meta.model._default_manager.all() if queryset is None else queryset
        return queryset.values_list(*plan.row_columns)

    def to_representation(self, instance):
        plan = _plans.get(type(self)) or self._plan()
        zone = None
        if plan.zoned:  # one request, one zone: looked up for its first row only
            zone = self.__dict__.get("_zone")
            if zone is None:
                zone = self.__dict__["_zone"] = timezone.get_current_timezone()
        if type(instance) is tuple:  # a list_rows() row
            out = {}
            for name, index, convert, guards, when_missing, zoned in plan.row_entries:
                if guards and any(instance[guard] is None for guard in guards):
                    if when_missing is not _SKIP:
                        out[name] = when_missing
                    continue
                value = instance[index]
                if value is None or convert is None:
                    out[name] = value
                else:
                    out[name] = convert(value, zone) if zoned else convert(value)
            return out
        out = {}
        for name, get, convert, attrs, when_missing, zoned in plan.entries:
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
            if value is None or convert is None:
                out[name] = value
            else:
                out[name] = convert(value, zone) if zoned else convert(value)
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
