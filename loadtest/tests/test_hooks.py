"""The Locust glue: sample collection, worker -> master shipping, and the gate's exit code."""

import json
from types import SimpleNamespace

import pytest
from locust.runners import LocalRunner, WorkerRunner

from workorder_loadtest import hooks, sla


@pytest.fixture(autouse=True)
def clean_state():
    hooks.collector.reset()
    saved = dict(hooks._state)
    yield
    hooks.collector.reset()
    hooks._state.clear()
    hooks._state.update(saved)


def fire(c, request_type="GET", name="[Tasks] List", rt=10.0, exception=None, status=200, conflict=False):
    c.on_request(request_type=request_type, name=name, response_time=rt, response_length=0,
                 response=SimpleNamespace(status_code=status), context={"conflict": conflict} if conflict else {},
                 exception=exception)


def test_collector_classifies_requests():
    c = hooks.Collector()
    fire(c)
    fire(c, name="[Operator] Claim Task (conflict)", request_type="POST", status=409, conflict=True)
    fire(c, exception=RuntimeError("HTTP 500"), status=500)
    fire(c, exception=ConnectionRefusedError(), status=0)
    e = c.entries[("GET", "[Tasks] List")]
    assert (e.requests, e.failures, e.no_response, e.times) == (3, 2, 1, [10.0])
    assert c.entries[("POST", "[Operator] Claim Task (conflict)")].conflicts == 1


def test_worker_samples_reach_the_master_exactly_once():
    worker, master = hooks.Collector(), hooks.Collector()
    for i in range(5):
        fire(worker, rt=float(i))
    worker.setup_errors["login rejected"] += 1
    worker.warnings["pool exhausted"] += 2
    data = {}
    hooks.collector, saved = worker, hooks.collector
    try:
        hooks.on_report_to_master("w1", data)
    finally:
        hooks.collector = saved
    json.dumps(data)  # the report must be serialisable for the wire
    assert worker.entries == {}  # drained
    hooks.collector, saved = master, hooks.collector
    try:
        hooks.on_worker_report("w1", data)
        hooks.on_worker_report("w1", {"stats": []})  # a report without our key is ignored
    finally:
        hooks.collector = saved
    e = master.entries[("GET", "[Tasks] List")]
    assert e.requests == 5 and sorted(e.times) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert master.setup_errors == {"login rejected": 1} and master.warnings == {"pool exhausted": 2}


def fake_env(tmp_path, runner_cls=LocalRunner, exceptions=None, cpu=False, **opts):
    runner = runner_cls.__new__(runner_cls)
    runner.exceptions = exceptions or {}
    runner.cpu_warning_emitted = cpu
    runner.greenlet = None
    options = dict(sla_file="", sla=None, sla_avg_ms=None, sla_p95_ms=None, sla_error_rate=None,
                   sla_include_login=False, summary_file=str(tmp_path / "summary.json"), num_users=1,
                   spawn_rate=1, run_time=1, ws_users=0, expect_workers=1)
    options.update(opts)
    return SimpleNamespace(runner=runner, parsed_options=SimpleNamespace(**options), host="http://127.0.0.1",
                           process_exit_code=None)


@pytest.mark.parametrize("setup, expected", [
    (lambda: fire(hooks.collector), 0),
    (lambda: fire(hooks.collector, rt=900.0), 1),
    (lambda: None, 2),  # zero requests
])
def test_gate_sets_the_exit_code_and_writes_the_summary(tmp_path, capsys, setup, expected):
    hooks._state.update(thresholds=None, config_error=None)
    setup()
    env = fake_env(tmp_path, sla_avg_ms=500)
    if expected == 1:
        env.parsed_options.sla_avg_ms = 100
    hooks.on_quitting(env)
    assert env.process_exit_code == expected
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["exit_code"] == expected
    assert "SLA verdict" in capsys.readouterr().out


def test_gate_treats_user_exceptions_and_cpu_as_invalid(tmp_path):
    hooks._state.update(thresholds=None, config_error=None)
    fire(hooks.collector)
    env = fake_env(tmp_path, exceptions={"k": {"count": 3, "msg": "boom", "traceback": "", "nodes": set()}})
    hooks.on_quitting(env)
    assert env.process_exit_code == 2
    env = fake_env(tmp_path, cpu=True)
    hooks.on_quitting(env)
    assert env.process_exit_code == 2


def test_gate_is_skipped_on_workers(tmp_path):
    env = fake_env(tmp_path, runner_cls=WorkerRunner)
    hooks.on_quitting(env)
    assert env.process_exit_code is None
    assert not (tmp_path / "summary.json").exists()


def test_a_broken_gate_never_passes(tmp_path, monkeypatch):
    hooks._state.update(thresholds=None, config_error=None)
    fire(hooks.collector)
    monkeypatch.setattr(sla, "evaluate", lambda *a, **k: 1 / 0)
    env = fake_env(tmp_path)
    hooks.on_quitting(env)
    assert env.process_exit_code == 2
