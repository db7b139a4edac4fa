"""The gate's rules: threshold syntax, strict comparison, exact nearest-rank percentiles, conflicts,
logins and WebSocket judged apart, per-name targets, invalid runs and every exit code."""

import pytest

from workorder_loadtest import gate
from workorder_loadtest.gate import Samples, ThresholdError

DEFAULTS = gate.build_thresholds()


def samples(times=(), failures=0, conflicts=0, no_response=0) -> Samples:
    return Samples(requests=len(times) + failures + conflicts, failures=failures, conflicts=conflicts,
                   no_response=no_response, times=[float(t) for t in times])


def http(times=(), **kw) -> dict:
    return {("GET", "[Tasks] List"): samples(times, **kw)}


def failed(verdict: dict) -> list[tuple[str, str]]:
    return [(r["target"], r["metric"]) for r in verdict["thresholds"] if r["result"] == "FAIL"]


# --- parsing -----------------------------------------------------------------------------------

@pytest.mark.parametrize("expr, metric, op, value", [
    ("avg<500", "avg", "<", 500.0),
    ("avg < 500ms", "avg", "<", 500.0),
    ("avg<0.5s", "avg", "<", 500.0),
    ("p(95)<1000", "p95", "<", 1000.0),
    ("p95<1000", "p95", "<", 1000.0),
    ("P(95) < 1000", "p95", "<", 1000.0),
    ("p(99.9)<=2s", "p99.9", "<=", 2000.0),
    ("med<300", "p50", "<", 300.0),
    ("min>=1", "min", ">=", 1.0),
    ("max<5s", "max", "<", 5000.0),
    ("error_rate<0.001", "error_rate", "<", 0.001),
    ("error_rate<0.1%", "error_rate", "<", 0.001),
    ("rate<1%", "error_rate", "<", 0.01),
    ("conflict_rate<0.5", "conflict_rate", "<", 0.5),
    ("requests>100", "requests", ">", 100.0),
    ("failures==0", "failures", "==", 0.0),
    ("conflicts<10", "conflicts", "<", 10.0),
])
def test_parse_expression(expr, metric, op, value):
    t = gate.parse_expression("http", expr)
    assert (t.metric, t.op) == (metric, op)
    assert t.value == pytest.approx(value)


@pytest.mark.parametrize("expr", [
    "avg", "avg<", "avg<fast", "p(0)<5", "p(101)<5", "p<5", "p(95<5", "p95<1%", "error_rate<5", "error_rate<2s",
    "requests>5ms", "latency<5", "avg=>5",
    # undocumented aliases the gate no longer knows
    "mean<5", "median<5", "fail_ratio<0.1", "failure_rate<0.1", "errors<0.1", "count>5",
])
def test_parse_expression_rejects(expr):
    with pytest.raises(ThresholdError):
        gate.parse_expression("http", expr)


def test_parse_flag_with_request_name_and_several_expressions():
    ts = gate.parse_flag("[Tasks] List: p95<800, avg<300")
    assert [(t.target, t.metric, t.value) for t in ts] == [("[Tasks] List", "p95", 800.0),
                                                           ("[Tasks] List", "avg", 300.0)]
    for bad in ("p95<800", "http:", ": p95<800"):
        with pytest.raises(ThresholdError):
            gate.parse_flag(bad)


def test_defaults_are_the_sla():
    got = {(t.target, t.metric): (t.op, t.value) for t in DEFAULTS}
    assert got == {("http", "avg"): ("<", 500.0), ("http", "p95"): ("<", 1000.0),
                   ("http", "error_rate"): ("<", 0.001), ("ws", "p95"): ("<", 1000.0),
                   ("ws", "error_rate"): ("<", 0.01), ("login", "error_rate"): ("<", 0.001)}


