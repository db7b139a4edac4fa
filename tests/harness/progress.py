"""Progress lines for long steps (seeding, a load test, the fault run): one line every ~10 s.

    with Ticker(10, lambda: f"{rows()} rows so far", prefix="[stack] seeding"):
        long_step()

`report` runs in a daemon thread; it returns the line to print (None: print nothing this time). A
failing report prints its error once and keeps the step going: progress output never fails a test.
`locust_progress(prefix)` is a ready-made report for a running Locust (workorder-loadtest writes
`<report dir>/locust_stats_history.csv`, one Aggregated row per second, flushed every few seconds).
"""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self


class Ticker:
    def __init__(self, interval: float, report: Callable[[], str | None], prefix: str = "", log=print):
        self.interval = interval
        self.report = report
        self.prefix = prefix
        self.log = log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"progress {prefix}")
        self._failed = False
        self.t0 = 0.0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                line = self.report()
            except Exception as exc:  # noqa: BLE001 - progress output must never break the step it reports on
                if not self._failed:
                    self._failed = True
                    self.log(f"{self.prefix} progress unavailable: {exc!r}")
                continue
            if line:
                self.log(f"{self.prefix} {time.monotonic() - self.t0:.0f}s: {line}")

    def __enter__(self) -> Self:
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def locust_history_row(history_csv: Path) -> dict | None:
    """The last Aggregated row of Locust's `*_stats_history.csv`, or None before the first one."""
    try:
        with open(history_csv, newline="") as fh:
            rows = [row for row in csv.DictReader(fh) if row.get("Name") == "Aggregated"]
    except OSError:
        return None
    return rows[-1] if rows else None


def locust_progress(history_csv: Path) -> Callable[[], str | None]:
    """A Ticker report: users, requests, failures so far, current requests/s and p95 (ms)."""

    def report() -> str | None:
        row = locust_history_row(history_csv)
        if row is None:
            return "waiting for Locust's first statistics"
        return (f"{row['User Count']} users, {row['Total Request Count']} requests, "
                f"{row['Total Failure Count']} failures, {float(row['Requests/s']):.1f} req/s now, "
                f"p95 {row['95%']} ms")

    return report
