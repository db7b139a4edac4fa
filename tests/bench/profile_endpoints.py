"""Profile the hot API endpoints in-process on PostgreSQL + Redis with realistic data.

    .venv/bin/python tests/bench/profile_endpoints.py                  # start, seed, measure, stop
    .venv/bin/python tests/bench/profile_endpoints.py -n 200 --profile 15
    .venv/bin/python tests/bench/profile_endpoints.py --keep           # leave the servers running (prints env)
    DATABASE_URL=... REDIS_URL=... .venv/bin/python tests/bench/profile_endpoints.py --reuse

It starts a throwaway PostgreSQL and Redis (tests/harness/services.py), runs `workorder-manage migrate`
and `seed_loadtest --force --work-orders N` + ANALYZE, then, in this process, with the production
settings (DEBUG off, Redis cache, token auth), calls every endpoint below N times through
rest_framework.test.APIClient with an `Authorization: Token` header, and prints per endpoint the mean
wall-clock ms per request (the whole Django stack: middleware, auth, view, serializer, JSON) and the
SQL queries per request. `--profile K` adds the top K cProfile entries (cumulative) per endpoint.

This measures server-side CPU + database time of one request with no concurrency; it is a
benchmark script, not a test (nothing is asserted).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.harness.services import PostgresServer, RedisServer

BIN_DIR = Path(sys.executable).parent


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([str(BIN_DIR / "workorder-manage"), *args], env=env, check=True, capture_output=True, text=True)


def start_services(work_orders: int, password: str):
    postgres = PostgresServer().start()
    redis = RedisServer().start()
    postgres.psql('CREATE DATABASE "workorder"')
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "workorder.settings",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "profile-endpoints-not-secret",
        "ALLOWED_HOSTS": "testserver,localhost,127.0.0.1",
        "DATABASE_URL": postgres.url("workorder"),
        "REDIS_URL": redis.url(0),
        "WORKORDER_STATE_DIR": str(postgres.base),
    }
    t0 = time.monotonic()
    manage(env, "migrate", "--noinput")
    manage(env, "seed_loadtest", "--force", "--work-orders", str(work_orders), "--password", password)
    postgres.psql("ANALYZE", dbname="workorder")
    print(f"# migrate + seed {work_orders} work orders + ANALYZE: {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return postgres, redis, env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--repeat", type=int, default=100, help="requests per endpoint (default 100)")
    parser.add_argument("--work-orders", type=int, default=20000)
    parser.add_argument("--profile", type=int, default=0, metavar="K", help="print the top K cProfile entries")
    parser.add_argument("--only", default="", help="comma list of endpoint names to run")
    parser.add_argument("--keep", action="store_true", help="leave PostgreSQL/Redis running and print their env")
    parser.add_argument("--reuse", action="store_true", help="use DATABASE_URL/REDIS_URL from the env (seeded)")
    args = parser.parse_args()

    postgres = redis = None
    if args.reuse:
        env = {"DJANGO_SETTINGS_MODULE": "workorder.settings", "DJANGO_DEBUG": "false",
               "DJANGO_SECRET_KEY": "profile-endpoints-not-secret", "ALLOWED_HOSTS": "testserver,localhost"}
        os.environ.update({k: v for k, v in env.items() if k not in os.environ})
    else:
        postgres, redis, env = start_services(args.work_orders, "pw")
        os.environ.update(env)
        if args.keep:
            print(f"DATABASE_URL={env['DATABASE_URL']} REDIS_URL={env['REDIS_URL']}", file=sys.stderr)
    try:
        return run(args)
    finally:
        if not args.keep:
            if redis:
                redis.stop()
                shutil.rmtree(redis.base, ignore_errors=True)
            if postgres:
                postgres.cleanup()


def run(args) -> int:
    import django

    django.setup()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    from workorder.accounts.models import User
    from workorder.accounts.tokens import issue_token
    from workorder.production.models import Task, TaskStatus

    def client_for(username: str) -> tuple[APIClient, User]:
        user = User.objects.get(username=username)
        _, key = issue_token(user, device="profile_endpoints")
        client = APIClient(HTTP_AUTHORIZATION=f"Token {key}")
        return client, user

    operator_c, operator = client_for("loadtest-operator-0001")
    supervisor_c, supervisor = client_for("loadtest-supervisor-0001")
    maker_c, _maker = client_for("loadtest-maker-0001")
    dept = supervisor.department_id
    dept_operators = list(User.objects.filter(role="operator", department_id=dept, is_active=True)
                          .values_list("pk", flat=True)[:10])
    op_dept = operator.department_id
    detail_task = Task.objects.filter(assigned_department_id=op_dept).order_by("id").values_list("pk", flat=True)[100]

    # Targets for the writes, one per iteration, picked before measuring.
    n = args.repeat
    assign_targets = list(Task.objects.filter(assigned_department_id=dept, status=TaskStatus.PENDING)
                          .order_by("id").values_list("pk", flat=True)[:n + 1])
    claim_targets = list(Task.objects.filter(assigned_department_id=op_dept, status=TaskStatus.PENDING,
                                             assigned_operator__isnull=True)
                         .order_by("-id").values_list("pk", flat=True)[:n + 1])
    # update_progress: the operator's in-progress first-step tasks (no previous step limits them).
    progress_pool = []

    def progress_target():
        while True:
            if not progress_pool:
                for pk in Task.objects.filter(assigned_department_id=op_dept, status=TaskStatus.PENDING,
                                              sequence=1, assigned_operator__isnull=True,
                                              planned_quantity__gte=50).order_by("id").values_list("pk", flat=True)[:5]:
                    Task.objects.filter(pk=pk).update(status=TaskStatus.IN_PROGRESS, assigned_operator=operator)
                    progress_pool.append(pk)
            pk = progress_pool[0]
            task = Task.objects.get(pk=pk)
            if task.status == TaskStatus.IN_PROGRESS and task.planned_quantity - task.completed_quantity > 1:
                return pk
            progress_pool.pop(0)

    it = {"assign": iter(assign_targets), "claim": iter(claim_targets)}
    endpoints = [
        ("tasks list (operator)", lambda i: operator_c.get("/api/tasks/")),
        ("tasks list ?status=pending (operator)", lambda i: operator_c.get("/api/tasks/?status=pending")),
        ("tasks list (supervisor)", lambda i: supervisor_c.get("/api/tasks/")),
        ("tasks list ?status=in_progress (supervisor)", lambda i: supervisor_c.get("/api/tasks/?status=in_progress")),
        ("tasks list page 3 (supervisor)", lambda i: supervisor_c.get("/api/tasks/?page=3")),
        ("workorders list pages 1-3 (maker)", lambda i: maker_c.get(f"/api/workorders/?page={i % 3 + 1}")),
        ("workorders list (supervisor)", lambda i: supervisor_c.get("/api/workorders/")),
        ("task detail (operator)", lambda i: operator_c.get(f"/api/tasks/{detail_task}/")),
        ("notifications (operator)", lambda i: operator_c.get("/api/notifications/")),
        ("statistics/task_summary", lambda i: operator_c.get("/api/statistics/task_summary/")),
        ("statistics/department_workload", lambda i: supervisor_c.get("/api/statistics/department_workload/")),
        ("statistics/collaboration", lambda i: supervisor_c.get("/api/statistics/collaboration/")),
        ("POST assign (supervisor)", lambda i: supervisor_c.post(
            f"/api/tasks/{next(it['assign'])}/assign/", {"operator_id": dept_operators[i % len(dept_operators)]},
            format="json")),
        ("POST claim (operator)", lambda i: operator_c.post(f"/api/tasks/{next(it['claim'])}/claim/")),
        ("POST update_progress (operator)", None),
    ]
    only = {name.strip() for name in args.only.split(",") if name.strip()}

    print("| endpoint | requests | mean ms/request | SQL queries/request | SQL ms/request |")
    print("|---|---:|---:|---:|---:|")
    profiles = []
    for name, call in endpoints:
        if only and not any(o in name for o in only):
            continue
        if name.startswith("POST") and name.split()[1] in it and len(
                {"assign": assign_targets, "claim": claim_targets}[name.split()[1]]) < n + 1:
            print(f"| {name} | skipped: fewer than {n} targets | | | |")
            continue
        # warm-up: first-call imports and connections are not what we measure (writes: one target)
        for i in range(1 if name.startswith("POST") else 3):
            if name.startswith("POST update_progress"):
                pk = progress_target()
                response = operator_c.post(f"/api/tasks/{pk}/update_progress/", {"quantity": 1}, format="json")
            else:
                response = call(i)
            assert response.status_code == 200, (name, response.status_code, response.content[:300])
        elapsed = 0.0
        queries = 0
        sql_ms = 0.0
        profiler = cProfile.Profile() if args.profile else None
        for i in range(n):
            extra = None
            if name.startswith("POST update_progress"):
                extra = progress_target()  # outside the measured window

                def call(i, _pk=extra):
                    return operator_c.post(f"/api/tasks/{_pk}/update_progress/", {"quantity": 1}, format="json")
            with CaptureQueriesContext(connection) as ctx:
                t0 = time.perf_counter()
                if profiler:
                    profiler.enable()
                response = call(i)
                if profiler:
                    profiler.disable()
                elapsed += time.perf_counter() - t0
            assert response.status_code == 200, (name, response.status_code, response.content[:300])
            queries += len(ctx.captured_queries)
            sql_ms += sum(float(q["time"]) for q in ctx.captured_queries) * 1000
        print(f"| {name} | {n} | {elapsed / n * 1000:.2f} | {queries / n:.1f} | {sql_ms / n:.2f} |", flush=True)
        if profiler:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(args.profile)
            profiles.append((name, out.getvalue()))
    for name, text in profiles:
        print(f"\n## {name}\n")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
