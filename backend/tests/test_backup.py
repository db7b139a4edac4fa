"""workorder-backup against a real PostgreSQL cluster (started here), run as a subprocess like the timer does.

No Django here: the tool must work from DATABASE_URL, MEDIA_ROOT, WORKORDER_BACKUP_DIR and
WORKORDER_BACKUP_METRICS_FILE alone, so the environment of every run is stripped of DJANGO_* variables.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest

from harness.services import PostgresServer

SET_RE = re.compile(r"^workorder-\d{8}T\d{6}Z$")
_db_counter = itertools.count(1)

POPULATE = r"""
CREATE TABLE customer (
    id bigserial PRIMARY KEY, name text NOT NULL, note text, created timestamptz NOT NULL DEFAULT now(),
    balance numeric(12, 2), photo bytea, tags jsonb);
INSERT INTO customer (name, note, balance, photo, tags)
SELECT 'Kunde ' || g || ' Ünïcødé ✓', CASE WHEN g % 3 = 0 THEN NULL ELSE E'line1\nline2\ttab ''quote'' ' || g END,
       g * 1.25, decode(md5(g::text), 'hex'), jsonb_build_object('n', g, 'even', g % 2 = 0)
FROM generate_series(1, 300) g;
CREATE TABLE work_order (
    id serial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customer (id), quantity int CHECK (quantity > 0),
    state text NOT NULL, due date);
INSERT INTO work_order (customer_id, quantity, state, due)
SELECT 1 + g % 300, 1 + g % 17, (ARRAY['draft', 'approved', 'in_progress', 'done'])[1 + g % 4], date '2026-01-01' + g
FROM generate_series(1, 1000) g;
CREATE SCHEMA reporting;
CREATE TABLE reporting.daily_total (day date PRIMARY KEY, total int NOT NULL);
INSERT INTO reporting.daily_total SELECT date '2026-01-01' + g, g * 10 FROM generate_series(0, 49) g;
CREATE TABLE empty_table (id int);
CREATE VIEW open_orders AS SELECT * FROM work_order WHERE state <> 'done';
SELECT setval('customer_id_seq', 5000);
"""


def skip_outside_ci(reason: str):
    """Skip where the machine cannot do this (a laptop, a container without privileges); in CI (the
    variable CI set) the environment must allow it, so the test fails instead of vanishing silently."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}, and CI is set: the CI environment must provide it")
    pytest.skip(reason)


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg_server(postgres_server):
    """The suite's throwaway cluster (conftest.py), or our own when $DATABASE_URL names another server:
    these tests create and drop databases and need the cluster's port and socket."""
    if postgres_server is not None:
        yield postgres_server
        return
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def source_db(pg_server):
    name = f"src_{next(_db_counter)}"
    pg_server.create_database(name)
    pg_server.psql(POPULATE, name)
    return name


@pytest.fixture
def media_dir(tmp_path):
    media = tmp_path / "media"
    (media / "attachments" / "2026").mkdir(parents=True)
    (media / "attachments" / "2026" / "drawing.pdf").write_bytes(os.urandom(20000))
    (media / "avatar ü.png").write_bytes(b"\x89PNG fake")
    (media / "empty-dir").mkdir()
    return media


@pytest.fixture
def tool(pg_server, source_db, media_dir, tmp_path):
    return Tool(pg_server, source_db, media_dir, tmp_path)


