"""Point-in-time recovery with Debian's pgBackRest and PostgreSQL, set up as the NixOS module does
(tests/harness/pgbackrest.py): WAL archived through the passphrase wrapper into an encrypted
repository, a full backup, restores to a moment and to the end of the archive; the `info` parser
pinned against this pgBackRest's real JSON; the metrics a broken archive_command produces, fed to
the alert rules by promtool.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from harness.pgbackrest import STANZA, WRAPPER_SCRIPT, PitrCluster, pgbackrest_binary
from harness.services import MissingBinary, find_binary
from workorder.backup import pgbackrest

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES = REPO_ROOT / "nix" / "prometheus" / "pitr.rules.yml"
VERSIONS = REPO_ROOT / "nix" / "python-versions.json"


@pytest.fixture(scope="module")
def cluster():
    try:
        pgbackrest_binary()
    except MissingBinary as exc:  # tests/run.sh installs Debian's pgbackrest
        pytest.fail(f"pgBackRest is required for the point-in-time recovery tests: {exc}")
    server = PitrCluster(tempfile.mkdtemp(prefix="wo-pitr-"))  # postgres must reach it
    try:
        server.start()
        server.backup("full")
        time.sleep(1.1)  # pgBackRest picks the backup by whole seconds: later moments come after its stop
        yield server
    finally:
        server.cleanup()


def cli(cluster: PitrCluster, *args: str, metrics_file: Path | None = None) -> subprocess.CompletedProcess:
    """workorder-backup as the units run it (environment only), against the test cluster."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "WORKORDER_"))}
    env.update({
        "DATABASE_URL": cluster.pg.url("postgres"),
        "WORKORDER_PGBACKREST_STANZA": STANZA,
        "WORKORDER_PGBACKREST_COMMAND": str(cluster.command),
        "WORKORDER_PGBACKREST_REPOSITORY": str(cluster.repository),
    })
    extra = ["--metrics-file", str(metrics_file)] if metrics_file else []
    return subprocess.run([sys.executable, "-m", "workorder.backup", *args, *extra], env=env, capture_output=True,
                          text=True, timeout=300)


def rows(cluster: PitrCluster) -> list[str]:
    return cluster.pg.psql("SELECT coalesce(string_agg(v, ',' ORDER BY v), '') FROM probe").split(",")


def test_restore_to_a_moment_keeps_what_came_before_and_drops_what_came_after(cluster):
    cluster.pg.psql("CREATE TABLE probe (v text); INSERT INTO probe VALUES ('A1'), ('A2')")
    moment = cluster.pg.psql("SELECT clock_timestamp()")
    time.sleep(0.2)
    cluster.pg.psql("INSERT INTO probe VALUES ('B1'); DELETE FROM probe WHERE v = 'A2'")
    cluster.switch_and_wait_archived()

    cluster.wipe()
    cluster.restore("--type=time", f"--target={moment}", "--target-action=promote")
    assert rows(cluster) == ["A1", "A2"]

    # Back to the end of the original timeline (the restore above started timeline 2, on which
    # "latest" would mean the moment): docs/backup.md's --target-timeline=current.
    cluster.wipe()
    cluster.restore("--type=default", "--target-timeline=current")
    assert rows(cluster) == ["A1", "B1"]


def test_restore_command_written_by_pgbackrest_runs_the_passphrase_wrapper(cluster):
    """Recovery fetches WAL through `cmd` (the wrapper): without it archive-get could not decrypt."""
    auto_conf = (cluster.pg.data_dir / "postgresql.auto.conf").read_text()
    assert f"restore_command = '{cluster.command} " in auto_conf
    assert cluster.passphrase not in auto_conf
    repo_files = [p for p in cluster.repository.rglob("*") if p.is_file()]
    assert repo_files and not any(cluster.passphrase.encode() in p.read_bytes() for p in repo_files)


def test_repository_is_unreadable_without_the_passphrase(cluster):
    wrong = cluster.base / "wrong-credentials"  # where postgres (the wrapper's runuser) can read it
    wrong.mkdir(exist_ok=True)
    (wrong / "pgbackrest-passphrase").write_text("not the passphrase\n")
    os.chmod(wrong, 0o755)
    os.chmod(wrong / "pgbackrest-passphrase", 0o644)
    env = {**os.environ, "PGBACKREST_CONFIG": str(cluster.config_file), "CREDENTIALS_DIRECTORY": str(wrong),
           "WORKORDER_PGBACKREST_BIN": pgbackrest_binary()}
    result = subprocess.run(["bash", str(WRAPPER_SCRIPT), f"--stanza={STANZA}", "info", "--output=json"],
                            env=env, capture_output=True, text=True, errors="replace", timeout=120, cwd="/")
    if result.returncode == 0:  # pgBackRest may report the failure as the stanza's status instead
        (stanza,) = json.loads(result.stdout, strict=False)  # the message may quote undecryptable bytes
        assert stanza["status"]["code"] != 0 and not stanza.get("backup"), stanza
    assert "A1" not in result.stdout + result.stderr


