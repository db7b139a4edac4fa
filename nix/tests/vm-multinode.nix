# Several machines: a database host, two application nodes and a balancer (services.workorder.role),
# load-tested from a client VM; the NixOS counterpart of tests/stack/test_multinode.py.
#
#   nix build .#checks.x86_64-linux.vm-multinode -L        # reports land in ./result/
#
# Nodes: db (role database: PostgreSQL, Redis, backups), app1 and app2 (role app; app1 runs the
# singleton jobs and seeds the load-test accounts), lb (role balancer, and Prometheus scraping every
# machine), client (Locust and the failover writer).
#
# Output ($out): loadtest-report/ (workorder-loadtest's report and SLA verdict), failover.json
# (requests and acknowledged writes around the stop of app1), server-state/ (Prometheus targets).
{
  module,
  workorder-loadtest,
}:
{ lib, ... }:
let
  password = "vm-multinode-password";
  users = 100;
  spawnRate = 2;
  runTime = "140s";
  failoverUsers = 20;
  failoverSeconds = 60;

  # Shared secrets, written on each machine at boot by a oneshot (test only: their values are in
  # this file; a real deployment provisions the files, docs/nixos.md).
  secretDir = "/var/lib/test-secrets";
  secretPath = name: "${secretDir}/${name}";
  secrets = {
    secret-key = "vm-multinode-shared-django-secret-key-0123456789abcdefghijklmnopqrstuvwxyz";
    db-password = "vm-multinode-database-password";
    redis-password = "vm-multinode-redis-password";
    metrics-token = "vm-multinode-metrics-token";
  };
  testSecrets = {
    systemd.services.test-secrets = {
      description = "test: the cluster's shared secret files";
      wantedBy = [ "multi-user.target" ];
      before = [
        "postgresql.service"
        "redis-workorder.service"
        "workorder-database-password.service"
        "workorder-migrate.service"
        "workorder-gunicorn.service"
        "workorder-daphne.service"
        "prometheus.service"
      ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
      };
      # 0444: Prometheus (its own user) reads the token; the others are read by root (systemd
      # credentials, Redis' ExecStartPre).
      script = ''
        install -d -m 0755 ${secretDir}
      ''
      + lib.concatStrings (
        lib.mapAttrsToList (name: value: ''
          printf '%s' '${value}' > ${secretPath name}
          chmod 0444 ${secretPath name}
        '') secrets
      );
    };
  };

  address = nodes: name: nodes.${name}.networking.primaryIPAddress;
  appNodeNames = [
    "app1"
    "app2"
  ];

  appNode =
    { singletonJobs }:
    {
      config,
      nodes,
      pkgs,
      ...
    }:
    {
      imports = [
        module
        testSecrets
      ];
      virtualisation = {
        memorySize = 3072;
        cores = 2;
      };
      services.workorder = {
        enable = true;
        role = "app";
        # The name clients use: the balancer passes it on as Host.
        hostName = "lb";
        nodes = 2;
        inherit singletonJobs;
        secretKeyFile = secretPath "secret-key";
        metricsTokenFile = secretPath "metrics-token";
        listen.address = config.networking.primaryIPAddress;
        trustedProxies = [ (address nodes "lb") ];
        monitoring.scrapers = [ (address nodes "lb") ];
        gunicorn.workers = 5;
        database = {
          host = address nodes "db";
          passwordFile = secretPath "db-password";
        };
        redis = {
          url = "redis://${address nodes "db"}:6380/0";
          passwordFile = secretPath "redis-password";
        };
      };
      environment.systemPackages = [
        pkgs.curl
        pkgs.jq
      ];
    };

  scripts = pkgs: {
    failoverLoad = pkgs.writeScriptBin "failover-load" (
      "#!${pkgs.python3}/bin/python3\n" + builtins.readFile ./failover-load.py
    );
    wsListen = pkgs.writeScriptBin "ws-listen" (
      "#!${pkgs.python3.withPackages (ps: [ ps.websocket-client ])}/bin/python3\n"
      + builtins.readFile ./ws-listen.py
    );
  };
