"""Every backend test runs against real PostgreSQL: $DATABASE_URL, or a throwaway cluster started here."""

import os

import dj_database_url
import pytest

from harness.services import PostgresServer


@pytest.fixture(scope="session")
def postgres_server():
    """The throwaway PostgreSQL cluster (None when $DATABASE_URL names an existing server)."""
    if os.environ.get("DATABASE_URL"):
        yield None
        return
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(postgres_server, django_db_modify_db_settings_parallel_suffix):
    from django.conf import settings
    from django.db import connections

    if postgres_server is not None:
        parsed = dj_database_url.parse(postgres_server.url("workorder"))
        db = settings.DATABASES["default"]
        db.update({key: parsed[key] for key in ("NAME", "USER", "PASSWORD", "HOST", "PORT")})
        db["ENGINE"] = "workorder.core.postgresql"
        db["OPTIONS"] = {"connect_timeout": 5}
        db["CONN_MAX_AGE"] = 0
        try:
            del connections["default"]
        except (AttributeError, KeyError):
            pass
    assert "postgresql" in settings.DATABASES["default"]["ENGINE"], "the test suite runs on PostgreSQL only"


@pytest.fixture(autouse=True)
def _fresh_cache():
    """No test sees what another left in the Django cache (pagination counts, statistics), nor in
    this process's copies of the counts and of the reference lists, nor its compiled statements (a test
    that breaks a queryset method sees it called)."""
    from django.core.cache import cache

    from workorder.core import pagination, statements
    from workorder.core.api import ReferenceListMixin

    cache.clear()
    pagination.counts.clear_local()
    pagination.statements.clear()
    statements.clear()
    ReferenceListMixin._answers.clear()
    yield
