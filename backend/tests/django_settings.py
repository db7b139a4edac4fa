"""Settings for the test suite: production settings with a test-only secret key.

conftest.py points the default database at a throwaway PostgreSQL (or $DATABASE_URL).
"""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz")
os.environ.setdefault("WORKORDER_STATE_DIR", "/tmp/workorder-tests-state")

from workorder.settings import *  # the production settings, then the test-only overrides below

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in unit tests only
