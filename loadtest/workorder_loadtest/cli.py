"""workorder-loadtest: run the Locust suite against a host and gate the result on the SLA.

    workorder-loadtest --host URL [--users 100] [--spawn-rate 10] [--run-time 5m] [--report-dir DIR]
                       [--processes N] [--web] [--allow-production] [suite options] [locust options]

Exit codes: 0 every SLA threshold held; 1 a threshold was missed; 2 setup error or invalid run
(usage error, production-looking host, host unreachable, login rejected, no seeded accounts, zero
requests, exceptions in the suite, load generator over 90% CPU, Locust died without a verdict).

Reports in --report-dir (default $WORKORDER_REPORT_DIR or ./reports): report.html (Locust's HTML
report), locust_stats.csv, locust_stats_history.csv, locust_failures.csv, locust_exceptions.csv
(Locust's CSV), summary.json (the SLA verdict, per-entry exact statistics). Any option this command
does not know is passed to Locust unchanged (e.g. --reset-stats, --loglevel DEBUG, --stop-timeout 5).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from . import options as opt_mod
from . import sla
from .accounts import username
from .hosts import production_reason

EXIT_PASS, EXIT_MISS, EXIT_INVALID = sla.EXIT_PASS, sla.EXIT_MISS, sla.EXIT_INVALID
SEED_HINT = ("seed the accounts with: workorder-manage seed_loadtest --operators N --supervisors N "
             "--makers N --password PASSWORD (and pass the same --password / pool sizes here)")


class SetupError(Exception):
    """Something about the target or the configuration makes a run pointless (exit 2)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workorder-loadtest",
        allow_abbrev=False,
        description="Load-test the workorder service with Locust and gate the run on the SLA "
                    "(avg < 500 ms, p95 < 1000 ms, error rate < 0.1%% over HTTP requests by default).",
        epilog="Exit codes: 0 pass, 1 SLA missed, 2 setup error or invalid run. Unknown options go to Locust.",
    )
    parser.add_argument("--host", "-H", default=os.environ.get("WORKORDER_LOADTEST_HOST") or os.environ.get("LOCUST_HOST"),
                        help="base URL of the service, e.g. http://127.0.0.1:8080 [env WORKORDER_LOADTEST_HOST]")
    parser.add_argument("--users", "-u", type=int, default=100, help="peak number of simulated users (100)")
    parser.add_argument("--spawn-rate", "-r", type=float, default=10, help="users started per second (10)")
    parser.add_argument("--run-time", "-t", default="5m", help="run time, e.g. 60s, 5m, 1h30m (5m; headless only)")
    parser.add_argument("--report-dir", default=os.environ.get("WORKORDER_REPORT_DIR") or "reports",
                        help="where to write report.html, locust_*.csv and summary.json "
                             "[env WORKORDER_REPORT_DIR, default ./reports]")
    parser.add_argument("--processes", type=int, default=None,
                        help="run Locust with this many worker processes (-1: one per core); the SLA "
                             "gate runs on the master over the samples of all workers")
    parser.add_argument("--web", action="store_true",
                        help="open Locust's web UI (http://127.0.0.1:8089) instead of running headless; "
                             "the gate runs when you stop Locust with Ctrl-C")
    parser.add_argument("--allow-production", action="store_true",
                        help="allow a host that looks like production (public name without a staging marker)")
    parser.add_argument("--skip-preflight", action="store_true",
                        help="don't check reachability and seeded accounts before starting Locust")
    parser.add_argument("--print-stats", action="store_true", help="print Locust's periodic stats table")
    opt_mod.add_to_argparse(parser)
    return parser


def fail(message: str) -> int:
    sys.stderr.write(f"workorder-loadtest: {message}\n")
    return EXIT_INVALID


def _post_json(url: str, body: dict, timeout: float) -> tuple[int, dict | None]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, None


def preflight(host: str, password: str, prefix: str, pools: dict[str, int], timeout: float) -> None:
    """Log in with the first and the last account of every pool: reachability, seeding, password."""
    url = host.rstrip("/") + "/api/auth/login/"
    for role, size in pools.items():
        if size <= 0:
            raise SetupError(f"the {role} pool is empty (--{role}s 0)")
        for number in sorted({1, size}):
            name = username(prefix, role, number)
            try:
                status, data = _post_json(url, {"username": name, "password": password}, timeout)
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise SetupError(f"host unreachable: POST {url} failed: {reason}") from exc
            if status == 200 and isinstance(data, dict) and data.get("token"):
                continue
            if status in (400, 401, 403):
                raise SetupError(f"login rejected for {name} (HTTP {status}); {SEED_HINT}")
            raise SetupError(f"login for {name} answered HTTP {status} {str(data)[:200]}: the service is not healthy")


