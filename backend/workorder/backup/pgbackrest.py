"""Point-in-time recovery with pgBackRest: what the repository holds, and the textfile metrics.

PostgreSQL archives every WAL segment into a pgBackRest repository (archive_command), next to a
weekly full and daily differential backups; any moment between the oldest backup and the newest
archived segment can be restored (docs/backup.md). This module reads `pgbackrest info
--output=json` (the fields in INFO_FIELDS, listed with pgBackRest's versions in
nix/python-versions.json) and PostgreSQL's pg_stat_archiver, and writes the gauges the alert rules
in nix/prometheus/pitr.rules.yml use.

Configuration (environment; the NixOS module sets it):
  WORKORDER_PGBACKREST_STANZA      the stanza; unset: no point-in-time recovery configured
  WORKORDER_PGBACKREST_COMMAND     pgBackRest, or the wrapper that hands it the passphrase
                                   (default: pgbackrest)
  WORKORDER_PGBACKREST_REPOSITORY  the repository's local path, for its size and free space
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from workorder.core.env import env

from . import pg
from .errors import EXIT_FAILED, EXIT_OK, BackupError, ConfigError, VerificationError, one_line
from .store import human_size, replace_file_atomically

# The parts of `pgbackrest info --output=json` read here (pgBackRest 2.45 .. 2.57).
INFO_FIELDS = (
    "[].name",
    "[].status.code",
    "[].status.message",
    "[].cipher",
    "[].db[].id",
    "[].db[].version",
    "[].archive[].database.id",
    "[].archive[].min",
    "[].archive[].max",
    "[].backup[].label",
    "[].backup[].type",
    "[].backup[].timestamp.start",
    "[].backup[].timestamp.stop",
    "[].backup[].info.size",
    "[].backup[].info.repository.size",
    "[].backup[].archive.start",
    "[].backup[].archive.stop",
    "[].backup[].error",
    "[].backup[].prior",
)

METRICS = {
    "workorder_pitr_archive_failures_total": (
        "counter", "Failed WAL archive attempts (pg_stat_archiver.failed_count; resets with the statistics)."),
    "workorder_pitr_archived_total": ("counter", "WAL files archived (pg_stat_archiver.archived_count)."),
    "workorder_pitr_last_archived_timestamp_seconds": (
        "gauge", "Unix time of the last successful WAL archive (0: never)."),
    "workorder_pitr_last_failed_timestamp_seconds": ("gauge", "Unix time of the last failed WAL archive (0: never)."),
    "workorder_pitr_wal_position_bytes": (
        "gauge", "Current WAL write position in bytes; it stands still while the database is idle."),
    "workorder_pitr_wal_directory_bytes": ("gauge", "Size of pg_wal (grows while archiving fails)."),
    "workorder_pitr_last_full_backup_timestamp_seconds": (
        "gauge", "Unix time the newest full pgBackRest backup finished (0: none)."),
    "workorder_pitr_last_diff_backup_timestamp_seconds": (
        "gauge", "Unix time the newest differential (or full) pgBackRest backup finished (0: none)."),
    "workorder_pitr_oldest_restorable_timestamp_seconds": (
        "gauge", "Unix time the oldest backup in the repository finished: the earliest restorable moment."),
    "workorder_pitr_backups": ("gauge", "Backups in the repository (full, diff and incr)."),
    "workorder_pitr_stanza_status_code": ("gauge", "pgBackRest info status code of the stanza (0: ok)."),
    "workorder_pitr_repository_size_bytes": ("gauge", "Bytes the repository takes (backups and WAL archive)."),
    "workorder_pitr_repository_filesystem_size_bytes": ("gauge", "Size of the repository's filesystem."),
    "workorder_pitr_repository_filesystem_avail_bytes": (
        "gauge", "Bytes available to the repository on its filesystem."),
    "workorder_pitr_collector_success": ("gauge", "1 if the last collection read both PostgreSQL and pgBackRest."),
    "workorder_pitr_collector_last_success_timestamp_seconds": (
        "gauge", "Unix time of the last complete collection (0: never)."),
}

VERIFY_METRICS = {
    "workorder_pitr_verify_last_run_timestamp_seconds": ("gauge", "Unix time the last `pgbackrest verify` finished."),
    "workorder_pitr_verify_last_run_success": ("gauge", "1 if the last `pgbackrest verify` found no error."),
    "workorder_pitr_verify_last_success_timestamp_seconds": (
        "gauge", "Unix time of the last `pgbackrest verify` without error (0: never)."),
    "workorder_pitr_verify_last_duration_seconds": ("gauge", "Duration of the last `pgbackrest verify`."),
}


class InfoFormatError(BackupError):
    """`pgbackrest info --output=json` did not have the shape INFO_FIELDS describes."""


@dataclass(frozen=True)
class Backup:
    label: str
    type: str  # full, diff, incr
    started: int
    stopped: int
    size_bytes: int
    repository_bytes: int
    wal_start: str | None
    wal_stop: str | None
    error: bool
    prior: str | None


@dataclass(frozen=True)
class Stanza:
    name: str
    status_code: int
    status_message: str
    cipher: str
    backups: list[Backup] = field(default_factory=list)
    wal_min: str | None = None  # the oldest and newest archived WAL segment of the current database
    wal_max: str | None = None

    def newest(self, *types: str) -> Backup | None:
        matching = [b for b in self.backups if b.type in types and not b.error]
        return max(matching, key=lambda b: b.stopped) if matching else None


def _get(obj, *path, kind=None, optional=False):
    value = obj
    for key in path:
        if not isinstance(value, dict) or key not in value:
            if optional:
                return None
            raise InfoFormatError(f"pgbackrest info: no {'.'.join(map(str, path))}")
        value = value[key]
    if kind is not None and not isinstance(value, kind) and not (optional and value is None):
        raise InfoFormatError(f"pgbackrest info: {'.'.join(map(str, path))} is {type(value).__name__}")
    return value


def parse_info(text: str) -> list[Stanza]:
    """The stanzas of `pgbackrest info --output=json`, backups oldest first."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InfoFormatError(f"pgbackrest info: not JSON: {one_line(exc)}") from exc
    if not isinstance(data, list):
        raise InfoFormatError("pgbackrest info: expected a list of stanzas")
    stanzas = []
    for raw in data:
        dbs = _get(raw, "db", kind=list, optional=True) or []
        current_db = max((_get(db, "id", kind=int) for db in dbs), default=None)
        archives = [a for a in (_get(raw, "archive", kind=list, optional=True) or [])
                    if _get(a, "database", "id", kind=int) == current_db]
        wal_min = min((a["min"] for a in archives if a.get("min")), default=None)
        wal_max = max((a["max"] for a in archives if a.get("max")), default=None)
        backups = [
            Backup(
                label=_get(b, "label", kind=str),
                type=_get(b, "type", kind=str),
                started=_get(b, "timestamp", "start", kind=int),
                stopped=_get(b, "timestamp", "stop", kind=int),
                size_bytes=_get(b, "info", "size", kind=int),
                repository_bytes=_get(b, "info", "repository", "size", kind=int),
                wal_start=_get(b, "archive", "start", kind=str, optional=True),
                wal_stop=_get(b, "archive", "stop", kind=str, optional=True),
                error=bool(_get(b, "error", optional=True)),
                prior=_get(b, "prior", kind=str, optional=True),
            )
            for b in (_get(raw, "backup", kind=list, optional=True) or [])
        ]
        stanzas.append(Stanza(
            name=_get(raw, "name", kind=str),
            status_code=_get(raw, "status", "code", kind=int),
            status_message=_get(raw, "status", "message", kind=str),
            cipher=_get(raw, "cipher", kind=str, optional=True) or "none",
            backups=sorted(backups, key=lambda b: b.stopped),
            wal_min=wal_min,
            wal_max=wal_max,
        ))
    return stanzas