in
{
  name = "workorder-vm-multinode";

  # Boot, seeding, the SLA run and the failover run, with margin for a slow builder.
  globalTimeout = 2 * 3600;

  defaults.systemd.enableStrictShellChecks = true;

  nodes.db =
    { config, nodes, ... }:
    {
      imports = [
        module
        testSecrets
      ];
      virtualisation = {
        memorySize = 3072;
        cores = 2;
        diskSize = 8192;
      };
      services.workorder = {
        enable = true;
        role = "database";
        databaseServer = {
          listenAddress = config.networking.primaryIPAddress;
          clients = map (address nodes) appNodeNames;
        };
        database.passwordFile = secretPath "db-password";
        redis.passwordFile = secretPath "redis-password";
        monitoring.scrapers = [ (address nodes "lb") ];
      };
    };

  nodes.app1 = {
    imports = [
      (appNode { singletonJobs = true; })
      (import ./loadtest-seed.nix {
        inherit password;
        workOrders = 5000;
      })
    ];
  };
  nodes.app2 = appNode { singletonJobs = false; };

  nodes.lb =
    { nodes, pkgs, ... }:
    {
      imports = [
        module
        testSecrets
      ];
      virtualisation = {
        memorySize = 2048;
        cores = 2;
      };
      networking.firewall.allowedTCPPorts = [ 80 ];
      services.workorder = {
        enable = true;
        role = "balancer";
        hostName = "lb";
        balancer.appNodes = map (address nodes) appNodeNames;
        # Every Locust user comes from the client's one address (as in vm-loadtest).
        nginx.rateLimit = {
          rate = "300r/s";
          burst = 600;
        };
        # The monitoring host of this cluster: Prometheus scrapes every machine.
        monitoring = {
          prometheus.enable = true;
          metricsTokenFile = secretPath "metrics-token";
          scrapeTargets = {
            django = map (name: "${address nodes name}:8000") appNodeNames;
            node = map (name: "${address nodes name}:9100") (appNodeNames ++ [ "db" ]);
            postgres = [ "${address nodes "db"}:9187" ];
            redis = [ "${address nodes "db"}:9121" ];
          };
        };
      };
      environment.systemPackages = [
        pkgs.curl
        pkgs.jq
        (scripts pkgs).wsListen
      ];
    };

  nodes.client =
    { pkgs, ... }:
    {
      virtualisation = {
        memorySize = 2048;
        cores = 2;
      };
      environment.systemPackages = [
        workorder-loadtest
        pkgs.curl
        (scripts pkgs).failoverLoad
      ];
    };

  testScript =
    { nodes, ... }:
    let
      ip = address nodes;
    in
    ''
      import json
      import os
      import re
      import time

      out_dir = os.environ.get("out", os.getcwd())
      apps = [app1, app2]

      # The database host first (an app node's workorder-migrate needs it), then both app nodes at
      # once: their migrate_locked race for the lock.
      db.start()
      db.wait_for_unit("postgresql.target")
      db.wait_for_unit("redis-workorder.service")
      db.wait_for_unit("workorder-database-password.service")
      app1.start()
      app2.start()
      lb.start()
      client.start()

      with subtest("every machine comes up in its role"):
          for app in apps:
              app.wait_for_unit("workorder.target", timeout=3600)
              for unit in ["workorder-migrate", "workorder-gunicorn", "workorder-daphne"]:
                  app.succeed(f"systemctl is-active {unit}.service")
          app1.succeed("systemctl is-active workorder-seed-loadtest.service")
          lb.wait_for_unit("nginx.service")
          lb.wait_for_open_port(80)
          client.wait_for_unit("multi-user.target")
          # Each role runs its part only.
          for app in apps:
              app.fail("systemctl cat postgresql.service", "systemctl cat nginx.service", "systemctl cat redis-workorder.service")
          db.fail("systemctl cat workorder-gunicorn.service", "systemctl cat workorder-daphne.service", "systemctl cat nginx.service")
          lb.fail("systemctl cat workorder-gunicorn.service", "systemctl cat postgresql.service", "systemctl cat redis-workorder.service")
          # Singleton jobs: pruning on app1 only, backups where the database is.
          app1.succeed("systemctl cat workorder-prune-idempotency-keys.timer")
          app2.fail("systemctl cat workorder-prune-idempotency-keys.timer")
          db.succeed("systemctl cat workorder-backup.timer")

      with subtest("the migrations ran once, on one node"):
          applied = []
          for app in apps:
              log = app.succeed("journalctl -u workorder-migrate.service -o cat --no-pager")
              applied.append(len(re.findall(r"^\s*Applying \S+", log, re.MULTILINE)))
          rows = int(db.succeed("runuser -u postgres -- psql -tAc 'SELECT count(*) FROM django_migrations' workorder").strip())
          t.assertEqual(sorted(applied)[0], 0, f"both nodes applied migrations: {applied}")
          t.assertEqual(sum(applied), rows, f"applied {applied}, django_migrations has {rows} rows")

      with subtest("the nodes and the database answer their peers only"):
          client.wait_until_succeeds("curl -fsS http://lb/health/", timeout=120)
          for name, port in [("app1", 8000), ("app1", 8002), ("app2", 8000), ("db", 5432), ("db", 6380)]:
              client.fail(f"timeout 5 bash -c '</dev/tcp/{name}/{port}'")
          app1.succeed("timeout 5 bash -c '</dev/tcp/${ip "db"}/5432'")
          app1.succeed("timeout 5 bash -c '</dev/tcp/${ip "db"}/6380'")
          lb.succeed("curl -fsS http://${ip "app2"}:8000/health/ -H 'Host: lb'")
          # /ready/ on each node's loopback listener: PostgreSQL, Redis and migrations are fine.
          for app in apps:
              app.wait_until_succeeds("curl -fsS http://127.0.0.1:9808/ready/", timeout=300)

      with subtest("the balancer: headers, static files, closed /metrics and /ready/"):
          headers = client.succeed("curl -sS -D - -o /dev/null http://lb/health/").lower()
          t.assertIn("x-content-type-options: nosniff", headers)
          client.succeed("curl -fsS -o /dev/null http://lb/static/admin/css/base.css")
          for path in ["/metrics", "/metrics/", "/ready/"]:
              http_code = client.succeed(f"curl -s -o /dev/null -w '%{{http_code}}' http://lb{path}").strip()
              t.assertEqual(http_code, "403", f"the balancer must not expose {path}")

      with subtest("Prometheus on lb scrapes every machine"):
          lb.wait_until_succeeds(
              "curl -fsS 'http://127.0.0.1:9090/api/v1/targets?state=active' | "
              "jq -e '[.data.activeTargets[] | select(.health == \"up\")] | length == 10'",
              timeout=300,
          )
          jobs = lb.succeed(
              "curl -fsS 'http://127.0.0.1:9090/api/v1/targets?state=active' | "
              "jq -r '[.data.activeTargets[].labels.job] | sort | join(\",\")'"
          ).strip()
          t.assertEqual(jobs, "django,django,mtail,nginx,node,node,node,node,postgres,redis")

      with subtest("a WebSocket on app1 receives a notification created through app2"):
          issued = app1.succeed("workorder-manage issue_token loadtest-maker-0001")
          found = re.search(r"[0-9a-f]{40}", issued)
          assert found is not None, issued
          token = found.group(0)
          lb.succeed(
              "systemd-run --unit=ws-listen ws-listen "
              f"'ws://${ip "app1"}:8002/ws/notifications/?token={token}' lb through-app2 /tmp/ws-connected /tmp/ws-received"
          )
          lb.wait_until_succeeds("test -e /tmp/ws-connected", timeout=60)
          app2.succeed(
              "workorder-manage shell -c \""
              "from django.contrib.auth import get_user_model; "
              "from workorder.notifications.services import notify; "
              "notify([get_user_model().objects.get(username='loadtest-maker-0001')], 'work_order_approved', 'through-app2')\""
          )
          received = json.loads(lb.wait_until_succeeds("cat /tmp/ws-received", timeout=60))
          t.assertEqual(received.get("kind"), "work_order_approved", received)

      with subtest("load test through the balancer: ${toString users} users for ${runTime}, SLA gate"):
          status, output = client.execute(
              "workorder-loadtest --host http://lb --users ${toString users} --spawn-rate ${toString spawnRate} --reset-stats "
              "--run-time ${runTime} --report-dir /tmp/loadtest-report --password ${password} "
              "2>&1 | tee /tmp/loadtest-report.log; exit ''${PIPESTATUS[0]}",
              timeout=1800,
          )
          client.succeed("mkdir -p /tmp/loadtest-report && cp /tmp/loadtest-report.log /tmp/loadtest-report/")
          client.copy_from_vm("/tmp/loadtest-report")
          client.log(output[-20000:])
          t.assertEqual(status, 0, f"workorder-loadtest exit code {status}; the report is in {out_dir}/loadtest-report")
          summary = json.loads(client.succeed("cat /tmp/loadtest-report/summary.json"))
          t.assertEqual(summary["verdict"], "pass")

      with subtest("app1's gunicorn and daphne stopped under load: no acknowledged write lost"):
          client.succeed(
              "systemd-run --unit=failover-load failover-load --host http://lb --users ${toString failoverUsers} "
              "--seconds ${toString failoverSeconds} --password ${password} "
              "--stopped-file /tmp/app1-stopped --out /tmp/failover.json"
          )
          time.sleep(20)
          # The stamp first: a request failing while gunicorn shuts down counts as after the stop.
          client.succeed("date +%s.%N > /tmp/app1-stopped")
          app1.succeed("systemctl stop workorder-gunicorn.service workorder-daphne.service")
          client.wait_until_succeeds("test -s /tmp/failover.json", timeout=${toString (failoverSeconds + 300)})
          client.copy_from_vm("/tmp/failover.json")
          result = json.loads(client.succeed("cat /tmp/failover.json"))
          client.log(json.dumps({k: (len(v) if isinstance(v, list) else v) for k, v in result.items()}))
          t.assertGreater(result["requests_before_stop"], 100, "too little load before the stop")
          t.assertGreater(result["requests_after_5s"], 20, "too little load after the stop")
          t.assertEqual(result["failed_before_stop"], [])
          # Only what app1 held may fail: at most one request in flight per user.
          t.assertLessEqual(len(result["failed_within_5s_of_stop"]), ${toString failoverUsers}, result["failed_within_5s_of_stop"])
          t.assertEqual(result["failed_after_5s"], [])
          t.assertEqual(result["still_unknown"], 0)
          ids = result["acknowledged"]
          t.assertGreater(len(ids), 0)
          id_list = ",".join(str(i) for i in ids)
          stored = int(db.succeed(
              f"runuser -u postgres -- psql -tAc 'SELECT count(*) FROM production_workorder WHERE id IN ({id_list})' workorder"
          ).strip())
          t.assertEqual(stored, len(ids), "acknowledged writes missing from the database")
          # app2 alone serves now, through the balancer.
          client.succeed("curl -fsS http://lb/health/")

      with subtest("record the monitoring state"):
          lb.succeed("mkdir -p /tmp/server-state")
          lb.succeed("curl -fsS http://127.0.0.1:9090/api/v1/targets > /tmp/server-state/targets.json")
          lb.succeed("curl -fsS http://127.0.0.1:9090/api/v1/alerts > /tmp/server-state/alerts.json")
          lb.copy_from_vm("/tmp/server-state")
    '';
}