# Locust runs in a child of this interpreter that starts with this process's sys.path. Nix's
# wrappers (wrapPythonPrograms) add the dependencies to sys.path inside the wrapped script only, so
# `sys.executable -m locust` there imports neither locust nor this package; the path travels in the
# environment instead and the child runs `python -m locust` with it.
SYS_PATH_VARIABLE = "WORKORDER_LOADTEST_SYS_PATH"
LOCUST_BOOTSTRAP = (
    "import json, os, runpy, sys; "
    f"sys.path[:] = json.loads(os.environ.pop({SYS_PATH_VARIABLE!r})); "
    "runpy.run_module('locust', run_name='__main__', alter_sys=True)"
)


def locust_command(args: argparse.Namespace, passthrough: list[str], report_dir: Path) -> list[str]:
    locustfile = Path(__file__).with_name("locustfile.py")
    values = {k: v for k, v in vars(args).items() if k != "password"}
    values["summary_file"] = str(report_dir / "summary.json")
    argv = [sys.executable, "-c", LOCUST_BOOTSTRAP, "-f", str(locustfile), "--host", args.host,
            "--users", str(args.users), "--spawn-rate", f"{args.spawn_rate:g}",
            "--html", str(report_dir / "report.html"), "--csv", str(report_dir / "locust")]
    argv += opt_mod.to_locust_argv(values)
    if args.web:
        if not any(a.startswith("--web-host") for a in passthrough):
            argv += ["--web-host", "127.0.0.1"]
    else:
        argv += ["--headless", "--run-time", args.run_time]
        if not args.print_stats:
            argv.append("--only-summary")
    if args.processes is not None:
        argv += ["--processes", str(args.processes)]
    return argv + passthrough


def run_locust(argv: list[str], env: dict[str, str]) -> int:
    child = subprocess.Popen(argv, env=env)

    def forward(signum, _frame):
        if child.poll() is None:
            child.send_signal(signum)

    # Ctrl-C reaches Locust directly (same process group); we just wait for its verdict.
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
                signal.SIGTERM: signal.signal(signal.SIGTERM, forward)}
    try:
        return child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, passthrough = parser.parse_known_args(argv)
    if passthrough and passthrough[0] == "--":
        passthrough = passthrough[1:]

    if not args.host:
        return fail("no host: pass --host URL (or set WORKORDER_LOADTEST_HOST)")
    reason = production_reason(args.host)
    if reason and not args.allow_production:
        return fail(f"refusing to load-test {args.host}: it looks like production ({reason}); "
                    "use a staging host or pass --allow-production")
    if args.users < 1:
        return fail("--users must be at least 1")
    try:
        sla.build_thresholds(file=args.sla_file or None, flags=args.sla or (), avg_ms=args.sla_avg_ms,
                             p95_ms=args.sla_p95_ms, error_rate=args.sla_error_rate)
    except sla.ThresholdError as exc:
        return fail(f"invalid SLA configuration: {exc}")
    if not args.password:
        return fail("no password for the seeded accounts: pass --password or set WORKORDER_LOADTEST_PASSWORD; "
                    + SEED_HINT)

    pools = {"operator": args.operators, "supervisor": args.supervisors, "maker": args.makers}
    if not args.skip_preflight:
        try:
            preflight(args.host, args.password, args.account_prefix, pools, args.login_timeout)
        except SetupError as exc:
            return fail(str(exc))

    report_dir = Path(args.report_dir).resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    summary_path = report_dir / "summary.json"
    summary_path.unlink(missing_ok=True)
    run_id = uuid.uuid4().hex
    env = dict(os.environ, WORKORDER_LOADTEST_PASSWORD=args.password, WORKORDER_LOADTEST_RUN_ID=run_id)
    env[SYS_PATH_VARIABLE] = json.dumps(sys.path)
    command = locust_command(args, passthrough, report_dir)
    sys.stderr.write(f"workorder-loadtest: locust {' '.join(command[3:])}\n")
    sys.stderr.flush()
    returncode = run_locust(command, env)

    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        return fail(f"Locust exited with code {returncode} without an SLA verdict (no {summary_path})")
    if summary.get("run", {}).get("run_id") != run_id:
        return fail(f"{summary_path} is not from this run")
    code = int(summary.get("exit_code", EXIT_INVALID))
    if returncode != code:
        sys.stderr.write(f"workorder-loadtest: Locust exited with {returncode}, the verdict says {code}\n")
        code = max(code, EXIT_INVALID) if returncode not in (0, 1) else max(code, returncode)
    sys.stderr.write(f"workorder-loadtest: verdict {summary.get('verdict')} (exit {code}); reports in {report_dir}\n")
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
