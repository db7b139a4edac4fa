# The whole production stack in a VM, load-tested from a second VM against the SLA.
#
#   nix build .#checks.x86_64-linux.vm-loadtest -L        # the report lands in ./result/
#   nix build .#checks.x86_64-linux.vm-loadtest.driverInteractive && ./result/bin/nixos-test-driver
#
# Output ($out, i.e. ./result):
#   loadtest-report/   workorder-loadtest's HTML report, CSV stats, JSON summary (SLA verdict), log
#   hardening/         `systemd-analyze security` of every workorder unit (exposure score per unit)
#   server-state/      Prometheus targets and rule health at the end of the run
{
  module,
  workorder-loadtest,
}:
{ lib, ... }:
let
  # The seeded account pool (nix/tests/loadtest-seed.nix): only lives inside this VM.
  password = "vm-loadtest-password";
  users = 100;
  # Users start at 2/s (each login costs ~0.3 s of PBKDF2 CPU on the server; at 10/s the hashing
  # alone would saturate it), and --reset-stats judges the SLA on the steady state with all users
  # running: 50 s of ramp-up + 90 s measured, as in the Debian stack test (tests/stack).
  spawnRate = 2;
  runTime = "140s";

  # ws-check URL open|refused: does the notifications WebSocket stay open, or is it refused
  # (HTTP error at the handshake, or a close frame right after it)?
  wsCheck =
    pkgs:
    pkgs.writeScriptBin "ws-check" ''
      #!${pkgs.python3.withPackages (ps: [ ps.websocket-client ])}/bin/python3
      import sys

      import websocket

      url, expect = sys.argv[1], sys.argv[2]
      try:
          ws = websocket.create_connection(url, timeout=5)
      except websocket.WebSocketBadStatusException as exc:
          print(f"handshake refused: HTTP {exc.status_code}")
          sys.exit(0 if expect == "refused" else 1)
      try:
          frame = ws.recv()  # "" when the server sent a close frame
          state = "refused" if frame == "" else "open"
          print(f"first frame: {frame!r}")
      except websocket.WebSocketTimeoutException:
          state = "open"  # nothing to say yet, but still connected
      except websocket.WebSocketConnectionClosedException:
          state = "refused"
      ws.close()
      print(state)
      sys.exit(0 if state == expect else 1)
    '';
