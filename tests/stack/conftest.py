"""The production-stack fixture: one `Stack` for the whole module (it takes minutes to seed).

Settings for the run come from the environment so CI and a developer can shrink or grow it:
  WORKORDER_STACK_WORK_ORDERS   (default 20000; the issue requires >= 20,000 work orders, 100,000 tasks)
  WORKORDER_STACK_MIN_TASKS     (default 100000; more work orders are seeded until the tasks reach it)
  WORKORDER_STACK_USERS         (default 100)      WORKORDER_STACK_RUN_TIME (default 60s)
  WORKORDER_STACK_KEEP=1        keep the temporary directory (logs, configs, reports) after the run
"""

from __future__ import annotations

import os
import time

import pytest

from harness.stack import REPO_ROOT, Stack, StackOptions

# Every Locust user shares 127.0.0.1, and nginx limits per client address: the load test runs under
# a limit far above what 100 users with think time send (about 25-40 req/s, logins included), while
# test_rate_limit_module_default reloads nginx with the module's default (10r/s burst 20).
LOADTEST_RATE = "300r/s"
LOADTEST_BURST = 600


@pytest.fixture(scope="module")
def stack():
    options = StackOptions(
        work_orders=int(os.environ.get("WORKORDER_STACK_WORK_ORDERS", "20000")),
        min_tasks=int(os.environ.get("WORKORDER_STACK_MIN_TASKS", "100000")),
        rate_limit=LOADTEST_RATE,
        rate_burst=LOADTEST_BURST,
        keep_dir=os.environ.get("WORKORDER_STACK_KEEP") == "1",
    )
    t0 = time.monotonic()
    stack = Stack(options)
    stack.start()
    stack.timings["start (total)"] = round(time.monotonic() - t0, 1)
    print(f"\n[stack] up in {stack.timings['start (total)']}s at {stack.url} (dir {stack.base}); "
          f"step timings: {stack.timings}")
    try:
        yield stack
    finally:
        stack.stop()
        copied = stack.collect_logs(REPO_ROOT / "reports" / "stack" / "logs")
        print(f"[stack] server logs and configs copied to reports/stack/logs/ ({len(copied)} files)")
        stack.cleanup()
        if options.keep_dir:
            print(f"[stack] kept {stack.base}")


@pytest.fixture(scope="module")
def report_dir():
    path = REPO_ROOT / "reports" / "stack"
    path.mkdir(parents=True, exist_ok=True)
    return path
