# services.workorder.monitoring: Prometheus with the project's rules, and the exporters of a
# workorder host. `nixosModules.monitoring` is this file alone:
#
#   - imported by the default module (nix/module.nix), with `services.workorder.enable = true`
#     it scrapes the local django listener and runs node, postgres, redis and nginx exporters on
#     loopback, as before;
#   - imported alone on a separate monitoring host, it runs Prometheus with the rules and scrapes
#     the targets listed in `scrapeTargets` (workorder hosts that run the exporters).
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
  inherit (lib)
    attrByPath
    hasSuffix
    mkDefault
    mkIf
    mkMerge
    mkOption
    optional
    optionalAttrs
    types
    ;

  cfg = config.services.workorder.monitoring;
  # The application's options exist only when nix/module.nix is imported too.
  app = config.services.workorder;
  appHere = attrByPath [ "services" "workorder" "enable" ] false config;
  exporters = config.services.prometheus.exporters;
  deployment = import ./deployment.nix;

  # The redis exporter reaches the local Redis over loopback TCP with the password (the unix socket
  # is for the application, through Redis' group, which the exporter is not in).
  redisAddr = "redis://127.0.0.1:${toString app.redis.port}";
  redisPasswords = "/run/prometheus-redis-exporter/passwords.json";

  ruleFiles = map (name: ./prometheus + "/${name}") (
    builtins.filter (name: hasSuffix ".rules.yml" name) (builtins.attrNames (builtins.readDir ./prometheus))
  );

  localTargets = {
    django = optional appHere "127.0.0.1:${toString app.gunicorn.metricsPort}";
    node = optional cfg.exporters.enable "127.0.0.1:${toString exporters.node.port}";
    postgres = optional (cfg.exporters.enable && appHere && app.database.createLocally) (
      "127.0.0.1:${toString exporters.postgres.port}"
    );
    redis = optional (cfg.exporters.enable && appHere && app.redis.createLocally) (
      "127.0.0.1:${toString exporters.redis.port}"
    );
    nginx = optional (cfg.exporters.enable && appHere && app.nginx.enable) (
      "127.0.0.1:${toString exporters.nginx.port}"
    );
  };

  scrapeConfig =
    job: targets:
    {
      job_name = job;
      static_configs = [ { inherit targets; } ];
    }
    // optionalAttrs (job == "django") (
      {
        metrics_path = "/metrics/";
      }
      // optionalAttrs (cfg.metricsTokenFile != null) {
        authorization = {
          type = "Bearer";
          credentials_file = cfg.metricsTokenFile;
        };
      }
    );
