"""Reads whose SQL the ORM compiles once per process (PostgreSQL and SQLite alike).

Building and compiling a queryset of the API's hot reads (a list page's five-table join, a task with
its work order, process, department and operator) costs more CPU than the database spends answering
it. A `Statement` keeps what the ORM compiled for a values_list() queryset: the SQL, its parameters
and the column converters its rows need, and runs it again on the calling thread's connection. Only
SQL is kept, never rows: every run reads current data.

- List pages (core/pagination.py) keep one statement per page key: equal keys compile to equal SQL
  and parameters.
- A list's COUNT (core/pagination.py) keeps the statement the ORM ran for it, captured as it ran (so it
  is the ORM's own SQL whatever its version), per list key: building the filtered queryset and
  compiling its COUNT took ~5 times the worker CPU of running it (a profile of the workers at 800
  users), on every miss of the count cache.
- `row_by_pk` keeps one statement per read shape with the primary key as a parameter: compiled once
  with a sentinel in the key's place, which must appear exactly once among the parameters (else the
  shape is read through the ORM every time).
"""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import EmptyResultSet, ValidationError
from django.db import connections
from django.db.models import QuerySet
from django.db.models.query import ValuesListIterable

# Never a primary key (keys are positive), and distinct from any parameter a filter would produce.
SENTINEL = -(2**62) - 7919
MAX_KEY = 2**63 - 1  # bigint
MAX_SHAPES = 1024


class Statement:
    """One values_list() queryset's SQL as the ORM compiled it, with the converters its rows need."""

    __slots__ = ("alias", "converters", "params", "sql", "width")

    def __init__(self, alias, sql, params, width, converters) -> None:
        self.alias, self.sql, self.params, self.width, self.converters = alias, sql, params, width, converters

    @classmethod
    def compile(cls, queryset) -> Statement | None:
        """The statement of a values_list() queryset; None for anything else (read it normally)."""
        query = queryset.query
        if (queryset._iterable_class is not ValuesListIterable or query.extra_select or query.annotation_select
                or query.combinator or query.select_for_update):
            return None
        compiler = query.get_compiler(queryset.db)
        try:
            sql, params = compiler.as_sql()
        except EmptyResultSet:
            return None
        fields = [expression for expression, _, _ in compiler.select[: compiler.col_count]]
        if len(fields) != len(queryset._fields) or compiler.has_composite_fields(fields):
            return None
        return cls(queryset.db, sql, tuple(params), compiler.col_count, compiler.get_converters(fields))

    def rows(self, params: tuple | list | None = None) -> list[tuple]:
        """Run the statement (with `params` in place of the compiled ones) on this thread's connection:
        the rows values_list() would give."""
        connection = connections[self.alias]
        with connection.cursor() as cursor:
            cursor.execute(self.sql, self.params if params is None else params)
            fetched = cursor.fetchall()
        if not self.converters:
            return [row if len(row) == self.width else tuple(row[: self.width]) for row in fetched]
        converters = list(self.converters.items())
        out = []
        for fetched_row in fetched:
            row = list(fetched_row[: self.width])
            for position, (functions, expression) in converters:
                value = row[position]
                for convert in functions:
                    value = convert(value, expression, connection)
                row[position] = value
            out.append(tuple(row))
        return out


class CountStatement:
    """The one statement a queryset's count() ran, to run again for the same count."""

    __slots__ = ("alias", "params", "sql")

    def __init__(self, alias, sql, params) -> None:
        self.alias, self.sql, self.params = alias, sql, params

    @classmethod
    def count(cls, queryset) -> tuple[int, CountStatement | None]:
        """`queryset.count()` and the statement it ran; None when it ran none (an empty result known
        beforehand, rows already read) or more than one."""
        alias = queryset.db
        executed = []

        def capture(execute, sql, params, many, context):
            executed.append((sql, params, many))
            return execute(sql, params, many, context)

        wrappers = connections[alias].execute_wrappers  # this thread's connection: no other thread's list
        wrappers.insert(0, capture)  # outermost: the SQL as the ORM sent it (core/prepared.py runs inside)
        try:
            value = queryset.count()
        finally:
            wrappers.remove(capture)
        if len(executed) != 1 or executed[0][2]:
            return value, None
        sql, params, _ = executed[0]
        return value, cls(alias, sql, tuple(params or ()))

    def value(self) -> int:
        with connections[self.alias].cursor() as cursor:
            cursor.execute(self.sql, self.params)
            return int(cursor.fetchone()[0])


class _Template:
    """A statement whose parameter at `index` is the primary key."""

    __slots__ = ("index", "statement")

    def __init__(self, statement: Statement, index: int) -> None:
        self.statement, self.index = statement, index

    def rows(self, pk: int) -> list[tuple]:
        params = list(self.statement.params)
        params[self.index] = pk
        return self.statement.rows(params)


_templates: dict[tuple, _Template | None] = {}
_UNKNOWN = object()


def _template(queryset_for: Callable[[int], QuerySet]) -> _Template | None:
    statement = Statement.compile(queryset_for(SENTINEL))
    if statement is None:
        return None
    positions = [index for index, param in enumerate(statement.params) if param == SENTINEL]
    return _Template(statement, positions[0]) if len(positions) == 1 else None


def rows_by_pk(shape: tuple, queryset_for: Callable[[int], QuerySet], pk: int) -> list[tuple]:
    """The rows of `queryset_for(pk)`, a values_list() queryset whose SQL depends on nothing but `shape`
    and `pk` (the caller's promise: put the visibility scope and anything else that changes the SQL
    in `shape`)."""
    template = _templates.get(shape, _UNKNOWN)  # one lookup: another thread may clear the dict meanwhile
    if template is _UNKNOWN:
        if len(_templates) >= MAX_SHAPES:
            _templates.clear()
        template = _templates[shape] = _template(queryset_for)
    return list(queryset_for(pk)) if template is None else template.rows(pk)


def parse_pk(model, value) -> int | None:
    """A URL's primary key as the model's key field reads it; None where no row can have it."""
    try:
        pk = model._meta.pk.to_python(value)
    except (ValidationError, TypeError, ValueError):
        return None
    return pk if isinstance(pk, int) and 0 < pk <= MAX_KEY else None


def clear() -> None:
    _templates.clear()
