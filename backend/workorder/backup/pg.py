"""The PostgreSQL side: libpq binaries, connections, exact row counts and content checksums under an
exported snapshot, scratch databases, and running pg_dump / pg_restore with one-line error reasons."""

from __future__ import annotations

import ctypes
import glob
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg2
import psycopg2.errors
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

from workorder.core.env import env_int

from .errors import BackupError, ConfigError, one_line

SCRATCH_PREFIX = "workorder_backup_verify_"
SYSTEM_SCHEMAS_SQL = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'"
NOT_EXTENSION_MEMBER_SQL = (
    "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid "
    "AND d.deptype = 'e')"
)


# -- binaries ----------------------------------------------------------------------------------
def _version_key(path: str) -> tuple:
    match = re.search(r"/postgresql/([\d.]+)/", path)
    return tuple(int(p) for p in match.group(1).split(".")) if match else (0,)


def find_pg_binary(name: str, bindir: str | None = None) -> str:
    """`name` from --pg-bindir, else PATH, else `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin."""
    if bindir:
        candidate = os.path.join(bindir, name)
        if os.access(candidate, os.X_OK):
            return candidate
        raise ConfigError(f"{name} not found in {bindir}")
    found = shutil.which(name)
    if found:
        return found
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=30).stdout.strip()
            candidate = os.path.join(out, name)
            if out and os.access(candidate, os.X_OK):
                return candidate
        except (OSError, subprocess.SubprocessError):
            pass
    for candidate in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key, reverse=True):
        if os.access(candidate, os.X_OK):
            return candidate
    raise ConfigError(f"{name} not found on PATH, via pg_config --bindir or in /usr/lib/postgresql/*/bin")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Children (pg_dump, pg_restore) get SIGKILL when this process dies, even by SIGKILL."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001, S110 - not Linux or no prctl: the child simply lives on
        pass


def run_tool(args: list[str], what: str) -> subprocess.CompletedProcess:
    """Run a pg tool; a non-zero exit raises BackupError("<what> failed: <its error, one line>")."""
    try:
        proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              preexec_fn=_die_with_parent)
    except OSError as exc:
        raise BackupError(f"{what} failed: cannot run {args[0]}: {exc.strerror}") from exc
    if proc.returncode != 0:
        reason = one_line(proc.stderr)
        if proc.returncode < 0:
            reason = f"killed by signal {-proc.returncode}" + (f": {reason}" if reason else "")
        raise BackupError(f"{what} failed: {reason or f'exit status {proc.returncode}'}")
    return proc


# -- connection strings ------------------------------------------------------------------------
@dataclass(frozen=True)
class Database:
    """A libpq connection string (never containing the password: that travels in PGPASSWORD)."""

    dsn: str

    @classmethod
    def from_url(cls, url: str) -> Database:
        try:
            params = parse_dsn(url)
        except psycopg2.ProgrammingError as exc:
            raise ConfigError(f"invalid DATABASE_URL: {one_line(exc)}") from exc
        password = params.pop("password", None)
        if password:
            # keep it off pg_dump's command line (visible in ps); libpq reads it from the environment
            os.environ["PGPASSWORD"] = password
        params.setdefault("application_name", "workorder-backup")
        return cls(make_dsn(**params))

    @property
    def params(self) -> dict[str, str]:
        return parse_dsn(self.dsn)

    @property
    def name(self) -> str:
        params = self.params
        return params.get("dbname") or params.get("user") or os.environ.get("PGDATABASE") or os.environ.get("PGUSER") or "?"

    def with_dbname(self, dbname: str) -> Database:
        return Database(make_dsn(self.dsn, dbname=dbname))

    def target(self, spec: str) -> Database:
        """--target-db: a URL / conninfo string, or just a database name on the same server."""
        if "://" in spec or "=" in spec:
            return Database.from_url(spec)
        return self.with_dbname(spec)

    def connect(self, autocommit: bool = False):
        try:
            conn = psycopg2.connect(self.dsn, connect_timeout=env_int("DATABASE_CONNECT_TIMEOUT", 10))
        except psycopg2.Error as exc:
            raise BackupError(f"cannot connect to database {self.name}: {one_line(exc)}") from exc
        conn.autocommit = autocommit
        return conn


