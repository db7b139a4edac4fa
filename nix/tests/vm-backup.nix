# services.workorder.backup in a VM: the timer, a real run of the backup unit, a restore that
# matches the source table by table, retention (old sets pruned, the newest kept) and the
# textfile metrics that node exporter serves to Prometheus. Least privilege: the backup runs as
# workorder-backup (its own PostgreSQL role, the only one with CREATEDB), the application cannot
# read the backups, node exporter reads the metrics through the group workorder-metrics, and Redis
# requires the password the application and the redis exporter have.
#
#   nix build .#checks.x86_64-linux.vm-backup -L      # ./result/backup/ holds the logs and listings
{ module }:
{ lib, ... }:
let
  backupDir = "/var/backup/workorder";
  textfileDir = "/var/lib/prometheus-node-exporter-text-files";
  keepAtLeast = 3;
  pitrPassphrase = "/var/lib/pitr-test/passphrase";
in
{
  name = "workorder-vm-backup";

  # Every shell snippet NixOS generates for this machine passes shellcheck. The module itself runs
  # no generated script (nix/scripts/ are shellchecked by CI), so a failure here points at a
  # nixpkgs unit; a canary worth having.
  defaults.systemd.enableStrictShellChecks = true;

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [ module ];

      virtualisation = {
        memorySize = 3072;
        cores = 2;
      };

      services.workorder = {
        enable = true;
        hostName = "machine";
        backup = {
          retentionDays = 30;
          inherit keepAtLeast;
          verifyRestore = true;
          # Point-in-time recovery (nix/pitr.nix), explicitly: the default depends on stateVersion.
          pointInTime = {
            enable = true;
            passphraseFile = pitrPassphrase;
          };
        };
      };

      # The repository's passphrase: made on the machine before PostgreSQL starts, never in the store.
      systemd.services.pitr-test-passphrase = {
        description = "test: the pgBackRest repository passphrase";
        wantedBy = [ "postgresql.service" ];
        before = [ "postgresql.service" ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          UMask = "0077";
        };
        script = ''
          if [ ! -s ${pitrPassphrase} ]; then
            mkdir -p "$(dirname ${pitrPassphrase})"
            head -c 33 /dev/urandom | base64 > ${pitrPassphrase}
          fi
        '';
      };

      environment.systemPackages = [
        pkgs.curl
        pkgs.jq
      ];
    };

  testScript =
    { nodes, ... }:
    let
      # The package's own workorder-backup, run as the backup user like the unit does (a lock
      # file or listing created as root would get in the unit's way).
      backupCli = "runuser -u workorder-backup -- env DATABASE_URL='postgresql:///workorder?host=/run/postgresql' ${nodes.machine.services.workorder.package}/bin/workorder-backup";
      # A restore over the application's database runs as its owner (docs/backup.md's runbook).
      restoreCli = "runuser -u workorder -- env DATABASE_URL='postgresql:///workorder?host=/run/postgresql' ${nodes.machine.services.workorder.package}/bin/workorder-backup";
    in
    ''
    import json
    import os

    out_dir = os.environ.get("out", os.getcwd())
    backup_dir = "${backupDir}"
    prom_file = "${textfileDir}/workorder_backup.prom"
    backup_cli = "${backupCli}"
    restore_cli = "${restoreCli}"


    def sets():
        """Complete backup sets, newest first, as `workorder-backup list --json` reports them."""
        rows = json.loads(machine.succeed(f"{backup_cli} list --json --directory {backup_dir}"))
        return [row["name"] for row in rows]


    def row_counts(database):
        """{table: rows} of every table in the public schema, counted exactly."""
        tables = machine.succeed(
            f"runuser -u postgres -- psql -d {database} -At -c "
            "\"select tablename from pg_tables where schemaname = 'public' order by 1\""
        ).split()
        counts = {}
        for table in tables:
            counts[table] = int(machine.succeed(
                f"runuser -u postgres -- psql -d {database} -At -c 'select count(*) from \"{table}\"'"
            ).strip())
        return counts


    machine.start()
    machine.wait_for_unit("workorder.target", timeout=1200)
    for unit in ["workorder-migrate", "workorder-gunicorn", "workorder-daphne"]:
        machine.succeed(f"systemctl is-active {unit}.service")

    with subtest("the timer: daily at 02:00, persistent"):
        machine.wait_for_unit("workorder-backup.timer")
        timer = machine.succeed("systemctl cat workorder-backup.timer")
        t.assertIn("OnCalendar=*-*-* 02:00:00", timer)
        t.assertIn("Persistent=true", timer)

    with subtest("data worth backing up"):
        # --force: a production configuration (DEBUG off), which seed_demo otherwise refuses.
        machine.succeed("workorder-manage seed_demo --work-orders 200 --force > /dev/null")
        machine.succeed(
            "echo 'a drawing' > /var/lib/workorder/media/probe.txt && "
            "chown workorder:workorder /var/lib/workorder/media/probe.txt"
        )

    with subtest("the backup unit runs, verifies the restore and writes its metrics"):
        machine.succeed("systemctl start workorder-backup.service")  # a oneshot: returns when done
        t.assertEqual(machine.succeed("systemctl show -p Result --value workorder-backup.service").strip(), "success")
        machine.log(machine.succeed("journalctl -u workorder-backup.service --no-pager -o cat"))
        first = sets()
        # Normally exactly one; the timer could in theory have fired during the test as well.
        t.assertGreaterEqual(len(first), 1, first)
        machine.succeed(f"{backup_cli} verify --directory {backup_dir} latest")
        metrics = machine.succeed(f"cat {prom_file}")
        for line in ["workorder_backup_last_run_success 1", "workorder_backup_last_verified 1"]:
            t.assertIn(line, metrics)

    with subtest("least privilege: roles, directories, groups, the Redis password"):
        roles = machine.succeed(
            "runuser -u postgres -- psql -At -c \"select rolname || '=' || rolcreatedb from pg_roles "
            "where rolname in ('workorder', 'workorder-backup') order by 1\""
        ).split()
        t.assertEqual(roles, ["workorder-backup=true", "workorder=false"])
        machine.fail("runuser -u workorder -- psql -d workorder -c 'create database probe'")
        machine.fail("runuser -u workorder-backup -- psql -d workorder -c 'delete from production_task'")
        machine.fail(f"runuser -u workorder -- ls {backup_dir}")
        t.assertEqual(machine.succeed(f"stat -c %U:%G:%a {backup_dir}").strip(), "workorder-backup:workorder-backup:700")
        t.assertEqual(machine.succeed("stat -c %U:%G:%a ${textfileDir}").strip(), "workorder-backup:workorder-metrics:750")
        groups = machine.succeed("systemctl show -p SupplementaryGroups --value prometheus-node-exporter.service")
        t.assertIn("workorder-metrics", groups)
        t.assertNotIn("workorder", groups.replace("workorder-metrics", ""))
        t.assertNotIn("redis", machine.succeed("systemctl show -p SupplementaryGroups --value prometheus-redis-exporter.service"))
        # Without the password Redis refuses; the application (/ready/) and the exporter get in.
        t.assertIn("NOAUTH", machine.succeed("redis-cli -s /run/redis-workorder/redis.sock ping 2>&1 || true"))
        machine.succeed("curl -fsS http://127.0.0.1:9808/ready/")  # checks Redis with the password
        machine.wait_until_succeeds("curl -fsS http://127.0.0.1:9121/metrics | grep -q '^redis_up 1'", timeout=60)

    with subtest("node exporter serves the backup metrics"):
        machine.wait_until_succeeds(
            "curl -fsS http://127.0.0.1:9100/metrics -o /tmp/node.txt && "
            "grep -q '^workorder_backup_last_run_success 1' /tmp/node.txt",
            timeout=120,
        )

    with subtest("the dump restores: every table has the source's rows"):
        source = row_counts("workorder")
        t.assertGreater(sum(source.values()), 0)
        machine.succeed("runuser -u postgres -- createdb -O workorder restore_check")
        # The application's user cannot read the backups: root hands it a copy of the set.
        latest = sets()[0]
        machine.succeed(f"mkdir /tmp/restore && cp -a {backup_dir}/{latest} /tmp/restore/ && chown -R workorder: /tmp/restore")
        machine.succeed(f"{restore_cli} restore /tmp/restore/{latest} --no-media --target-db restore_check")
        machine.succeed("rm -rf /tmp/restore")
        restored = row_counts("restore_check")
        t.assertEqual(restored, source)
        machine.succeed("runuser -u postgres -- dropdb restore_check")

    with subtest("retention: sets older than 30 days go, the newest ${toString keepAtLeast} stay"):
        newest = first[0]
        old_names = [
            "workorder-20200101T020000Z",
            "workorder-20200102T020000Z",
            "workorder-20200103T020000Z",
            "workorder-20200104T020000Z",
        ]
        for name in old_names:
            machine.succeed(f"cp -a {backup_dir}/{newest} {backup_dir}/{name}")
        t.assertEqual(len(sets()), len(first) + len(old_names))
        machine.succeed("systemctl start workorder-backup.service")
        machine.log(machine.succeed("journalctl -u workorder-backup.service --no-pager -o cat -n 40"))
        after = sets()
        fresh = [name for name in after if name not in old_names]
        t.assertEqual(len(fresh), len(first) + 1, after)
        # Every old set is older than 30 days: only as many of the newest old ones stay as are
        # needed to keep ${toString keepAtLeast} verified sets; the rest are pruned.
        kept_old = max(0, ${toString keepAtLeast} - len(fresh))
        t.assertEqual(sorted(set(after) - set(fresh)), sorted(old_names)[len(old_names) - kept_old:], after)
        t.assertIn(newest, after)

    with subtest("point-in-time recovery: WAL archived, backups listed, metrics written"):
        psql = "runuser -u postgres -- psql -X -At -v ON_ERROR_STOP=1"
        for timer in ["full", "diff"]:
            machine.succeed(f"systemctl is-enabled workorder-pitr-backup-{timer}.timer")
        t.assertIn("archive_mode=on", machine.succeed(f"{psql} -c 'show archive_mode' | sed 's/^/archive_mode=/'"))
        machine.succeed("systemctl start workorder-pitr-backup-full.service")
        machine.log(machine.succeed("journalctl -u workorder-pitr-backup-full.service --no-pager -o cat"))
        # pgBackRest compares whole seconds: the target must come after the backup's stop second.
        machine.succeed("sleep 2")
        machine.succeed(f"{psql} -d workorder -c \"create table pitr_probe (v text); insert into pitr_probe values ('A')\"")
        target = machine.succeed(f"{psql} -c 'select clock_timestamp()'").strip()
        machine.succeed("sleep 1")
        machine.succeed(f"{psql} -d workorder -c \"insert into pitr_probe values ('B')\"")
        segment = machine.succeed(f"{psql} -c 'select pg_walfile_name(pg_switch_wal())'").strip()
        machine.wait_until_succeeds(
            f"test \"$({psql} -c 'select last_archived_wal from pg_stat_archiver')\" \\> {segment} || "
            f"test \"$({psql} -c 'select last_archived_wal from pg_stat_archiver')\" = {segment}",
            timeout=120,
        )
        listing = json.loads(machine.succeed(
            "WORKORDER_PGBACKREST_STANZA=default WORKORDER_PGBACKREST_COMMAND=workorder-pgbackrest "
            "${nodes.machine.services.workorder.package}/bin/workorder-backup list --pitr --json"
        ))
        t.assertEqual([b["type"] for b in listing["backups"]], ["full"], listing)
        t.assertEqual(listing["cipher"], "aes-256-cbc")
        t.assertGreaterEqual(listing["newest_archived_wal"], segment)
        machine.succeed("systemctl start workorder-pitr-metrics.service workorder-pitr-verify.service")
        pitr_metrics = machine.succeed("cat ${textfileDir}/workorder_pitr.prom ${textfileDir}/workorder_pitr_verify.prom")
        for line in ["workorder_pitr_collector_success 1", "workorder_pitr_archive_failures_total 0",
                     "workorder_pitr_verify_last_run_success 1"]:
            t.assertIn(line, pitr_metrics)
        machine.wait_until_succeeds(
            "curl -fsS http://127.0.0.1:9100/metrics | grep -q '^workorder_pitr_collector_success 1'", timeout=120
        )

    with subtest("point-in-time recovery: the cluster wiped, restored to the moment between A and B"):
        data_dir = machine.succeed(f"{psql} -c 'show data_directory'").strip()
        machine.succeed("systemctl stop workorder.target workorder-backup.timer 'workorder-pitr-*.timer' postgresql.service")
        machine.succeed(f"find {data_dir} -mindepth 1 -delete")
        # docs/backup.md, "Restore to a moment": as root; the wrapper runs pgBackRest as postgres.
        machine.succeed(
            f"workorder-pgbackrest --stanza=default restore --type=time '--target={target}' --target-action=promote"
        )
        machine.succeed("systemctl start postgresql.target")  # postgresql-setup waits for the promotion
        t.assertEqual(machine.succeed(f"{psql} -c 'select pg_is_in_recovery()'").strip(), "f")
        t.assertEqual(machine.succeed(f"{psql} -d workorder -c 'select v from pitr_probe order by v'").split(), ["A"])
        machine.succeed("systemctl start workorder.target workorder-backup.timer 'workorder-pitr-*.timer'")
        machine.wait_for_unit("workorder.target")
        machine.succeed("curl -fsS http://127.0.0.1:9808/ready/")

    with subtest("keep the listings"):
        machine.succeed(
            f"mkdir -p /tmp/backup && {backup_cli} list --directory {backup_dir} > /tmp/backup/list.txt && "
            f"cp {prom_file} /tmp/backup/ && "
            "journalctl -u workorder-backup.service --no-pager > /tmp/backup/journal.txt && "
            "systemd-analyze security workorder-backup.service --no-pager > /tmp/backup/hardening.txt || true"
        )
        machine.copy_from_vm("/tmp/backup")  # -> $out/backup
  '';
}
