# services.workorder: the whole production stack on one NixOS host.
#
#   gunicorn (WSGI: /api/, /admin/, /health/, /ready/) and daphne (ASGI: /ws/) on unix sockets,
#   behind nginx (rate limiting, security headers, /static/ from the package, /media/ from the state
#   directory, /metrics/ closed); PostgreSQL over its unix socket with peer authentication; Redis on a
#   unix socket; a daily verified backup with 30-day retention; Prometheus scraping django, node,
#   postgres, redis and nginx with the project's alert rules.
#
# Modelled on nixpkgs' pretix and weblate modules. Every NixOS option used here is listed with the
# nixpkgs file that declares it in nix/README.md. The production-stack test (tests/stack/,
# tests/harness/nginx.py) mirrors this layout on Debian, so a difference shows up as a diff.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib)
    concatStringsSep
    escapeShellArgs
    filterAttrs
    hasPrefix
    hasSuffix
    literalExpression
    mapAttrs
    mkDefault
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    optional
    optionalAttrs
    optionalString
    types
    ;

  cfg = config.services.workorder;

  user = "workorder";
  group = "workorder";
  stateDir = "/var/lib/workorder";
  runtimeDir = "/run/workorder";
  gunicornSocket = "${runtimeDir}/gunicorn.sock";
  daphneSocket = "${runtimeDir}/daphne.sock";
  # prometheus_client multiprocess directory shared by gunicorn workers and daphne, so one scrape
  # of gunicorn's /metrics/ reports the sum over all processes (WebSocket gauge included).
  metricsDir = "${runtimeDir}/prometheus";
  backupMetricsFile = "${cfg.monitoring.textfileDirectory}/workorder_backup.prom";

  redisServer = config.services.redis.servers.workorder;
  localServicesOnly = cfg.database.createLocally && cfg.redis.createLocally;

  # gunicorn from the same Python package set as the application (pretix/weblate idiom).
  python = cfg.package.python;
  pythonEnv = python.buildEnv.override { extraLibs = [ (python.pkgs.toPythonModule cfg.package) ]; };

  staticRoot = "${cfg.package}/share/workorder/static";

  databaseUrl =
    if cfg.database.createLocally then
      "postgresql:///${cfg.database.name}?host=/run/postgresql"
    else if hasPrefix "/" cfg.database.host then
      "postgresql:///${cfg.database.name}?host=${cfg.database.host}&port=${toString cfg.database.port}&user=${cfg.database.user}"
    else
      "postgresql://${cfg.database.user}@${cfg.database.host}:${toString cfg.database.port}/${cfg.database.name}";

  vhost = config.services.nginx.virtualHosts.${cfg.hostName} or { };
  # forceSSL/onlySSL: every request arrives over TLS, so Django may insist on it (addSSL keeps
  # plain HTTP working on purpose and leaves WORKORDER_BEHIND_TLS off).
  behindTls = (vhost.forceSSL or false) || (vhost.onlySSL or false);

  toEnvValue =
    value:
    if builtins.isBool value then
      (if value then "true" else "false")
    else
      toString value;

  # The environment every workorder process gets (the contract in contracts.md).
  environment = mapAttrs (_: toEnvValue) (filterAttrs (_: value: value != null) cfg.settings);
  # gunicorn and daphne only: prometheus_client's multiprocess directory. Other processes
  # (migrate, seed, workorder-manage, backup) keep their metrics in memory: they could not write
  # to /run/workorder under ProtectSystem=strict, and their values must not mix into the scrape.
  serverEnvironment = environment // {
    PROMETHEUS_MULTIPROC_DIR = metricsDir;
  };

  # Secrets never enter the store: systemd copies them into $CREDENTIALS_DIRECTORY at start.
  credentials =
    optional (cfg.secretKeyFile != null) "secret_key:${cfg.secretKeyFile}"
    ++ optional (cfg.database.passwordFile != null) "database_password:${cfg.database.passwordFile}";

  exportCredentials = ''
    ${optionalString (cfg.secretKeyFile != null) ''
      export DJANGO_SECRET_KEY_FILE="$CREDENTIALS_DIRECTORY/secret_key"
    ''}
    ${optionalString (cfg.database.passwordFile != null) ''
      export DATABASE_PASSWORD_FILE="$CREDENTIALS_DIRECTORY/database_password"
    ''}
  '';

  # The shared hardening block (pretix's commonUnitConfig, tightened).
  hardening = {
    User = user;
    Group = group;
    SupplementaryGroups = optional cfg.redis.createLocally redisServer.group;
    WorkingDirectory = stateDir;
    StateDirectory = "workorder";
    StateDirectoryMode = "0750";
    EnvironmentFile = mkIf (cfg.environmentFile != null) cfg.environmentFile;
    LoadCredential = credentials;

    AmbientCapabilities = "";
    CapabilityBoundingSet = [ "" ];
    DevicePolicy = "closed";
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    NoNewPrivileges = true;
    PrivateDevices = true;
    PrivateMounts = true;
    PrivateTmp = true;
    ProcSubset = "pid";
    ProtectClock = true;
    ProtectControlGroups = true;
    ProtectHome = true;
    ProtectHostname = true;
    ProtectKernelLogs = true;
    ProtectKernelModules = true;
    ProtectKernelTunables = true;
    ProtectProc = "invisible";
    ProtectSystem = "strict";
    RemoveIPC = true;
    RestrictAddressFamilies = [
      "AF_UNIX"
      "AF_INET"
      "AF_INET6"
    ];
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    SystemCallArchitectures = "native";
    # @chown: gunicorn chowns its unix socket to its own uid/gid (pretix allows it the same way).
    SystemCallFilter = [
      "@system-service"
      "~@privileged"
      "@chown"
    ];
    SystemCallErrorNumber = "EPERM";
    UMask = "0027";
  }
  // optionalAttrs localServicesOnly {
    # PostgreSQL and Redis are unix sockets; Prometheus scrapes gunicorn on loopback.
    IPAddressAllow = [ "localhost" ];
    IPAddressDeny = [ "any" ];
  };

  serviceOrdering = {
    after = [
      "network.target"
    ]
    ++ optional cfg.database.createLocally "postgresql.target"
    ++ optional cfg.redis.createLocally "redis-workorder.service";
    requires =
      optional cfg.database.createLocally "postgresql.target"
      ++ optional cfg.redis.createLocally "redis-workorder.service";
  };

  # `workorder-manage` for admins: the service's environment and user (like pretix-manage).
  manageWrapper = pkgs.writeShellApplication {
    name = "workorder-manage";
    runtimeInputs = [ pkgs.util-linux ];
    text = ''
      if [ "$(id -u)" -ne 0 ] && [ "$(id -un)" != ${user} ]; then
        echo "workorder-manage: run it as root (sudo) or as ${user}" >&2
        exit 1
      fi
      ${concatStringsSep "\n" (
        lib.mapAttrsToList (name: value: "export ${name}=${lib.escapeShellArg value}") environment
      )}
      ${optionalString (cfg.environmentFile != null) ''
        set -a
        # shellcheck disable=SC1091
        source ${cfg.environmentFile}
        set +a
      ''}
      if [ "$(id -u)" -eq 0 ]; then
        # The secret files are usually root-only: pass their contents to the service user.
        ${optionalString (cfg.secretKeyFile != null) ''
          DJANGO_SECRET_KEY="$(cat ${cfg.secretKeyFile})"
          export DJANGO_SECRET_KEY
        ''}
        ${optionalString (cfg.database.passwordFile != null) ''
          DATABASE_PASSWORD="$(cat ${cfg.database.passwordFile})"
          export DATABASE_PASSWORD
        ''}
        true
      fi
      cd ${stateDir} || exit 1
      if [ "$(id -u)" -eq 0 ]; then
        exec runuser -u ${user} -- ${cfg.package}/bin/workorder-manage "$@"
      fi
      exec ${cfg.package}/bin/workorder-manage "$@"
    '';
  };

  # nginx pieces shared by the locations (same layout as tests/harness/nginx.py).
  limitReq = "limit_req zone=workorder burst=${toString cfg.nginx.rateLimit.burst} nodelay;";
  securityHeaders = concatStringsSep "\n" (
    lib.mapAttrsToList (name: value: ''add_header ${name} "${value}" always;'') cfg.nginx.securityHeaders
  );

  ruleFiles = map (name: ./prometheus + "/${name}") (
    builtins.filter (name: hasSuffix ".rules.yml" name) (
      builtins.attrNames (
        if builtins.pathExists ./prometheus then builtins.readDir ./prometheus else { }
      )
    )
  );

  exporters = config.services.prometheus.exporters;
