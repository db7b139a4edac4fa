"""The gate's Locust listeners, called as Locust calls them: collection, worker -> master shipping,
setup errors stopping the run, the verdict's exit code and summary, workers skipping the gate."""

import json
from types import SimpleNamespace

import gevent
import pytest
from fake_service import FakeService
from locust.argument_parser import get_parser
from locust.runners import LocalRunner, MasterRunner, WorkerRunner
from locust.stats import RequestStats

from workorder_loadtest import gate, hooks, options  # noqa: F401 - options: the suite's flags on get_parser()


@pytest.fixture(autouse=True)
def clean_state():
    yield
    hooks.entries.clear()
    hooks.setup_errors.clear()
    hooks.warnings.clear()
    hooks.run.clear()


def environment(tmp_path, *args, runner_cls=LocalRunner, exceptions=None, cpu=False):
    runner = runner_cls.__new__(runner_cls)  # the attributes the listeners read, no network
    runner.exceptions, runner.cpu_warning_emitted, runner.greenlet, runner.quits = exceptions or {}, cpu, None, []
    runner.quit = lambda: runner.quits.append(True)
    opts = get_parser().parse_args(["--summary-file", str(tmp_path / "summary.json"), "--skip-preflight", *args])
    env = SimpleNamespace(runner=runner, parsed_options=opts, host="http://127.0.0.1", process_exit_code=None,
                          reset_stats=False)
    hooks.on_init(env)
    return env


def fire(name="[Tasks] List", request_type="GET", rt=10.0, status=200, exception=None):
    hooks.on_request(request_type=request_type, name=name, response_time=rt, response_length=0,
                     response=SimpleNamespace(status_code=status), context={}, exception=exception)


def summary(tmp_path) -> dict:
    return json.loads((tmp_path / "summary.json").read_text())


def test_requests_are_recorded_per_entry_with_conflicts_apart():
    fire()
    fire(name="[Operator] Claim Task (conflict)", request_type="POST", status=409, exception=RuntimeError("409"))
    fire(exception=RuntimeError("HTTP 500"), status=500)
    fire(exception=ConnectionRefusedError(), status=0)
    e = hooks.entries[("GET", "[Tasks] List")]
    assert (e.requests, e.failures, e.no_response, e.times) == (3, 2, 1, [10.0])
    conflict = hooks.entries[("POST", "[Operator] Claim Task (conflict)")]
    assert (conflict.requests, conflict.conflicts, conflict.failures) == (1, 1, 0)


def test_worker_samples_reach_the_master_exactly_once(tmp_path):
    master = environment(tmp_path, runner_cls=MasterRunner)
    for i in range(5):
        fire(rt=float(i))
    hooks.setup_errors["login rejected"] += 1
    hooks.warnings["pool exhausted"] += 2
    report = {}
    hooks.on_report_to_master("w1", report)
    report = json.loads(json.dumps(report))  # what travels must survive serialisation
    assert not hooks.entries and not hooks.setup_errors and not hooks.warnings  # drained
    hooks.on_worker_report("w1", report)
    hooks.on_worker_report("w1", {"stats": []})  # a report without the suite's key
    e = hooks.entries[("GET", "[Tasks] List")]
    assert e.requests == 5 and e.times == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert hooks.setup_errors == {"login rejected": 1} and hooks.warnings == {"pool exhausted": 2}
    gevent.sleep(0.7)
    assert master.runner.quits == [True]  # a setup error on a worker stops the run once


def test_a_setup_error_stops_a_local_run_but_not_from_a_worker(tmp_path):
    worker = environment(tmp_path, runner_cls=WorkerRunner)
    hooks.setup_error(worker, "login rejected")
    gevent.sleep(0.7)
    assert worker.runner.quits == [] and hooks.setup_errors == {"login rejected": 1}
    hooks.setup_errors.clear()
    local = environment(tmp_path)
    hooks.setup_error(local, "login rejected")
    hooks.setup_error(local, "login rejected")
    gevent.sleep(0.7)
    assert local.runner.quits == [True] and hooks.setup_errors == {"login rejected": 2}


def test_reset_stats_drops_the_ramp_up(tmp_path):
    env = environment(tmp_path)
    hooks.on_test_start()
    fire()
    hooks.on_spawning_complete(user_count=1)
    assert hooks.entries and hooks.run["samples_since"] is None  # no --reset-stats
    env.reset_stats = True
    hooks.on_spawning_complete(user_count=1)
    assert not hooks.entries and hooks.run["samples_since"] > hooks.run["started_at"]


