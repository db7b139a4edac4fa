# services.workorder: the whole production stack on one NixOS host.
#
#   gunicorn (WSGI: /api/, /admin/, /health/, /ready/) and daphne (ASGI: /ws/) on unix sockets,
#   behind nginx (rate limiting, security headers, /static/ from the package, /media/ from the state
#   directory, /metrics closed); PostgreSQL over its unix socket with peer authentication; Redis on a
#   unix socket; a daily verified backup with 30-day retention; monitoring (nix/monitoring.nix).
#
# Modelled on nixpkgs' pretix and weblate modules. The nginx layout, the environment, the backup
# command line and the hardening block come from nix/deployment.nix, which the Debian
# production-stack test renders too. Every NixOS option set here is listed in nix/README.md with
# its type, default and the nixpkgs file declaring it.
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  inherit (lib)
    concatStringsSep
    filterAttrs
    hasPrefix
    literalExpression
    mapAttrs
    mapAttrsToList
    mkDefault
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    mkRemovedOptionModule
    optional
    optionalAttrs
    types
    ;

  deployment = import ./deployment.nix;
  cfg = config.services.workorder;

  stateDir = "/var/lib/workorder";
  runtimeDir = "/run/workorder";
  gunicornSocket = "${runtimeDir}/gunicorn.sock";
  daphneSocket = "${runtimeDir}/daphne.sock";
  mediaDir = "${stateDir}/media";
  # prometheus_client's multiprocess directory, shared by the gunicorn workers and daphne.
  metricsDir = "${runtimeDir}/prometheus";
  generatedSecretKey = "${stateDir}/secret_key";

  redisServer = config.services.redis.servers.workorder;
  localServicesOnly = cfg.database.createLocally && cfg.redis.createLocally;

  # gunicorn from the same Python package set as the application (pretix/weblate idiom).
  python = cfg.package.python;
  pythonEnv = python.buildEnv.override { extraLibs = [ (python.pkgs.toPythonModule cfg.package) ]; };
  staticRoot = "${cfg.package}/${cfg.package.staticRoot}";

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

  # The environment of every workorder process: cfg.settings without the nulls.
  environment = mapAttrs (_: toEnvValue) (filterAttrs (_: value: value != null) cfg.settings);
  serverEnvironment = environment // deployment.serverEnvironment { multiprocDir = metricsDir; };
  environmentFile = pkgs.writeText "workorder-environment" (
    concatStringsSep "" (mapAttrsToList (name: value: "${name}=${value}\n") environment)
  );

  # Secrets reach the processes as systemd credentials (settings.py reads
  # $CREDENTIALS_DIRECTORY/<variable name in lower case>); they never enter the store.
  secrets =
    optionalAttrs (cfg.secretKeyFile != null) { DJANGO_SECRET_KEY = cfg.secretKeyFile; }
    // optionalAttrs (cfg.database.passwordFile != null) { DATABASE_PASSWORD = cfg.database.passwordFile; };
  credentials = mapAttrsToList (name: file: "${lib.toLower name}:${file}") secrets;

  hardening =
    deployment.hardening
    // {
      User = cfg.user;
      Group = cfg.group;
      SupplementaryGroups = optional cfg.redis.createLocally redisServer.group;
      WorkingDirectory = stateDir;
      StateDirectory = "workorder";
      StateDirectoryMode = "0750";
      EnvironmentFile = mkIf (cfg.environmentFile != null) cfg.environmentFile;
      LoadCredential = credentials;
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

  # `workorder-manage` for admins: the service's environment and user (like pretix-manage). The
  # logic is the committed nix/scripts/workorder-manage.sh, which CI runs and shellchecks.
  manageWrapper = pkgs.writeShellApplication {
    name = "workorder-manage";
    runtimeInputs = [
      pkgs.coreutils
      pkgs.util-linux
    ];
    text = ''
      export WORKORDER_MANAGE_BIN=${lib.escapeShellArg "${cfg.package}/bin/workorder-manage"}
      export WORKORDER_MANAGE_USER=${lib.escapeShellArg cfg.user}
      export WORKORDER_MANAGE_DIR=${lib.escapeShellArg stateDir}
      export WORKORDER_MANAGE_ENV_FILES=${
        lib.escapeShellArg (
          concatStringsSep ":" ([ "${environmentFile}" ] ++ optional (cfg.environmentFile != null) cfg.environmentFile)
        )
      }
      export WORKORDER_MANAGE_SECRETS=${
        lib.escapeShellArg (concatStringsSep ":" (mapAttrsToList (name: file: "${name}=${file}") secrets))
      }
      exec ${pkgs.bash}/bin/bash ${./scripts/workorder-manage.sh} "$@"
    '';
  };

  nginxLayout = deployment.nginx {
    inherit gunicornSocket daphneSocket staticRoot;
    mediaRoot = mediaDir;
    rateLimit = cfg.nginx.rateLimit.rate;
    rateBurst = cfg.nginx.rateLimit.burst;
    inherit (cfg.nginx) webSocketTimeout securityHeaders;
  };

  # The settings every deployment has, typed; anything else is free-form (RFC 42).
  settingOption =
    type: description:
    mkOption {
      inherit type description;
    };
  envValue = types.nullOr (
    types.oneOf [
      types.bool
      types.int
      types.str
    ]
  );