def test_file_then_flags_override_by_target_and_metric(tmp_path):
    f = tmp_path / "sla.toml"
    f.write_text('[thresholds]\nhttp = ["avg<400", "p(99)<2000"]\n"[Tasks] List" = "p95<800"\n')
    ts = {(t.target, t.metric): t for t in gate.build_thresholds(
        file=str(f), avg_ms=300, p95_ms=900, error_rate=0.01, flags=["[Tasks] List: p95<700"])}
    assert (ts[("http", "avg")].value, ts[("http", "avg")].source) == (300, "flag")
    assert (ts[("http", "p99")].value, ts[("http", "p99")].source) == (2000, "file")
    assert (ts[("http", "p95")].value, ts[("http", "error_rate")].value) == (900, 0.01)
    assert (ts[("ws", "p95")].value, ts[("ws", "p95")].source) == (1000, "default")
    assert ts[("[Tasks] List", "p95")].value == 700


@pytest.mark.parametrize("content", ['[thresholds]\nhttp = 5\n', 'http = ["avg<1"]\n', '[thresholds\n',
                                     '[thresholds]\nhttp = ["avg<<1"]\n', '[thresholds]\n[other]\n'])
def test_bad_files_are_rejected(tmp_path, content):
    f = tmp_path / "sla.toml"
    f.write_text(content)
    with pytest.raises(ThresholdError):
        gate.build_thresholds(file=str(f))


@pytest.mark.parametrize("kwargs", [{"file": "/nonexistent/sla.toml"}, {"error_rate": 2}, {"avg_ms": -1},
                                    {"flags": ["http: p95<fast"]}])
def test_bad_configuration_is_rejected(kwargs):
    with pytest.raises(ThresholdError):
        gate.build_thresholds(**kwargs)


def test_threshold_describe():
    assert gate.parse_expression("http", "error_rate<0.1%").describe() == "error_rate<0.1%"
    assert gate.parse_expression("http", "p(99.9)<=2s").describe() == "p99.9<=2000ms"
    assert gate.parse_expression("http", "requests>100").describe() == "requests>100"


# --- percentiles ---------------------------------------------------------------------------------

def test_p95_is_not_the_median():
    # 90 x 100 ms + 10 x 2000 ms: the median passes 1 s, p95 (the 95th of 100) is 2000 ms and misses.
    entries = http([100] * 90 + [2000] * 10)
    verdict = gate.evaluate(entries, gate.build_thresholds(avg_ms=10_000, flags=["http: med<1000"]))
    assert (verdict["groups"]["http"]["p50_ms"], verdict["groups"]["http"]["p95_ms"]) == (100.0, 2000.0)
    assert failed(verdict) == [("http", "p95")]
    assert verdict["exit_code"] == gate.EXIT_MISS


@pytest.mark.parametrize("n, p, rank", [
    (19, 95, 19),    # 18.05 -> 19 (flooring gives the 18th)
    (19, 50, 10),    # 9.5 -> 10
    (10, 95, 10),    # 9.5 -> 10
    (21, 90, 19),    # 18.9 -> 19
    (100, 95, 95),   # an exact rank stays: Locust's histogram walk would take the 96th
    (4, 50, 2),
    (1000, 99.9, 999),
    (1, 99.9, 1),
])
def test_percentile_is_nearest_rank_with_ceil(n, p, rank):
    times = [float(i) for i in range(1, n + 1)]  # the value is its own rank
    assert gate.percentile(times, p) == rank
    assert samples(times[::-1]).measure(f"p{p:g}") == rank  # unsorted input is sorted first


def test_percentile_is_exact_not_bucketed():
    # Locust's histogram reports 2000 for p95 here and 1000 for both 996 and 1049.
    assert gate.percentile(sorted([10.0] * 95 + [2000.0] * 5), 95) == 10.0
    assert gate.percentile([996.0], 95) == 996.0 and gate.percentile([1049.0], 95) == 1049.0
    assert gate.percentile([], 95) is None


def test_fractional_rank_decides_the_verdict():
    # 18 fast, 1 slow: p95 of 19 is the 19th (the slow one) and misses; floor(18.05) = 18 would pass.
    verdict = gate.evaluate(http([100] * 18 + [5000]), gate.build_thresholds(avg_ms=10_000))
    assert failed(verdict) == [("http", "p95")]


# --- recording: conflicts, failures, no response -------------------------------------------------

