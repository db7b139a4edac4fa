"""Helpers for the runtime tests: a real (non-test) database, the server environment, setup scripts."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import dj_database_url

BIN_DIR = Path(sys.executable).parent
SECRET_KEY = "runtime-tests-" + "k3Y9-x7Qz-Lm2P-8vRt-Wn4J-" * 3  # >= 50 chars, many unique: passes W009


def script(name: str) -> str:
    return str(BIN_DIR / name)


def create_database(postgres_server, prefix: str = "wo_runtime") -> str:
    """A fresh database for server processes (pytest-django's test database is for in-process tests)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    if postgres_server is not None:
        return postgres_server.create_database(name)
    import psycopg2

    base = dj_database_url.parse(os.environ["DATABASE_URL"])
    conn = psycopg2.connect(dbname="postgres", user=base["USER"], password=base["PASSWORD"] or None,
                            host=base["HOST"] or None, port=base["PORT"] or None)
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    url = os.environ["DATABASE_URL"]
    return url.rsplit("/", 1)[0] + "/" + name


def server_env(tmp: Path, database_url: str | None = None, redis_url: str | None = None, **extra) -> dict:
    env = {
        "PATH": os.pathsep.join([str(BIN_DIR), os.environ.get("PATH", "/usr/bin:/bin")]),
        "HOME": str(tmp),
        "LANG": "C.UTF-8",
        "DJANGO_SETTINGS_MODULE": "workorder.settings",
        "DJANGO_SECRET_KEY": SECRET_KEY,
        "ALLOWED_HOSTS": "localhost,127.0.0.1",
        "WORKORDER_STATE_DIR": str(tmp / "state"),
        "LOG_LEVEL": "INFO",
    }
    if database_url:
        env["DATABASE_URL"] = database_url
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update({key: str(value) for key, value in extra.items()})
    return env


def manage(env: dict, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([script("workorder-manage"), *args], env=env, capture_output=True, text=True,
                            timeout=timeout, cwd=env.get("HOME", "/"))
    if check and result.returncode != 0:
        raise AssertionError(f"workorder-manage {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def run_python(env: dict, code: str, timeout: float = 120) -> dict:
    """Run `code` with Django set up in a separate process (workorder-manage shell); it must print JSON last."""
    result = manage(env, "shell", "-c", code, timeout=timeout)
    return json.loads(result.stdout.strip().splitlines()[-1])


SETUP_USERS = r"""
import json, datetime
from workorder.accounts.models import User
from workorder.accounts.tokens import issue_token
from workorder.catalog.models import Department, Process, Customer, Product, RoutingStep
dept, _ = Department.objects.get_or_create(name="Runtime Assembly")
proc, _ = Process.objects.get_or_create(name="Runtime Assemble", defaults={"department": dept})
customer, _ = Customer.objects.get_or_create(name="Runtime Customer")
product, _ = Product.objects.get_or_create(sku="RT-1", defaults={"name": "Runtime widget"})
RoutingStep.objects.get_or_create(product=product, process=proc, sequence=1)
out = {"customer": customer.pk, "product": product.pk, "department": dept.pk}
for name, role, in_dept in (("rt_maker", "maker", False), ("rt_supervisor", "supervisor", True),
                            ("rt_operator", "operator", True), ("rt_other", "maker", False)):
    user, _ = User.objects.get_or_create(username=name, defaults={"role": role})
    if in_dept:
        user.department = dept
    user.set_password("runtime-pass-123")
    user.save()
    out[name] = {"id": user.pk, "token": issue_token(user)[1]}
print(json.dumps(out))
"""


def random_token() -> str:
    return secrets.token_hex(20)
