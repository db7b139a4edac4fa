"""A child server process that is always cleaned up: own process group, SIGTERM then SIGKILL.

Every long-running server the stack test starts (gunicorn, daphne, nginx, exporters, Prometheus)
goes through `ManagedProcess`, so teardown is one loop and a crashed test never leaves strays:
- the child runs in its own session (process group), so its workers die with it;
- stop() sends SIGTERM (or the given signal) to the whole group, waits, then SIGKILLs the group;
- an atexit hook stops whatever is still running if the interpreter exits without teardown.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time
import weakref
from pathlib import Path

_RUNNING: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()


class ProcessExited(RuntimeError):
    pass


class ManagedProcess:
    def __init__(self, name: str, argv: list[str], *, log_path: Path, env: dict[str, str] | None = None,
                 cwd: str | None = None, stop_signal: int = signal.SIGTERM, stop_timeout: float = 15.0):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.env = env
        self.cwd = cwd
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, cwd=self.cwd or "/", start_new_session=True,
            )
        _RUNNING.add(self)
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise ProcessExited(f"{self.name} exited with {self.process.returncode}; log tail:\n{self.log_tail()}")

    def wait_until(self, predicate, timeout: float = 60.0, what: str = "ready", interval: float = 0.1) -> None:
        """Poll `predicate()` until true; fail early with the log tail if the process died."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if predicate():
                    return
            except Exception as exc:  # noqa: BLE001 - readiness probes raise all sorts of things
                last_error = exc
            time.sleep(interval)
        raise TimeoutError(f"{self.name} not {what} after {timeout}s (last error: {last_error!r}); "
                           f"log tail:\n{self.log_tail()}")

    def signal(self, sig: int) -> None:
        if self.alive():
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float | None = None) -> int | None:
        """Graceful stop of the whole process group, then SIGKILL whatever is left. Idempotent."""
        if self.process is None:
            return None
        timeout = self.stop_timeout if timeout is None else timeout
        pgid = self.process.pid
        if self.process.poll() is None:
            try:
                os.killpg(pgid, self.stop_signal)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Kill the group even when the leader exited: workers that outlived it must not linger.
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            pass
        _RUNNING.discard(self)
        return self.process.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} pid={self.pid}>"


def stop_all() -> None:
    for proc in list(_RUNNING):
        try:
            proc.stop(timeout=5)
        except Exception:  # noqa: BLE001, S110 - best effort at interpreter exit: nothing left to report to
            pass


atexit.register(stop_all)