# -- configuration and commands --------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    stanza: str
    command: str = "pgbackrest"
    repository: Path | None = None

    @classmethod
    def from_env(cls, stanza: str | None = None) -> Settings | None:
        stanza = stanza or env("WORKORDER_PGBACKREST_STANZA")
        if not stanza:
            return None
        repository = env("WORKORDER_PGBACKREST_REPOSITORY")
        return cls(stanza=stanza, command=env("WORKORDER_PGBACKREST_COMMAND") or "pgbackrest",
                   repository=Path(repository) if repository else None)


def _run(settings: Settings, args: list[str], what: str, timeout: float) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run([settings.command, f"--stanza={settings.stanza}", *args], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, errors="replace", timeout=timeout)
    except OSError as exc:
        raise BackupError(f"{what}: cannot run {settings.command}: {exc.strerror}") from exc
    except subprocess.TimeoutExpired as exc:
        raise BackupError(f"{what}: no answer after {timeout:.0f}s") from exc
    return proc


def read_info(settings: Settings, timeout: float = 300) -> Stanza:
    proc = _run(settings, ["info", "--output=json"], "pgbackrest info", timeout)
    if proc.returncode != 0:
        raise BackupError(f"pgbackrest info failed: {one_line(proc.stderr or proc.stdout) or proc.returncode}")
    for stanza in parse_info(proc.stdout):
        if stanza.name == settings.stanza:
            return stanza
    raise BackupError(f"pgbackrest info: no stanza {settings.stanza!r} in the repository")


