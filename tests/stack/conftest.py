"""Fixtures of the production-stack tests: the run's seeded database and the full-size `Stack`.

The full-size data (>= 20,000 work orders and >= 100,000 tasks, seed_loadtest's account pools) is
seeded once per test run (`seed_cache`, tests/harness/seed.py) and every stack that needs it
starts from a file-level copy: the load-test stack below and the fault test (test_faults.py).

Settings for the run come from the environment so CI and a developer can shrink or grow it:
  WORKORDER_STACK_WORK_ORDERS   (default 20000: the floor is 20,000 work orders and 100,000 tasks)
  WORKORDER_STACK_MIN_TASKS     (default 100000; more work orders are seeded until the tasks reach it)
  WORKORDER_STACK_USERS         (default 100)      WORKORDER_STACK_RUN_TIME (default 60s)
  WORKORDER_STACK_KEEP=1        keep the temporary directory (logs, configs, reports) after the run
"""

from __future__ import annotations

import os
import time

import pytest

from harness.seed import SeedCache
from harness.stack import REPO_ROOT, Stack, StackOptions

# Every Locust user shares 127.0.0.1, and nginx limits per client address: the load test runs under
# a limit far above what 100 users with think time send (about 25-40 req/s, logins included), while
# test_rate_limit_module_default reloads nginx with the module's default (10r/s burst 20).
LOADTEST_RATE = "300r/s"
LOADTEST_BURST = 600


@pytest.fixture(scope="session")
def seed_cache():
    """The run's seeded template clusters, built on first use, removed at the end of the session."""
    cache = SeedCache()
    try:
        yield cache
    finally:
        for template in cache.templates.values():
            print(f"\n[seed template] {template.spec}: seeded once in {template.timings.get('template (total)')}s, "
                  f"copied for {template.clones} stack(s)")
        cache.cleanup()


@pytest.fixture(scope="session")
def full_size_options(seed_cache):
    """StackOptions(**overrides) with the full-size data, copied from the run's seeded template."""

    def make(**overrides) -> StackOptions:
        return StackOptions(
            work_orders=int(os.environ.get("WORKORDER_STACK_WORK_ORDERS", "20000")),
            min_tasks=int(os.environ.get("WORKORDER_STACK_MIN_TASKS", "100000")),
            seed_cache=seed_cache,
            keep_dir=os.environ.get("WORKORDER_STACK_KEEP") == "1",
            **overrides,
        )

    return make


@pytest.fixture(scope="module")
def stack(full_size_options):
    options = full_size_options(rate_limit=LOADTEST_RATE, rate_burst=LOADTEST_BURST)
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