def test_settle_time_resets_the_statistics_that_long_after_the_last_user_started(tmp_path):
    env = environment(tmp_path, "--settle-time", "0.3")
    env.reset_stats = True
    env.stats = RequestStats()
    hooks.on_test_start()
    fire()
    env.stats.log_request("GET", "[Tasks] List", 10, 0)
    hooks.on_spawning_complete(user_count=1)
    fire()  # the last users' logins and first requests: still ramp-up
    assert len(hooks.entries) == 1 and hooks.run["samples_since"] is None
    gevent.sleep(0.5)
    assert not hooks.entries and hooks.run["samples_since"] > hooks.run["started_at"]
    assert env.stats.total.num_requests == 0  # Locust's own table covers the same window


@pytest.mark.parametrize("args, setup, code", [
    ((), lambda: fire(), 0),
    (("--sla-avg-ms", "5"), lambda: fire(), 1),
    (("--sla", "[Tasks] List: requests>1"), lambda: fire(), 1),
    ((), lambda: None, 2),  # zero requests
    ((), lambda: [fire(status=0, exception=ConnectionRefusedError()) for _ in range(3)], 2),  # unreachable
    ((), lambda: (fire(), hooks.setup_errors.update({"login rejected for operator accounts": 1})), 2),
])
def test_the_gate_sets_the_exit_code_and_writes_the_summary(tmp_path, capsys, args, setup, code):
    env = environment(tmp_path, *args)
    hooks.on_test_start()
    setup()
    hooks.on_quitting(env)
    assert env.process_exit_code == code
    s = summary(tmp_path)
    assert s["exit_code"] == code and s["verdict"] == ("pass", "fail", "invalid")[code]
    assert s["run"]["runner"] == "local" and s["run"]["started_at"] == s["run"]["samples_since"]
    assert f"SLA verdict: {s['verdict'].upper()} (exit code {code})" in capsys.readouterr().out


def test_exceptions_in_the_suite_and_an_overloaded_generator_are_invalid(tmp_path):
    fire()
    env = environment(tmp_path, exceptions={"k": {"count": 3, "msg": "boom", "traceback": "", "nodes": set()}})
    hooks.on_quitting(env)
    assert env.process_exit_code == 2 and summary(tmp_path)["exceptions"] == 3
    env = environment(tmp_path, cpu=True)
    hooks.on_quitting(env)
    assert env.process_exit_code == 2 and summary(tmp_path)["cpu_warning"] is True


def test_workers_skip_the_gate(tmp_path):
    env = environment(tmp_path, runner_cls=WorkerRunner)
    fire()
    hooks.on_quitting(env)
    assert env.process_exit_code is None and not (tmp_path / "summary.json").exists()


def test_a_broken_gate_never_passes(tmp_path, monkeypatch):
    env = environment(tmp_path)
    fire()
    monkeypatch.setattr(gate, "evaluate", lambda *a, **k: 1 / 0)
    hooks.on_quitting(env)
    assert env.process_exit_code == 2


def test_an_invalid_sla_configuration_ends_locust_with_2(tmp_path):
    with pytest.raises(SystemExit) as exc:
        environment(tmp_path, "--sla", "http: p95<fast")
    assert exc.value.code == 2
    environment(tmp_path, "--sla", "http: p95<fast", runner_cls=WorkerRunner)  # the master judges


@pytest.mark.parametrize("args, password, problem", [
    ([], "secret", None),
    ([], "wrong", "preflight: login rejected for loadtest-operator-0001 (HTTP 400); seed the accounts with:"),
    (["--supervisors", "7"], "secret", "preflight: login rejected for loadtest-supervisor-0007 (HTTP 400)"),
    (["--makers", "0"], "secret", "preflight: the maker pool is empty (--makers 0)"),
])
def test_preflight_logs_in_with_the_first_and_last_account_of_every_pool(args, password, problem):
    with FakeService() as service:
        opts = get_parser().parse_args(["--operators", "20", "--supervisors", "6", "--makers", "6", "--password",
                                        password, *args])
        found = hooks.preflight(service.url, opts)
    assert (found or "").startswith(problem or ""), found
    if problem is None:
        assert found is None and service.state.logins == 6  # 0001 and the last of three pools


def test_preflight_reports_an_unreachable_host():
    with FakeService() as service:
        url = service.url
    opts = get_parser().parse_args(["--password", "secret"])
    assert hooks.preflight(url, opts).startswith(f"preflight: host unreachable: POST {url}/api/auth/login/ failed")
