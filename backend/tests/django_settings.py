"""Settings for the test suite: production settings with a test-only secret key.

conftest.py points the default database at a throwaway PostgreSQL (or $DATABASE_URL).
"""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz")
os.environ.setdefault("WORKORDER_STATE_DIR", "/tmp/workorder-tests-state")

from workorder.settings import *  # the production settings, then the test-only overrides below

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in unit tests only
# In-process tests run requests inside transactions that roll back, and a process's listener would hold
# a connection to the test database that pytest-django drops: the token cache is tested with real
# gunicorn workers (tests/test_token_cache.py) and by the stack test.
WORKORDER_TOKEN_CACHE_SECONDS = 0
