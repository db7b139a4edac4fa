#!/usr/bin/env python
"""Point-in-time recovery benchmark (a script, not a test): RPO, RTO and repository growth.

    .venv/bin/python tests/bench/pitr_rpo_rto.py                         # 100,000 tasks, 150 s of writes
    .venv/bin/python tests/bench/pitr_rpo_rto.py --tasks 200000 --workload-seconds 300 --rate 50

The module's set-up (tests/harness/pgbackrest.py: archive_command through the passphrase wrapper,
an encrypted zstd repository, archive_timeout = 60s), on Debian's PostgreSQL with durable settings
(fsync, synchronous_commit and full_page_writes on):

1. a database of the shape of the application's (work orders and ~100,000 tasks with their
   indexes, generated in SQL), and a full backup;
2. a workload: task progress updates at --rate transactions per second for --workload-seconds,
   each also recording (seq, commit time) in a log table; the writer notes when each commit was
   acknowledged; a differential backup at the end;
3. the disaster right after the last acknowledged write: `pg_ctl stop -m immediate` and the data
   directory deleted (the unarchived part of the current WAL segment is lost with it);
4. the restore to the end of the archive: `pgbackrest restore` + recovery until promoted.

RPO = last acknowledged write - newest write the restore has (seconds, and transactions lost);
bounded by archive_timeout plus the archiver's latency. RTO = restore + recovery time.
Repository per day = the WAL archived during the workload, extrapolated to 24 h at that rate, plus
one differential backup; a 30-day estimate adds the full backups retention keeps.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness.pgbackrest import PitrCluster
from workorder.backup.store import human_size

SCHEMA = """
CREATE TABLE work_order (
    id bigserial PRIMARY KEY, number text NOT NULL UNIQUE, customer text NOT NULL, product text NOT NULL,
    quantity int NOT NULL, state text NOT NULL, due date, created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(), note text);
CREATE TABLE task (
    id bigserial PRIMARY KEY, work_order_id bigint NOT NULL REFERENCES work_order (id), step int NOT NULL,
    department text NOT NULL, name text NOT NULL, state text NOT NULL, quantity int NOT NULL,
    produced int NOT NULL DEFAULT 0, assignee_id bigint, created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(), started_at timestamptz, completed_at timestamptz);
CREATE INDEX task_work_order ON task (work_order_id);
CREATE INDEX task_state_department ON task (state, department);
CREATE INDEX task_assignee_state ON task (assignee_id, state);
CREATE TABLE ack_log (seq bigint PRIMARY KEY, committed_at timestamptz NOT NULL);
"""

POPULATE = """
INSERT INTO work_order (number, customer, product, quantity, state, due, note)
SELECT 'WO-' || lpad(g::text, 7, '0'), 'Customer ' || (g % 500), 'Product ' || (g % 120), 10 + g % 90,
       (ARRAY['draft', 'approved', 'in_progress', 'done'])[1 + g % 4], date '2026-01-01' + g % 365,
       repeat('note ', g % 8)
FROM generate_series(1, {orders}) g;
INSERT INTO task (work_order_id, step, department, name, state, quantity, produced, assignee_id)
SELECT 1 + (g - 1) / {per_order}, 1 + (g - 1) % {per_order},
       (ARRAY['cutting', 'welding', 'painting', 'assembly', 'quality'])[1 + g % 5], 'Step ' || g % 7,
       (ARRAY['pending', 'assigned', 'in_progress', 'completed'])[1 + g % 4], 10 + g % 90, g % 10,
       CASE WHEN g % 3 = 0 THEN NULL ELSE g % 200 END
FROM generate_series(1, {tasks}) g;
ANALYZE;
"""


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def durable(cluster: PitrCluster) -> None:
    """Production durability instead of the unit tests' fsync=off."""
    options = cluster.pg.server_options

    def server_options() -> str:
        return (options().replace("-c fsync=off", "-c fsync=on")
                .replace("-c synchronous_commit=off", "-c synchronous_commit=on")
                .replace("-c full_page_writes=off", "-c full_page_writes=on"))

    cluster.pg.server_options = server_options


