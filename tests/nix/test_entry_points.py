"""The flake's console scripts, started the way nixpkgs starts them, on Debian.

The CI venv lets any `python` see every package; Nix does not. tests/harness/nix_wrappers.py builds
both nixpkgs launch paths over this venv's packages (each package in its own "store path", a bare
interpreter with an empty site-packages), and these tests run the real programs through them:

- wrapPythonPrograms (workorder-manage, workorder-daphne, workorder-backup, workorder-loadtest): the
  dependencies exist only in the wrapped script's sys.path, so a child started as
  `sys.executable -m ...` sees none of them;
- python.buildEnv (the NixOS module's gunicorn): the application arrives only through
  NIX_PYTHONPATH/NIX_PYTHONEXECUTABLE, which nixpkgs' sitecustomize.py turns into sys.path entries.

A difference between these launch paths and the venv fails here instead of in a NixOS unit.
Everything binds to loopback or a unix socket under a temporary directory; every run has a timeout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.app import GUNICORN_APP, GUNICORN_CONFIG, GunicornServer
from harness.nix_wrappers import EmulationError, NixWrappers, project_scripts, repo_sources
from harness.services import free_port

REPO = Path(__file__).resolve().parents[2]
# The venvs whose packages the wrappers use: the one running the tests (constraints.txt's versions,
# which Nix builds for the packages it overrides) and .venv-nixpkgs (nixpkgs' versions of the
# others, nix/python-versions.json; tests/run.sh creates it before this stage).
VENVS = {"ci-versions": Path(sys.prefix), "nixpkgs-versions": REPO / ".venv-nixpkgs"}

pytestmark = pytest.mark.timeout(300)


def _load_fake_service():
    path = REPO / "loadtest" / "tests" / "fake_service.py"
    spec = importlib.util.spec_from_file_location("workorder_loadtest_fake_service", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FakeService


@pytest.fixture(scope="module", params=sorted(VENVS))
def nix(request, tmp_path_factory) -> NixWrappers:
    venv = VENVS[request.param]
    if not (venv / "bin" / "python").exists():
        if os.environ.get("CI"):
            pytest.fail(f"{venv} is missing: tests/run.sh creates it before the repo stage")
        pytest.skip(f"{venv} is missing: `bash tests/run.sh repo` creates it")
    # Short root: the wrapped scripts' `#!` line must stay under the kernel's limit.
    try:
        return NixWrappers(tmp_path_factory.mktemp("nix"), venv, sources=repo_sources(REPO))
    except EmulationError as exc:
        pytest.fail(f"cannot emulate the Nix wrappers over {venv}: {exc}")


def unit_environment(nix: NixWrappers, state_dir: Path, **extra: str) -> dict[str, str]:
    """What the NixOS units give every workorder process, with the embedded SQLite default (no
    DATABASE_URL/REDIS_URL), and nothing of the test runner's WORKORDER_*/LOCUST_*/Django settings."""
    for name in ("state", "static", "media", "prometheus"):
        (state_dir / name).mkdir(parents=True, exist_ok=True)
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("WORKORDER_", "LOCUST_", "DJANGO_", "GUNICORN_", "DAPHNE_"))
               and k not in ("DATABASE_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")}
    return nix.environment({
        "DJANGO_SETTINGS_MODULE": "workorder.settings",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "nix-wrapper-test-only-" + "x" * 40,
        "WORKORDER_STATE_DIR": str(state_dir / "state"),
        "STATIC_ROOT": str(state_dir / "static"),
        "MEDIA_ROOT": str(state_dir / "media"),
        "ALLOWED_HOSTS": "localhost,127.0.0.1,[::1]",
        "PROMETHEUS_MULTIPROC_DIR": str(state_dir / "prometheus"),
        **extra,
    }, environ=environ)