def test_info_parser_reads_this_pgbackrest_versions_json(cluster):
    """pgbackrest info --output=json of the pgBackRest installed here (Debian 12: 2.45), parsed."""
    raw = cluster.pgbackrest("info", "--output=json").stdout
    (stanza,) = pgbackrest.parse_info(raw)
    assert stanza.name == STANZA and stanza.status_code == 0 and stanza.cipher == "aes-256-cbc"
    full = stanza.newest("full")
    assert full is not None and full.label.endswith("F") and full.size_bytes > full.repository_bytes > 0
    assert full.wal_start and full.wal_stop and full.wal_start <= full.wal_stop <= stanza.wal_max
    assert stanza.wal_min <= full.wal_start
    # Every field INFO_FIELDS names is in the real output (and the version table lists the same).
    data = json.loads(raw)
    for path in pgbackrest.INFO_FIELDS:
        assert _present(data, path.split(".")), f"{path} missing from pgbackrest info --output=json"
    table = {entry["name"]: entry for entry in json.loads(VERSIONS.read_text())["software"]}
    assert table["pgBackRest"]["infoFields"] == list(pgbackrest.INFO_FIELDS)
    version = subprocess.run([pgbackrest_binary(), "version"], capture_output=True, text=True).stdout.split()[-1]
    assert version in table["pgBackRest"]["ci"], (version, table["pgBackRest"]["ci"])


def _present(value, path: list[str]) -> bool:
    if not path:
        return True
    head, rest = path[0], path[1:]
    if head.endswith("[]"):
        key = head[:-2]
        items = value.get(key) if key else value
        return isinstance(items, list) and bool(items) and any(_present(item, rest) for item in items)
    return isinstance(value, dict) and head in value and _present(value[head], rest)


def test_list_shows_pgbackrest_backups_and_the_newest_archived_wal(cluster):
    segment = cluster.switch_and_wait_archived()
    text = cli(cluster, "list", "--pitr")
    assert text.returncode == 0, text.stderr
    assert "newest archived WAL: " in text.stdout and "full" in text.stdout
    listing = json.loads(cli(cluster, "list", "--pitr", "--json").stdout)
    assert listing["stanza"] == STANZA and listing["cipher"] == "aes-256-cbc"
    assert listing["newest_archived_wal"] >= segment
    assert [b["type"] for b in listing["backups"]][-1] == "full"


def test_parser_rejects_output_without_the_fields_it_reads():
    with pytest.raises(pgbackrest.InfoFormatError):
        pgbackrest.parse_info('[{"name": "main", "backup": [{"label": "x"}], "status": {"code": 0, "message": "ok"}}]')
    with pytest.raises(pgbackrest.InfoFormatError):
        pgbackrest.parse_info("not json")


def test_metrics_of_a_healthy_archive(cluster, tmp_path):
    metrics_file = tmp_path / "workorder_pitr.prom"
    result = cli(cluster, "pitr-metrics", metrics_file=metrics_file)
    assert result.returncode == 0, result.stderr
    values = pgbackrest.read_values(metrics_file, pgbackrest.METRICS)
    assert values["workorder_pitr_collector_success"] == 1
    assert values["workorder_pitr_archive_failures_total"] == 0
    assert values["workorder_pitr_last_archived_timestamp_seconds"] > time.time() - 600
    assert values["workorder_pitr_last_full_backup_timestamp_seconds"] > time.time() - 600
    assert values["workorder_pitr_wal_position_bytes"] > 0
    assert values["workorder_pitr_repository_size_bytes"] > 0
    assert values["workorder_pitr_stanza_status_code"] == 0