def test_a_409_is_a_conflict_not_a_failure():
    entries = {}
    gate.record(entries, "POST", "[Operator] Claim Task (conflict)", 12.0, failed=True, status=409)
    gate.record(entries, "POST", "[Operator] Claim Task (conflict)", 14.0, failed=False, status=409)
    e = entries[("POST", "[Operator] Claim Task (conflict)")]
    assert (e.requests, e.conflicts, e.failures, e.times) == (2, 2, 0, [12.0, 14.0])
    verdict = gate.evaluate(entries | http([10]), gate.build_thresholds(flags=["http: conflict_rate<0.6"]))
    assert (verdict["groups"]["http"]["error_rate"], verdict["groups"]["http"]["conflicts"]) == (0.0, 2)
    assert failed(verdict) == [("http", "conflict_rate")]  # 2 of 3


def test_failures_count_in_the_error_rate_not_in_latency():
    entries = {}
    for status, was_failed in ((200, False), (500, True), (0, True), (None, True)):
        gate.record(entries, "GET", "[Tasks] List", 100.0 * (status or 1), was_failed, status)
    e = entries[("GET", "[Tasks] List")]
    assert (e.requests, e.failures, e.no_response, e.times) == (4, 3, 2, [20000.0])
    assert e.measure("error_rate") == 0.75 and e.measure("avg") == 20000.0


def test_error_rate_at_exactly_the_limit_fails():
    assert gate.evaluate(http([10] * 999, failures=1), DEFAULTS)["exit_code"] == gate.EXIT_MISS   # 0.1 %
    assert gate.evaluate(http([10] * 1000, failures=1), DEFAULTS)["exit_code"] == gate.EXIT_PASS  # 0.0999 %


def test_strict_less_than_and_explicit_operators():
    at_limit = http([500] * 100)
    assert failed(gate.evaluate(at_limit, DEFAULTS)) == [("http", "avg")]  # 500 is not < 500
    assert gate.evaluate(at_limit, gate.build_thresholds(flags=["http: avg<=500"]))["exit_code"] == gate.EXIT_PASS


# --- groups and targets --------------------------------------------------------------------------

def test_retries_are_reported_apart_and_the_first_failure_counts_in_http():
    entries = {("POST", "[Operator] Update Progress"): samples([10] * 998, failures=2),
               ("POST", "[Operator] Update Progress (retry)"): samples([12], failures=1),
               ("POST", "[Operator] Update Progress (retry) (conflict)"): samples(conflicts=1)}
    verdict = gate.evaluate(entries, DEFAULTS + [gate.parse_expression("retry", "failures==0")])
    groups = verdict["groups"]
    assert (groups["http"]["requests"], groups["http"]["failures"], groups["http"]["error_rate"]) == (1000, 2, 0.002)
    assert (groups["retry"]["requests"], groups["retry"]["failures"], groups["retry"]["conflicts"]) == (3, 1, 1)
    assert failed(verdict) == [("http", "error_rate"), ("retry", "failures")]
    assert {e["name"]: e["kind"] for e in verdict["entries"]}["[Operator] Update Progress (retry)"] == "retry"
    assert "retry requests=3 failures=1" in gate.table(verdict)


def test_logins_and_websocket_are_judged_apart_from_http():
    entries = http([400] * 10) | {
        ("POST", gate.LOGIN_NAME): samples([3000] * 10, failures=1),
        ("WS", "[WS] assignment->notification"): samples([5] * 1000, failures=20),
    }
    verdict = gate.evaluate(entries, DEFAULTS)
    groups = verdict["groups"]
    assert (groups["http"]["requests"], groups["http"]["avg_ms"]) == (10, 400.0)
    assert (groups["login"]["requests"], groups["ws"]["requests"]) == (11, 1020)
    assert failed(verdict) == [("ws", "error_rate"), ("login", "error_rate")]
    included = gate.evaluate(entries, DEFAULTS, include_login=True)
    assert included["groups"]["http"]["requests"] == 21 and "login" not in {t for t, _ in failed(included)}
    assert ("http", "avg") in failed(included) and ("http", "error_rate") in failed(included)