in
{
  options.services.workorder.monitoring = {
    enable = mkOption {
      type = types.bool;
      default = appHere;
      defaultText = lib.literalExpression "config.services.workorder.enable";
      description = ''
        Prometheus with the project's recording and alert rules (nix/prometheus/*.rules.yml),
        scraping {option}`services.workorder.monitoring.scrapeTargets`. On a workorder host the
        exporters run too ({option}`services.workorder.monitoring.exporters.enable`).
      '';
    };

    exporters.enable = mkOption {
      type = types.bool;
      default = appHere;
      defaultText = lib.literalExpression "config.services.workorder.enable";
      description = ''
        node (textfile and systemd collectors), postgres, redis and nginx exporters for the local
        workorder services, listening on loopback (postgres/redis/nginx only where those run here).
      '';
    };

    prometheus.enable = mkOption {
      type = types.bool;
      default = true;
      description = "Run the Prometheus server on this host (false: exporters only, scraped from elsewhere).";
    };

    scrapeTargets = mkOption {
      type = types.attrsOf (types.listOf types.str);
      default = { };
      example = {
        django = [
          "app1.internal:9808"
          "app2.internal:9808"
        ];
        node = [
          "app1.internal:9100"
          "db.internal:9100"
        ];
      };
      description = ''
        `host:port` targets per job (django, node, postgres, redis, nginx), added to the local
        ones. Remote django targets need {option}`services.workorder.monitoring.metricsTokenFile`,
        since the application answers `/metrics/` without a token from loopback only.
      '';
    };

    metricsTokenFile = mkOption {
      type = secretFile;
      default = null;
      example = "/run/secrets/workorder-metrics-token";
      description = ''
        File with the bearer token for the django job (the application's
        `WORKORDER_METRICS_TOKEN`); must be readable by the prometheus user.
      '';
    };

    textfileDirectory = mkOption {
      type = types.str;
      default = "/var/lib/prometheus-node-exporter-text-files";
      description = "Directory of node exporter's textfile collector; the backup writes workorder_backup.prom there.";
    };
  };

  config = mkMerge [
    (mkIf (cfg.enable && cfg.prometheus.enable) {
      services.prometheus = {
        enable = true;
        listenAddress = mkDefault "127.0.0.1";
        # promtool checks the configuration in the build sandbox, where the token file does not
        # exist; the rules are still checked.
        checkConfig = mkIf (cfg.metricsTokenFile != null) (mkDefault "syntax-only");
        globalConfig = {
          scrape_interval = mkDefault "15s";
          evaluation_interval = mkDefault "15s";
        };
        inherit ruleFiles;
        scrapeConfigs = lib.mapAttrsToList scrapeConfig (
          lib.filterAttrs (_: targets: targets != [ ]) (
            lib.zipAttrsWith (_: lib.concatLists) [
              localTargets
              cfg.scrapeTargets
            ]
          )
        );
      };
    })

    (mkIf cfg.exporters.enable {
      services.prometheus.exporters.node = {
        enable = true;
        listenAddress = mkDefault "127.0.0.1";
        enabledCollectors = [ "systemd" ];
        extraFlags = [
          "--collector.textfile.directory=${cfg.textfileDirectory}"
          "--collector.systemd.enable-restarts-metrics"
        ];
      };
    })

    (mkIf (cfg.exporters.enable && appHere) (mkMerge [
      (mkIf app.backup.enable {
        # node exporter reads workorder_backup.prom in the textfile directory (0750, group
        # workorder-metrics), and nothing of the application's (not in group workorder).
        systemd.services.prometheus-node-exporter.serviceConfig.SupplementaryGroups = [
          deployment.defaults.metricsGroup
        ];
      })
      (mkIf app.database.createLocally {
        services.prometheus.exporters.postgres = {
          enable = true;
          listenAddress = mkDefault "127.0.0.1";
          runAsLocalSuperUser = mkDefault true;
        };
      })
      (mkIf app.redis.createLocally {
        services.prometheus.exporters.redis = {
          enable = true;
          listenAddress = mkDefault "127.0.0.1";
          extraFlags = [
            "-redis.addr=${redisAddr}"
            # A JSON object {addr: password}, written at start from the credential redis_password.
            "-redis.password-file=${redisPasswords}"
          ];
        };
        systemd.services.prometheus-redis-exporter = {
          after = [ "redis-workorder.service" ];
          wants = [ "redis-workorder.service" ];
          path = [ pkgs.jq ];
          serviceConfig = {
            LoadCredential = [ "redis_password:${app.redis.passwordFile}" ];
            RuntimeDirectory = "prometheus-redis-exporter";
            RuntimeDirectoryMode = "0700";
            ExecStartPre = utils.escapeSystemdExecArgs [
              "${pkgs.bash}/bin/bash"
              ./scripts/redis-exporter-passwords.sh
              redisAddr
              redisPasswords
            ];
          };
        };
      })
      (mkIf app.nginx.enable {
        services.nginx.statusPage = mkDefault true;
        services.prometheus.exporters.nginx = {
          enable = true;
          listenAddress = mkDefault "127.0.0.1";
        };
      })
    ]))
  ];
}