def test_verify_passes_then_fails_on_a_damaged_archive_file(cluster, tmp_path):
    metrics_file = tmp_path / "workorder_pitr_verify.prom"
    assert cli(cluster, "pitr-verify", metrics_file=metrics_file).returncode == 0
    assert pgbackrest.read_values(metrics_file, pgbackrest.VERIFY_METRICS)["workorder_pitr_verify_last_run_success"] == 1
    segment = max((cluster.repository / "archive").rglob("0000000*"))
    original = segment.read_bytes()
    try:
        segment.write_bytes(original[:-64] + bytes(64))
        result = cli(cluster, "pitr-verify", metrics_file=metrics_file)
        values = pgbackrest.read_values(metrics_file, pgbackrest.VERIFY_METRICS)
        assert result.returncode == 3, result.stdout + result.stderr
        assert values["workorder_pitr_verify_last_run_success"] == 0
        assert values["workorder_pitr_verify_last_success_timestamp_seconds"] > 0  # the earlier success stays
    finally:
        segment.write_bytes(original)


def test_broken_archive_command_raises_the_failure_metric_and_fires_the_alert(cluster, tmp_path):
    metrics_file = tmp_path / "workorder_pitr.prom"
    assert cli(cluster, "pitr-metrics", metrics_file=metrics_file).returncode == 0
    before = pgbackrest.read_values(metrics_file, pgbackrest.METRICS)
    cluster.set_archive_command("/bin/false")
    try:
        cluster.pg.psql("SELECT pg_switch_wal()")
        cluster.pg.psql("CREATE TABLE IF NOT EXISTS churn (n int); INSERT INTO churn SELECT 1")
        cluster.pg.psql("SELECT pg_switch_wal()")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the archiver tries 3 times in a row, 1 s apart
            if int(cluster.pg.psql("SELECT failed_count FROM pg_stat_archiver")) >= before[
                    "workorder_pitr_archive_failures_total"] + 3:
                break
            time.sleep(0.2)
        assert cli(cluster, "pitr-metrics", metrics_file=metrics_file).returncode == 0
        after = pgbackrest.read_values(metrics_file, pgbackrest.METRICS)
    finally:
        cluster.set_archive_command(None)
    assert after["workorder_pitr_archive_failures_total"] > before["workorder_pitr_archive_failures_total"]
    assert after["workorder_pitr_last_failed_timestamp_seconds"] > after["workorder_pitr_last_archived_timestamp_seconds"]
    assert after["workorder_pitr_wal_position_bytes"] > before["workorder_pitr_wal_position_bytes"]
    fired = promtool_alerts(tmp_path, before, after)
    assert fired == ["WorkorderPitrArchiveFailing"], fired


def promtool_alerts(tmp_path: Path, before: dict, after: dict) -> list[str]:
    """The rules fed the two real collections: `before` for 10 minutes, then `after`'s failure count
    rising as this archiver's retries do (3 a minute) while nothing succeeds. Which alerts fire at 20 m."""
    promtool = find_binary("promtool", ("/usr/bin/promtool",))
    labels = '{instance="server:9100",job="node"}'
    failures = int(before["workorder_pitr_archive_failures_total"])
    rise = max(1, int(after["workorder_pitr_archive_failures_total"] - before["workorder_pitr_archive_failures_total"]))
    series = {
        "workorder_pitr_archive_failures_total": f"{failures}x10 {failures + rise}+{rise}x10",
        "workorder_pitr_last_archived_timestamp_seconds": f"{int(after['workorder_pitr_last_archived_timestamp_seconds'])}x20",
        "workorder_pitr_last_failed_timestamp_seconds": (
            f"{int(before['workorder_pitr_last_failed_timestamp_seconds'])}x10 "
            f"{int(after['workorder_pitr_last_failed_timestamp_seconds'])}x10"),
    }
    names = ["WorkorderPitrArchiveFailing", "WorkorderPitrArchiveStale", "WorkorderPitrBackupStale",
             "WorkorderPitrFullBackupStale", "WorkorderPitrVerifyFailed", "WorkorderPitrMetricsStale",
             "WorkorderPitrRepositoryFillingUp"]
    fired = []
    for name in names:
        test = {
            "rule_files": [str(RULES)],
            "evaluation_interval": "1m",
            "tests": [{"interval": "1m",
                       "input_series": [{"series": f"{metric}{labels}", "values": values}
                                        for metric, values in series.items()],
                       "alert_rule_test": [{"eval_time": "20m", "alertname": name, "exp_alerts": []}]}],
        }
        path = tmp_path / f"{name}.test.yml"
        path.write_text(yaml.safe_dump(test))
        result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            output = result.stdout + result.stderr
            assert "got:[" in output and f"alertname=\"{name}\"" in output, output
            fired.append(name)
    return fired
