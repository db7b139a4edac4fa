"""The rules against real exporters: Debian's Prometheus loads nix/prometheus/*.rules.yml, scrapes
node exporter (with a workorder_backup.prom written by the backup tool's own metrics writer),
postgres_exporter on a throwaway PostgreSQL and redis_exporter on a throwaway Redis.

This proves what promtool's synthetic series cannot: the metric and label names the rules use are the
ones these exporter versions really expose, the backup alerts fire on the file the backup tool really
writes, and every rule evaluates without errors in a running Prometheus.
"""

from __future__ import annotations

import time

import pytest

from harness.prometheus import PrometheusServer, ScrapeJob, node_exporter, postgres_exporter, redis_exporter
from harness.services import PostgresServer, RedisServer
from workorder.backup.metrics import write_metrics

from .test_rules import RULE_FILES, load

HOUR = 3600


def wait_until(predicate, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"{what}: not true after {timeout}s (last: {last!r})")


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    base = tmp_path_factory.mktemp("monitoring-live")
    textfile_dir = base / "textfile"
    now = time.time()
    # The backup tool's own writer: last success 27 h ago, newest set a third of the previous one,
    # last run successful and restore-verified.
    write_metrics(textfile_dir / "workorder_backup.prom", {
        "workorder_backup_last_success_timestamp_seconds": now - 27 * HOUR,
        "workorder_backup_last_run_timestamp_seconds": now - 27 * HOUR,
        "workorder_backup_last_run_success": 1,
        "workorder_backup_last_duration_seconds": 42.5,
        "workorder_backup_last_size_bytes": 1_000_000,
        "workorder_backup_previous_size_bytes": 3_000_000,
        "workorder_backup_last_verified": 1,
    })
    started = []
    pg = PostgresServer().start()
    started.append(pg.cleanup)
    redis = RedisServer().start()
    started.append(redis.cleanup)
    try:
        exporters = [
            node_exporter(base, textfile_dir),
            postgres_exporter(base, f"postgresql://{pg.user}@127.0.0.1:{pg.port}/postgres?sslmode=disable"),
            redis_exporter(base, f"redis://127.0.0.1:{redis.port}"),
        ]
        for exporter in exporters:
            exporter.start()
            started.append(exporter.stop)
        server = PrometheusServer(base / "prometheus", [ScrapeJob(e.job, [e.target]) for e in exporters],
                                  rule_files=[str(path) for path in RULE_FILES])
        server.start()
        started.append(server.stop)
        server.wait_all_targets_up(timeout=90)
        yield server
    finally:
        for stop in reversed(started):
            stop()


def every_rule_evaluated(prometheus) -> list[dict]:
    """The rule groups once every rule has been evaluated at least once (polled, 60 s deadline)."""

    def evaluated():
        groups = prometheus.rule_groups()
        rules = [rule for group in groups for rule in group["rules"]]
        never = "0001-01-01"  # Go's zero time: not evaluated yet
        if rules and not any(rule.get("lastEvaluation", never).startswith(never) for rule in rules):
            return groups
        return None

    return wait_until(evaluated, 60, "every rule evaluated once")


def test_every_rule_group_is_loaded_and_evaluates_without_errors(prometheus):
    expected = {(path.name, group["name"]) for path in RULE_FILES for group in load(path)["groups"]}
    groups = every_rule_evaluated(prometheus)
    loaded = {(group["file"].rsplit("/", 1)[-1], group["name"]) for group in groups}
    assert expected <= loaded, f"rule groups not loaded: {sorted(expected - loaded)}"
    bad = [(group["name"], rule["name"], rule.get("health"), rule.get("lastError"))
           for group in groups for rule in group["rules"] if rule.get("health") != "ok"]
    assert not bad, bad
    print(f"[monitoring] {len(groups)} groups, {sum(len(g['rules']) for g in groups)} rules, all healthy")


@pytest.mark.parametrize("name", [
    "pg_up", "pg_stat_activity_count", "pg_settings_max_connections",
    "redis_up", "redis_memory_used_bytes", "redis_memory_max_bytes",
    "node_filesystem_avail_bytes", "node_filesystem_size_bytes",
    "workorder_backup_last_success_timestamp_seconds", "workorder_backup_last_verified",
])
def test_exporters_expose_the_names_the_rules_use(prometheus, name):
    wait_until(lambda: prometheus.query(f"count({name})"), 30, f"series {name}")


def test_capacity_expressions_match_real_labels(prometheus):
    """The vector matching in the PostgreSQL and Redis alerts works on these exporters' labels."""
    connections = prometheus.query(
        "sum by (instance) (pg_stat_activity_count) / on (instance) max by (instance) (pg_settings_max_connections)")
    assert len(connections) == 1 and 0 < float(connections[0]["value"][1]) < 0.8, connections
    memory = prometheus.query("redis_memory_used_bytes / (redis_memory_max_bytes > 0)")
    assert len(memory) == 1 and 0 < float(memory[0]["value"][1]) < 0.9, memory  # RedisServer: maxmemory 256mb
    assert prometheus.scalar("pg_up") == 1 and prometheus.scalar("redis_up") == 1


def test_backup_alerts_fire_on_the_backup_tools_metrics(prometheus):
    wanted = {"WorkorderBackupStale", "WorkorderBackupSizeDropped"}

    def firing():
        alerts = prometheus.api("alerts")["alerts"]
        names = {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}
        return names if wanted <= names else None

    names = wait_until(firing, 60, f"{sorted(wanted)} firing")
    assert not names & {"WorkorderBackupFailed", "WorkorderBackupNotVerified", "WorkorderBackupMetricsMissing"}


def test_healthy_services_raise_no_infrastructure_alert(prometheus):
    every_rule_evaluated(prometheus)
    # No django job here: WorkorderDjangoDown goes pending (absent target, `for: 5m`) at its first
    # evaluation, which shows the alerts below are the evaluated state, not an empty start.
    wait_until(lambda: any(a["labels"]["alertname"] == "WorkorderDjangoDown" for a in prometheus.api("alerts")["alerts"]),
               60, "WorkorderDjangoDown pending")
    active = {a["labels"]["alertname"]: a["state"] for a in prometheus.api("alerts")["alerts"]}
    # Disk alerts depend on the machine the tests run on; the backup alerts are this module's fixture
    # (a stale, shrunken backup on purpose: test_backup_alerts_fire_on_the_backup_tools_metrics).
    ignored = {"WorkorderDjangoDown", "WorkorderDiskSpaceLow", "WorkorderDiskFillingUp", "WorkorderDiskFillingUpFast"}
    unexpected = {name: state for name, state in active.items()
                  if name not in ignored and not name.startswith("WorkorderBackup")}
    assert not unexpected, unexpected
    assert active.get("WorkorderDjangoDown") == "pending", active