def _tables(cur) -> list[tuple[str, str]]:
    cur.execute(
        f"""SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'r' AND {SYSTEM_SCHEMAS_SQL} AND {NOT_EXTENSION_MEMBER_SQL}
            ORDER BY 1, 2"""
    )
    return cur.fetchall()


def count_rows(cur) -> dict[str, int]:
    """Exact row count of every user table ("schema.table" -> rows) as seen by cur's transaction."""
    counts = {}
    for schema, table in _tables(cur):
        cur.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
        counts[f"{schema}.{table}"] = cur.fetchone()[0]
    return counts


def _read(db: Database, what: str, read):
    """read(cursor) on a fresh connection to db; a database error becomes a BackupError naming `what`."""
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            return read(cur)
    except psycopg2.Error as exc:
        raise BackupError(f"{what} {db.name} failed: {one_line(exc)}") from exc
    finally:
        conn.close()


def database_counts(db: Database) -> dict[str, int]:
    return _read(db, "counting rows in", count_rows)


# Every text form a checksum reads is pinned, so the source and the scratch copy (another session,
# perhaps another default locale) render the same row the same way.
CHECKSUM_SETTINGS = {"TimeZone": "UTC", "DateStyle": "ISO, YMD", "IntervalStyle": "postgres",
                     "extra_float_digits": "1", "bytea_output": "hex"}


def _order_keys(cur) -> dict[str, list[tuple[str, bool]]]:
    """"schema.table" -> its primary key columns in key order, each with whether it is collatable."""
    cur.execute(
        f"""SELECT n.nspname || '.' || c.relname, a.attname, a.attcollation <> 0
            FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
            WHERE i.indisprimary AND c.relkind = 'r' AND {SYSTEM_SCHEMAS_SQL}
            ORDER BY 1, array_position(i.indkey::int2[], a.attnum)"""
    )
    keys: dict[str, list[tuple[str, bool]]] = {}
    for table, column, collatable in cur.fetchall():
        keys.setdefault(table, []).append((column, collatable))
    return keys


def table_checksums(cur) -> dict[str, str]:
    """Content checksum of every user table ("schema.table" -> md5 hex) as seen by cur's transaction:
    md5(string_agg(md5(t::text), '' ORDER BY <primary key>)), text keys in the "C" collation (a table
    without a primary key: ordered by the row's text). Equal tables give equal checksums in any database."""
    for name, value in CHECKSUM_SETTINGS.items():
        cur.execute("SELECT set_config(%s, %s, true)", [name, value])  # this transaction only
    keys = _order_keys(cur)
    checksums = {}
    for schema, table in _tables(cur):
        name = f"{schema}.{table}"
        order = [sql.SQL("t.{}").format(sql.Identifier(column)) + (sql.SQL(' COLLATE "C"') if collatable else sql.SQL(""))
                 for column, collatable in keys.get(name, [])] or [sql.SQL('t::text COLLATE "C"')]
        cur.execute(sql.SQL("SELECT md5(coalesce(string_agg(md5(t::text), '' ORDER BY {}), '')) FROM {}.{} t").format(
            sql.SQL(", ").join(order), sql.Identifier(schema), sql.Identifier(table)))
        checksums[name] = cur.fetchone()[0]
    return checksums


def database_checksums(db: Database) -> dict[str, str]:
    return _read(db, "checksumming the tables of", table_checksums)


def compare_checksums(expected: dict[str, str], actual: dict[str, str]) -> list[str]:
    """The tables whose content differs, as readable strings (empty when every table is equal)."""
    problems = []
    for table in sorted(set(expected) | set(actual)):
        want, got = expected.get(table), actual.get(table)
        if want == got:
            continue
        if want is None or got is None:
            problems.append(f"{table}: {'not in the backup' if want is None else 'missing from the restored copy'}")
        else:
            problems.append(f"{table}: content differs (md5 {want[:12]}... in the backup, {got[:12]}... restored)")
    return problems


def compare_counts(expected: dict[str, int], actual: dict[str, int]) -> list[str]:
    """Differences as readable strings (empty when equal)."""
    problems = []
    for table in sorted(set(expected) | set(actual)):
        want, got = expected.get(table), actual.get(table)
        if want != got:
            problems.append(f"{table}: expected {'missing' if want is None else want}, "
                            f"got {'missing' if got is None else got}")
    return problems