# -- list ------------------------------------------------------------------------------------------
def _when(epoch: float | None) -> str:
    if not epoch:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def summary(stanza: Stanza) -> dict:
    """What `workorder-backup list --pitr --json` prints."""
    oldest = stanza.backups[0] if stanza.backups else None
    return {
        "stanza": stanza.name,
        "status": {"code": stanza.status_code, "message": stanza.status_message},
        "cipher": stanza.cipher,
        "newest_archived_wal": stanza.wal_max,
        "oldest_archived_wal": stanza.wal_min,
        "restorable_from": _when(oldest.stopped) + "Z" if oldest else None,
        "backups": [{
            "label": b.label, "type": b.type, "started": _when(b.started) + "Z", "stopped": _when(b.stopped) + "Z",
            "size_bytes": b.size_bytes, "repository_bytes": b.repository_bytes, "wal_start": b.wal_start,
            "wal_stop": b.wal_stop, "prior": b.prior, "error": b.error,
        } for b in reversed(stanza.backups)],
    }


def print_listing(stanza: Stanza, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary(stanza), indent=2))
        return
    print(f"pgBackRest stanza {stanza.name}: {stanza.status_message} (code {stanza.status_code}), "
          f"cipher {stanza.cipher}")
    print(f"{'LABEL':<34} {'TYPE':<5} {'FINISHED (UTC)':<20} {'DB SIZE':>10} {'STORED':>10}  WAL START .. STOP")
    for b in reversed(stanza.backups):
        print(f"{b.label:<34} {b.type:<5} {_when(b.stopped):<20} {human_size(b.size_bytes):>10} "
              f"{human_size(b.repository_bytes):>10}  {b.wal_start or '-'} .. {b.wal_stop or '-'}"
              + ("  ERROR" if b.error else ""))
    print(f"newest archived WAL: {stanza.wal_max or '-'}")
    if stanza.backups:
        print(f"restorable: any moment from {_when(stanza.backups[0].stopped)} UTC to the newest archived WAL "
              "(docs/backup.md, 'Restore to a moment')")


# -- metrics ---------------------------------------------------------------------------------------
ARCHIVER_SQL = """
SELECT archived_count, failed_count,
       coalesce(extract(epoch FROM last_archived_time), 0),
       coalesce(extract(epoch FROM last_failed_time), 0),
       (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END) - '0/0',
       (SELECT coalesce(sum(size), 0) FROM pg_ls_waldir())
FROM pg_stat_archiver
"""