class Writer(threading.Thread):
    """Task progress updates at a fixed rate; remembers the acknowledgement time of every commit."""

    def __init__(self, dsn: str, rate: float, seconds: float, tasks: int):
        super().__init__(daemon=True)
        self.dsn, self.rate, self.seconds, self.tasks = dsn, rate, seconds, tasks
        self.acked: list[tuple[int, float]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = psycopg2.connect(self.dsn)
            cur = conn.cursor()
            start = time.monotonic()
            seq = 0
            while time.monotonic() - start < self.seconds:
                seq += 1
                task = 1 + (seq * 7919) % self.tasks
                cur.execute("UPDATE task SET produced = produced + 1, state = 'in_progress', updated_at = now(), "
                            "started_at = coalesce(started_at, now()) WHERE id = %s", (task,))
                cur.execute("UPDATE work_order SET updated_at = now() WHERE id = (SELECT work_order_id FROM task "
                            "WHERE id = %s)", (task,))
                cur.execute("INSERT INTO ack_log VALUES (%s, clock_timestamp())", (seq,))
                conn.commit()
                self.acked.append((seq, time.time()))
                pause = start + seq / self.rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            conn.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--tasks-per-order", type=int, default=5)
    parser.add_argument("--rate", type=float, default=20.0, help="write transactions per second (default 20)")
    parser.add_argument("--workload-seconds", type=float, default=150.0)
    parser.add_argument("--archive-timeout", default="60s")
    args = parser.parse_args()

    cluster = PitrCluster(tempfile.mkdtemp(prefix="wo-pitr-bench-"), archive_timeout=args.archive_timeout)
    durable(cluster)
    rows: list[tuple[str, str]] = []
    try:
        cluster.start()
        cluster.pg.psql(SCHEMA, dbname="postgres")
        started = time.monotonic()
        cluster.pg.psql(POPULATE.format(orders=args.tasks // args.tasks_per_order, per_order=args.tasks_per_order,
                                        tasks=args.tasks))
        rows.append(("database", (f"{args.tasks:,} tasks, {args.tasks // args.tasks_per_order:,} work orders, "
                                 f"{human_size(int(cluster.pg.psql('SELECT pg_database_size(current_database())')))}"
                                 f" (loaded in {time.monotonic() - started:.1f} s)")))
        cluster.switch_and_wait_archived()

        started = time.monotonic()
        cluster.backup("full")
        full_seconds = time.monotonic() - started
        full = cluster.info()[0]["backup"][-1]
        rows.append(("full backup", (f"{full_seconds:.1f} s, {human_size(full['info']['repository']['size'])} stored "
                                    f"({human_size(full['info']['size'])} of data)")))

        archive_dir = cluster.repository / "archive"
        wal_before = tree_bytes(archive_dir)
        writer = Writer(cluster.pg.url("postgres"), args.rate, args.workload_seconds, args.tasks)
        workload_start = time.monotonic()
        writer.start()
        writer.join(args.workload_seconds + 60)
        if writer.error or writer.is_alive():
            raise RuntimeError(f"writer failed: {writer.error!r}")
        workload_seconds = time.monotonic() - workload_start
        last_seq, last_ack = writer.acked[-1]

        # The disaster right after the last acknowledged write: what is archived is what survives.
        wal_archived = tree_bytes(archive_dir) - wal_before
        cluster.pg.stop("immediate")
        cluster.wipe()

        rto = cluster.restore("--type=default", timeout=1800)
        newest_seq, newest_at = cluster.pg.psql(
            "SELECT seq || '|' || extract(epoch FROM committed_at) FROM ack_log ORDER BY seq DESC LIMIT 1").split("|")
        rpo = max(0.0, last_ack - float(newest_at))
        lost = last_seq - int(newest_seq)
        rows.append(("workload", (f"{len(writer.acked):,} transactions in {workload_seconds:.0f} s "
                                 f"({len(writer.acked) / workload_seconds:.1f}/s), archive_timeout {args.archive_timeout}")))
        rows.append(("RPO (last acknowledged write - newest restored)", (f"{rpo:.1f} s, {lost} transactions lost "
                                 f"(bound: archive_timeout + archiving latency)")))
        rows.append(("RTO (pgbackrest restore + recovery to the end)", f"{rto:.1f} s"))

        # Repository growth: WAL at this rate, plus the daily differential backup.
        cluster.backup("diff")
        diff = cluster.info()[0]["backup"][-1]
        wal_per_day = wal_archived / workload_seconds * 86400
        diff_bytes = diff["info"]["repository"]["size"]
        per_day = wal_per_day + diff_bytes
        full_bytes = full["info"]["repository"]["size"]
        month = 31 * wal_per_day + 6 * full_bytes + 30 * diff_bytes  # retention by time keeps 5-6 weekly fulls
        rows.append(("WAL archived (compressed, encrypted)", (f"{human_size(wal_archived)} in {workload_seconds:.0f} s "
                                                              f"= {human_size(wal_per_day)}/day at this rate")))
        rows.append(("differential backup after the workload", human_size(diff_bytes)))
        rows.append(("repository growth per day", f"{human_size(per_day)} (WAL + one differential)"))
        rows.append(("repository for 30 days of restore points", (f"~{human_size(month)} (31 days of WAL, 6 fulls, "
                                                                  "30 differentials; upper estimate)")))
        rows.append(("repository now", human_size(tree_bytes(cluster.repository))))
    finally:
        cluster.cleanup()

    width = max(len(name) for name, _ in rows)
    print(f"\n| {'measure':<{width}} | value |\n|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
