"""The subcommands: backup, verify, list, restore, prune."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from workorder.core.env import env, env_secret

from . import metrics as metrics_mod
from . import pg, pgbackrest, store
from .errors import EXIT_OK, EXIT_VERIFY, BackupError, ConfigError, RefusedError, VerificationError


def log(message: str) -> None:
    print(message, flush=True)


def warn(message: str) -> None:
    print(f"workorder-backup: {message}", file=sys.stderr, flush=True)


@dataclass
class Config:
    """Everything the tool needs: environment variables, overridden by command-line flags."""

    database_url: str | None
    directory: Path | None
    media_dir: Path | None
    metrics_file: Path | None
    pg_bindir: str | None = None

    @classmethod
    def from_env(cls, directory=None, media_dir=None, metrics_file=None, pg_bindir=None) -> Config:
        state_dir = env("WORKORDER_STATE_DIR")
        media = media_dir or env("MEDIA_ROOT") or (str(Path(state_dir) / "media") if state_dir else None)
        if not env("PGPASSWORD"):
            password = env_secret("DATABASE_PASSWORD")  # the same lookup as the application's settings
            if password:
                os.environ["PGPASSWORD"] = password  # libpq reads it; never on pg_dump's command line
        directory = directory or env("WORKORDER_BACKUP_DIR")
        metrics_file = metrics_file or env("WORKORDER_BACKUP_METRICS_FILE")
        database_url = env("DATABASE_URL")
        return cls(
            database_url=database_url,
            directory=Path(directory) if directory else None,
            media_dir=Path(media) if media else None,
            metrics_file=Path(metrics_file) if metrics_file else None,
            pg_bindir=pg_bindir,
        )

    def database(self) -> pg.Database:
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set (e.g. postgresql:///workorder?host=/run/postgresql)")
        if self.database_url.startswith(("sqlite", "file:")):
            raise ConfigError("DATABASE_URL must name a PostgreSQL database (postgres://... or postgresql://...)")
        return pg.Database.from_url(self.database_url)

    def backup_dir(self) -> Path:
        if not self.directory:
            raise ConfigError("no backup directory: set WORKORDER_BACKUP_DIR or pass --directory")
        return self.directory.absolute()

    def tool(self, name: str) -> str:
        return pg.find_pg_binary(name, self.pg_bindir)


# -- media archive -------------------------------------------------------------------------------
def write_media_tar(media_dir: Path, out: Path) -> tuple[int, int]:
    """Archive media_dir (paths relative to it, symlinks kept as links) into out; (files, bytes)."""
    if not media_dir.is_dir():
        raise BackupError(f"media directory {media_dir} does not exist or is not a directory "
                          "(set MEDIA_ROOT / --media-dir, or pass --no-media)")
    files = size = 0
    with open(out, "xb") as raw:
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for root, dirs, names in os.walk(media_dir):
                dirs.sort()
                for name in dirs + sorted(names):
                    full = os.path.join(root, name)
                    try:
                        tar.add(full, arcname=os.path.relpath(full, media_dir), recursive=False)
                    except FileNotFoundError:
                        continue  # deleted while we walked: not part of this backup
                    if name in names:
                        files += 1
                        try:
                            size += os.lstat(full).st_size
                        except OSError:
                            pass
        raw.flush()
        os.fsync(raw.fileno())
    return files, size


def check_tar(path: Path) -> int:
    try:
        with tarfile.open(path) as tar:
            return sum(1 for _ in tar)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise VerificationError(f"media archive {path.name} is unreadable: {exc}") from exc


# -- verification ----------------------------------------------------------------------------------
def verify_set(backup: store.BackupSet, pg_restore: str) -> None:
    """Checksums and sizes against the manifest, pg_restore --list on the dump, the tar readable."""
    files = backup.manifest.get("files", {})
    for required in filter(None, [backup.manifest.get("dump"), (backup.manifest.get("media") or {}).get("file")]):
        if required not in files:
            raise VerificationError(f"{backup.name}: manifest has no checksum for {required}")
    for filename, info in sorted(files.items()):
        path = backup.path / filename
        try:
            size = path.stat().st_size
            digest = store.sha256_file(path)
        except FileNotFoundError:
            raise VerificationError(f"{backup.name}: {filename} is missing") from None
        except OSError as exc:
            raise VerificationError(f"{backup.name}: cannot read {filename}: {store.io_reason(exc)}") from exc
        if digest != info.get("sha256"):
            raise VerificationError(f"{backup.name}: checksum mismatch for {filename} "
                                    f"(manifest sha256 {str(info.get('sha256'))[:16]}..., file {digest[:16]}...)")
        if size != info.get("size"):
            raise VerificationError(f"{backup.name}: size mismatch for {filename} (manifest {info.get('size')}, file {size})")
    try:
        pg.run_tool([pg_restore, "--list", str(backup.dump_path)], "pg_restore --list")
    except BackupError as exc:
        raise VerificationError(f"{backup.name}: {exc}") from exc
    if backup.media_path:
        try:
            check_tar(backup.media_path)
        except VerificationError as exc:
            raise VerificationError(f"{backup.name}: {exc}") from exc


def restore_test(db: pg.Database, pg_restore: str, dump: Path, expected: dict[str, int], started: float,
                 encoding: str | None = None, collate: str | None = None, ctype: str | None = None,
                 checksums: dict[str, str] | None = None) -> str:
    """Restore dump into a scratch database, compare exact row counts per table and, when the set has
    them (`checksums`, taken in the dump's snapshot), every table's content checksum; always drop it.
    Returns what was compared, for the log line."""
    name = pg.scratch_name(started)
    pg.create_database(db, name, encoding, collate, ctype)
    try:
        scratch = db.with_dbname(name)
        pg.run_tool([pg_restore, "--no-password", "--exit-on-error", "--no-owner", "--no-privileges",
                     f"--dbname={scratch.dsn}", str(dump)], "verify-restore: pg_restore")
        problems = pg.compare_counts(expected, pg.database_counts(scratch))
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise VerificationError(f"verify-restore: row counts differ: {'; '.join(problems[:5])}{more}")
        if checksums:
            problems = pg.compare_checksums(checksums, pg.database_checksums(scratch))
            if problems:
                more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
                raise VerificationError(f"verify-restore: table content differs: {'; '.join(problems[:5])}{more}")
            checked = f"row counts and content checksums of {len(checksums)} tables"
        else:
            checked = "row counts only (this set has no content checksums)"
    except BaseException:
        try:
            pg.drop_database(db, name)
        except BackupError:
            pass  # the next backup run drops it (its pid is gone); the first error is the one reported
        raise
    pg.drop_database(db, name)
    return checked


# -- backup ------------------------------------------------------------------------------------------
def run_backup(cfg: Config, verify_restore: bool, retention_days: int, keep_at_least: int,
               prune: bool = True, media: bool = True) -> int:
    started = time.time()
    previous = metrics_mod.read_metrics(cfg.metrics_file)
    try:
        backup, prior, prune_error = _backup(cfg, started, verify_restore, retention_days, keep_at_least, prune, media)
    except BaseException as exc:
        _write_failure_metrics(cfg, previous, started)
        if isinstance(exc, OSError):
            raise BackupError(f"backup failed: {store.io_reason(exc)}") from exc
        raise
    finished = time.time()
    values = {
        "workorder_backup_last_success_timestamp_seconds": round(finished, 3),
        "workorder_backup_last_run_timestamp_seconds": round(finished, 3),
        "workorder_backup_last_run_success": 0 if prune_error else 1,
        "workorder_backup_last_duration_seconds": round(finished - started, 3),
        "workorder_backup_last_size_bytes": backup.size_bytes,
        "workorder_backup_previous_size_bytes": prior.size_bytes if prior else 0,
        "workorder_backup_last_verified": 1 if backup.verified else 0,
    }
    _write_metrics(cfg, values)
    if prune_error:
        raise prune_error
    return EXIT_OK


def _write_metrics(cfg: Config, values: dict) -> None:
    if not cfg.metrics_file:
        return
    metrics_mod.remove_stale_temp(cfg.metrics_file)
    try:
        metrics_mod.write_metrics(cfg.metrics_file, values)
    except OSError as exc:
        raise BackupError(f"cannot write metrics file {cfg.metrics_file}: {store.io_reason(exc)}") from exc


def _write_failure_metrics(cfg: Config, previous: dict, started: float) -> None:
    """Keep what describes the newest successful backup (from the old file, else from the newest set)."""
    if not cfg.metrics_file:
        return
    keep = ("workorder_backup_last_success_timestamp_seconds", "workorder_backup_last_size_bytes",
            "workorder_backup_previous_size_bytes", "workorder_backup_last_verified")
    values = {name: previous[name] for name in keep if name in previous}
    if "workorder_backup_last_success_timestamp_seconds" not in values and cfg.directory:
        try:
            complete, _ = store.scan(cfg.backup_dir())
        except BackupError:
            complete = []
        if complete:
            newest = complete[-1]
            values["workorder_backup_last_success_timestamp_seconds"] = newest.manifest.get(
                "finished_at_unix", newest.created.timestamp())
            values["workorder_backup_last_size_bytes"] = newest.size_bytes
            values["workorder_backup_previous_size_bytes"] = complete[-2].size_bytes if len(complete) > 1 else 0
            values["workorder_backup_last_verified"] = 1 if newest.verified else 0
    now = time.time()
    values.update({
        "workorder_backup_last_run_timestamp_seconds": round(now, 3),
        "workorder_backup_last_run_success": 0,
        "workorder_backup_last_duration_seconds": round(now - started, 3),
    })
    try:
        _write_metrics(cfg, values)
    except BackupError as exc:
        warn(str(exc))


def _backup(cfg, started, verify_restore, retention_days, keep_at_least, prune, media):
    db = cfg.database()
    directory = cfg.backup_dir()
    pg_dump, pg_restore = cfg.tool("pg_dump"), cfg.tool("pg_restore")
    if media and not cfg.media_dir:
        raise ConfigError("no media directory: set MEDIA_ROOT or pass --media-dir (or --no-media)")
    store.ensure_directory(directory)
    with store.directory_lock(directory, exclusive=True):
        store.remove_leftovers(directory, started, log)
        if verify_restore:
            pg.drop_stale_scratch_databases(db, log)
        existing, _ = store.scan(directory)
        prior = existing[-1] if existing else None
        name = store.new_set_name(directory)
        try:
            writer = store.SetWriter(directory, name)
        except OSError as exc:
            raise BackupError(f"cannot write to backup directory {directory}: {store.io_reason(exc)}") from exc
        try:
            backup = _build_set(cfg, db, writer, name, started, pg_dump, pg_restore, verify_restore, media)
        except BaseException:
            writer.abort()
            raise
        log(f"created {backup.name}: {store.human_size(backup.size_bytes)}, {len(backup.manifest['row_counts'])} tables, "
            f"{sum(backup.manifest['row_counts'].values())} rows, "
            f"{'restore-verified' if backup.verified else 'checksummed (not restore-verified)'}")
        prune_error = None
        if prune:
            try:
                _prune_locked(directory, retention_days, keep_at_least, dry_run=False)
            except BackupError as exc:
                prune_error = exc
        return backup, prior, prune_error


def _build_set(cfg, db, writer, name, started, pg_dump, pg_restore, verify_restore, media) -> store.BackupSet:
    dump_name, media_name = f"{name}.dump", f"{name}.media.tar"
    dump_path = writer.path(dump_name)
    with pg.exported_snapshot(db) as snap:
        pg.run_tool([pg_dump, "--format=custom", f"--file={dump_path}", f"--snapshot={snap.snapshot_id}",
                     "--no-password", "--lock-wait-timeout=300s", f"--dbname={db.dsn}"], "pg_dump")
    if not dump_path.is_file():
        raise BackupError("pg_dump failed: it exited 0 but wrote no dump file")
    store.fsync_path(dump_path)
    media_info = None
    if media:
        try:
            files, size = write_media_tar(cfg.media_dir, writer.path(media_name))
        except OSError as exc:
            raise BackupError(f"media archive failed: {store.io_reason(exc)}") from exc
        media_info = {"file": media_name, "directory": str(cfg.media_dir), "files": files, "bytes": size}
    file_infos = {}
    for filename in [dump_name] + ([media_name] if media else []):
        path = writer.path(filename)
        file_infos[filename] = {"sha256": store.sha256_file(path), "size": path.stat().st_size}
    try:
        pg.run_tool([pg_restore, "--list", str(dump_path)], "pg_restore --list")
    except BackupError as exc:
        raise VerificationError(f"the new dump is unreadable: {exc}") from exc
    if media:
        check_tar(writer.path(media_name))
    if verify_restore:
        restore_test(db, pg_restore, dump_path, snap.row_counts, started, snap.encoding, snap.lc_collate, snap.lc_ctype,
                     checksums=snap.checksums)
    finished = time.time()
    manifest = {
        "format": store.MANIFEST_FORMAT,
        "name": name,
        "created_at": store.parse_set_time(name).isoformat().replace("+00:00", "Z"),
        "finished_at_unix": round(finished, 3),
        "duration_seconds": round(finished - started, 3),
        "database": db.name,
        "server_version": snap.server_version,
        "encoding": snap.encoding,
        "lc_collate": snap.lc_collate,
        "lc_ctype": snap.lc_ctype,
        "pg_dump_version": pg.tool_version(pg_dump),
        "dump": dump_name,
        "media": media_info,
        "files": file_infos,
        "row_counts": snap.row_counts,
        # md5(string_agg(md5(t::text), '' ORDER BY <primary key>)) per table, in the dump's snapshot
        "table_checksums": snap.checksums,
        "checks": {"sha256": True, "pg_restore_list": True, "media_tar": media, "restore": verify_restore,
                   "content": verify_restore},
        "verified": verify_restore,
    }
    return writer.publish(manifest)


# -- prune -----------------------------------------------------------------------------------------
def run_prune(cfg: Config, retention_days: int, keep_at_least: int, dry_run: bool) -> int:
    directory = cfg.backup_dir()
    if not directory.is_dir():
        raise BackupError(f"backup directory {directory} does not exist")
    with store.directory_lock(directory, exclusive=not dry_run):
        _prune_locked(directory, retention_days, keep_at_least, dry_run)
    return EXIT_OK


def _prune_locked(directory: Path, retention_days: int, keep_at_least: int, dry_run: bool) -> None:
    complete, _ = store.scan(directory)
    now = datetime.now(UTC)
    _, remove = store.plan_retention(complete, now, retention_days, keep_at_least)
    errors = []
    for backup in sorted(remove, key=lambda s: s.created):
        age_days = (now - backup.created).total_seconds() / 86400
        if dry_run:
            log(f"would remove {backup.name} ({age_days:.1f} days old)")
            continue
        try:
            store.delete_set(backup)
        except OSError as exc:
            errors.append(f"{backup.name}: {store.io_reason(exc)}")
            continue
        log(f"removed {backup.name} ({age_days:.1f} days old)")
    if errors:
        raise BackupError(f"prune failed to remove {'; '.join(errors)}")


# -- list ------------------------------------------------------------------------------------------
def run_list(cfg: Config, as_json: bool, pitr_only: bool = False) -> int:
    if pitr_only:  # point-in-time recovery: pgBackRest's backups and the newest archived WAL
        return pgbackrest.command_list(as_json)
    directory = cfg.backup_dir()
    complete, broken = store.scan(directory)
    if as_json:
        rows = [{
            "name": s.name, "path": str(s.path), "created_at": s.manifest.get("created_at"),
            "size_bytes": s.size_bytes, "verified": s.verified, "database": s.manifest.get("database"),
            "tables": len(s.manifest.get("row_counts", {})), "rows": sum(s.manifest.get("row_counts", {}).values()),
            "media_files": (s.manifest.get("media") or {}).get("files"),
        } for s in reversed(complete)]
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'NAME':<28} {'CREATED (UTC)':<20} {'SIZE':>10}  {'VERIFIED':<8} {'TABLES':>6} {'ROWS':>10}  MEDIA FILES")
        for s in reversed(complete):
            counts = s.manifest.get("row_counts", {})
            media = s.manifest.get("media")
            print(f"{s.name:<28} {s.created.strftime('%Y-%m-%d %H:%M:%S'):<20} {store.human_size(s.size_bytes):>10}  "
                  f"{'yes' if s.verified else 'no':<8} {len(counts):>6} {sum(counts.values()):>10}  "
                  f"{media['files'] if media else '-'}")
    for _path, reason in broken:
        warn(f"ignoring {reason}")
    pitr = pgbackrest.Settings.from_env()
    if pitr is not None and not as_json:
        print()
        try:
            pgbackrest.print_listing(pgbackrest.read_info(pitr), as_json=False)
        except BackupError as exc:
            warn(f"point-in-time recovery: {exc}")
    return EXIT_OK


# -- verify ----------------------------------------------------------------------------------------
def run_verify(cfg: Config, specs: list[str], restore: bool) -> int:
    directory = cfg.backup_dir()
    pg_restore = cfg.tool("pg_restore")
    targets: list[store.BackupSet] = []
    failures = 0
    if specs:
        for spec in specs:
            try:
                targets.append(store.resolve(directory, spec))
            except BackupError as exc:
                warn(f"FAILED {spec}: {exc}")
                failures += 1
    else:
        complete, broken = store.scan(directory)
        targets = complete
        for path, reason in broken:
            warn(f"FAILED {path.name}: {reason}")
            failures += 1
        if not complete and not broken:
            raise BackupError(f"no backups in {directory}")
    db = cfg.database() if restore else None
    lock_dir = directory if directory.is_dir() else None
    with (store.directory_lock(lock_dir, exclusive=False) if lock_dir else _null()):
        for backup in targets:
            try:
                verify_set(backup, pg_restore)
                checked = None
                if restore:
                    m = backup.manifest
                    checked = restore_test(db, pg_restore, backup.dump_path, m.get("row_counts", {}), time.time(),
                                           m.get("encoding"), m.get("lc_collate"), m.get("lc_ctype"),
                                           checksums=m.get("table_checksums"))
            except BackupError as exc:
                warn(f"FAILED {backup.name}: {str(exc).removeprefix(backup.name + ': ')}")
                failures += 1
                continue
            log(f"OK {backup.name}" + (f" (checksums, pg_restore --list, restore test: {checked})" if restore
                                       else " (checksums, pg_restore --list)"))
    return EXIT_VERIFY if failures else EXIT_OK


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# -- restore ---------------------------------------------------------------------------------------
def run_restore(cfg: Config, spec: str, target_db: str | None, force: bool, restore_database: bool,
                restore_media: bool, no_owner: bool, jobs: int = 1) -> int:
    directory = cfg.directory.absolute() if cfg.directory else Path.cwd()
    backup = store.resolve(directory, spec)
    pg_restore = cfg.tool("pg_restore")
    lock_dir = backup.path.parent
    with store.directory_lock(lock_dir, exclusive=False):
        verify_set(backup, pg_restore)
        log(f"verified {backup.name} (checksums, pg_restore --list)")
        media_target = None
        if restore_media and backup.media_path:
            if not cfg.media_dir:
                raise ConfigError("no media directory to restore into: set MEDIA_ROOT or pass --media-dir (or --no-media)")
            media_target = cfg.media_dir.absolute()
        elif restore_media:
            log(f"{backup.name} has no media archive: media left alone")
        # 1. refuse before changing anything
        target = admin = None
        exists = nonempty = False
        if restore_database:
            db = cfg.database()
            target = db.target(target_db) if target_db else db
            admin = pg.maintenance_database(target)
            exists = pg.database_exists(admin, target.name)
            if exists:
                relations = pg.user_relations(target)
                nonempty = bool(relations)
                if nonempty and not force:
                    raise RefusedError(f"database {target.name} is not empty (it has {', '.join(relations)}); "
                                       "pass --force to replace its contents")
        if media_target and _media_entries(media_target) and not force:
            raise RefusedError(f"media directory {media_target} is not empty; pass --force to replace its contents")
        # 2. database
        if restore_database:
            m = backup.manifest
            if not exists:
                pg.create_database(admin, target.name, m.get("encoding"), m.get("lc_collate"), m.get("lc_ctype"))
                log(f"created database {target.name}")
            args = [pg_restore, "--no-password", "--exit-on-error", f"--dbname={target.dsn}"]
            # one transaction: a failed restore leaves the old contents; --jobs trades that for speed
            args += [f"--jobs={jobs}"] if jobs > 1 else ["--single-transaction"]
            if nonempty:
                args += ["--clean", "--if-exists"]
            if no_owner:
                args += ["--no-owner", "--no-privileges"]
            pg.run_tool(args + [str(backup.dump_path)], "pg_restore")
            expected = m.get("row_counts", {})
            actual = pg.database_counts(target)
            problems = pg.compare_counts(expected, {table: actual.get(table) for table in expected})
            if problems:
                raise VerificationError(f"restored database {target.name} differs from {backup.name}: "
                                        f"{'; '.join(problems[:5])}")
            log(f"restored database {target.name}: {len(expected)} tables, {sum(expected.values())} rows, "
                "row counts match the backup")
        # 3. media
        if media_target:
            count = _restore_media(backup.media_path, media_target, force)
            log(f"restored media into {media_target}: {count} files")
    return EXIT_OK


def _media_entries(target: Path) -> list[str]:
    try:
        return [name for name in os.listdir(target) if not name.startswith(".workorder-restore-")]
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise BackupError(f"cannot read media directory {target}: {store.io_reason(exc)}") from exc


def _restore_media(archive: Path, target: Path, force: bool) -> int:
    """Extract into a staging directory inside target (same filesystem), then swap the contents in."""
    try:
        target.mkdir(parents=True, exist_ok=True)
        staging = target / f".workorder-restore-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        os.mkdir(staging, 0o700)
    except OSError as exc:
        raise BackupError(f"cannot write media directory {target}: {store.io_reason(exc)}") from exc
    try:
        with tarfile.open(archive) as tar:
            extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(staging, **extra)
        if force:
            for name in _media_entries(target):
                path = target / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        entries = sorted(os.listdir(staging))
        file_count = sum(len(names) for _, _, names in os.walk(staging))
        for name in entries:
            os.rename(staging / name, target / name)
        if os.geteuid() == 0:
            owner = target.stat()
            for root, dirs, files in os.walk(target):
                for name in dirs + files:
                    os.lchown(os.path.join(root, name), owner.st_uid, owner.st_gid)
        os.sync()
        return file_count
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"media restore into {target} failed: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