in
{
  options.services.workorder = {
    enable = mkEnableOption "the workorder service (gunicorn, daphne, nginx, PostgreSQL, Redis, backups, monitoring)";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = literalExpression "workorder.packages.\${system}.workorder (this flake's package)";
      description = "The workorder package. Its `python` passthru provides gunicorn from the same package set.";
    };

    hostName = mkOption {
      type = types.str;
      default = config.networking.fqdnOrHostName;
      defaultText = literalExpression "config.networking.fqdnOrHostName";
      example = "workorder.example.org";
      description = ''
        Name of the nginx virtual host; also the first entry of ALLOWED_HOSTS and the origin in
        CSRF_TRUSTED_ORIGINS. TLS is configured on the same virtual host, e.g.
        `services.nginx.virtualHosts."workorder.example.org" = { forceSSL = true; enableACME = true; };`
        (the service then sets WORKORDER_BEHIND_TLS).
      '';
    };

    settings = mkOption {
      type = types.attrsOf (
        types.nullOr (
          types.oneOf [
            types.bool
            types.int
            types.str
            types.path
          ]
        )
      );
      default = { };
      example = {
        TIME_ZONE = "Europe/Berlin";
        LOG_LEVEL = "WARNING";
        WORKORDER_STATISTICS_CACHE_SECONDS = 10;
      };
      description = ''
        Environment of every workorder process (see the environment variables in the README),
        merged over what the module sets (`DATABASE_URL`, `REDIS_URL`, `ALLOWED_HOSTS`, ...; those
        are set with `mkDefault`, so a value here wins). Booleans become `true`/`false`; `null`
        removes a variable. Put secrets in {option}`environmentFile` or the `*File` options, never here:
        this ends up in the world-readable Nix store.
      '';
    };

    secretKeyFile = mkOption {
      type = types.nullOr (types.pathWith { inStore = false; absolute = true; });
      default = null;
      example = "/run/secrets/workorder-secret-key";
      description = ''
        File holding Django's SECRET_KEY, read at runtime through systemd's `LoadCredential`
        (so it may be owned by root, mode 0400). When null, a key is generated once into
        `${stateDir}/secret_key`.
      '';
    };

    environmentFile = mkOption {
      type = types.nullOr (types.pathWith { inStore = false; absolute = true; });
      default = null;
      example = "/run/secrets/workorder.env";
      description = ''
        systemd `EnvironmentFile` for every workorder unit, for secrets in variables, e.g.
        `WORKORDER_METRICS_TOKEN=...` or `REDIS_URL=redis://:password@redis.internal:6379/0`.
      '';
    };

    gunicorn = {
      workers = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        example = 9;
        description = "GUNICORN_WORKERS; null uses the package default (2 x CPUs + 1).";
      };
      metricsPort = mkOption {
        type = types.port;
        default = 9808;
        description = ''
          Loopback TCP port on which gunicorn also listens, for Prometheus to scrape `/metrics/`.
          nginx never proxies `/metrics/`, and the application only answers it from loopback.
        '';
      };
      extraArgs = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "--log-level=debug" ];
        description = "Extra command line arguments for gunicorn (after the package's config).";
      };
    };

    daphne.extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "--verbosity=2" ];
      description = "Extra command line arguments passed through `workorder-daphne` to daphne.";
    };

    database = {
      createLocally = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Run PostgreSQL on this host (`services.postgresql`, database and role "workorder", peer
          authentication over the unix socket, no password).
        '';
      };
      host = mkOption {
        type = types.str;
        default = "/run/postgresql";
        example = "db.internal";
        description = "External PostgreSQL: host name, or the directory of its unix socket.";
      };
      port = mkOption {
        type = types.port;
        default = 5432;
        description = "External PostgreSQL: port.";
      };
      name = mkOption {
        type = types.str;
        default = "workorder";
        description = "Database name.";
      };
      user = mkOption {
        type = types.str;
        default = "workorder";
        description = "Database role.";
      };
      passwordFile = mkOption {
        type = types.nullOr (types.pathWith { inStore = false; absolute = true; });
        default = null;
        example = "/run/secrets/workorder-db-password";
        description = "External PostgreSQL: file with the role's password (read through `LoadCredential`).";
      };
    };

    redis = {
      createLocally = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Run a dedicated Redis (`services.redis.servers.workorder`) on a unix socket only; the
          service user joins its group. Used for the cache and the Channels layer.
        '';
      };
      url = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "redis://redis.internal:6379/0";
        description = ''
          External Redis URL (without a password; put `REDIS_URL` with a password in
          {option}`environmentFile` instead). Null without createLocally: in-process cache and
          channel layer, which only works with a single process.
        '';
      };
      maxMemory = mkOption {
        type = types.str;
        default = "256mb";
        description = "`maxmemory` of the local Redis (keys with a TTL are evicted first).";
      };
    };

    nginx = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = "Configure the nginx virtual host {option}`hostName` in front of gunicorn and daphne.";
      };
      rateLimit = {
        rate = mkOption {
          type = types.strMatching "[0-9]+r/[sm]";
          default = "10r/s";
          description = "Requests per client address (`limit_req_zone ... rate=`) for /api/, /admin/ and /ws/.";
        };
        burst = mkOption {
          type = types.ints.unsigned;
          default = 20;
          description = "Burst allowed above the rate (`limit_req ... burst= nodelay`); beyond it: 429.";
        };
      };
      webSocketTimeout = mkOption {
        type = types.str;
        default = "3600s";
        description = "`proxy_read_timeout`/`proxy_send_timeout` of /ws/ (long-lived connections).";
      };
      securityHeaders = mkOption {
        type = types.attrsOf types.str;
        default = {
          "X-Content-Type-Options" = "nosniff";
          "X-Frame-Options" = "DENY";
          "Referrer-Policy" = "same-origin";
          "Permissions-Policy" = "camera=(), microphone=(), geolocation=()";
          "Cross-Origin-Opener-Policy" = "same-origin";
        };
        description = "Headers added to every response of the virtual host (`add_header ... always`).";
      };
    };

    backup = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = "Daily `workorder-backup` (pg_dump custom format + media tar, sha256, retention).";
      };
      startAt = mkOption {
        type = types.str;
        default = "*-*-* 02:00:00";
        description = "systemd calendar expression for the backup timer (`Persistent = true`: a missed run happens at boot).";
      };
      directory = mkOption {
        type = types.str;
        default = "/var/backup/workorder";
        description = "Where backups are written (created 0700, owned by the service user).";
      };
      retentionDays = mkOption {
        type = types.ints.positive;
        default = 30;
        description = "Delete backups older than this many days ...";
      };
      keepAtLeast = mkOption {
        type = types.ints.positive;
        default = 7;
        description = "... but always keep this many newest verified backups, whatever their age.";
      };
      verifyRestore = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Restore each new dump into a scratch database and compare row counts (`--verify-restore`).
          The database role needs CREATEDB (granted automatically with database.createLocally).
        '';
      };
    };

    monitoring = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Prometheus scraping django (gunicorn's loopback listener), node (textfile and systemd
          collectors), postgres, redis and nginx exporters, with the project's rules from
          nix/prometheus/*.rules.yml. Everything listens on loopback only.
        '';
      };
      textfileDirectory = mkOption {
        type = types.str;
        default = "/var/lib/prometheus-node-exporter-text-files";
        description = "Directory of node exporter's textfile collector; the backup writes workorder_backup.prom there.";
      };
    };

    loadtest = {
      seed = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Create the load-test accounts and realistic data (`workorder-manage seed_loadtest --force`).
          For staging and the VM test only, never on production.
        '';
      };
      operators = mkOption {
        type = types.ints.unsigned;
        default = 200;
        description = "Number of loadtest-operator-NNNN accounts.";
      };
      supervisors = mkOption {
        type = types.ints.unsigned;
        default = 50;
        description = "Number of loadtest-supervisor-NNNN accounts.";
      };
      makers = mkOption {
        type = types.ints.unsigned;
        default = 50;
        description = "Number of loadtest-maker-NNNN accounts.";
      };
      workOrders = mkOption {
        type = types.ints.unsigned;
        default = 20000;
        description = "Work orders (with their tasks) to seed.";
      };
      password = mkOption {
        type = types.str;
        default = "loadtest-not-a-secret";
        description = ''
          Password of every load-test account. It ends up in the Nix store, which is fine for
          throw-away staging/VM accounts; use {option}`loadtest.passwordFile` otherwise.
        '';
      };
      passwordFile = mkOption {
        type = types.nullOr (types.pathWith { inStore = false; absolute = true; });
        default = null;
        description = "File with the load-test accounts' password (wins over loadtest.password).";
      };
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = [
        {
          assertion =
            cfg.database.createLocally -> (cfg.database.name == user && cfg.database.user == user);
          message = "services.workorder.database.createLocally uses peer authentication: database.name and database.user must both be \"${user}\".";
        }
        {
          assertion = cfg.database.createLocally -> cfg.database.passwordFile == null;
          message = "services.workorder.database.passwordFile is for an external PostgreSQL (createLocally = false).";
        }
        {
          assertion = cfg.redis.createLocally -> cfg.redis.url == null;
          message = "services.workorder.redis.url is for an external Redis (createLocally = false).";
        }
      ];

      warnings = optional (!cfg.redis.createLocally && cfg.redis.url == null && cfg.environmentFile == null) ''
        services.workorder: no Redis configured; the cache and the Channels layer fall back to
        in-process backends, so WebSocket notifications from gunicorn never reach daphne.
      '';

      # The contract's environment; everything mkDefault so `settings` can override it.
      services.workorder.settings = mapAttrs (_: mkDefault) (
        {
          DJANGO_SETTINGS_MODULE = "workorder.settings";
          DJANGO_DEBUG = false;
          WORKORDER_STATE_DIR = stateDir;
          STATIC_ROOT = staticRoot;
          MEDIA_ROOT = "${stateDir}/media";
          ALLOWED_HOSTS = concatStringsSep "," [
            cfg.hostName
            "localhost"
            "127.0.0.1"
            "[::1]"
          ];
          CSRF_TRUSTED_ORIGINS =
            if behindTls then "https://${cfg.hostName}" else "http://${cfg.hostName},https://${cfg.hostName}";
          WORKORDER_BEHIND_TLS = behindTls;
          DATABASE_URL = databaseUrl;
          REDIS_URL =
            if cfg.redis.createLocally then "unix://${redisServer.unixSocket}?db=0" else cfg.redis.url;
          WORKORDER_METRICS_ALLOWED_NETWORKS = "127.0.0.0/8,::1/128";
          GUNICORN_BIND = "unix:${gunicornSocket},127.0.0.1:${toString cfg.gunicorn.metricsPort}";
          GUNICORN_WORKERS = cfg.gunicorn.workers;
          # nginx is the only client of the sockets: trust its X-Forwarded-* (gunicorn_conf's default).
          GUNICORN_FORWARDED_ALLOW_IPS = "127.0.0.1,::1";
          DAPHNE_BIND = "unix:${daphneSocket}";
        }
        // optionalAttrs (cfg.secretKeyFile == null) {
          # Generated once by workorder-migrate (below); readable only by the service user.
          DJANGO_SECRET_KEY_FILE = "${stateDir}/secret_key";
        }
      );

      users.users.${user} = {
        isSystemUser = true;
        inherit group;
        home = stateDir;
        description = "workorder service";
        extraGroups = optional cfg.redis.createLocally redisServer.group;
      };
      users.groups.${group} = { };

      systemd.tmpfiles.rules = [
        "d ${stateDir}/media 0750 ${user} ${group} - -"
      ]
      # The backup writes workorder_backup.prom here; node exporter (group workorder) reads it.
      ++ optional (cfg.backup.enable || cfg.monitoring.enable)
        "d ${cfg.monitoring.textfileDirectory} 0750 ${user} ${group} - -";

      environment.systemPackages = [ manageWrapper ];

      systemd.targets.workorder = {
        description = "workorder: migrations, gunicorn, daphne (and the load-test seed)";
        wantedBy = [ "multi-user.target" ];
        wants = [
          "workorder-migrate.service"
          "workorder-gunicorn.service"
          "workorder-daphne.service"
        ]
        ++ optional cfg.loadtest.seed "workorder-seed-loadtest.service";
        after = [
          "workorder-migrate.service"
          "workorder-gunicorn.service"
          "workorder-daphne.service"
        ]
        ++ optional cfg.loadtest.seed "workorder-seed-loadtest.service";
      };

      systemd.services.workorder-migrate = serviceOrdering // {
        description = "workorder: database migrations";
        partOf = [ "workorder.target" ];
        inherit environment;
        preStart = optionalString (cfg.secretKeyFile == null) ''
          if [ ! -s ${stateDir}/secret_key ]; then
            (umask 0077; tr -dc 'A-Za-z0-9' < /dev/urandom | head -c 64 > ${stateDir}/secret_key.tmp)
            mv ${stateDir}/secret_key.tmp ${stateDir}/secret_key
          fi
        '';
        script = ''
          ${exportCredentials}
          exec ${cfg.package}/bin/workorder-manage migrate --no-input
        '';
        path = [ pkgs.coreutils ];
        serviceConfig = hardening // {
          Type = "oneshot";
          RemainAfterExit = true;
          TimeoutStartSec = "15min";
        };
      };

      systemd.services.workorder-gunicorn = {
        description = "workorder: gunicorn (WSGI)";
        after = serviceOrdering.after ++ [ "workorder-migrate.service" ];
        requires = serviceOrdering.requires ++ [ "workorder-migrate.service" ];
        partOf = [ "workorder.target" ];
        environment = serverEnvironment;
        script = ''
          ${exportCredentials}
          exec ${lib.getExe' pythonEnv "gunicorn"} -c python:workorder.gunicorn_conf \
            ${escapeShellArgs cfg.gunicorn.extraArgs} workorder.wsgi:application
        '';
        serviceConfig = hardening // {
          # gunicorn's arbiter sends READY=1 once it listens (gunicorn/systemd.py).
          Type = "notify";
          NotifyAccess = "main";
          ExecReload = "${pkgs.coreutils}/bin/kill -s HUP $MAINPID";
          KillMode = "mixed";
          TimeoutStopSec = "70s";
          Restart = "on-failure";
          RestartSec = "2s";
          RuntimeDirectory = "workorder";
          RuntimeDirectoryMode = "0750";
          # shared with workorder-daphne: stopping one must not remove the other's socket
          RuntimeDirectoryPreserve = true;
          ExecStartPre = "${pkgs.coreutils}/bin/mkdir -p ${metricsDir}";
          LimitNOFILE = 65536;
        };
      };

      systemd.services.workorder-daphne = {
        description = "workorder: daphne (ASGI, WebSockets)";
        after = serviceOrdering.after ++ [ "workorder-migrate.service" ];
        requires = serviceOrdering.requires ++ [ "workorder-migrate.service" ];
        # gunicorn wipes the shared prometheus multiprocess directory when it starts
        # (gunicorn_conf.on_starting); restarting daphne with it re-creates daphne's metric files.
        partOf = [
          "workorder.target"
          "workorder-gunicorn.service"
        ];
        environment = serverEnvironment;
        script = ''
          ${exportCredentials}
          exec ${cfg.package}/bin/workorder-daphne ${escapeShellArgs cfg.daphne.extraArgs}
        '';
        serviceConfig = hardening // {
          # daphne does not implement sd_notify; "exec" still reports a failed exec.
          Type = "exec";
          KillMode = "mixed";
          TimeoutStopSec = "30s";
          Restart = "on-failure";
          RestartSec = "2s";
          RuntimeDirectory = "workorder";
          RuntimeDirectoryMode = "0750";
          RuntimeDirectoryPreserve = true;
          ExecStartPre = [
            "${pkgs.coreutils}/bin/mkdir -p ${metricsDir}"
            "${pkgs.coreutils}/bin/rm -f ${daphneSocket}"
          ];
          # Its socket must be writable by nginx (group); daphne writes no other files.
          UMask = "0007";
          LimitNOFILE = 65536;
          # Only unix sockets are needed when PostgreSQL and Redis are local.
          PrivateNetwork = localServicesOnly;
        }
        // optionalAttrs localServicesOnly { RestrictAddressFamilies = [ "AF_UNIX" ]; };
      };
    }

    (mkIf cfg.loadtest.seed {
      systemd.services.workorder-seed-loadtest = {
        description = "workorder: seed load-test accounts and data (staging/VM test only)";
        after = [ "workorder-migrate.service" ];
        requires = [ "workorder-migrate.service" ];
        partOf = [ "workorder.target" ];
        inherit environment;
        script = ''
          ${exportCredentials}
          ${
            if cfg.loadtest.passwordFile != null then
              ''password="$(cat "$CREDENTIALS_DIRECTORY/loadtest_password")"''
            else
              "password=${lib.escapeShellArg cfg.loadtest.password}"
          }
          exec ${cfg.package}/bin/workorder-manage seed_loadtest \
            --operators ${toString cfg.loadtest.operators} \
            --supervisors ${toString cfg.loadtest.supervisors} \
            --makers ${toString cfg.loadtest.makers} \
            --work-orders ${toString cfg.loadtest.workOrders} \
            --password "$password" --force
        '';
        serviceConfig = hardening // {
          Type = "oneshot";
          RemainAfterExit = true;
          TimeoutStartSec = "60min";
          LoadCredential =
            credentials
            ++ optional (cfg.loadtest.passwordFile != null) "loadtest_password:${cfg.loadtest.passwordFile}";
        };
      };
    })

    (mkIf cfg.database.createLocally {
      services.postgresql = {
        enable = true;
        ensureDatabases = [ cfg.database.name ];
        ensureUsers = [
          {
            name = cfg.database.user;
            ensureDBOwnership = true;
            # --verify-restore creates (and drops) a scratch database.
            ensureClauses = optionalAttrs (cfg.backup.enable && cfg.backup.verifyRestore) { createdb = true; };
          }
        ];
      };
    })

    (mkIf cfg.redis.createLocally {
      services.redis.servers.workorder = {
        enable = true;
        # port defaults to 0 for named servers: unix socket only.
        unixSocketPerm = 660;
        # cache and channel layer only: no persistence needed.
        save = [ ];
        settings = {
          maxmemory = cfg.redis.maxMemory;
          maxmemory-policy = "volatile-lru";
        };
      };
    })

    (mkIf cfg.nginx.enable {
      services.nginx = {
        enable = true;
        recommendedProxySettings = mkDefault true;
        recommendedGzipSettings = mkDefault true;
        recommendedOptimisation = mkDefault true;
        recommendedTlsSettings = mkDefault true;
        commonHttpConfig = ''
          # services.workorder: one rate-limit zone keyed by client address.
          limit_req_zone $binary_remote_addr zone=workorder:10m rate=${cfg.nginx.rateLimit.rate};
        '';
        upstreams = {
          workorder-gunicorn = {
            servers."unix:${gunicornSocket}" = { };
            # nginx closes idle pooled connections before gunicorn's keep-alive would.
            extraConfig = ''
              keepalive 32;
              keepalive_timeout 60s;
            '';
          };
          workorder-daphne.servers."unix:${daphneSocket}" = { };
        };
        virtualHosts.${cfg.hostName} = {
          extraConfig = ''
            limit_req_status 429;
            ${securityHeaders}
          '';
          locations = {
            "/api/" = {
              proxyPass = "http://workorder-gunicorn";
              extraConfig = limitReq;
            };
            "/admin/" = {
              proxyPass = "http://workorder-gunicorn";
              extraConfig = limitReq;
            };
            "= /health/".proxyPass = "http://workorder-gunicorn";
            "= /ready/".proxyPass = "http://workorder-gunicorn";
            "/ws/" = {
              proxyPass = "http://workorder-daphne";
              proxyWebsockets = true;
              extraConfig = ''
                # daphne logs every connection without the query string; nginx's $request would keep a ?token=.
                access_log off;
                proxy_read_timeout ${cfg.nginx.webSocketTimeout};
                proxy_send_timeout ${cfg.nginx.webSocketTimeout};
                proxy_buffering off;
                ${limitReq}
              '';
            };
            "/static/" = {
              alias = "${staticRoot}/";
              extraConfig = ''
                expires 30d;
                access_log off;
              '';
            };
            "/media/".alias = "${stateDir}/media/";
            # Prometheus scrapes gunicorn's loopback listener; never through nginx.
            "/metrics".extraConfig = "deny all;";
          };
        };
      };
      # nginx reaches the sockets in /run/workorder and the media files through the group.
      systemd.services.nginx.serviceConfig.SupplementaryGroups = [ group ];
    })

    (mkIf cfg.backup.enable {
      systemd.tmpfiles.rules = [ "d ${cfg.backup.directory} 0700 ${user} ${group} - -" ];

      systemd.services.workorder-backup = {
        description = "workorder: verified backup of PostgreSQL and media, with retention";
        after = serviceOrdering.after ++ [ "workorder-migrate.service" ];
        requires = optional cfg.database.createLocally "postgresql.target";
        inherit environment;
        # pg_dump/pg_restore of the server's own major version come first.
        path = [ config.services.postgresql.package ];
        script = ''
          ${exportCredentials}
          exec ${cfg.package}/bin/workorder-backup backup \
            --directory ${lib.escapeShellArg cfg.backup.directory} \
            --media-dir ${lib.escapeShellArg "${stateDir}/media"} \
            --retention-days ${toString cfg.backup.retentionDays} \
            --keep-at-least ${toString cfg.backup.keepAtLeast} \
            ${optionalString cfg.backup.verifyRestore "--verify-restore"} \
            --metrics-file ${lib.escapeShellArg backupMetricsFile}
        '';
        serviceConfig = hardening // {
          Type = "oneshot";
          ReadWritePaths = [
            cfg.backup.directory
            cfg.monitoring.textfileDirectory
          ];
          TimeoutStartSec = "6h";
          Nice = 10;
          IOSchedulingClass = "idle";
        };
      };

      systemd.timers.workorder-backup = {
        description = "workorder: daily backup";
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnCalendar = cfg.backup.startAt;
          Persistent = true;
          RandomizedDelaySec = "5min";
        };
      };
    })

    (mkIf cfg.monitoring.enable {
      services.nginx.statusPage = mkIf cfg.nginx.enable true;

      services.prometheus = {
        enable = true;
        listenAddress = mkDefault "127.0.0.1";
        globalConfig = {
          scrape_interval = mkDefault "15s";
          evaluation_interval = mkDefault "15s";
        };
        inherit ruleFiles;
        scrapeConfigs = [
          {
            job_name = "django";
            metrics_path = "/metrics/";
            static_configs = [ { targets = [ "127.0.0.1:${toString cfg.gunicorn.metricsPort}" ]; } ];
          }
          {
            job_name = "node";
            static_configs = [ { targets = [ "127.0.0.1:${toString exporters.node.port}" ]; } ];
          }
        ]
        ++ optional cfg.database.createLocally {
          job_name = "postgres";
          static_configs = [ { targets = [ "127.0.0.1:${toString exporters.postgres.port}" ]; } ];
        }
        ++ optional cfg.redis.createLocally {
          job_name = "redis";
          static_configs = [ { targets = [ "127.0.0.1:${toString exporters.redis.port}" ]; } ];
        }
        ++ optional cfg.nginx.enable {
          job_name = "nginx";
          static_configs = [ { targets = [ "127.0.0.1:${toString exporters.nginx.port}" ]; } ];
        };

        exporters = {
          node = {
            enable = true;
            listenAddress = "127.0.0.1";
            enabledCollectors = [ "systemd" ];
            extraFlags = [
              "--collector.textfile.directory=${cfg.monitoring.textfileDirectory}"
              "--collector.systemd.enable-restarts-metrics"
            ];
          };
          postgres = mkIf cfg.database.createLocally {
            enable = true;
            listenAddress = "127.0.0.1";
            runAsLocalSuperUser = true;
          };
          redis = mkIf cfg.redis.createLocally {
            enable = true;
            listenAddress = "127.0.0.1";
            extraFlags = [ "-redis.addr=unix://${redisServer.unixSocket}" ];
          };
          nginx = mkIf cfg.nginx.enable {
            enable = true;
            listenAddress = "127.0.0.1";
          };
        };
      };

      # node exporter reads workorder_backup.prom (mode 0640, group workorder).
      systemd.services.prometheus-node-exporter.serviceConfig.SupplementaryGroups = [ group ];
      systemd.services.prometheus-redis-exporter.serviceConfig.SupplementaryGroups = mkIf cfg.redis.createLocally [
        redisServer.group
      ];
    })
  ]);
}
