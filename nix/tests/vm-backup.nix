# services.workorder.backup in a VM: the timer, a real run of the backup unit, a restore that
# matches the source table by table, retention (old sets pruned, the newest kept) and the
# textfile metrics that node exporter serves to Prometheus.
#
#   nix build .#checks.x86_64-linux.vm-backup -L      # ./result/backup/ holds the logs and listings
{ module }:
{ lib, ... }:
let
  backupDir = "/var/backup/workorder";
  textfileDir = "/var/lib/prometheus-node-exporter-text-files";
  keepAtLeast = 3;
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
        };
      };

      environment.systemPackages = [
        pkgs.curl
        pkgs.jq
      ];
    };

  testScript =
    { nodes, ... }:
    let
      # The package's own workorder-backup, run as the service user like the unit does (a lock
      # file or listing created as root would get in the unit's way).
      backupCli = "runuser -u workorder -- env DATABASE_URL='postgresql:///workorder?host=/run/postgresql' ${nodes.machine.services.workorder.package}/bin/workorder-backup";
    in
    ''
    import json
    import os

    out_dir = os.environ.get("out", os.getcwd())
    backup_dir = "${backupDir}"
    prom_file = "${textfileDir}/workorder_backup.prom"
    backup_cli = "${backupCli}"


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
        machine.succeed("workorder-manage seed_demo --work-orders 200 > /dev/null")
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
        machine.succeed(f"{backup_cli} restore latest --directory {backup_dir} --target-db restore_check --no-media")
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