in
{
  name = "workorder-vm-loadtest";

  # Booting, seeding 20,000 work orders and the load run take well under an hour on a build
  # machine with KVM; the driver's default (3600 s) would leave no margin on a slow one.
  globalTimeout = 2 * 3600;

  # Every shell snippet NixOS generates for these machines passes shellcheck. The module itself
  # runs no generated script (nix/scripts/ are shellchecked by CI), so a failure here points at a
  # nixpkgs unit; a canary worth having.
  defaults.systemd.enableStrictShellChecks = true;

  nodes.server =
    { pkgs, ... }:
    {
      imports = [
        module
        (import ./loadtest-seed.nix {
          inherit password;
          workOrders = 20000;
        })
      ];

      # PostgreSQL + Redis + gunicorn workers + daphne + nginx + Prometheus and four exporters,
      # seeded with 20,000 work orders: give it room (pretix/netbox tests use 2048 for far less).
      virtualisation = {
        memorySize = 6144;
        cores = 4;
        diskSize = 8192;
      };

      networking.firewall.allowedTCPPorts = [ 80 ];

      services.workorder = {
        enable = true;
        hostName = "server";
        gunicorn.workers = 9;
        # Every Locust user comes from the client VM's single address; the module default
        # (10 r/s, burst 20 per address) would throttle the test itself. Same values as the
        # production-stack test (tests/stack/conftest.py).
        nginx.rateLimit = {
          rate = "300r/s";
          burst = 600;
        };
      };

      environment.systemPackages = [
        pkgs.curl
        pkgs.jq
      ];
    };

  nodes.client =
    { pkgs, ... }:
    {
      # Locust with 100 users and the SLA gate's own CPU check: a load generator of its own.
      virtualisation = {
        memorySize = 2048;
        cores = 2;
      };
      environment.systemPackages = [
        workorder-loadtest
        pkgs.curl
        (wsCheck pkgs)
      ];
    };

  testScript = ''
    import json
    import os
    import re

    out_dir = os.environ.get("out", os.getcwd())
    units = ["workorder-migrate", "workorder-seed-loadtest", "workorder-gunicorn", "workorder-daphne", "workorder-backup", "workorder-mtail"]

    start_all()

    with subtest("the stack comes up"):
        # workorder.target is reached after migrations, the load-test seed (20,000 work orders),
        # gunicorn (Type=notify: READY=1 once it listens) and daphne.
        server.wait_for_unit("workorder.target", timeout=3600)
        # The target only wants its units: check that each one really succeeded.
        for unit in ["workorder-migrate", "workorder-seed-loadtest", "workorder-gunicorn", "workorder-daphne"]:
            server.succeed(f"systemctl is-active {unit}.service")
        server.wait_for_unit("nginx.service")
        server.wait_for_open_unix_socket("/run/workorder/gunicorn.sock")
        server.wait_for_open_unix_socket("/run/workorder/daphne.sock")
        server.wait_for_open_port(80)
        server.wait_for_unit("prometheus.service")
        client.wait_for_unit("multi-user.target")

    with subtest("/health/ through nginx, /ready/ on gunicorn's loopback listener only"):
        client.wait_until_succeeds("curl -fsS http://server/health/", timeout=120)
        ready = server.wait_until_succeeds("curl -fsS http://127.0.0.1:9808/ready/", timeout=300)
        server.log(f"/ready/: {ready}")
        ready_outside = client.succeed("curl -s -o /dev/null -w '%{http_code}' http://server/ready/").strip()
        t.assertEqual(ready_outside, "403", "nginx must not expose /ready/")

    with subtest("security headers, static files, closed /metrics/"):
        headers = client.succeed("curl -sS -D - -o /dev/null http://server/health/").lower()
        for header in ["x-content-type-options: nosniff", "x-frame-options: deny", "referrer-policy: same-origin"]:
            t.assertIn(header, headers)
        client.succeed("curl -fsS -o /dev/null http://server/static/admin/css/base.css")
        for path in ["/metrics", "/metrics/", "/metrics/x"]:
            metrics_status = client.succeed(f"curl -s -o /dev/null -w '%{{http_code}}' http://server{path}").strip()
            t.assertEqual(metrics_status, "403", f"nginx must not expose {path}")
        other = client.succeed("curl -s -o /dev/null -w '%{http_code}' http://server/metricsX").strip()
        t.assertEqual(other, "404", "/metricsX is not a metrics path")
        root = client.succeed("curl -s -o /dev/null -w '%{http_code} %{redirect_url}' http://server/").strip()
        t.assertEqual(root, "302 http://server/api/docs/")

    with subtest("nginx keeps its upstream connections to gunicorn open"):
        client.succeed("for i in $(seq 20); do curl -fsS -o /dev/null http://server/health/; done")
        pooled = int(server.succeed("ss -xHn state established | grep -c /run/workorder/gunicorn.sock || true").strip())
        t.assertGreaterEqual(pooled, 1, "nginx sends Connection: close to gunicorn (no keepalive pool)")
        # Prometheus' listener: gunicorn's loopback port, answered by the app from loopback only.
        server.succeed("curl -fsS -o /tmp/metrics.txt http://127.0.0.1:9808/metrics/")
        server.succeed("grep -q django_http_requests /tmp/metrics.txt")

    with subtest("workorder-manage for admins runs as the service user"):
        server.succeed("workorder-manage check")
        server.succeed("workorder-manage showmigrations --plan > /tmp/migrations.txt")
        server.succeed("grep -q '\\[X\\]' /tmp/migrations.txt")

    with subtest("a WebSocket through nginx"):
        output = server.succeed("workorder-manage issue_token loadtest-operator-0001")
        found = re.search(r"[0-9a-f]{40}", output)
        assert found is not None, output
        token = found.group(0)
        client.succeed(f"ws-check 'ws://server/ws/notifications/?token={token}' open")
        client.succeed("ws-check 'ws://server/ws/notifications/?token=wrong' refused")

    with subtest("Prometheus has every target up"):
        server.wait_until_succeeds(
            "curl -fsS 'http://127.0.0.1:9090/api/v1/targets?state=active' | "
            "jq -e '[.data.activeTargets[] | select(.health == \"up\")] | length == 6'",
            timeout=300,
        )
        jobs = server.succeed(
            "curl -fsS 'http://127.0.0.1:9090/api/v1/targets?state=active' | jq -r '[.data.activeTargets[].labels.job] | sort | join(\",\")'"
        ).strip()
        t.assertEqual(jobs, "django,mtail,nginx,node,postgres,redis")

    with subtest("load test: ${toString users} users for ${runTime}, SLA gate"):
        status, output = client.execute(
            "workorder-loadtest --host http://server --users ${toString users} --spawn-rate ${toString spawnRate} --reset-stats "
            "--run-time ${runTime} --report-dir /tmp/loadtest-report --password ${password} "
            "2>&1 | tee /tmp/loadtest-report.log; exit ''${PIPESTATUS[0]}",
            timeout=1800,
        )
        client.succeed("mkdir -p /tmp/loadtest-report && cp /tmp/loadtest-report.log /tmp/loadtest-report/")
        client.copy_from_vm("/tmp/loadtest-report")  # -> $out/loadtest-report
        client.log(output[-20000:])

    with subtest("past the in-flight limit nginx answers 503 at once, and mtail counts it"):
        # gunicorn frozen: 256 requests (services.workorder.nginx.requestsInFlight; one curl process,
        # a connection per request) stay in flight there, the next one is refused by nginx itself.
        server.succeed("systemctl kill --signal=SIGSTOP workorder-gunicorn.service")
        try:
            client.succeed(
                "curl -s --parallel --parallel-immediate --parallel-max 256 --max-time 120 --create-dirs "
                "-o '/tmp/held/#1' 'http://server/api/auth/me/?n=[1-256]' >/dev/null 2>&1 & sleep 3"
            )
            refused = client.succeed("curl -s -D - -o /dev/null --max-time 5 http://server/api/auth/me/").lower()
        finally:
            server.succeed("systemctl kill --signal=SIGCONT workorder-gunicorn.service")
        t.assertIn(" 503", refused.splitlines()[0])
        t.assertIn("retry-after: 1", refused)
        server.wait_until_succeeds(
            "curl -fsS -G http://127.0.0.1:9090/api/v1/query "
            "--data-urlencode 'query=sum(workorder_requests_shed_total{reason=\"in_flight_limit\"})' "
            "| jq -e '.data.result[0].value[1] | tonumber >= 1'",
            timeout=120,
        )
        client.wait_until_succeeds("curl -fsS http://server/health/", timeout=120)

    with subtest("record hardening and monitoring state"):
        server.succeed("mkdir -p /tmp/hardening /tmp/server-state")
        for unit in units:
            report = server.succeed(f"systemd-analyze security {unit}.service --no-pager || true")
            server.succeed(f"systemd-analyze security {unit}.service --no-pager > /tmp/hardening/{unit}.txt || true")
            match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", report)
            server.log(f"systemd-analyze security {unit}.service: exposure {match.group(1) if match else '?'}")
        server.succeed("systemd-analyze security --no-pager > /tmp/hardening/all-units.txt || true")
        server.succeed("curl -fsS http://127.0.0.1:9090/api/v1/targets > /tmp/server-state/targets.json")
        server.succeed("curl -fsS http://127.0.0.1:9090/api/v1/rules > /tmp/server-state/rules.json")
        server.succeed("curl -fsS http://127.0.0.1:9090/api/v1/alerts > /tmp/server-state/alerts.json")
        server.copy_from_vm("/tmp/hardening")  # -> $out/hardening
        server.copy_from_vm("/tmp/server-state")  # -> $out/server-state
        rules = json.loads(server.succeed("curl -fsS http://127.0.0.1:9090/api/v1/rules"))
        unhealthy = [r["name"] for g in rules["data"]["groups"] for r in g["rules"] if r.get("health") != "ok"]
        t.assertEqual(unhealthy, [], "every alert/recording rule evaluates")

    with subtest("the SLA verdict"):
        # 0 = SLA met, 1 = missed, 2 = invalid run or setup error (see docs/loadtest.md).
        t.assertEqual(status, 0, f"workorder-loadtest exit code {status}; the report is in {out_dir}/loadtest-report")
        summary = json.loads(client.succeed("cat /tmp/loadtest-report/summary.json"))
        t.assertEqual(summary["verdict"], "pass")
        # Like the production-stack test: the WebSocket user never failed (groups.ws, when present).
        ws = (summary.get("groups") or {}).get("ws")
        if ws is not None:
            t.assertEqual(int(ws.get("failures", 0)) + int(ws.get("no_response", 0) or 0), 0, ws)
  '';
}
