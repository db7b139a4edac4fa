"""workorder-loadtest: refuse production-looking hosts, run the Locust suite in a child process,
and exit with the SLA verdict it wrote to summary.json (0 pass, 1 missed, 2 setup error or invalid
run). Options it does not know go to Locust unchanged: the suite's own (options.py) and Locust's.

Distributed (several load-generator processes or machines): `--master --expect-workers N` is a
run like any other (guard, preflight, reports, verdict: the gate judges on the master the raw samples
every worker ships in its reports, hooks.py) that waits for N workers; `--worker --master-host H`
runs users for that master and exits with Locust's status. The master listens on 127.0.0.1 unless
--master-bind-host says otherwise; the master hands its options (the password included) and the
host to the workers over Locust's unencrypted connection: keep it on loopback or a trusted network."""

import argparse
import contextlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from .accounts import SEED_HINT
from .gate import EXIT_INVALID

LOCUSTFILE = str(Path(__file__).with_name("locustfile.py"))
PASSWORD_VARIABLE = "WORKORDER_LOADTEST_PASSWORD"
# Locust runs in a child of this interpreter with this process's sys.path: Nix's wrappers put the
# dependencies on sys.path inside the wrapped script only, so a plain `sys.executable -m locust`
# imports neither locust nor this package there. The path travels in the environment.
SYS_PATH_VARIABLE = "WORKORDER_LOADTEST_SYS_PATH"
LOCUST_BOOTSTRAP = (
    "import json, os, runpy, sys; "
    f"sys.path[:] = json.loads(os.environ.pop({SYS_PATH_VARIABLE!r})); "
    "runpy.run_module('locust', run_name='__main__', alter_sys=True)"
)
_TEST_MARKERS = re.compile(r"(^|[.-])(staging|stage|stg|test|testing|dev|develop|qa|uat|sandbox|preprod|pre-prod"
                           r"|demo|loadtest|perf|local|localhost|internal|lan|example)([.-]|\d|$)")
_PRODUCTION_MARKERS = re.compile(r"(^|[.-])(prod|production|live|www)([.-]|\d|$)")