in
{
  imports = [
    ./monitoring.nix
  ]
  ++ map
    (
      name:
      mkRemovedOptionModule [ "services" "workorder" "loadtest" name ] ''
        Load-test accounts are no longer created by the production module. On staging, run
        `workorder-manage seed_loadtest --operators N --supervisors N --makers N --work-orders N --password PW`
        (see docs/loadtest.md); the VM test imports nix/tests/loadtest-seed.nix.
      ''
    )
    [
      "seed"
      "operators"
      "supervisors"
      "makers"
      "workOrders"
      "password"
      "passwordFile"
    ];

  options.services.workorder = {
    enable = mkEnableOption "the workorder service (gunicorn, daphne, nginx, PostgreSQL, Redis, backups, monitoring)";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = literalExpression "workorder.packages.\${system}.workorder (this flake's package)";
      description = "The workorder package. Its `python` passthru provides gunicorn from the same package set.";
    };

    user = mkOption {
      type = types.str;
      default = "workorder";
      description = "User account under which the workorder units run (created when it is the default).";
    };

    group = mkOption {
      type = types.str;
      default = "workorder";
      description = "Group of the workorder units; nginx joins it to reach the sockets and media files.";
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
      type = types.submodule {
        freeformType = types.attrsOf envValue;
        options = {
          DATABASE_URL = settingOption types.str "PostgreSQL URL (set from `database.*`).";
          REDIS_URL = mkOption {
            type = types.nullOr types.str;
            default = null;
            description = "Redis URL for the cache and the Channels layer (set from `redis.*`; null: in-process backends).";
          };
          ALLOWED_HOSTS = settingOption types.str "Comma-separated host names Django answers (from `hostName`).";
          CSRF_TRUSTED_ORIGINS = settingOption types.str "Comma-separated origins trusted for CSRF (from `hostName`).";
          WORKORDER_BEHIND_TLS = settingOption envValue "Secure cookies and HSTS; on when the virtual host forces TLS.";
          TIME_ZONE = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "Europe/Berlin";
            description = "Django's TIME_ZONE (null: UTC).";
          };
          LOG_LEVEL = mkOption {
            type = types.nullOr (
              types.enum [
                "DEBUG"
                "INFO"
                "WARNING"
                "ERROR"
                "debug"
                "info"
                "warning"
                "error"
              ]
            );
            default = null;
            description = "Log level of the workorder processes (null: INFO).";
          };
        };
      };
      default = { };
      example = {
        TIME_ZONE = "Europe/Berlin";
        LOG_LEVEL = "WARNING";
        WORKORDER_STATISTICS_CACHE_SECONDS = 10;
      };
      description = ''
        Environment of every workorder process (every variable is described in docs/runtime.md),
        merged over what the module derives from its other options (`DATABASE_URL`, `REDIS_URL`,
        `ALLOWED_HOSTS`, ...; set with `mkDefault`, so a value here wins). Booleans become
        `true`/`false`; `null` removes a variable. Put secrets in {option}`environmentFile` or the
        `*File` options, never here: this ends up in the world-readable Nix store.
      '';
    };

    secretKeyFile = mkOption {
      type = types.nullOr (
        types.pathWith {
          inStore = false;
          absolute = true;
        }
      );
      default = null;
      example = "/run/secrets/workorder-secret-key";
      description = ''
        File holding Django's SECRET_KEY, passed as the systemd credential `django_secret_key`
        (so it may be owned by root, mode 0400). When null, a key is generated once into
        `${generatedSecretKey}`.
      '';
    };

    environmentFile = mkOption {
      type = types.nullOr (
        types.pathWith {
          inStore = false;
          absolute = true;
        }
      );
      default = null;
      example = "/run/secrets/workorder.env";
      description = ''
        systemd `EnvironmentFile` for every workorder unit (and `workorder-manage`, which reads it
        as data, without a shell), for secrets in variables, e.g. `WORKORDER_METRICS_TOKEN=...` or
        `REDIS_URL=redis://:password@redis.internal:6379/0`.
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
          nginx never proxies `/metrics`, and the application only answers it from loopback.
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
        type = types.nullOr (
          types.pathWith {
            inStore = false;
            absolute = true;
          }
        );
        default = null;
        example = "/run/secrets/workorder-db-password";
        description = "External PostgreSQL: file with the role's password (the systemd credential `database_password`).";
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
          default = deployment.defaults.nginx.rateLimit;
          description = "Requests per client address (`limit_req_zone ... rate=`) for /api/, /admin/ and /ws/.";
        };
        burst = mkOption {
          type = types.ints.unsigned;
          default = deployment.defaults.nginx.rateBurst;
          description = "Burst allowed above the rate (`limit_req ... burst= nodelay`); beyond it: 429.";
        };
      };
      webSocketTimeout = mkOption {
        type = types.str;
        default = deployment.defaults.nginx.webSocketTimeout;
        description = "`proxy_read_timeout`/`proxy_send_timeout` of /ws/ (long-lived connections).";
      };
      securityHeaders = mkOption {
        type = types.attrsOf types.str;
        default = deployment.defaults.nginx.securityHeaders;
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
        default = deployment.defaults.backup.startAt;
        description = "systemd calendar expression for the backup timer (`Persistent = true`: a missed run happens at boot).";
      };
      directory = mkOption {
        type = types.str;
        default = "/var/backup/workorder";
        description = "Where backups are written (created 0700, owned by the service user).";
      };
      retentionDays = mkOption {
        type = types.ints.positive;
        default = deployment.defaults.backup.retentionDays;
        description = "Delete backups older than this many days ...";
      };
      keepAtLeast = mkOption {
        type = types.ints.positive;
        default = deployment.defaults.backup.keepAtLeast;
        description = "... but always keep this many newest verified backups, whatever their age.";
      };
      verifyRestore = mkOption {
        type = types.bool;
        default = deployment.defaults.backup.verifyRestore;
        description = ''
          Restore each new dump into a scratch database and compare row counts (`--verify-restore`).
          The database role needs CREATEDB (granted automatically with database.createLocally).
        '';
      };
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = [
        {
          assertion =
            cfg.database.createLocally -> (cfg.database.name == cfg.user && cfg.database.user == cfg.user);
          message = "services.workorder.database.createLocally uses peer authentication: database.name and database.user must both equal services.workorder.user (\"${cfg.user}\").";
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

      # The deployment's environment (nix/deployment.nix); mkDefault so `settings` can override it.
      services.workorder.settings = mapAttrs (_: mkDefault) (
        deployment.environment {
          inherit stateDir staticRoot behindTls databaseUrl;
          inherit (cfg) hostName;
          mediaRoot = mediaDir;
          redisUrl =
            if cfg.redis.createLocally then "unix://${redisServer.unixSocket}?db=0" else cfg.redis.url;
          gunicornBind = "unix:${gunicornSocket},127.0.0.1:${toString cfg.gunicorn.metricsPort}";
          daphneBind = "unix:${daphneSocket}";
          # With secretKeyFile the key arrives as a credential instead.
          secretKeyFile = if cfg.secretKeyFile == null then generatedSecretKey else null;
        }
        // optionalAttrs (cfg.gunicorn.workers != null) { GUNICORN_WORKERS = cfg.gunicorn.workers; }
      );

      users.users = mkIf (cfg.user == "workorder") {
        workorder = {
          isSystemUser = true;
          inherit (cfg) group;
          home = stateDir;
          description = "workorder service";
          extraGroups = optional cfg.redis.createLocally redisServer.group;
        };
      };
      users.groups = mkIf (cfg.group == "workorder") { workorder = { }; };

      systemd.tmpfiles.rules = [ "d ${mediaDir} 0750 ${cfg.user} ${cfg.group} - -" ];

      environment.systemPackages = [ manageWrapper ];

      systemd.targets.workorder = {
        description = "workorder: migrations, gunicorn, daphne";
        wantedBy = [ "multi-user.target" ];
        wants = [
          "workorder-migrate.service"
          "workorder-gunicorn.service"
          "workorder-daphne.service"
        ];
        after = [
          "workorder-migrate.service"
          "workorder-gunicorn.service"
          "workorder-daphne.service"
        ];
      };

      systemd.services.workorder-migrate = serviceOrdering // {
        description = "workorder: database migrations";
        partOf = [ "workorder.target" ];
        inherit environment;
        serviceConfig = hardening // {
          Type = "oneshot";
          RemainAfterExit = true;
          TimeoutStartSec = "15min";
          ExecStartPre = mkIf (cfg.secretKeyFile == null) (
            utils.escapeSystemdExecArgs [
              "${pkgs.bash}/bin/bash"
              ./scripts/generate-secret-key.sh
              generatedSecretKey
            ]
          );
          ExecStart = utils.escapeSystemdExecArgs [
            "${cfg.package}/bin/workorder-manage"
            "migrate"
            "--no-input"
          ];
        };
      };

      systemd.services.workorder-gunicorn = {
        description = "workorder: gunicorn (WSGI)";
        after = serviceOrdering.after ++ [ "workorder-migrate.service" ];
        requires = serviceOrdering.requires ++ [ "workorder-migrate.service" ];
        partOf = [ "workorder.target" ];
        environment = serverEnvironment;
        serviceConfig = hardening // {
          # gunicorn's arbiter sends READY=1 once it listens (gunicorn/systemd.py).
          Type = "notify";
          NotifyAccess = "main";
          ExecStart = utils.escapeSystemdExecArgs (
            [
              "${pythonEnv}/bin/gunicorn"
              "-c"
              "python:workorder.gunicorn_conf"
            ]
            ++ cfg.gunicorn.extraArgs
            ++ [ "workorder.wsgi:application" ]
          );
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
        # gunicorn empties the shared prometheus multiprocess directory when it starts
        # (gunicorn_conf.on_starting): daphne starts after it, and restarts with it (partOf), so
        # its metric files are always written after the wipe.
        after = serviceOrdering.after ++ [
          "workorder-migrate.service"
          "workorder-gunicorn.service"
        ];
        requires = serviceOrdering.requires ++ [ "workorder-migrate.service" ];
        partOf = [
          "workorder.target"
          "workorder-gunicorn.service"
        ];
        environment = serverEnvironment;
        serviceConfig = hardening // {
          # daphne does not implement sd_notify; "exec" still reports a failed exec.
          Type = "exec";
          ExecStart = utils.escapeSystemdExecArgs (
            [ "${cfg.package}/bin/workorder-daphne" ] ++ cfg.daphne.extraArgs
          );
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
        inherit (nginxLayout) commonHttpConfig upstreams;
        virtualHosts.${cfg.hostName} = {
          # The default server on its port: requests by address (or any other Host) reach workorder,
          # not the `localhost` virtual host that services.nginx.statusPage adds.
          default = mkDefault true;
          extraConfig = nginxLayout.virtualHostExtraConfig;
          inherit (nginxLayout) locations;
        };
      };
      # nginx reaches the sockets in /run/workorder and the media files through the group.
      systemd.services.nginx.serviceConfig.SupplementaryGroups = [ cfg.group ];
    })

    (mkIf cfg.backup.enable {
      systemd.tmpfiles.rules = [
        "d ${cfg.backup.directory} 0700 ${cfg.user} ${cfg.group} - -"
        # The backup writes workorder_backup.prom here; node exporter (group workorder) reads it.
        "d ${cfg.monitoring.textfileDirectory} 0750 ${cfg.user} ${cfg.group} - -"
      ];

      systemd.services.workorder-backup = {
        description = "workorder: verified backup of PostgreSQL and media, with retention";
        after = serviceOrdering.after ++ [ "workorder-migrate.service" ];
        requires = optional cfg.database.createLocally "postgresql.target";
        inherit environment;
        # pg_dump/pg_restore of the local server's own major version come first (the package's
        # wrapper falls back to nixpkgs' postgresql for an external server).
        path = optional config.services.postgresql.enable config.services.postgresql.package;
        serviceConfig = hardening // {
          Type = "oneshot";
          ExecStart = utils.escapeSystemdExecArgs (
            [ "${cfg.package}/bin/workorder-backup" ]
            ++ deployment.backupArgs {
              inherit (cfg.backup)
                directory
                retentionDays
                keepAtLeast
                verifyRestore
                ;
              inherit mediaDir;
              metricsFile = "${cfg.monitoring.textfileDirectory}/workorder_backup.prom";
            }
          );
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
  ]);
}