def run(argv: list, env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([str(a) for a in argv], check=False, env=env, cwd=cwd, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{argv[0]} did not finish within {timeout}s; output:\n{exc.stdout}\n{exc.stderr}")


def explain(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"


# --- the emulation itself ------------------------------------------------------------------------

def test_bare_interpreter_cannot_import_django_locust_or_the_project(nix):
    """Precondition of every other test: the interpreter in the wrapped scripts' `#!` line, run with
    -s and PYTHONNOUSERSITE=true, finds neither the project nor its dependencies on its own, and its
    own site-packages is empty, like nixpkgs' python."""
    try:
        nix.require_bare_interpreter()
    except EmulationError as exc:
        pytest.fail(str(exc))


def test_child_started_as_sys_executable_of_a_wrapped_script_cannot_import_its_dependencies(nix, tmp_path):
    """The emulation reproduces what broke `workorder-loadtest` under Nix: the wrapped script
    imports locust, a `sys.executable -m locust` child of it does not."""
    probe = nix.wrap("probe-child", "workorder-loadtest", (
        "import subprocess\n"
        "import sys\n"
        "import locust  # noqa: F401 - the wrapped script itself sees its dependencies\n"
        "sys.exit(subprocess.run([sys.executable, '-m', 'locust', '--version']).returncode)\n"
    ))
    proc = run([probe], env=nix.environment(), cwd=tmp_path, timeout=60)
    assert proc.returncode != 0 and "No module named locust" in proc.stderr, explain(proc)


# --- wrapPythonPrograms --------------------------------------------------------------------------

@pytest.mark.parametrize("script", sorted(project_scripts()))
def test_console_script_help_exits_0_under_wrap_python_programs(nix, tmp_path, script):
    """Every [project.scripts] entry of backend/ and loadtest/ imports and parses its arguments when
    started through its Nix wrapper (workorder-backup --help is the backup unit's smoke test)."""
    wrapper = nix.console_script(script)
    proc = run([wrapper, "--help"], env=unit_environment(nix, tmp_path), cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, explain(proc)
    assert script in proc.stdout, explain(proc)  # sys.argv[0] is the name, not .NAME-wrapped


def test_workorder_manage_check_passes_under_wrap_python_programs(nix, tmp_path):
    """Django's system checks pass when workorder-manage runs from its Nix wrapper (every installed
    app, middleware and URL module importable from the dependency closure)."""
    proc = run([nix.console_script("workorder-manage"), "check"], env=unit_environment(nix, tmp_path),
               cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, explain(proc)
    assert "System check identified no issues" in proc.stdout, explain(proc)


def test_workorder_daphne_check_accepts_the_units_command_line_under_wrap_python_programs(nix, tmp_path):
    """`workorder-daphne --check` with the daphne unit's environment (unix socket bind, secret key,
    state directory) loads the settings and the ASGI application and has the installed daphne parse
    the full command line, from the Nix wrapper: exit 0 and daphne's version printed."""
    env = unit_environment(nix, tmp_path, DAPHNE_BIND=f"unix:{tmp_path / 'daphne.sock'}")
    proc = run([nix.console_script("workorder-daphne"), "--check"], env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, explain(proc)
    version = subprocess.run([str(nix.venv.python), "-c", "import daphne; print(daphne.__version__)"],
                             check=False, capture_output=True, text=True, timeout=60).stdout.strip()
    assert f"daphne {version} accepts" in proc.stdout, explain(proc)
    assert not (tmp_path / "daphne.sock").exists(), "--check must not bind the socket"


def test_workorder_loadtest_runs_end_to_end_under_wrap_python_programs(nix, tmp_path):
    """workorder-loadtest from its Nix wrapper drives a short Locust run against the fake service and
    gates it: Locust runs as a child of the bare interpreter and still finds locust and the suite,
    the run exits 0 and writes summary.json."""
    fake_service = _load_fake_service()
    report_dir = tmp_path / "report"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("WORKORDER_", "LOCUST_"))}
    with fake_service() as service:
        proc = run([nix.console_script("workorder-loadtest"), "--host", service.url, "--report-dir", report_dir,
                    "--users", "6", "--spawn-rate", "6", "--run-time", "3s", "--ws-users", "0",
                    "--operators", "20", "--supervisors", "6", "--makers", "6", "--password", "secret"],
                   env=nix.environment(environ=environ), cwd=tmp_path, timeout=150)
    assert proc.returncode == 0, explain(proc)
    summary = report_dir / "summary.json"
    assert summary.is_file(), explain(proc)
    assert json.loads(summary.read_text())["exit_code"] == 0, summary.read_text()


def test_workorder_loadtest_master_and_workers_run_under_wrap_python_programs(nix, tmp_path):
    """`workorder-loadtest --master` and two `--worker`s from the Nix wrapper, over TCP on loopback:
    every Locust child finds locust and the suite, the workers get host and password from the master,
    and the master's gate judges their samples (exit 0, summary.json from the master)."""
    fake_service = _load_fake_service()
    report_dir = tmp_path / "report"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("WORKORDER_", "LOCUST_"))}
    port = free_port()
    script = nix.console_script("workorder-loadtest")
    env = nix.environment(environ=environ)
    with fake_service() as service:
        master = subprocess.Popen(
            [script, "--master", "--expect-workers", "2", "--master-bind-port", str(port), "--host", service.url,
             "--report-dir", report_dir, "--users", "6", "--spawn-rate", "6", "--run-time", "3s", "--ws-users", "0",
             "--operators", "20", "--supervisors", "6", "--makers", "6", "--password", "secret"],
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        workers = [subprocess.Popen([script, "--worker", "--master-port", str(port)], env=env, cwd=tmp_path,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
        try:
            output, _ = master.communicate(timeout=150)
            worker_outputs = [worker.communicate(timeout=60)[0] for worker in workers]
        finally:
            for proc in (master, *workers):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    assert master.returncode == 0, output[-4000:]
    assert [worker.returncode for worker in workers] == [0, 0], [o[-2000:] for o in worker_outputs]
    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["run"]["runner"] == "master" and summary["run"]["workers"] == 2
    assert summary["exit_code"] == 0 and summary["groups"]["http"]["requests"] > 0


# --- python.buildEnv -----------------------------------------------------------------------------

def test_gunicorn_own_wrapper_cannot_load_the_application_without_the_build_env(nix, tmp_path):
    """Control for the buildEnv test below: gunicorn's own wrapPythonPrograms wrapper knows only
    gunicorn's closure, so the application must come from NIX_PYTHONPATH, not from the emulation."""
    proc = run([nix.program("gunicorn"), "--check-config", "-c", GUNICORN_CONFIG, GUNICORN_APP],
               env=unit_environment(nix, tmp_path), cwd=tmp_path, timeout=60)
    assert proc.returncode != 0 and "No module named 'workorder'" in proc.stdout + proc.stderr, explain(proc)


class BuildEnvGunicorn(GunicornServer):
    """GunicornServer started as the NixOS unit starts it: `<python env>/bin/gunicorn -c
    python:workorder.gunicorn_conf workorder.wsgi:application`, with exactly the given environment."""

    def __init__(self, program: Path, *args, **kwargs):
        self.program = program
        super().__init__(*args, **kwargs)

    def argv(self) -> list[str]:
        return [str(self.program), "-c", GUNICORN_CONFIG, GUNICORN_APP]

    def child_env(self) -> dict[str, str]:
        return dict(self.env)


def test_gunicorn_from_build_env_serves_health_and_stops_cleanly_on_sigterm(nix, tmp_path):
    """gunicorn from the python.buildEnv emulation (its own wrapper knows only gunicorn; the
    application comes through NIX_PYTHONPATH) starts two workers with the package's configuration,
    answers GET /health/ with 200 on loopback, and exits 0 on SIGTERM to the master. As in the module,
    workorder-migrate (`migrate_locked`) ran first: gunicorn refuses a database missing migrations."""
    program = nix.env_program("gunicorn")
    env = unit_environment(nix, tmp_path)
    migrate = run([nix.console_script("workorder-manage"), "migrate_locked", "--no-input"], env=env, cwd=tmp_path)
    assert migrate.returncode == 0, explain(migrate)
    server = BuildEnvGunicorn(program, env, tmp_path / "gunicorn", port=free_port(), workers=2)
    try:
        server.start(timeout=90)
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[0].decode() == str(nix.python), f"the master is not the bare interpreter: {cmdline}"
        status, _, body = server.request("GET", "/health/", timeout=10)
        assert status == 200, (status, body, server.log_text()[-4000:])
        server.signal(signal.SIGTERM)
        returncode = server.wait_exit(timeout=60)
        log = server.log_text()
        assert returncode == 0, log[-4000:]
        assert "Traceback" not in log and "Shutting down: Master" in log, log[-4000:]
    finally:
        server.stop(timeout=10)