def test_per_name_thresholds_and_method_prefix():
    entries = http([900] * 10) | {("GET", "[Tasks] Detail"): samples([10] * 10)}
    assert failed(gate.evaluate(entries, gate.build_thresholds(flags=["[Tasks] List: p95<800"]))) == [
        ("[Tasks] List", "p95")]
    assert gate.evaluate(entries, gate.build_thresholds(flags=["GET [Tasks] Detail: p95<800"]))["exit_code"] == 0
    # an explicit threshold without data fails; a default one without data is skipped
    verdict = gate.evaluate(entries, gate.build_thresholds(flags=["POST [Tasks] Detail: p95<800"]))
    assert failed(verdict) == [("POST [Tasks] Detail", "p95")]
    assert {r["result"] for r in verdict["thresholds"] if r["target"] in ("ws", "login")} == {"skip"}


# --- invalid runs and exit codes -----------------------------------------------------------------

@pytest.mark.parametrize("entries, facts, reason", [
    ({}, {}, "no HTTP requests were made"),
    ({("POST", gate.LOGIN_NAME): samples([5])}, {}, "no HTTP requests were made"),
    (http(failures=10, no_response=10), {}, "host unreachable"),
    ({("POST", gate.LOGIN_NAME): samples(failures=6, no_response=6)}, {}, "host unreachable"),
    (http([5]), {"exceptions": 3}, "3 exception(s) in the load test's own code"),
    (http([5]), {"cpu_warning": True}, "exceeded 90% CPU"),
    (http([5]), {"setup_errors": {"login rejected for operator accounts": 3}},
     "setup error: login rejected for operator accounts (x3)"),
])
def test_invalid_runs_exit_2_even_if_every_threshold_holds(entries, facts, reason):
    verdict = gate.evaluate(entries, [], **facts)
    assert verdict["exit_code"] == gate.EXIT_INVALID and verdict["verdict"] == "invalid"
    assert any(reason in r for r in verdict["invalid_reasons"]), verdict["invalid_reasons"]
    assert f"INVALID RUN: {verdict['invalid_reasons'][0]}" in gate.table(verdict)


def test_some_answers_are_not_an_unreachable_host():
    verdict = gate.evaluate(http([5], failures=9, no_response=9), [])
    assert verdict["invalid_reasons"] == [] and verdict["exit_code"] == gate.EXIT_PASS


@pytest.mark.parametrize("times, facts, code, status", [
    ([10], {}, 0, "pass"),
    ([5000], {}, 1, "fail"),
    ([5000], {"exceptions": 1}, 2, "invalid"),  # invalid beats a miss
    ([10], {"cpu_warning": True}, 2, "invalid"),
])
def test_exit_codes(times, facts, code, status):
    verdict = gate.evaluate(http(times), DEFAULTS, **facts)
    assert (verdict["exit_code"], verdict["verdict"], verdict["cpu_warning"]) == (code, status, "cpu_warning" in facts)
    assert f"SLA verdict: {status.upper()} (exit code {code})" in gate.table(verdict)


def test_summary_and_table_shape():
    summary = gate.evaluate(http([10, 20], conflicts=1) | {("WS", "[WS] Connect"): samples([3])}, DEFAULTS)
    assert summary["groups"]["http"] == {
        "requests": 3, "failures": 0, "conflicts": 1, "no_response": 0, "error_rate": 0.0, "avg_ms": 15.0,
        "min_ms": 10.0, "p50_ms": 10.0, "p90_ms": 20.0, "p95_ms": 20.0, "p99_ms": 20.0, "max_ms": 20.0}
    assert [(e["type"], e["name"], e["kind"], e["requests"]) for e in summary["entries"]] == [
        ("GET", "[Tasks] List", "http", 3), ("WS", "[WS] Connect", "ws", 1)]
    assert summary["thresholds"][0] == {"target": "http", "metric": "avg", "threshold": "avg<500ms",
                                        "source": "default", "measured": 15.0, "result": "pass"}
    table = gate.table(summary)
    for text in ("target | threshold", "http   | avg<500ms       | 15.0 ms", "error_rate<0.1%",
                 "login  | error_rate<0.1% | no data  | skip", "SLA verdict: PASS (exit code 0)"):
        assert text in table