def production_reason(url: str) -> str | None:
    """Why ``url`` looks like production (a public address, a name with prod/production/live/www, a
    public name without a staging marker); None for a test target (docs/loadtest.md)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"not an http(s) URL: {url!r}"
    host = parts.hostname.lower().rstrip(".")
    with contextlib.suppress(ValueError):  # not an IP address: a name
        ip = ipaddress.ip_address(host)
        return None if ip.is_loopback or ip.is_private or ip.is_link_local else f"{host} is a public IP address"
    if _PRODUCTION_MARKERS.search(host) and not re.search(r"(^|[.-])pre-?prod", host):
        return f"{host} contains a production marker (prod/production/live/www)"
    if ("." not in host or _TEST_MARKERS.search(host)
            or host.endswith((".local", ".localhost", ".internal", ".test", ".lan", ".home.arpa", ".example"))):
        return None
    return f"{host} is a public name without a staging/test marker"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workorder-loadtest", allow_abbrev=False, add_help=False,
        description="Load-test the workorder service with Locust and gate the run on the SLA. Exit codes: "
                    "0 pass, 1 SLA missed, 2 setup error or invalid run. Other options go to Locust (below).")
    add = parser.add_argument
    add("-h", "--help", action="store_true", help="show this help, then the suite's and Locust's options")
    add("--host", "-H", default=os.environ.get("WORKORDER_LOADTEST_HOST") or os.environ.get("LOCUST_HOST"),
        help="base URL of the service, e.g. http://127.0.0.1:8080 [env WORKORDER_LOADTEST_HOST]")
    add("--users", "-u", type=int, default=100, help="peak number of simulated users (100)")
    add("--spawn-rate", "-r", type=float, default=10, help="users started per second (10)")
    add("--run-time", "-t", default="5m", help="run time, e.g. 60s, 5m, 1h30m (5m; headless only)")
    add("--report-dir", default=os.environ.get("WORKORDER_REPORT_DIR") or "reports",
        help="where report.html, locust_*.csv and summary.json go [env WORKORDER_REPORT_DIR; ./reports]")
    add("--web", action="store_true", help="Locust's web UI on 127.0.0.1:8089; the gate runs at Ctrl-C")
    add("--allow-production", action="store_true", help="allow a host that looks like production")
    add("--password", help=f"password of the seeded accounts [env {PASSWORD_VARIABLE}; goes to Locust in it]")
    add("--master", action="store_true", help="Locust master: waits for --expect-workers workers, gates the run")
    add("--expect-workers", type=int, default=1, help="with --master: workers to wait for before starting (1)")
    add("--expect-workers-max-wait", type=float, default=60,
        help="with --master: seconds to wait for them, then give up without a verdict, exit 2 (60)")
    add("--master-bind-host", default="127.0.0.1", help="with --master: address to listen on for workers (127.0.0.1)")
    add("--master-bind-port", type=int, default=5557, help="with --master: port to listen on for workers (5557)")
    add("--worker", action="store_true", help="Locust worker of a --master run: needs no --host nor --password")
    add("--master-host", default="127.0.0.1", help="with --worker: the master's address (127.0.0.1)")
    add("--master-port", type=int, default=5557, help="with --worker: the master's port (5557)")
    return parser


def fail(message: str) -> int:
    sys.stderr.write(f"workorder-loadtest: {message}\n")
    return EXIT_INVALID


def worker_command(args: argparse.Namespace, passthrough: list[str]) -> list[str]:
    return [sys.executable, "-c", LOCUST_BOOTSTRAP, "-f", LOCUSTFILE, "--worker", "--master-host", args.master_host,
            "--master-port", str(args.master_port), *passthrough]


def locust_command(args: argparse.Namespace, passthrough: list[str], report_dir: Path) -> list[str]:
    argv = [sys.executable, "-c", LOCUST_BOOTSTRAP, "-f", LOCUSTFILE, "--host", args.host,
            "--users", str(args.users), "--spawn-rate", f"{args.spawn_rate:g}",
            "--html", str(report_dir / "report.html"), "--csv", str(report_dir / "locust"),
            "--summary-file", str(report_dir / "summary.json")]
    if args.web:
        argv += [] if any(a.startswith("--web-host") for a in passthrough) else ["--web-host", "127.0.0.1"]
    else:
        argv += ["--headless", "--run-time", args.run_time]
        argv += [] if "--print-stats" in passthrough else ["--only-summary"]
    if args.master:
        argv += ["--master", "--expect-workers", str(args.expect_workers), "--expect-workers-max-wait",
                 f"{args.expect_workers_max_wait:g}", "--master-bind-host", args.master_bind_host,
                 "--master-bind-port", str(args.master_bind_port)]
    return argv + passthrough


def run_locust(argv: list[str], env: dict[str, str]) -> int:
    child = subprocess.Popen(argv, env={**env, SYS_PATH_VARIABLE: json.dumps(sys.path)})

    def forward(signum, _frame):
        if child.poll() is None:
            child.send_signal(signum)

    # Ctrl-C reaches Locust directly (same process group); this process waits for the verdict.
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
    passthrough = passthrough[1:] if passthrough[:1] == ["--"] else passthrough
    if args.help:  # then Locust's parser with the suite's options; imported here, as importing locust
        parser.print_help()  # patches this process with gevent, which a launcher does not want
        from locust.argument_parser import get_parser

        from . import options  # noqa: F401 - registers the suite's options on Locust's parser

        print("\nPassed on to Locust (the suite's options are --password and --account-prefix ... --summary-file):")
        get_parser().print_help()
        return 0

    if args.master and args.worker:
        return fail("--master and --worker exclude each other")
    if args.master and args.expect_workers < 1:
        return fail("--expect-workers must be at least 1")
    if args.worker:  # the master checks the host, runs the preflight and the gate, and sends its options
        command = worker_command(args, passthrough)
        print(f"workorder-loadtest: locust {' '.join(command[3:])}", file=sys.stderr, flush=True)
        env = {**os.environ} | ({PASSWORD_VARIABLE: args.password} if args.password else {})
        return run_locust(command, env)
    if not args.host:
        return fail("no host: pass --host URL (or set WORKORDER_LOADTEST_HOST)")
    reason = production_reason(args.host)
    if reason and not args.allow_production:
        return fail(f"refusing to load-test {args.host}: it looks like production ({reason}); "
                    "use a staging host or pass --allow-production")
    if args.users < 1:
        return fail("--users must be at least 1")
    password = args.password or os.environ.get(PASSWORD_VARIABLE)
    if not password:
        return fail(f"no password for the seeded accounts: pass --password or set {PASSWORD_VARIABLE}; {SEED_HINT}")

    report_dir = Path(args.report_dir).resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    summary_path = report_dir / "summary.json"
    summary_path.unlink(missing_ok=True)
    run_id = uuid.uuid4().hex
    command = locust_command(args, passthrough, report_dir)
    print(f"workorder-loadtest: locust {' '.join(command[3:])}", file=sys.stderr, flush=True)
    returncode = run_locust(command, {**os.environ, PASSWORD_VARIABLE: password, "WORKORDER_LOADTEST_RUN_ID": run_id})

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