class Tool:
    """Runs `python -m workorder.backup` with only the documented environment variables."""

    def __init__(self, server: PostgresServer, dbname: str, media: Path, tmp: Path):
        self.server = server
        self.dbname = dbname
        self.backup_dir = tmp / "backups"
        self.metrics_file = tmp / "textfile" / "workorder_backup.prom"
        self.env = {key: value for key, value in os.environ.items()
                    if not key.startswith(("DJANGO_", "DATABASE_", "PG", "WORKORDER_", "MEDIA_ROOT"))}
        self.env.update({
            "DATABASE_URL": server.url(dbname),
            "MEDIA_ROOT": str(media),
            "WORKORDER_BACKUP_DIR": str(self.backup_dir),
            "WORKORDER_BACKUP_METRICS_FILE": str(self.metrics_file),
        })

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "workorder.backup", *args]

    def run(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args), env={**self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=180, cwd="/")

    def ok(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        proc = self.run(*args, env=env)
        assert proc.returncode == 0, f"{args} exited {proc.returncode}: {proc.stderr}"
        return proc

    def sets(self) -> list[str]:
        if not self.backup_dir.exists():
            return []
        return sorted(p.name for p in self.backup_dir.iterdir() if SET_RE.match(p.name))

    def entries(self) -> list[str]:
        return sorted(p.name for p in self.backup_dir.iterdir()) if self.backup_dir.exists() else []

    def metrics(self) -> dict[str, float]:
        values = {}
        for line in self.metrics_file.read_text().splitlines():
            if line and not line.startswith("#"):
                name, value = line.split()
                values[name] = float(value)
        return values


def assert_one_line_failure(proc: subprocess.CompletedProcess, *fragments: str, code: int | None = None) -> None:
    assert proc.returncode != 0, proc.stdout
    if code is not None:
        assert proc.returncode == code, proc.stderr
    err = proc.stderr.strip()
    assert err.startswith("workorder-backup: ") and "\n" not in err, f"not one line: {proc.stderr!r}"
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def table_contents(server: PostgresServer, dbname: str) -> dict[str, list[str]]:
    """Every user table's rows (as text, sorted) and every sequence's state."""
    conn = psycopg2.connect(host="127.0.0.1", port=server.port, user=server.user, dbname=dbname)
    try:
        with conn.cursor() as cur:
            cur.execute("""SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                           WHERE c.relkind IN ('r', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                           AND n.nspname !~ '^pg_' ORDER BY 1, 2""")
            contents = {}
            for schema, name, kind in cur.fetchall():
                if kind == "S":
                    cur.execute(f'SELECT last_value, is_called FROM "{schema}"."{name}"')
                else:
                    cur.execute(f'SELECT t::text FROM "{schema}"."{name}" t ORDER BY 1')
                contents[f"{schema}.{name}"] = [row[0] if len(row) == 1 else row for row in cur.fetchall()]
            return contents
    finally:
        conn.close()


def database_names(server: PostgresServer) -> list[str]:
    return server.psql("SELECT datname FROM pg_database ORDER BY 1").split()


def tree(root: Path) -> dict[str, bytes | None]:
    """Relative path -> file bytes (None for directories)."""
    result = {}
    for path in sorted(root.rglob("*")):
        result[str(path.relative_to(root))] = None if path.is_dir() else path.read_bytes()
    return result


# -- backup and restore ----------------------------------------------------------------------------
def test_backup_then_restore_into_new_database_reproduces_every_row_sequence_and_media_file(tool, pg_server, tmp_path):
    tool.ok("backup", "--verify-restore")
    restored_media = tmp_path / "restored-media"
    proc = tool.ok("restore", "latest", "--target-db", f"restored_{tool.dbname}", "--media-dir", str(restored_media))
    assert f"created database restored_{tool.dbname}" in proc.stdout

    source, restored = table_contents(pg_server, tool.dbname), table_contents(pg_server, f"restored_{tool.dbname}")
    assert set(source) == {"public.customer", "public.customer_id_seq", "public.empty_table", "public.work_order",
                           "public.work_order_id_seq", "reporting.daily_total"}
    assert len(source["public.customer"]) == 300 and len(source["public.work_order"]) == 1000
    assert restored == source
    assert tree(restored_media) == tree(Path(tool.env["MEDIA_ROOT"]))


def test_backup_set_is_one_directory_with_dump_media_tar_sha256sums_and_manifest(tool, pg_server):
    proc = tool.ok("backup", "--verify-restore")
    [name] = tool.sets()
    assert f"created {name}" in proc.stdout
    set_dir = tool.backup_dir / name
    assert sorted(p.name for p in set_dir.iterdir()) == sorted(
        [f"{name}.dump", f"{name}.media.tar", "SHA256SUMS", "manifest.json"])
    manifest = json.loads((set_dir / "manifest.json").read_text())
    assert manifest["verified"] is True and manifest["checks"]["restore"] is True
    assert manifest["row_counts"] == {"public.customer": 300, "public.work_order": 1000, "public.empty_table": 0,
                                      "reporting.daily_total": 50}
    for filename, info in manifest["files"].items():
        data = (set_dir / filename).read_bytes()
        assert info == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert (set_dir / f"{name}.dump").read_bytes().startswith(b"PGDMP")  # pg_dump --format=custom
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=set_dir, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # the scratch database of --verify-restore is gone, and nothing temporary is left behind
    assert not [d for d in database_names(pg_server) if d.startswith("workorder_backup_verify_")]
    assert tool.entries() == [".workorder-backup.lock", name]


def test_verify_restore_row_counts_are_exact_while_the_application_keeps_writing(tool, pg_server):
    """Counts come from the exported snapshot that pg_dump also uses, so concurrent inserts cannot skew them."""
    stop = threading.Event()
    inserted = []

    def writer():
        conn = psycopg2.connect(host="127.0.0.1", port=pg_server.port, user=pg_server.user, dbname=tool.dbname)
        conn.autocommit = True
        with conn.cursor() as cur:
            for _ in range(100000):
                if stop.is_set():
                    break
                cur.execute("INSERT INTO work_order (customer_id, quantity, state) VALUES (1, 1, 'draft')")
                inserted.append(1)
        conn.close()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not inserted and time.monotonic() < deadline:
            time.sleep(0.01)
        before = len(inserted)
        tool.ok("backup", "--verify-restore")
        during = len(inserted) - before
    finally:
        stop.set()
        thread.join(30)
    assert during > 0, "the writer did not write during the backup"
    [name] = tool.sets()
    counts = json.loads((tool.backup_dir / name / "manifest.json").read_text())["row_counts"]
    assert 1000 < counts["public.work_order"] < 1000 + len(inserted) + 1


def test_tool_imports_no_django_and_needs_no_secret_key(tool):
    probe = subprocess.run([sys.executable, "-c", ("import sys, workorder.backup.cli, workorder.backup.operations; "
                            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))")],
                           env=tool.env, capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "[]"
    assert not any(key.startswith("DJANGO_") for key in tool.env)
    tool.ok("backup")  # (the environment has no DJANGO_SECRET_KEY)


def test_list_shows_complete_sets_newest_first_and_ignores_incomplete_ones(tool):
    tool.ok("backup")
    tool.ok("backup", "--verify-restore")
    (tool.backup_dir / "workorder-20300101T000000Z").mkdir()  # named like a set, but no manifest: incomplete
    proc = tool.ok("list", "--json")
    rows = json.loads(proc.stdout)
    assert [row["name"] for row in rows] == sorted(tool.sets()[:2], reverse=True)
    assert [row["verified"] for row in rows] == [True, False]
    assert rows[0]["tables"] == 4 and rows[0]["rows"] == 1350 and rows[0]["media_files"] == 2
    assert "incomplete" in proc.stderr
    text = tool.ok("list").stdout
    assert "workorder-20300101T000000Z" not in text and rows[0]["name"] in text
    # restore and prune ignore it too; verify reports it
    assert_one_line_failure(tool.run("restore", "workorder-20300101T000000Z", "--target-db", "x"), "incomplete", code=1)
    tool.ok("prune", "--retention-days", "0", "--keep-at-least", "0")
    assert tool.sets() == ["workorder-20300101T000000Z"]
    assert "FAILED workorder-20300101T000000Z" in tool.run("verify").stderr


# -- verify ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("damaged", ["dump", "media.tar"])
def test_verify_detects_checksum_mismatch(tool, damaged):
    tool.ok("backup")
    tool.ok("backup")
    older, newer = tool.sets()
    assert "OK " + older in tool.ok("verify").stdout
    path = tool.backup_dir / newer / f"{newer}.{damaged}"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    path.write_bytes(bytes(data))

    proc = tool.run("verify")
    assert proc.returncode == 3
    assert f"OK {older}" in proc.stdout
    assert_one_line_failure(proc, f"FAILED {newer}", "checksum mismatch", f"{newer}.{damaged}")
    assert_one_line_failure(tool.run("verify", newer), "checksum mismatch", code=3)
    assert tool.run("verify", older).returncode == 0


def test_verify_detects_a_truncated_dump_and_a_missing_file(tool):
    tool.ok("backup")
    [name] = tool.sets()
    dump = tool.backup_dir / name / f"{name}.dump"
    dump.write_bytes(dump.read_bytes()[:100])
    assert_one_line_failure(tool.run("verify", name), "checksum mismatch", code=3)
    dump.unlink()
    assert_one_line_failure(tool.run("verify", name), "is missing", code=3)


def test_verify_restore_option_of_verify_restores_an_existing_set_into_scratch(tool, pg_server):
    tool.ok("backup")
    proc = tool.ok("verify", "--restore", "latest")
    assert "restore test: row counts and content checksums of 4 tables" in proc.stdout
    assert not [d for d in database_names(pg_server) if d.startswith("workorder_backup_verify_")]


def test_manifest_holds_a_content_checksum_per_table_taken_from_the_dumped_snapshot(tool, pg_server):
    tool.ok("backup")
    [name] = tool.sets()
    checksums = json.loads((tool.backup_dir / name / "manifest.json").read_text())["table_checksums"]
    assert set(checksums) == {"public.customer", "public.work_order", "public.empty_table", "reporting.daily_total"}
    pinned = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET extra_float_digits = 1; SET bytea_output = 'hex'; "
    for table, key in (("public.customer", "id"), ("public.work_order", "id"), ("reporting.daily_total", "day")):
        expected = pg_server.psql(f"{pinned}SELECT md5(string_agg(md5(t::text), '' ORDER BY {key})) FROM {table} t",
                                  tool.dbname)
        assert checksums[table] == expected, table
    assert checksums["public.empty_table"] == hashlib.md5(b"").hexdigest()


def test_verify_restore_fails_on_one_flipped_value_naming_the_table(tool, pg_server, tmp_path):
    """Same row counts, one value changed in the restored scratch copy: only the content checksum sees it."""
    env = _fake_pg_restore(tmp_path, "\"$real\" \"$@\" || exit $?\n"
                                     "\"$psql\" -X -q -d \"$db\" -c \"UPDATE customer SET balance = balance + 0.01 "
                                     "WHERE id = 150\" >/dev/null\n")
    proc = tool.run("backup", "--verify-restore", env=env)
    assert_one_line_failure(proc, "verify-restore: table content differs", "public.customer: content differs", code=3)
    assert "public.work_order" not in proc.stderr and tool.sets() == []
    tool.ok("backup")  # unverified set, checksums in its manifest
    proc = tool.run("verify", "--restore", "latest", env=env)
    assert_one_line_failure(proc, "table content differs", "public.customer", code=3)


def test_verify_restore_of_an_older_set_without_checksums_falls_back_to_row_counts_and_says_so(tool):
    tool.ok("backup")
    [name] = tool.sets()
    path = tool.backup_dir / name / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["table_checksums"]
    path.write_text(json.dumps(manifest))
    proc = tool.ok("verify", "--restore", name)
    assert f"OK {name}" in proc.stdout and "row counts only (this set has no content checksums)" in proc.stdout


# -- restore ---------------------------------------------------------------------------------------
def test_restore_refuses_a_non_empty_database_without_force_and_replaces_it_with_force(tool, pg_server, tmp_path):
    tool.ok("backup", "--no-media")
    expected = table_contents(pg_server, tool.dbname)
    # the "production" database gets damaged after the backup
    pg_server.psql("DELETE FROM work_order WHERE id > 10; UPDATE customer SET name = 'garbage'; "
                   "INSERT INTO reporting.daily_total VALUES ('2030-01-01', 1)", tool.dbname)

    refused = tool.run("restore", "latest", "--no-media")
    assert_one_line_failure(refused, f"database {tool.dbname} is not empty", "--force", code=4)
    assert table_contents(pg_server, tool.dbname) != expected  # untouched

    proc = tool.ok("restore", "latest", "--no-media", "--force")
    assert "row counts match the backup" in proc.stdout
    assert table_contents(pg_server, tool.dbname) == expected


def test_restore_refuses_a_non_empty_media_directory_without_force(tool, tmp_path):
    tool.ok("backup")
    original = tree(Path(tool.env["MEDIA_ROOT"]))
    target = tmp_path / "live-media"
    target.mkdir()
    (target / "uploaded-after-backup.txt").write_text("new")
    refused = tool.run("restore", "latest", "--target-db", "media_only_unused", "--media-dir", str(target))
    assert_one_line_failure(refused, f"media directory {target} is not empty", code=4)
    assert tree(target) == {"uploaded-after-backup.txt": b"new"}

    tool.ok("restore", "latest", "--no-database", "--media-dir", str(target), "--force")
    assert tree(target) == original


def test_restore_verifies_the_checksum_before_touching_anything(tool, pg_server):
    tool.ok("backup")
    [name] = tool.sets()
    dump = tool.backup_dir / name / f"{name}.dump"
    data = bytearray(dump.read_bytes())
    data[-10] ^= 0x01
    dump.write_bytes(bytes(data))
    proc = tool.run("restore", name, "--target-db", "never_created", "--media-dir", str(tool.backup_dir / "m"))
    assert_one_line_failure(proc, "checksum mismatch", code=3)
    assert "never_created" not in database_names(pg_server)
    assert not (tool.backup_dir / "m").exists()


# -- failure injection -----------------------------------------------------------------------------
def _assert_earlier_backup_intact(tool, earlier: list[str]) -> None:
    assert tool.sets() == earlier
    assert [e for e in tool.entries() if e.startswith(".workorder-") and ".partial-" in e] == []
    proc = tool.ok("verify")
    for name in earlier:
        assert f"OK {name}" in proc.stdout


def test_backup_of_a_missing_database_fails_with_one_line_and_keeps_earlier_backups(tool):
    tool.ok("backup")
    earlier = tool.sets()
    proc = tool.run("backup", env={"DATABASE_URL": tool.server.url("nope")})
    assert_one_line_failure(proc, 'database "nope" does not exist', code=1)
    _assert_earlier_backup_intact(tool, earlier)


def test_backup_with_the_server_stopped_fails_with_one_line_and_keeps_earlier_backups(tmp_path, media_dir):
    with PostgresServer() as server:  # its own cluster, so stopping it disturbs no other test
        server.create_database("app")
        server.psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1)", "app")
        tool = Tool(server, "app", media_dir, tmp_path)
        tool.ok("backup")
        earlier = tool.sets()
        server.stop()
        proc = tool.run("backup", "--verify-restore")
        assert_one_line_failure(proc, "cannot connect to database app", code=1)
        _assert_earlier_backup_intact(tool, earlier)


def test_backup_into_a_path_below_a_regular_file_fails_with_one_line(tool, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    proc = tool.run("backup", "--directory", str(blocker / "backups"))
    assert_one_line_failure(proc, "cannot create backup directory", "Not a directory", code=1)


def test_backup_into_an_immutable_directory_fails_and_keeps_earlier_backups(tool):
    tool.ok("backup")
    earlier = tool.sets()
    if subprocess.run(["chattr", "+i", str(tool.backup_dir)], capture_output=True).returncode != 0:
        skip_outside_ci("chattr +i is not supported here (needs CAP_LINUX_IMMUTABLE and a filesystem with it)")
    try:
        proc = tool.run("backup")
    finally:
        subprocess.run(["chattr", "-i", str(tool.backup_dir)], check=True)
    assert_one_line_failure(proc, "backup directory", code=1)
    _assert_earlier_backup_intact(tool, earlier)


def _fake_pg_dump(tmp_path: Path, body: str) -> dict:
    bindir = tmp_path / "fakebin"
    bindir.mkdir(exist_ok=True)
    script = bindir / "pg_dump"
    script.write_text("#!/bin/bash\nfor a in \"$@\"; do case $a in --file=*) out=${a#--file=};; esac; done\n" + body)
    script.chmod(0o755)
    return {"PATH": f"{bindir}:{os.environ['PATH']}"}


def test_pg_dump_failing_midway_with_disk_full_leaves_no_partial_file(tool, tmp_path):
    tool.ok("backup")
    earlier = tool.sets()
    env = _fake_pg_dump(tmp_path, "head -c 50000 /dev/urandom > \"$out\"\n"
                                  "echo 'pg_dump: error: could not write to output file: No space left on device' >&2\n"
                                  "exit 1\n")
    proc = tool.run("backup", env=env)
    assert_one_line_failure(proc, "pg_dump failed: could not write to output file: No space left on device", code=1)
    _assert_earlier_backup_intact(tool, earlier)
    assert tool.entries() == [".workorder-backup.lock", *earlier]


def test_disk_full_while_archiving_media_fails_and_keeps_earlier_backups(tool, tmp_path):
    """A real ENOSPC: the backup directory on a 512 KiB tmpfs (needs mount privileges, else skipped;
    in CI a failure)."""
    tool.backup_dir.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(tool.backup_dir)],
                      capture_output=True).returncode != 0:
        skip_outside_ci("cannot mount a tmpfs here (needs mount privileges)")
    try:
        tool.ok("backup", "--no-media")
        earlier = tool.sets()
        (Path(tool.env["MEDIA_ROOT"]) / "big.bin").write_bytes(os.urandom(1024 * 1024))
        proc = tool.run("backup")
        assert_one_line_failure(proc, "No space left on device", code=1)
        _assert_earlier_backup_intact(tool, earlier)
        assert tool.entries() == [".workorder-backup.lock", *earlier]
    finally:
        subprocess.run(["umount", str(tool.backup_dir)], check=True)


