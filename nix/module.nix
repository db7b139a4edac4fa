# services.workorder: the whole production stack on one NixOS host, or one role of several hosts.
#
#   gunicorn (WSGI: /api/, /admin/, /health/, /ready/) and daphne (ASGI: /ws/) on unix sockets,
#   behind nginx (rate limiting, security headers, /static/ from the package, /media/ from the state
#   directory, /metrics closed); PostgreSQL over its unix socket with peer authentication; Redis on a
#   unix socket; a daily verified backup with 30-day retention; monitoring (nix/monitoring.nix).
#
# `role` splits it over machines (docs/nixos.md, "Several machines"): "all" (the default, everything
# above on this host), "app" (gunicorn and daphne on TCP for a balancer, PostgreSQL and Redis
# elsewhere), "balancer" (nginx in front of the app nodes) and "database" (PostgreSQL and Redis for
# the app nodes, the backups and point-in-time recovery).
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
  # A secret read at runtime (a path outside the store, never copied into it), or null.
  secretFile = import ./secret-file.nix lib;
  sourceFirewall = import ./source-firewall.nix lib;
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
    optionals
    types
    ;

  deployment = import ./deployment.nix;
  cfg = config.services.workorder;

  # Roles: which parts of the stack run on this host.
  inherit (cfg) role;
  runsApp = role == "all" || role == "app";
  isAppNode = role == "app";
  isBalancer = role == "balancer";
  isDatabaseHost = role == "database";
  inherit (deployment) hostPort;
  # The firewall backend: networking.firewall.backend where this NixOS has it (iptables, nftables or
  # firewalld), else what networking.nftables.enable chooses.
  firewallBackend =
    config.networking.firewall.backend or (if config.networking.nftables.enable then "nftables" else "iptables");
  nftables = firewallBackend == "nftables";
  scrapers = cfg.monitoring.scrapers;

  isIpLiteral =
    host:
    builtins.match "[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+(/[0-9]+)?" host != null
    || builtins.match "[0-9a-fA-F:]*:[0-9a-fA-F:.]*(/[0-9]+)?" host != null;
  # The host of redis.url (redis://[:password@]host[:port]/db), without IPv6 brackets.
  redisUrlHost =
    let
      parts = builtins.match "rediss?://([^@/]*@)?([[][^]]*[]]|[^:/?]*).*" cfg.redis.url;
    in
    if cfg.redis.url == null || parts == null then
      null
    else
      lib.removePrefix "[" (lib.removeSuffix "]" (builtins.elemAt parts 1));
  backendHosts = [ cfg.database.host ] ++ optional (redisUrlHost != null) redisUrlHost;

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
  # The local Redis' password, generated once (workorder-redis-password.service) unless given.
  generatedRedisPassword = "/var/lib/workorder-redis/password";

  # The backup's own system user and PostgreSQL role (peer authentication), see nix/deployment.nix.
  backupUser = cfg.backup.user;
  inherit (deployment.defaults) metricsGroup;

  # gunicorn from the same Python package set as the application (pretix/weblate idiom).
  python = cfg.package.python;
  pythonEnv = python.buildEnv.override { extraLibs = [ (python.pkgs.toPythonModule cfg.package) ]; };
  staticRoot = "${cfg.package}/${cfg.package.staticRoot}";

  sslmode = lib.optionalString (cfg.database.sslmode != null) "sslmode=${cfg.database.sslmode}";
  databaseUrl =
    if cfg.database.createLocally then
      "postgresql:///${cfg.database.name}?host=/run/postgresql"
    else if hasPrefix "/" cfg.database.host then
      "postgresql:///${cfg.database.name}?host=${cfg.database.host}&port=${toString cfg.database.port}&user=${cfg.database.user}"
      + lib.optionalString (sslmode != "") "&${sslmode}"
    else
      "postgresql://${cfg.database.user}@${hostPort cfg.database.host cfg.database.port}/${cfg.database.name}"
      + lib.optionalString (sslmode != "") "?${sslmode}";
  # The backup unit connects as its own role on the local server (peer authentication: the unix user
  # of the same name); an external server is reached like the application does.
  backupDatabaseUrl =
    if cfg.database.createLocally then
      "postgresql:///${cfg.database.name}?host=/run/postgresql&user=${backupUser}"
    else
      databaseUrl;

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
    // optionalAttrs (cfg.database.passwordFile != null) { DATABASE_PASSWORD = cfg.database.passwordFile; }
    // optionalAttrs (cfg.redis.passwordFile != null) { REDIS_PASSWORD = cfg.redis.passwordFile; }
    // optionalAttrs (cfg.metricsTokenFile != null) { WORKORDER_METRICS_TOKEN = cfg.metricsTokenFile; };
  toCredentials = mapAttrsToList (name: file: "${lib.toLower name}:${file}");
  credentials = toCredentials secrets;

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
    }
    // optionalAttrs (isAppNode && cfg.peerAddresses != null) {
      # An app node: the balancers, the scrapers, PostgreSQL and Redis; nobody else.
      IPAddressAllow = lib.unique (
        [ "localhost" ] ++ cfg.trustedProxies ++ scrapers ++ cfg.peerAddresses
      );
      IPAddressDeny = [ "any" ];
    };

  # The backup unit: its own user; reads the media directory through the service group; no
  # credential but the database password of an external server. No StateDirectory: systemd would
  # hand /var/lib/workorder to this user.
  backupHardening =
    deployment.hardening
    // {
      User = backupUser;
      Group = backupUser;
      SupplementaryGroups = [ cfg.group ];
      WorkingDirectory = cfg.backup.directory;
      EnvironmentFile = mkIf (cfg.environmentFile != null) cfg.environmentFile;
      LoadCredential = toCredentials (
        optionalAttrs (!cfg.database.createLocally && cfg.database.passwordFile != null) {
          DATABASE_PASSWORD = cfg.database.passwordFile;
        }
      );
    }
    // optionalAttrs cfg.database.createLocally {
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

  nginxLayout = deployment.nginx (
    {
      inherit staticRoot;
      mediaRoot = mediaDir;
      rateLimit = cfg.nginx.rateLimit.rate;
      rateBurst = cfg.nginx.rateLimit.burst;
      inherit (cfg.nginx) requestsInFlight webSocketTimeout securityHeaders;
    }
    // (
      if isBalancer then
        {
          gunicornServers = map (node: hostPort node cfg.balancer.gunicornPort) cfg.balancer.appNodes;
          daphneServers = map (node: hostPort node cfg.balancer.daphnePort) cfg.balancer.appNodes;
        }
      else
        { inherit gunicornSocket daphneSocket; }
    )
  );
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
    ./pitr.nix
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

    role = mkOption {
      type = types.enum [
        "all"
        "app"
        "balancer"
        "database"
      ];
      default = "all";
      description = ''
        What this host runs (docs/nixos.md, "Several machines"):
        - `all`: the whole stack on one host (gunicorn and daphne on unix sockets behind nginx,
          PostgreSQL, Redis, backups);
        - `app`: an application node: migrations (once per cluster, under a lock), gunicorn and
          daphne on TCP ({option}`services.workorder.listen`) for the balancers in
          {option}`services.workorder.trustedProxies`, the firewall open to them only; PostgreSQL
          and Redis are external (`database.*`, `redis.*`);
        - `balancer`: nginx in front of {option}`services.workorder.balancer.appNodes` (the same
          layout as `all`: rate limits, headers, /ws/, /static/ from the package, /metrics closed);
        - `database`: PostgreSQL and Redis for {option}`services.workorder.databaseServer.clients`
          (password authentication, firewall open to them only), the daily backup and
          point-in-time recovery.
      '';
    };

    nodes = mkOption {
      type = types.ints.positive;
      default = 1;
      description = ''
        Application nodes sharing the database (`WORKORDER_NODES`). Above 1 every node needs the
        same {option}`services.workorder.secretKeyFile`.
      '';
    };

    trustedProxies = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "10.0.0.5" ];
      description = ''
        Role `app`: the balancers' addresses (or CIDR networks). Their `X-Real-IP` names the client
        (`WORKORDER_TRUSTED_PROXY_NETWORKS`, gunicorn's forwarded-allow-ips), and only they may
        reach gunicorn's and daphne's ports (firewall, `IPAddressAllow`).
      '';
    };

    listen = {
      address = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "10.0.0.11";
        description = ''
          Role `app`: the IP address on which gunicorn and daphne listen for the balancers (this
          node's private address; also accepted as a host name, for Prometheus scraping it).
        '';
      };
      gunicornPort = mkOption {
        type = types.port;
        default = deployment.defaults.nodeGunicornPort;
        description = "Role `app`: gunicorn's TCP port for the balancers (and `/metrics/` with the token).";
      };
      daphnePort = mkOption {
        type = types.port;
        default = deployment.defaults.nodeDaphnePort;
        description = "Role `app`: daphne's TCP port (WebSockets) for the balancers.";
      };
    };

    peerAddresses = mkOption {
      type = types.nullOr (types.listOf types.str);
      default =
        if isAppNode && cfg.redis.url != null && lib.all isIpLiteral backendHosts then
          lib.unique backendHosts
        else
          null;
      defaultText = literalExpression "[ database.host <redis.url's host> ] when both are IP addresses (role app), else null";
      example = [
        "10.0.0.10"
        "10.0.0.53"
      ];
      description = ''
        Role `app`: besides loopback, the balancers and the scrapers, the addresses the workorder
        units may exchange packets with (systemd `IPAddressAllow=`, everything else
        `IPAddressDeny=any`): PostgreSQL, Redis, and the DNS resolver when their names are
        resolved over the network. Null: no address restriction on the units.
      '';
    };

    metricsTokenFile = mkOption {
      type = secretFile;
      default = null;
      example = "/run/secrets/workorder-metrics-token";
      description = ''
        File with the bearer token Prometheus sends for `/metrics/` from outside loopback
        (`WORKORDER_METRICS_TOKEN`, the systemd credential `workorder_metrics_token`); the
        monitoring host's {option}`services.workorder.monitoring.metricsTokenFile` holds the same.
      '';
    };

    balancer = {
      appNodes = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [
          "10.0.0.11"
          "10.0.0.12"
        ];
        description = ''
          Role `balancer`: the application nodes' addresses. Each is a server of both nginx
          upstreams, with passive health checks (nix/deployment.nix).
        '';
      };
      gunicornPort = mkOption {
        type = types.port;
        default = deployment.defaults.nodeGunicornPort;
        description = "Role `balancer`: the nodes' gunicorn port ({option}`services.workorder.listen.gunicornPort` there).";
      };
      daphnePort = mkOption {
        type = types.port;
        default = deployment.defaults.nodeDaphnePort;
        description = "Role `balancer`: the nodes' daphne port ({option}`services.workorder.listen.daphnePort` there).";
      };
    };

    databaseServer = {
      listenAddress = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "10.0.0.10";
        description = ''
          Role `database`: the private address Redis binds to (besides 127.0.0.1). PostgreSQL
          listens on every interface (`enableTCPIP`); the firewall and `pg_hba.conf` admit
          {option}`services.workorder.databaseServer.clients` only.
        '';
      };
      clients = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [
          "10.0.0.11"
          "10.0.0.12"
        ];
        description = ''
          Role `database`: the application nodes' addresses (or CIDR networks). They alone may
          connect to PostgreSQL (`host <database> <user> <address> scram-sha-256`, the role's password
          from {option}`services.workorder.database.passwordFile`) and to Redis (the password of
          {option}`services.workorder.redis.passwordFile`).
        '';
      };
    };

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
      type = secretFile;
      default = null;
      example = "/run/secrets/workorder-secret-key";
      description = ''
        File holding Django's SECRET_KEY, passed as the systemd credential `django_secret_key`
        (so it may be owned by root, mode 0400). When null, a key is generated once into
        `${generatedSecretKey}`.
      '';
    };

    environmentFile = mkOption {
      type = secretFile;
      default = null;
      example = "/run/secrets/workorder.env";
      description = ''
        systemd `EnvironmentFile` for every workorder unit (and `workorder-manage`, which reads it
        as data, without a shell), for secrets in variables, e.g. `WORKORDER_METRICS_TOKEN=...` or
        `REDIS_URL=redis://:password@redis.internal:6379/0`.
      '';
    };

    singletonJobs = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Run the jobs that must run on one host of a cluster only: on roles `all` and `app` the
        hourly `workorder-manage prune_idempotency_keys` (deletes Idempotency-Key records older
        than 24 h); on roles `all` and `database` the timers of the daily backup and of
        point-in-time recovery (their services stay, for manual runs). With several application
        nodes on one database, keep it `true` on exactly one of them.
      '';
    };

    gunicorn = {
      workers = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        example = 9;
        description = "GUNICORN_WORKERS; null uses the package default (CPUs + 1, of 4 threads each).";
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
        default = role == "all" || role == "database";
        defaultText = literalExpression ''role == "all" || role == "database"'';
        description = ''
          Run PostgreSQL on this host (`services.postgresql`, database and role "workorder", peer
          authentication over the unix socket, no password; role `database` also admits the app
          nodes over TCP with a password).
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
        type = secretFile;
        default = null;
        example = "/run/secrets/workorder-db-password";
        description = ''
          External PostgreSQL: file with the role's password (the systemd credential
          `database_password`). Role `database`: the password set on the role (scram-sha-256) for
          the app nodes, the same file as theirs.
        '';
      };
      sslmode = mkOption {
        type = types.nullOr (
          types.enum [
            "disable"
            "allow"
            "prefer"
            "require"
            "verify-ca"
            "verify-full"
          ]
        );
        default = null;
        example = "require";
        description = "External PostgreSQL: libpq's `sslmode` in DATABASE_URL (null: libpq's default, `prefer`).";
      };
    };

    redis = {
      createLocally = mkOption {
        type = types.bool;
        default = role == "all" || role == "database";
        defaultText = literalExpression ''role == "all" || role == "database"'';
        description = ''
          Run a dedicated Redis (`services.redis.servers.workorder`) on a unix socket only; the
          service user joins its group. Used for the cache and the Channels layer. Role
          `database`: also on {option}`services.workorder.databaseServer.listenAddress`, port
          {option}`services.workorder.redis.port`, for the app nodes.
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
      passwordFile = mkOption {
        type = secretFile;
        default = if cfg.redis.createLocally then generatedRedisPassword else null;
        defaultText = literalExpression ''if createLocally then "${generatedRedisPassword}" else null'';
        example = "/run/secrets/workorder-redis-password";
        description = ''
          File with the Redis password (read at runtime, by root: the systemd credential
          `redis_password` of the workorder units, which put it into the Redis URL). With
          createLocally it is the local Redis' `requirePassFile` and the redis exporter's password;
          the default file is generated once (64 URL-safe characters) by
          `workorder-redis-password.service`. Null: no password (external Redis only).
        '';
      };
      port = mkOption {
        type = types.port;
        default = deployment.defaults.redisPort;
        description = ''
          TCP port of the local Redis (password required), on loopback: only the redis exporter
          uses it, the application connects through the unix socket, whose group the exporter is
          not in. Role `database`: also on {option}`services.workorder.databaseServer.listenAddress`
          for the app nodes (their `redis.url`).
        '';
      };
    };

    nginx = {
      enable = mkOption {
        type = types.bool;
        default = role == "all" || role == "balancer";
        defaultText = literalExpression ''role == "all" || role == "balancer"'';
        description = "Configure the nginx virtual host {option}`hostName` in front of gunicorn and daphne (roles `all` and `balancer`).";
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
      requestsInFlight = mkOption {
        type = types.ints.unsigned;
        default = deployment.defaults.nginx.requestsInFlight;
        description = ''
          Requests to gunicorn in flight (served or queued) per application node before nginx
          answers more at once with `503` and `Retry-After: 1` (`limit_conn` on /api/ and /admin/,
          counted by mtail as `workorder_requests_shed_total{reason="in_flight_limit"}`); 0: no
          limit. Past the capacity this keeps the queue, and so the served requests' latency, short.
        '';
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
        default = role == "all" || role == "database";
        defaultText = literalExpression ''role == "all" || role == "database"'';
        description = "Daily `workorder-backup` (pg_dump custom format + media tar, sha256, retention); the timer only with {option}`services.workorder.singletonJobs`.";
      };
      startAt = mkOption {
        type = types.str;
        default = deployment.defaults.backup.startAt;
        description = "systemd calendar expression for the backup timer (`Persistent = true`: a missed run happens at boot).";
      };
      user = mkOption {
        type = types.str;
        default = deployment.defaults.backupUser;
        description = ''
          System user of the backup unit and, with database.createLocally, its PostgreSQL role (peer
          authentication): CREATEDB for the scratch database of `verifyRestore`, `pg_read_all_data`
          to dump every table. The application's own role has neither. Created (with a group of
          the same name) when it is the default; another user needs a group of its own name too. It
          reads the media directory through {option}`services.workorder.group`.
        '';
      };
      directory = mkOption {
        type = types.str;
        default = "/var/backup/workorder";
        description = "Where backups are written (created 0700, owned by the backup user; the application cannot read or delete them).";
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
          The backup role needs CREATEDB (granted to it, and only to it, with database.createLocally).
        '';
      };
    };
  };

  config = mkIf cfg.enable (mkMerge [
    # Every role.
    {
      assertions = [
        {
          assertion = (runsApp && cfg.nodes > 1) -> cfg.secretKeyFile != null;
          message = "services.workorder.nodes = ${toString cfg.nodes}: every node needs the same secret key, set services.workorder.secretKeyFile (a key generated per node is refused).";
        }
        {
          assertion = isAppNode -> (!cfg.database.createLocally && !cfg.redis.createLocally);
          message = "services.workorder.role = \"app\": PostgreSQL and Redis run elsewhere (database.createLocally and redis.createLocally must be false; the role's defaults).";
        }
        {
          assertion = (role != "all" || scrapers != [ ]) -> firewallBackend != "firewalld";
          message = "services.workorder: the per-address firewall rules of the app, balancer and database roles are written for the iptables or nftables firewall, not firewalld.";
        }
        {
          assertion = lib.all isIpLiteral (cfg.databaseServer.clients ++ cfg.trustedProxies ++ scrapers);
          message = "services.workorder: databaseServer.clients, trustedProxies and monitoring.scrapers take IP addresses or networks (pg_hba and the firewall need literals), not host names.";
        }
        {
          assertion = isAppNode -> (cfg.listen.address != null && cfg.trustedProxies != [ ]);
          message = "services.workorder.role = \"app\" needs listen.address (this node's address for the balancers) and trustedProxies (the balancers' addresses).";
        }
        {
          assertion = isBalancer -> (cfg.balancer.appNodes != [ ] && cfg.nginx.enable);
          message = "services.workorder.role = \"balancer\" needs balancer.appNodes (the application nodes' addresses) and nginx.enable.";
        }
        {
          assertion = isBalancer -> (!cfg.database.createLocally && !cfg.redis.createLocally && !cfg.backup.enable);
          message = "services.workorder.role = \"balancer\" runs nginx only: database.createLocally, redis.createLocally and backup.enable must be false (the role's defaults).";
        }
        {
          assertion =
            isDatabaseHost
            -> (
              cfg.database.createLocally
              && cfg.redis.createLocally
              && cfg.databaseServer.listenAddress != null
              && cfg.databaseServer.clients != [ ]
            );
          message = "services.workorder.role = \"database\" needs database.createLocally and redis.createLocally (the role's defaults), databaseServer.listenAddress and databaseServer.clients (the app nodes' addresses).";
        }
        {
          assertion =
            isDatabaseHost
            -> (cfg.database.passwordFile != null && cfg.redis.passwordFile != generatedRedisPassword);
          message = "services.workorder.role = \"database\": set database.passwordFile and redis.passwordFile to the files the app nodes are given too (a password generated here would be known to this host only).";
        }
        {
          assertion = (role == "all" && cfg.database.createLocally) -> cfg.database.passwordFile == null;
          message = "services.workorder.database.passwordFile is for an external PostgreSQL (createLocally = false) or the database role.";
        }
      ];
    }

    # Roles all, app and database: the service user, its state directory and environment (the
    # database host's backup runs with it).
    (mkIf (!isBalancer) {
      assertions = [
        {
          assertion =
            cfg.database.createLocally -> (cfg.database.name == cfg.user && cfg.database.user == cfg.user);
          message = "services.workorder.database.createLocally uses peer authentication: database.name and database.user must both equal services.workorder.user (\"${cfg.user}\").";
        }
        {
          assertion = cfg.redis.createLocally -> cfg.redis.url == null;
          message = "services.workorder.redis.url is for an external Redis (createLocally = false).";
        }
        {
          assertion = cfg.redis.createLocally -> cfg.redis.passwordFile != null;
          message = "services.workorder.redis.passwordFile: the local Redis requires a password (leave the default to generate one).";
        }
        {
          assertion =
            (cfg.database.createLocally && cfg.backup.enable)
            -> lib.versionAtLeast config.services.postgresql.package.version "14";
          message = "services.workorder.backup: the backup role reads the database through pg_read_all_data, which needs PostgreSQL 14 or newer.";
        }
        {
          assertion = cfg.backup.enable -> backupUser != cfg.user;
          message = "services.workorder.backup.user must differ from services.workorder.user (the backup role has CREATEDB, the application's must not).";
        }
      ];

      warnings = optional (!cfg.redis.createLocally && cfg.redis.url == null && cfg.environmentFile == null) ''
        services.workorder: no Redis configured; the cache and the Channels layer fall back to
        in-process backends, so WebSocket notifications from gunicorn never reach daphne.
      '';

      # The deployment's environment (nix/deployment.nix); mkDefault so `settings` can override it.
      services.workorder.settings = mapAttrs (_: mkDefault) (
        deployment.environment (
          {
          inherit stateDir staticRoot behindTls databaseUrl;
          inherit (cfg) hostName;
          mediaRoot = mediaDir;
          redisUrl =
            if cfg.redis.createLocally then "unix://${redisServer.unixSocket}?db=0" else cfg.redis.url;
          # With secretKeyFile the key arrives as a credential instead.
          secretKeyFile = if cfg.secretKeyFile == null then generatedSecretKey else null;
          # The database host runs no application: the nodes' count is the app nodes' business.
          nodes = if runsApp then cfg.nodes else 1;
        }
        // (
          if isAppNode then
            {
              # The balancers' port, and loopback for the probes (/ready/, /metrics/ without token).
              gunicornBind = "${hostPort cfg.listen.address cfg.listen.gunicornPort},127.0.0.1:${toString cfg.gunicorn.metricsPort}";
              daphneBind = hostPort cfg.listen.address cfg.listen.daphnePort;
              trustedProxyNetworks = concatStringsSep "," cfg.trustedProxies;
              forwardedAllowIps = concatStringsSep "," cfg.trustedProxies;
              # Prometheus scrapes the node by its address (Host: <address>:<port>; Django
              # compares the host without the port).
              extraAllowedHosts = [
                (lib.removeSuffix ":0" (hostPort cfg.listen.address 0))
              ];
            }
          else
            {
              gunicornBind = "unix:${gunicornSocket},127.0.0.1:${toString cfg.gunicorn.metricsPort}";
              daphneBind = "unix:${daphneSocket}";
            }
        ))
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
    })

    # Roles all and app: migrations, gunicorn, daphne, the admin command.
    (mkIf runsApp {
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
          # Under a PostgreSQL advisory lock: of several nodes starting together one migrates, the
          # others wait and find nothing to apply (docs/runtime.md, "Several nodes").
          ExecStart = utils.escapeSystemdExecArgs [
            "${cfg.package}/bin/workorder-manage"
            "migrate_locked"
            "--no-input"
          ];
        };
      };

      # Expired Idempotency-Key records (core/idempotency.py): on one node only (singletonJobs).
      systemd.services.workorder-prune-idempotency-keys = mkIf cfg.singletonJobs (
        serviceOrdering
        // {
          description = "workorder: delete expired Idempotency-Key records";
          after = serviceOrdering.after ++ [ "workorder-migrate.service" ];
          requires = serviceOrdering.requires ++ [ "workorder-migrate.service" ];
          inherit environment;
          serviceConfig = hardening // {
            Type = "oneshot";
            ExecStart = utils.escapeSystemdExecArgs [
              "${cfg.package}/bin/workorder-manage"
              "prune_idempotency_keys"
            ];
          };
        }
      );

      systemd.timers.workorder-prune-idempotency-keys = mkIf cfg.singletonJobs {
        description = "workorder: hourly pruning of expired Idempotency-Key records";
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnCalendar = "hourly";
          Persistent = true;
          RandomizedDelaySec = "5min";
        };
      };

      systemd.services.workorder-gunicorn = {
        description = "workorder: gunicorn (WSGI)";
        # An app node binds its own address (listen.address): wait until the network is configured.
        wants = optional isAppNode "network-online.target";
        after =
          serviceOrdering.after ++ [ "workorder-migrate.service" ] ++ optional isAppNode "network-online.target";
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
        wants = optional isAppNode "network-online.target";
        after =
          serviceOrdering.after
          ++ [
            "workorder-migrate.service"
            "workorder-gunicorn.service"
          ]
          ++ optional isAppNode "network-online.target";
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
    })

    # Role app: gunicorn's and daphne's ports open to the balancers only (gunicorn's also to the
    # Prometheus servers, for /metrics/ with the token).
    (mkIf isAppNode (
      sourceFirewall {
        inherit nftables;
        rules = [
          {
            sources = lib.unique (cfg.trustedProxies ++ scrapers);
            ports = [ cfg.listen.gunicornPort ];
          }
          {
            sources = cfg.trustedProxies;
            ports = [ cfg.listen.daphnePort ];
          }
        ];
      }
    ))

    # Role database: PostgreSQL and Redis for the app nodes only.
    (mkIf isDatabaseHost (mkMerge [
      (sourceFirewall {
        inherit nftables;
        rules = [
          {
            sources = cfg.databaseServer.clients;
            ports = [
              config.services.postgresql.settings.port
              cfg.redis.port
            ];
          }
        ];
      })
      {
        services.postgresql = {
          # Every interface (so a late address cannot keep it from starting); pg_hba.conf and the
          # firewall admit the app nodes only.
          enableTCPIP = true;
          authentication = concatStringsSep "\n" (
            map (
              client:
              let
                network =
                  if lib.hasInfix "/" client then
                    client
                  else if lib.hasInfix ":" client then
                    "${client}/128"
                  else
                    "${client}/32";
              in
              "host ${cfg.database.name} ${cfg.database.user} ${network} scram-sha-256"
            ) cfg.databaseServer.clients
          );
          settings.password_encryption = "scram-sha-256";
        };

        # The application role's password, from the file at every start (never in the store): psql
        # reads the credential with a backquoted `cat` into a variable, quoted by :'password'.
        systemd.services.workorder-database-password = mkIf (cfg.database.passwordFile != null) {
          description = "workorder: the application role's password for the app nodes";
          after = [ "postgresql.target" ];
          requires = [ "postgresql.target" ];
          wantedBy = [ "multi-user.target" ];
          path = [
            config.services.postgresql.package
            pkgs.coreutils
          ];
          environment.PGPORT = toString config.services.postgresql.settings.port;
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
            User = "postgres";
            Group = "postgres";
            LoadCredential = [ "database_password:${cfg.database.passwordFile}" ];
            ExecStart = utils.escapeSystemdExecArgs [
              "${config.services.postgresql.package}/bin/psql"
              "--no-psqlrc"
              "--dbname=postgres"
              "--set=ON_ERROR_STOP=1"
              "--file=${pkgs.writeText "workorder-database-password.sql" (
                deployment.rolePasswordSql cfg.database.user
              )}"
            ];
          };
        };

        services.redis.servers.workorder.bind = "127.0.0.1 ${cfg.databaseServer.listenAddress}";
        # Redis binds the private address itself: until the interface has it, retry.
        systemd.services.redis-workorder = {
          wants = [ "network-online.target" ];
          after = [ "network-online.target" ];
          serviceConfig = {
            Restart = "on-failure";
            RestartSec = "2s";
          };
          unitConfig.StartLimitIntervalSec = 0;
        };
      }
    ]))

    (mkIf cfg.database.createLocally {
      services.postgresql = {
        enable = true;
        ensureDatabases = [ cfg.database.name ];
        ensureUsers = [
          {
            name = cfg.database.user;
            ensureDBOwnership = true;
            # `ALTER ROLE ... NOCREATEDB` at every start of postgresql-setup.service: also takes
            # CREATEDB away from installs whose earlier module version granted it.
            ensureClauses.createdb = false;
          }
        ]
        ++ optional cfg.backup.enable {
          name = backupUser;
          # --verify-restore creates (and drops) a scratch database, as this role.
          ensureClauses.createdb = cfg.backup.verifyRestore;
        };
      };

      # ensureUsers has no role memberships: the backup role's grants (nix/deployment.nix) are
      # applied by this oneshot, as postgres, after postgresql-setup created the roles.
      systemd.services.workorder-backup-grants = mkIf cfg.backup.enable {
        description = "workorder: read access to every table for the backup role";
        after = [ "postgresql.target" ];
        requires = [ "postgresql.target" ];
        path = [ config.services.postgresql.package ];
        environment.PGPORT = toString config.services.postgresql.settings.port;
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          User = "postgres";
          Group = "postgres";
          ExecStart = map (
            statement:
            utils.escapeSystemdExecArgs [
              "${config.services.postgresql.package}/bin/psql"
              "--no-psqlrc"
              "--dbname=postgres"
              "--set=ON_ERROR_STOP=1"
              "--command=${statement}"
            ]
          ) (deployment.backupRoleGrants backupUser);
        };
      };
    })

    (mkIf cfg.redis.createLocally {
      services.redis.servers.workorder = {
        enable = true;
        # The application: the unix socket (group redis-workorder). The redis exporter: loopback TCP
        # (bind defaults to 127.0.0.1), not the group. Both authenticate with the password.
        unixSocketPerm = 660;
        inherit (cfg.redis) port;
        requirePassFile = cfg.redis.passwordFile;
        # cache and channel layer only: no persistence needed.
        save = [ ];
        settings = {
          maxmemory = cfg.redis.maxMemory;
          maxmemory-policy = "volatile-lru";
        };
      };

      systemd.services.redis-workorder = mkIf (cfg.redis.passwordFile == generatedRedisPassword) {
        requires = [ "workorder-redis-password.service" ];
        after = [ "workorder-redis-password.service" ];
      };
      # Root-owned (0700 directory, 0600 file): read by Redis' ExecStartPre (as root) and passed
      # to the workorder units and the exporter as systemd credentials.
      systemd.services.workorder-redis-password = mkIf (cfg.redis.passwordFile == generatedRedisPassword) {
        description = "workorder: generate the local Redis password once";
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          StateDirectory = "workorder-redis";
          StateDirectoryMode = "0700";
          UMask = "0077";
          ExecStart = utils.escapeSystemdExecArgs [
            "${pkgs.bash}/bin/bash"
            ./scripts/generate-secret-key.sh
            generatedRedisPassword
          ];
        };
      };
    })

    (mkIf (cfg.nginx.enable && (role == "all" || isBalancer)) {
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
      systemd.services.nginx.serviceConfig.SupplementaryGroups = mkIf (!isBalancer) [ cfg.group ];
    })

    (mkIf cfg.backup.enable {
      users.users = mkIf (backupUser == deployment.defaults.backupUser) {
        ${backupUser} = {
          isSystemUser = true;
          group = backupUser;
          description = "workorder backups";
        };
      };
      users.groups = {
        ${metricsGroup} = { };
      }
      // optionalAttrs (backupUser == deployment.defaults.backupUser) { ${backupUser} = { }; };

      systemd.tmpfiles.rules = [
        "d ${cfg.backup.directory} 0700 ${backupUser} ${backupUser} - -"
        # Sets written by an earlier module version (as the service user) become the backup user's.
        "Z ${cfg.backup.directory} - ${backupUser} ${backupUser} - -"
        # The backup writes workorder_backup.prom here; node exporter (group workorder-metrics) reads it.
        "d ${cfg.monitoring.textfileDirectory} 0750 ${backupUser} ${metricsGroup} - -"
      ];

      systemd.services.workorder-backup = {
        description = "workorder: verified backup of PostgreSQL and media, with retention";
        after =
          serviceOrdering.after
          ++ [ "workorder-migrate.service" ]
          ++ optional cfg.database.createLocally "workorder-backup-grants.service";
        requires = optionals cfg.database.createLocally [
          "postgresql.target"
          "workorder-backup-grants.service"
        ];
        environment = environment // {
          DATABASE_URL = backupDatabaseUrl;
        };
        # pg_dump/pg_restore of the local server's own major version come first (the package's
        # wrapper falls back to nixpkgs' postgresql for an external server).
        path = optional config.services.postgresql.enable config.services.postgresql.package;
        serviceConfig = backupHardening // {
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

      systemd.timers.workorder-backup = mkIf cfg.singletonJobs {
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