def archiver_metrics(db: pg.Database) -> dict[str, float]:
    conn = db.connect(autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(ARCHIVER_SQL)
            archived, failed, last_archived, last_failed, position, wal_bytes = cur.fetchone()
    finally:
        conn.close()
    return {
        "workorder_pitr_archived_total": archived,
        "workorder_pitr_archive_failures_total": failed,
        "workorder_pitr_last_archived_timestamp_seconds": float(last_archived),
        "workorder_pitr_last_failed_timestamp_seconds": float(last_failed),
        "workorder_pitr_wal_position_bytes": float(position),
        "workorder_pitr_wal_directory_bytes": float(wal_bytes),
    }


def stanza_metrics(stanza: Stanza) -> dict[str, float]:
    full = stanza.newest("full")
    diff = stanza.newest("full", "diff")
    return {
        "workorder_pitr_last_full_backup_timestamp_seconds": full.stopped if full else 0,
        "workorder_pitr_last_diff_backup_timestamp_seconds": diff.stopped if diff else 0,
        "workorder_pitr_oldest_restorable_timestamp_seconds": stanza.backups[0].stopped if stanza.backups else 0,
        "workorder_pitr_backups": len(stanza.backups),
        "workorder_pitr_stanza_status_code": stanza.status_code,
    }


def repository_metrics(path: Path) -> dict[str, float]:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass  # expired while walking
    fs = os.statvfs(path)
    return {
        "workorder_pitr_repository_size_bytes": total,
        "workorder_pitr_repository_filesystem_size_bytes": fs.f_blocks * fs.f_frsize,
        "workorder_pitr_repository_filesystem_avail_bytes": fs.f_bavail * fs.f_frsize,
    }


def _format(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render(values: dict[str, float], described: dict[str, tuple[str, str]]) -> str:
    """Prometheus text format; metrics without a value are left out (unknown, not zero)."""
    lines = []
    for name, (kind, help_text) in described.items():
        if name in values:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {_format(values[name])}"]
    return "\n".join(lines) + "\n"


def read_values(path: Path, described: dict) -> dict[str, float]:
    values: dict[str, float] = {}
    try:
        text = Path(path).read_text()
    except OSError:
        return values
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in described:
            try:
                values[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return values


def write_values(path: Path, values: dict[str, float], described: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file_atomically(path, render(values, described).encode(), mode=0o644)


def collect(settings: Settings, db: pg.Database | None, now: float | None = None) -> tuple[dict[str, float], list[str]]:
    """Every metric that can be read, and the reasons for those that could not."""
    values: dict[str, float] = {}
    problems: list[str] = []
    if db is not None:
        try:
            values.update(archiver_metrics(db))
        except Exception as exc:  # noqa: BLE001 - reported as a problem, the other parts still count
            problems.append(f"PostgreSQL: {one_line(exc)}")
    else:
        problems.append("PostgreSQL: no DATABASE_URL")
    try:
        values.update(stanza_metrics(read_info(settings)))
    except BackupError as exc:
        problems.append(str(exc))
    if settings.repository is not None:
        try:
            values.update(repository_metrics(settings.repository))
        except OSError as exc:
            problems.append(f"repository {settings.repository}: {exc.strerror}")
    values["workorder_pitr_collector_success"] = 0 if problems else 1
    if not problems:
        values["workorder_pitr_collector_last_success_timestamp_seconds"] = now or time.time()
    return values, problems


def run_metrics(settings: Settings, db: pg.Database | None, metrics_file: Path) -> list[str]:
    """Collect and write the textfile; the last complete collection's time survives failed ones."""
    previous = read_values(metrics_file, METRICS)
    values, problems = collect(settings, db)
    values.setdefault("workorder_pitr_collector_last_success_timestamp_seconds",
                      previous.get("workorder_pitr_collector_last_success_timestamp_seconds", 0))
    write_values(metrics_file, values, METRICS)
    return problems


def run_verify(settings: Settings, metrics_file: Path | None, timeout: float = 6 * 3600) -> tuple[bool, str]:
    """`pgbackrest verify`: every file in the repository against its checksum, the WAL chain per
    backup. pgBackRest (2.45) exits 0 even when it finds invalid files and reports them as
    `status: error` in its summary: success is exit status 0, no ERROR line, and every stanza's
    status `ok`."""
    started = time.time()
    proc = _run(settings, ["verify", "--output=text", "--verbose"], "pgbackrest verify", timeout)
    output = (proc.stdout + proc.stderr).strip()
    statuses = re.findall(r"^\s*status:\s*(\S+)", output, flags=re.MULTILINE)
    ok = proc.returncode == 0 and "ERROR:" not in output and bool(statuses) and set(statuses) == {"ok"}
    finished = time.time()
    if metrics_file is not None:
        previous = read_values(metrics_file, VERIFY_METRICS)
        write_values(metrics_file, {
            "workorder_pitr_verify_last_run_timestamp_seconds": finished,
            "workorder_pitr_verify_last_run_success": 1 if ok else 0,
            "workorder_pitr_verify_last_success_timestamp_seconds": (
                finished if ok else previous.get("workorder_pitr_verify_last_success_timestamp_seconds", 0)),
            "workorder_pitr_verify_last_duration_seconds": round(finished - started, 3),
        }, VERIFY_METRICS)
    return ok, output


# -- the subcommands (workorder-backup pitr-metrics / pitr-verify) ---------------------------------
def _settings() -> Settings:
    settings = Settings.from_env()
    if settings is None:
        raise ConfigError("no pgBackRest stanza: set WORKORDER_PGBACKREST_STANZA (services.workorder.backup.pointInTime)")
    return settings


def command_metrics(cfg) -> int:
    if not cfg.metrics_file:
        raise ConfigError("pitr-metrics needs --metrics-file")
    db = cfg.database() if cfg.database_url else None
    problems = run_metrics(_settings(), db, cfg.metrics_file)
    for problem in problems:
        print(f"workorder-backup: pitr-metrics: {problem}", file=sys.stderr, flush=True)
    return EXIT_FAILED if problems else EXIT_OK


def command_verify(cfg) -> int:
    ok, output = run_verify(_settings(), cfg.metrics_file)
    if output:
        print(output, flush=True)
    if not ok:
        raise VerificationError("pgbackrest verify found errors in the repository (see above)")
    return EXIT_OK


def command_list(as_json: bool) -> int:
    print_listing(read_info(_settings()), as_json)
    return EXIT_OK
