"""workorder-backup: verified, checksummed PostgreSQL + media backups with retention and restore.

    workorder-backup backup  [--verify-restore] [--retention-days 30] [--keep-at-least 7] [--no-prune] [--no-media]
    workorder-backup verify  [--restore] [BACKUP ...]
    workorder-backup list    [--json] [--pitr]
    workorder-backup restore BACKUP [--target-db URL|NAME] [--force] [--no-media | --no-database] [--no-owner] [--jobs N]
    workorder-backup prune   [--retention-days 30] [--keep-at-least 7] [--dry-run]
    workorder-backup pitr-metrics --metrics-file F    (point-in-time recovery: pgBackRest, pg_stat_archiver)
    workorder-backup pitr-verify  [--metrics-file F]  (pgbackrest verify)

Common flags (any subcommand): --directory (WORKORDER_BACKUP_DIR), --media-dir (MEDIA_ROOT),
--metrics-file (WORKORDER_BACKUP_METRICS_FILE), --pg-bindir. The database is DATABASE_URL.
Exit codes: 0 ok, 1 a step failed, 2 usage/configuration, 3 verification failed, 4 restore refused
(target not empty, use --force), 5 another run holds the lock. Errors: one line on stderr.
"""

from __future__ import annotations

import argparse
import signal
import sys

import psycopg2

from workorder.core.env import ConfigurationError, exit_with_configuration_error

from . import operations, pgbackrest
from .errors import EXIT_FAILED, EXIT_USAGE, BackupError, Interrupted, one_line
from .store import io_reason


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--directory", help="backup directory (default: $WORKORDER_BACKUP_DIR)")
    common.add_argument("--media-dir", help="media directory (default: $MEDIA_ROOT, else $WORKORDER_STATE_DIR/media)")
    common.add_argument("--metrics-file", help="Prometheus textfile to write (default: $WORKORDER_BACKUP_METRICS_FILE)")
    common.add_argument("--pg-bindir", help="directory of pg_dump/pg_restore (default: PATH, pg_config --bindir, "
                                            "newest /usr/lib/postgresql/*/bin)")
    retention = argparse.ArgumentParser(add_help=False)
    retention.add_argument("--retention-days", type=_positive_int, default=30,
                           help="remove backups older than this many days (default 30)")
    retention.add_argument("--keep-at-least", type=_positive_int, default=7,
                           help="always keep the newest N verified backups, whatever their age (default 7)")

    parser = argparse.ArgumentParser(
        prog="workorder-backup", description="Verified PostgreSQL + media backups for workorder (see docs/backup.md).",
        epilog="Exit codes: 0 ok, 1 failed, 2 usage, 3 verification failed, 4 restore refused, 5 locked.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{backup,verify,list,restore,prune,pitr-metrics,pitr-verify}")

    p = sub.add_parser("backup", parents=[common, retention], help="take a backup set, verify it, prune old ones")
    p.add_argument("--verify-restore", action="store_true",
                   help="restore into a scratch database and compare exact row counts per table")
    p.add_argument("--no-prune", action="store_true", help="do not apply retention after the backup")
    p.add_argument("--no-media", action="store_true", help="database only, no media archive")
    p.set_defaults(func=lambda a, cfg: operations.run_backup(
        cfg, a.verify_restore, a.retention_days, a.keep_at_least, prune=not a.no_prune, media=not a.no_media))

    p = sub.add_parser("verify", parents=[common], help="recompute checksums and run pg_restore --list")
    p.add_argument("backups", nargs="*", metavar="BACKUP", help="set names or paths, or 'latest' (default: all)")
    p.add_argument("--restore", action="store_true",
                   help="also restore into a scratch database and compare row counts with the manifest")
    p.set_defaults(func=lambda a, cfg: operations.run_verify(cfg, a.backups, a.restore))

    p = sub.add_parser("list", parents=[common], help="list complete backup sets, newest first")
    p.add_argument("--json", action="store_true")
    p.add_argument("--pitr", action="store_true",
                   help="only pgBackRest's backups and the newest archived WAL ($WORKORDER_PGBACKREST_STANZA)")
    p.set_defaults(func=lambda a, cfg: operations.run_list(cfg, a.json, pitr_only=a.pitr))

    p = sub.add_parser("restore", parents=[common], help="restore a backup set (database and media)")
    p.add_argument("backup", metavar="BACKUP", help="set name, path to the set (or a file in it), or 'latest'")
    p.add_argument("--target-db", help="database URL or name on the same server (default: DATABASE_URL's); "
                                       "created when missing")
    p.add_argument("--force", action="store_true",
                   help="replace a non-empty database (pg_restore --clean --if-exists) and media directory")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--no-media", action="store_true", help="restore the database only")
    which.add_argument("--no-database", action="store_true", help="restore the media only")
    p.add_argument("--no-owner", action="store_true",
                   help="do not restore ownership and grants (pg_restore --no-owner --no-privileges)")
    p.add_argument("--jobs", type=_positive_int, default=1,
                   help="parallel pg_restore jobs (default 1 = one transaction: all or nothing)")
    p.set_defaults(func=lambda a, cfg: operations.run_restore(
        cfg, a.backup, a.target_db, a.force, not a.no_database, not a.no_media, a.no_owner, a.jobs))

    p = sub.add_parser("prune", parents=[common, retention], help="apply retention without taking a backup")
    p.add_argument("--dry-run", action="store_true", help="print what would be removed")
    p.set_defaults(func=lambda a, cfg: operations.run_prune(cfg, a.retention_days, a.keep_at_least, a.dry_run))

    p = sub.add_parser("pitr-metrics", parents=[common],
                       help="write the point-in-time recovery metrics (pg_stat_archiver, pgbackrest info)")
    p.set_defaults(func=lambda a, cfg: pgbackrest.command_metrics(cfg))
    p = sub.add_parser("pitr-verify", parents=[common], help="pgbackrest verify, its result as metrics")
    p.set_defaults(func=lambda a, cfg: pgbackrest.command_verify(cfg))
    return parser


def _interrupt(signum, frame):
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        cfg = operations.Config.from_env(args.directory, args.media_dir, args.metrics_file, args.pg_bindir)
        return args.func(args, cfg)
    except ConfigurationError as exc:  # the same one line and exit status 2 as every other entry point
        exit_with_configuration_error(exc)
    except BackupError as exc:
        print(f"workorder-backup: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except OSError as exc:
        print(f"workorder-backup: {io_reason(exc)}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except psycopg2.Error as exc:
        print(f"workorder-backup: database error: {one_line(exc)}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except ValueError as exc:
        print(f"workorder-backup: {one_line(exc)}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - never a traceback: one line, non-zero
        print(f"workorder-backup: {type(exc).__name__}: {one_line(exc)}", file=sys.stderr, flush=True)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