def test_killed_run_leaves_no_backup_like_file_and_the_next_run_cleans_up(tool, tmp_path):
    tool.ok("backup")
    earlier = tool.sets()
    pidfile = tmp_path / "pg_dump.pid"
    env = _fake_pg_dump(tmp_path, f"echo $$ > {pidfile}\nprintf 'PGDMP partial' > \"$out\"\nexec sleep 120\n")
    proc = subprocess.Popen(tool.command("backup"), env={**tool.env, **env}, cwd="/",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not list(tool.backup_dir.glob(".workorder-*.partial-*/*.dump")):
            assert time.monotonic() < deadline, "the run never started writing its dump"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # the orphaned pg_dump dies with its parent instead of writing on
    dump_pid = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{dump_pid}").exists() and "zombie" not in _proc_state(dump_pid):
        assert time.monotonic() < deadline, "pg_dump outlived the killed backup run"
        time.sleep(0.05)

    # nothing that looks like a backup: only a dot-prefixed temporary directory
    assert tool.sets() == earlier
    leftovers = [e for e in tool.entries() if ".partial-" in e]
    assert len(leftovers) == 1 and leftovers[0].startswith(".workorder-")
    assert f"OK {earlier[0]}" in tool.ok("verify").stdout
    assert [row["name"] for row in json.loads(tool.ok("list", "--json").stdout)] == earlier

    proc = tool.ok("backup")
    assert f"removed leftover temporary {leftovers[0]}" in proc.stdout
    assert len(tool.sets()) == 2 and not [e for e in tool.entries() if ".partial-" in e]
    assert tool.ok("verify").stdout.count("OK ") == 2


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


def test_a_second_concurrent_run_is_refused_by_the_lock(tool):
    tool.ok("backup")
    fd = os.open(tool.backup_dir / ".workorder-backup.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        proc = tool.run("backup")
    finally:
        os.close(fd)
    assert_one_line_failure(proc, "another workorder-backup run", code=5)
    assert len(tool.sets()) == 1


# -- retention -------------------------------------------------------------------------------------
def make_fake_set(directory: Path, age_days: float, verified: bool = True) -> str:
    """A complete-looking set whose timestamp (its name) is age_days in the past."""
    when = datetime.now(UTC) - timedelta(days=age_days)
    name = "workorder-" + when.strftime("%Y%m%dT%H%M%SZ")
    path = directory / name
    path.mkdir(parents=True)
    data = b"PGDMP fake " + name.encode()
    (path / f"{name}.dump").write_bytes(data)
    manifest = {"format": 1, "name": name, "dump": f"{name}.dump", "media": None, "verified": verified,
                "files": {f"{name}.dump": {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}},
                "row_counts": {}}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return name


def test_prune_removes_the_31_day_old_backup_and_keeps_recent_ones(tool):
    recent = [make_fake_set(tool.backup_dir, age) for age in range(1, 9)]  # 8 verified, all within 30 days
    old = make_fake_set(tool.backup_dir, 31)
    proc = tool.ok("prune")
    assert f"removed {old}" in proc.stdout
    assert tool.sets() == sorted(recent)
    assert not [e for e in tool.entries() if ".deleting-" in e]


def test_prune_keeps_the_newest_7_verified_backups_even_when_all_are_older_than_30_days(tool):
    names = [make_fake_set(tool.backup_dir, 40 + age) for age in range(10)]  # newest first
    proc = tool.ok("prune", "--retention-days", "30", "--keep-at-least", "7")
    assert tool.sets() == sorted(names[:7])
    for name in names[7:]:
        assert f"removed {name}" in proc.stdout


def test_unverified_backups_do_not_count_towards_keep_at_least(tool):
    verified = [make_fake_set(tool.backup_dir, 40 + age, verified=True) for age in range(8)]
    unverified_old = [make_fake_set(tool.backup_dir, 35 + age / 10, verified=False) for age in range(3)]
    unverified_recent = make_fake_set(tool.backup_dir, 1, verified=False)
    tool.ok("prune")
    assert tool.sets() == sorted(verified[:7] + [unverified_recent])
    assert not set(unverified_old) & set(tool.sets())


def test_prune_dry_run_removes_nothing(tool):
    old = make_fake_set(tool.backup_dir, 100, verified=False)
    proc = tool.ok("prune", "--keep-at-least", "0", "--dry-run")
    assert f"would remove {old}" in proc.stdout
    assert tool.sets() == [old]


def test_failed_backup_run_prunes_nothing(tool):
    names = [make_fake_set(tool.backup_dir, 31 + age) for age in range(10)]
    proc = tool.run("backup", env={"DATABASE_URL": tool.server.url("nope")})
    assert_one_line_failure(proc, 'database "nope" does not exist', code=1)
    assert "removed" not in proc.stdout
    assert tool.sets() == sorted(names)


def test_successful_backup_run_applies_retention_and_prints_what_it_removed(tool):
    old = [make_fake_set(tool.backup_dir, 31 + age) for age in range(8)]
    proc = tool.ok("backup", "--verify-restore", "--keep-at-least", "7")
    [new] = [name for name in tool.sets() if name not in old]
    # the new verified set counts towards the 7: the two oldest fakes go
    assert tool.sets() == sorted(old[:6] + [new])
    assert f"removed {old[7]}" in proc.stdout and f"removed {old[6]}" in proc.stdout


# -- metrics ---------------------------------------------------------------------------------------
def test_metrics_after_success_describe_the_new_backup(tool):
    tool.ok("backup")
    first_size = tool.metrics()["workorder_backup_last_size_bytes"]
    before = time.time()
    tool.ok("backup", "--verify-restore")
    values = tool.metrics()
    [_, newest] = tool.sets()
    size = sum(p.stat().st_size for p in (tool.backup_dir / newest).iterdir() if p.suffix in (".dump", ".tar"))
    assert values["workorder_backup_last_run_success"] == 1
    assert values["workorder_backup_last_verified"] == 1
    assert values["workorder_backup_last_size_bytes"] == size
    assert values["workorder_backup_previous_size_bytes"] == first_size
    assert before <= values["workorder_backup_last_success_timestamp_seconds"] <= time.time()
    assert values["workorder_backup_last_run_timestamp_seconds"] == values["workorder_backup_last_success_timestamp_seconds"]
    assert values["workorder_backup_last_duration_seconds"] > 0
    text = tool.metrics_file.read_text()
    assert "# TYPE workorder_backup_last_success_timestamp_seconds gauge" in text
    assert not [p for p in tool.metrics_file.parent.iterdir() if p.name != tool.metrics_file.name]  # no temp file


def test_metrics_textfile_passes_promtool(tool):
    promtool = shutil.which("promtool")
    if promtool is None:
        skip_outside_ci("promtool is not installed: the textfile format cannot be linted")
    tool.ok("backup")
    tool.run("backup", env={"DATABASE_URL": tool.server.url("nope")})  # a failed run's metrics too
    lint = subprocess.run([promtool, "check", "metrics"], input=tool.metrics_file.read_text(), capture_output=True,
                          text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_metrics_after_failure_keep_the_last_success_and_report_the_failed_run(tool):
    tool.ok("backup", "--verify-restore")
    success = tool.metrics()
    tool.run("backup", env={"DATABASE_URL": tool.server.url("nope")})
    values = tool.metrics()
    assert values["workorder_backup_last_run_success"] == 0
    assert values["workorder_backup_last_success_timestamp_seconds"] == success["workorder_backup_last_success_timestamp_seconds"]
    assert values["workorder_backup_last_run_timestamp_seconds"] > success["workorder_backup_last_run_timestamp_seconds"]
    assert values["workorder_backup_last_size_bytes"] == success["workorder_backup_last_size_bytes"]
    assert values["workorder_backup_last_verified"] == 1


def test_metrics_after_failure_without_a_previous_file_use_the_newest_backup(tool):
    tool.ok("backup")
    [name] = tool.sets()
    manifest = json.loads((tool.backup_dir / name / "manifest.json").read_text())
    tool.metrics_file.unlink()
    tool.run("backup", env={"DATABASE_URL": tool.server.url("nope")})
    values = tool.metrics()
    assert values["workorder_backup_last_run_success"] == 0
    assert values["workorder_backup_last_success_timestamp_seconds"] == manifest["finished_at_unix"]
    assert values["workorder_backup_last_verified"] == 0


def test_metrics_after_a_first_ever_failure_report_no_success(tool):
    proc = tool.run("backup", env={"DATABASE_URL": tool.server.url("nope")})
    assert proc.returncode == 1
    values = tool.metrics()
    assert values["workorder_backup_last_success_timestamp_seconds"] == 0
    assert values["workorder_backup_last_run_success"] == 0


def _fake_pg_restore(tmp_path: Path, on_restore: str) -> dict:
    """pg_restore that behaves normally for --list and runs on_restore (bash) when restoring into --dbname."""
    from harness.services import pg_binary

    bindir = tmp_path / "fakebin"
    bindir.mkdir(exist_ok=True)
    script = bindir / "pg_restore"
    script.write_text(
        "#!/bin/bash\ndb=\nfor a in \"$@\"; do case $a in --dbname=*) db=${a#--dbname=};; esac; done\n"
        f"real={pg_binary('pg_restore')}\npsql={pg_binary('psql')}\n"
        "if [ -z \"$db\" ]; then exec \"$real\" \"$@\"; fi\n" + on_restore)
    script.chmod(0o755)
    return {"PATH": f"{bindir}:{os.environ['PATH']}"}


def test_verify_restore_fails_on_a_row_count_difference_and_publishes_and_prunes_nothing(tool, pg_server, tmp_path):
    old = [make_fake_set(tool.backup_dir, 40 + age) for age in range(9)]
    env = _fake_pg_restore(tmp_path, "\"$real\" \"$@\" || exit $?\n"
                                     "\"$psql\" -X -q -d \"$db\" -c 'DELETE FROM work_order WHERE id = 1' >/dev/null\n")
    proc = tool.run("backup", "--verify-restore", env=env)
    assert_one_line_failure(proc, "verify-restore: row counts differ", "public.work_order: expected 1000, got 999", code=3)
    assert tool.sets() == sorted(old)  # no new set, nothing pruned
    assert [e for e in tool.entries() if e.startswith(".workorder-2")] == []
    assert not [d for d in database_names(pg_server) if d.startswith("workorder_backup_verify_")]
    assert tool.metrics()["workorder_backup_last_run_success"] == 0


def test_scratch_database_of_a_killed_verify_restore_run_is_dropped_by_the_next_run(tool, pg_server, tmp_path):
    pidfile = tmp_path / "pg_restore.pid"
    env = _fake_pg_restore(tmp_path, f"echo $$ > {pidfile}\nexec sleep 120\n")
    proc = subprocess.Popen(tool.command("backup", "--verify-restore"), env={**tool.env, **env}, cwd="/",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not pidfile.exists():
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate() if proc.poll() is not None else "timeout"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    scratch = [d for d in database_names(pg_server) if d.startswith("workorder_backup_verify_")]
    assert len(scratch) == 1 and tool.sets() == []

    out = tool.ok("backup", "--verify-restore").stdout
    assert f"dropped leftover scratch database {scratch[0]}" in out
    assert not [d for d in database_names(pg_server) if d.startswith("workorder_backup_verify_")]
    assert len(tool.sets()) == 1


def test_sigterm_mid_dump_removes_the_temporary_set_and_records_a_failed_run(tool, tmp_path):
    env = _fake_pg_dump(tmp_path, "printf 'PGDMP partial' > \"$out\"\nexec sleep 120\n")
    proc = subprocess.Popen(tool.command("backup"), env={**tool.env, **env}, cwd="/", text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not list(tool.backup_dir.glob(".workorder-*.partial-*/*.dump")):
            assert time.monotonic() < deadline and proc.poll() is None, "the run never started writing its dump"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # what systemd sends on stop / TimeoutStartSec
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    assert stderr.strip() == "workorder-backup: interrupted by SIGTERM"
    assert tool.entries() == [".workorder-backup.lock"]
    assert tool.metrics()["workorder_backup_last_run_success"] == 0


def test_unix_socket_database_url_as_used_by_the_nixos_module(tool, pg_server):
    url = f"postgresql:///{tool.dbname}?host={pg_server.socket_dir}&port={pg_server.port}&user={pg_server.user}"
    tool.ok("backup", "--verify-restore", env={"DATABASE_URL": url})
    assert tool.ok("verify", "--restore", env={"DATABASE_URL": url}).stdout.startswith("OK ")


def test_restore_recreates_a_dropped_database_from_database_url_with_parallel_jobs(tool, pg_server):
    tool.ok("backup", "--no-media")
    expected = table_contents(pg_server, tool.dbname)
    pg_server.psql(f'DROP DATABASE "{tool.dbname}" WITH (FORCE)')
    proc = tool.ok("restore", "latest", "--no-media", "--jobs", "2")
    assert f"created database {tool.dbname}" in proc.stdout
    assert table_contents(pg_server, tool.dbname) == expected


@pytest.mark.skipif(not glob.glob("/usr/lib/postgresql/*/bin/pg_dump"), reason="no Debian PostgreSQL packages here")
def test_pg_binaries_are_found_without_path_via_debian_locations(monkeypatch, tmp_path):
    from workorder.backup.pg import find_pg_binary

    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there: no pg_dump, no pg_config
    found = find_pg_binary("pg_dump")
    assert found.startswith("/usr/lib/postgresql/") and found.endswith("/bin/pg_dump") and os.access(found, os.X_OK)


# -- units without a server ------------------------------------------------------------------------
def test_environment_gaps_skip_on_a_laptop_and_fail_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no chattr"):
        skip_outside_ci("no chattr")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no chattr, and CI is set"):
        skip_outside_ci("no chattr")


def test_password_from_database_url_is_kept_off_command_lines(monkeypatch):
    from workorder.backup.pg import Database

    monkeypatch.delenv("PGPASSWORD", raising=False)
    db = Database.from_url("postgres://workorder:s3cret@127.0.0.1:5432/workorder?sslmode=disable")
    assert "s3cret" not in db.dsn and os.environ["PGPASSWORD"] == "s3cret"
    assert db.name == "workorder" and db.params["sslmode"] == "disable"
    assert db.target("other").name == "other" and db.target("other").params["host"] == "127.0.0.1"
    socket_db = Database.from_url("postgresql:///workorder?host=/run/postgresql")
    assert socket_db.params["host"] == "/run/postgresql" and socket_db.name == "workorder"


def test_multi_line_tool_errors_become_one_line():
    from workorder.backup.errors import one_line

    text = ('pg_dump: error: connection to server at "127.0.0.1", port 1 failed: Connection refused\n'
            '\tIs the server running on that host and accepting TCP/IP connections?\n')
    assert one_line(text) == ('connection to server at "127.0.0.1", port 1 failed: Connection refused '
                              'Is the server running on that host and accepting TCP/IP connections?')


def test_retention_plan_counts_only_verified_sets_and_never_goes_below_keep_at_least(tmp_path):
    from workorder.backup.store import load_set, plan_retention

    def sets(*specs):
        return [load_set(tmp_path / make_fake_set(tmp_path, age, verified)) for age, verified in specs]

    now = datetime.now(UTC)
    # nothing verified, all old: the newest 3 stay anyway
    all_old = sets((50, False), (51, False), (52, False), (53, False))
    keep, remove = plan_retention(all_old, now, 30, 3)
    assert [s.name for s in remove] == [all_old[3].name]
    # keep_at_least 0: plain age-based expiry
    keep, remove = plan_retention(all_old, now, 30, 0)
    assert keep == [] and len(remove) == 4