@dataclass
class Snapshot:
    snapshot_id: str
    server_version: str
    encoding: str
    lc_collate: str
    lc_ctype: str
    row_counts: dict[str, int]
    checksums: dict[str, str] = field(default_factory=dict)  # table_checksums() in the same snapshot


@contextmanager
def exported_snapshot(db: Database) -> Iterator[Snapshot]:
    """A REPEATABLE READ transaction that exports its snapshot, counts and checksums every table in it.

    pg_dump --snapshot=<id> then dumps exactly the data that was counted and checksummed, whatever
    writes happen meanwhile. The transaction stays open until the caller's block (the dump) has finished.
    """
    conn = db.connect()
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_export_snapshot(), current_setting('server_version')")
            snapshot_id, version = cur.fetchone()
            cur.execute("SET LOCAL lock_timeout = '300s'")  # a table locked by a long migration: fail, don't hang
            cur.execute("""SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database
                           WHERE datname = current_database()""")
            encoding, collate, ctype = cur.fetchone()
            counts = count_rows(cur)
            checksums = table_checksums(cur)
        yield Snapshot(snapshot_id, version, encoding, collate, ctype, counts, checksums)
    except psycopg2.Error as exc:
        raise BackupError(f"reading database {db.name} failed: {one_line(exc)}") from exc
    finally:
        try:
            conn.rollback()
        finally:
            conn.close()


# -- databases -----------------------------------------------------------------------------------
def create_database(admin: Database, name: str, encoding: str | None = None, collate: str | None = None,
                    ctype: str | None = None) -> None:
    conn = admin.connect(autocommit=True)
    try:
        with conn.cursor() as cur:
            base = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
            options = sql.SQL("")
            if encoding:
                options += sql.SQL(" ENCODING {}").format(sql.Literal(encoding))
            if collate and ctype:
                try:
                    cur.execute(base + options + sql.SQL(" LC_COLLATE {} LC_CTYPE {}").format(
                        sql.Literal(collate), sql.Literal(ctype)))
                    return
                except psycopg2.Error:
                    pass  # locale not available here: fall back to the server's default locale
            cur.execute(base + options)
    except psycopg2.Error as exc:
        raise BackupError(f"cannot create database {name}: {one_line(exc)}") from exc
    finally:
        conn.close()


def drop_database(admin: Database, name: str) -> None:
    conn = admin.connect(autocommit=True)
    try:
        with conn.cursor() as cur:
            try:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            except psycopg2.errors.SyntaxError:  # PostgreSQL < 13
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    except psycopg2.Error as exc:
        raise BackupError(f"cannot drop database {name}: {one_line(exc)}") from exc
    finally:
        conn.close()


def database_exists(admin: Database, name: str) -> bool:
    conn = admin.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            return cur.fetchone() is not None
    finally:
        conn.close()


def maintenance_database(db: Database) -> Database:
    """A database on the same server to run CREATE/DROP DATABASE from: postgres, else template1."""
    for candidate in ("postgres", "template1"):
        admin = db.with_dbname(candidate)
        try:
            admin.connect().close()
            return admin
        except BackupError:
            continue
    return db.with_dbname("postgres")  # connecting will raise the real reason


def user_relations(db: Database, limit: int = 5) -> list[str]:
    """Tables, views and sequences outside the system schemas: a database with any is not empty."""
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"""SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {SYSTEM_SCHEMAS_SQL}
                    AND {NOT_EXTENSION_MEMBER_SQL} ORDER BY 1 LIMIT %s""",
                [limit],
            )
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


def scratch_name(started: float) -> str:
    return f"{SCRATCH_PREFIX}{os.getpid()}_{int(started)}"


def drop_stale_scratch_databases(db: Database, log) -> None:
    """Scratch databases left by a killed --verify-restore run (its pid is gone) are dropped."""
    try:
        conn = db.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [SCRATCH_PREFIX.replace("_", "\\_") + "%"])
                names = [row[0] for row in cur.fetchall()]
        finally:
            conn.close()
    except (BackupError, psycopg2.Error):
        return  # the real connection error is reported by the backup itself
    for name in names:
        match = re.match(re.escape(SCRATCH_PREFIX) + r"(\d+)_\d+$", name)
        if not match or int(match.group(1)) == os.getpid() or _pid_alive(int(match.group(1))):
            continue
        drop_database(db, name)
        log(f"dropped leftover scratch database {name}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tool_version(binary: str) -> str:
    try:
        return subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
