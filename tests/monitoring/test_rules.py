"""The Prometheus rules in nix/prometheus/: promtool checks, promtool unit tests, and the conventions
every alert follows (severity, summary, a runbook section in docs/monitoring.md).

Run: .venv/bin/python -m pytest -c tests/pytest.ini --rootdir . tests/monitoring
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from harness.services import MissingBinary, find_binary
from workorder.backup.pgbackrest import METRICS as PITR_METRICS
from workorder.backup.pgbackrest import VERIFY_METRICS as PITR_VERIFY_METRICS

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = REPO_ROOT / "nix" / "prometheus"
RULE_FILES = sorted(RULES_DIR.glob("*.rules.yml"))
TEST_FILES = sorted((RULES_DIR / "tests").glob("*.test.yml"))
RUNBOOK = REPO_ROOT / "docs" / "monitoring.md"
RUNBOOK_URL_PREFIX = "https://github.com/workorder/workorder/blob/main/docs/monitoring.md#"

SEVERITIES = {"page", "ticket"}
SCRAPE_JOBS = ("django", "node", "postgres", "redis", "nginx", "mtail")

# The metric names the application exposes (django-prometheus, domain gauges and counters, backup textfile metrics).
APPLICATION_METRICS = {
    "django_http_requests_total_by_view_transport_method_total",
    "django_http_responses_total_by_status_view_method_total",
    "django_http_requests_latency_seconds_by_view_method_bucket",
    "django_http_requests_latency_seconds_by_view_method_count",
    "django_http_requests_latency_seconds_by_view_method_sum",
    "workorder_backup_last_success_timestamp_seconds",
    "workorder_backup_last_run_timestamp_seconds",
    "workorder_backup_last_run_success",
    "workorder_backup_last_duration_seconds",
    "workorder_backup_last_size_bytes",
    "workorder_backup_previous_size_bytes",
    "workorder_backup_last_verified",
    "workorder_login_failures_total",
    "workorder_login_lockouts_total",
    "workorder_requests_shed_total",  # core/shedding.py; exposed on the edge stack: tests/stack/test_edge.py
} | set(PITR_METRICS) | set(PITR_VERIFY_METRICS)  # workorder-backup pitr-metrics / pitr-verify

# What the stack test and the operators' dashboards rely on: these recording rules exist.
REQUIRED_RECORDINGS = [
    f"workorder:{name}{window}"
    for window in ("5m", "30m", "1h", "6h")
    for name in (
        "api_requests:rate",
        "api_errors:ratio_rate",
        "api_sla_failures:ratio_rate",
        "api_slow_requests_500ms:ratio_rate",
        "api_slow_requests_1s:ratio_rate",
        "api_latency_seconds:p95_rate",
        "api_latency_seconds:p99_rate",
        "api_latency_seconds:avg_rate",
    )
]


def promtool() -> str:
    try:
        return find_binary("promtool", ("/usr/bin/promtool",))
    except MissingBinary as exc:  # tests/run.sh installs Debian's `prometheus` package, which ships it
        pytest.fail(f"promtool is required for the monitoring tests: {exc}")


def run_promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)


def load(path: Path) -> dict:
    with open(path) as handle:
        return yaml.safe_load(handle)


def all_rules() -> list[tuple[Path, str, dict]]:
    return [(path, group["name"], rule) for path in RULE_FILES for group in load(path)["groups"]
            for rule in group["rules"]]


def alerts() -> list[dict]:
    return [rule for _, _, rule in all_rules() if "alert" in rule]


def recordings() -> list[dict]:
    return [rule for _, _, rule in all_rules() if "record" in rule]


def github_anchor(heading: str) -> str:
    """GitHub's heading slug: lower case, punctuation dropped, spaces to hyphens."""
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def runbook_anchors() -> set[str]:
    text = RUNBOOK.read_text()
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # headings inside code blocks do not count
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.MULTILINE)}


def expressions() -> list[str]:
    return [rule["expr"] for _, _, rule in all_rules()]


def metric_names(expr: str) -> set[str]:
    """Metric-like identifiers in a PromQL expression (function names and label names filtered out)."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "", without_strings)
    without_by = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", without_labels)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_by))
    return {name for name in names if "_" in name or ":" in name}


# -- the files exist and promtool accepts them -------------------------------------------------
def test_rule_and_test_files_exist():
    names = {path.name for path in RULE_FILES}
    assert {"workorder.rules.yml", "backup.rules.yml", "infrastructure.rules.yml"} <= names, names
    assert TEST_FILES, "no promtool unit tests under nix/prometheus/tests"


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path):
    result = run_promtool("check", "rules", str(path))
    print(result.stdout)
    assert result.returncode == 0, f"promtool check rules {path.name}:\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests(path):
    result = run_promtool("test", "rules", str(path))
    print(result.stdout)
    assert result.returncode == 0, f"promtool test rules {path.name}:\n{result.stdout}\n{result.stderr}"


def test_every_rules_file_has_unit_tests():
    tested = {(path.parent / rule_file).resolve() for path in TEST_FILES for rule_file in load(path)["rule_files"]}
    missing = [path.name for path in RULE_FILES if path.resolve() not in tested]
    assert not missing, f"rules files without a promtool test file: {missing}"


def test_every_alert_is_tested_firing_and_silent():
    """Each alert has a promtool case where it fires and one where it stays silent."""
    firing, silent = set(), set()
    for path in TEST_FILES:
        for case in load(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert not names - firing, f"alerts never tested firing: {sorted(names - firing)}"
    assert not names - silent, f"alerts never tested silent: {sorted(names - silent)}"
    assert not (firing | silent) - names, f"tests for unknown alerts: {sorted((firing | silent) - names)}"


# -- conventions ---------------------------------------------------------------------------------
def test_alert_names_are_unique():
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


@pytest.mark.parametrize("rule", alerts(), ids=lambda r: r["alert"])
def test_alert_has_severity_summary_and_runbook(rule):
    labels = rule.get("labels", {})
    annotations = rule.get("annotations", {})
    assert labels.get("severity") in SEVERITIES, f"{rule['alert']}: severity must be one of {SEVERITIES}"
    assert annotations.get("summary", "").strip(), f"{rule['alert']}: no summary"
    assert annotations.get("description", "").strip(), f"{rule['alert']}: no description"
    url = annotations.get("runbook_url", "")
    assert url.startswith(RUNBOOK_URL_PREFIX), f"{rule['alert']}: runbook_url must point into docs/monitoring.md"
    anchor = url[len(RUNBOOK_URL_PREFIX):]
    assert anchor == rule["alert"].lower(), f"{rule['alert']}: anchor {anchor!r} is not the alert's own section"
    assert anchor in runbook_anchors(), f"{rule['alert']}: docs/monitoring.md has no heading for #{anchor}"


def test_runbook_covers_scrape_jobs_and_the_ui():
    text = RUNBOOK.read_text()
    assert re.search(r"^#+\s+Monitoring\s*$", text, flags=re.MULTILINE), "docs/monitoring.md needs a 'Monitoring' section"
    for job in SCRAPE_JOBS:
        assert f"`{job}`" in text, f"docs/monitoring.md does not describe the scrape job `{job}`"
    assert "ssh -L 9090:localhost:9090" in text


def test_recording_rules_used_are_defined_and_required_ones_exist():
    defined = {rule["record"] for rule in recordings()}
    used = {name for expr in expressions() for name in metric_names(expr) if name.startswith("workorder:")}
    assert not used - defined, f"expressions use undefined recording rules: {sorted(used - defined)}"
    assert not set(REQUIRED_RECORDINGS) - defined, sorted(set(REQUIRED_RECORDINGS) - defined)
    for name in defined:
        assert re.fullmatch(r"workorder:[a-z0-9_]+:[a-z0-9_]+", name), f"recording rule name {name!r}"


def test_rules_use_only_metric_names_the_application_exposes():
    """django_* and workorder_* series named in rules are names the application really exposes."""
    used = {name for expr in expressions() for name in metric_names(expr)}
    app_metrics = {name for name in used if name.startswith(("django_", "workorder_"))}
    unknown = app_metrics - APPLICATION_METRICS
    assert not unknown, f"metric names the application does not expose: {sorted(unknown)}"


def test_rules_files_are_self_contained():
    """Loaded as-is by NixOS (services.prometheus.ruleFiles) and the stack test: no templating left."""
    for path in RULE_FILES:
        text = path.read_text()
        assert "${" not in text and "@" not in re.sub(r"#.*", "", text), f"{path.name} looks templated"
        assert set(load(path)) == {"groups"}, f"{path.name}: only `groups` at the top level"


def test_slo_alerts_follow_the_workbook_windows():
    """Page on 1h/5m at 14.4x and 6h/30m at 6x; ticket on 1d/2h at 3x and 3d/6h at 1x."""
    pairs = {"page": [("1h", "5m", "14.4"), ("6h", "30m", "6")], "ticket": [("1d", "2h", "3"), ("3d", "6h", "1")]}
    slo_alerts = [rule for rule in alerts() if rule["alert"].endswith(("BudgetBurn", "BudgetBurnSlow"))]
    assert len(slo_alerts) == 6, [rule["alert"] for rule in slo_alerts]
    for rule in slo_alerts:
        severity = rule["labels"]["severity"]
        assert severity == ("ticket" if rule["alert"].endswith("Slow") else "page")
        for long, short, factor in pairs[severity]:
            assert re.search(rf"ratio_rate{long} > \({factor} \* 0\.\d+\)", rule["expr"]), (rule["alert"], long)
            assert re.search(rf"ratio_rate{short} > \({factor} \* 0\.\d+\)", rule["expr"]), (rule["alert"], short)
