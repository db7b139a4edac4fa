# services.workorder.monitoring: Prometheus with the project's rules, and the exporters of a
# workorder host. `nixosModules.monitoring` is this file alone:
#
#   - imported by the default module (nix/module.nix), with `services.workorder.enable = true`
#     it scrapes the local django listener and runs node, postgres, redis and nginx exporters on
#     loopback, as before;
#   - imported alone on a separate monitoring host, it runs Prometheus with the rules and scrapes
#     the targets listed in `scrapeTargets` (workorder hosts that run the exporters);
#   - on the hosts of several machines (services.workorder.role app, balancer, database) it runs
#     the exporters of what runs there, open to `scrapers` only; Prometheus runs where
#     `prometheus.enable` is set (by default only with role "all").
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
  role = attrByPath [ "services" "workorder" "role" ] "all" config;
  # What runs on this host (nix/module.nix's roles).
  djangoHere = appHere && (role == "all" || role == "app");
  postgresHere = appHere && role != "app" && role != "balancer" && app.database.createLocally;
  redisHere = appHere && role != "app" && role != "balancer" && app.redis.createLocally;
  nginxHere = appHere && (role == "all" || role == "balancer") && app.nginx.enable;
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
    django = optional djangoHere "127.0.0.1:${toString app.gunicorn.metricsPort}";
    node = optional cfg.exporters.enable "127.0.0.1:${toString exporters.node.port}";
    postgres = optional (cfg.exporters.enable && postgresHere) (
      "127.0.0.1:${toString exporters.postgres.port}"
    );
    redis = optional (cfg.exporters.enable && redisHere) "127.0.0.1:${toString exporters.redis.port}";
    nginx = optional (cfg.exporters.enable && nginxHere) "127.0.0.1:${toString exporters.nginx.port}";
    mtail = optional (cfg.exporters.enable && nginxHere) "127.0.0.1:${toString cfg.exporters.mtailPort}";
  };
  # The exporters of this host, for the firewall rule that admits the scrapers.
  exporterPorts = lib.concatLists [
    [ exporters.node.port ]
    (optional postgresHere exporters.postgres.port)
    (optional redisHere exporters.redis.port)
    (optional nginxHere exporters.nginx.port)
    (optional nginxHere cfg.exporters.mtailPort)
  ];
  # mtail takes the host without brackets ("::", not "[::]").
  mtailAddress = lib.removePrefix "[" (lib.removeSuffix "]" cfg.exporters.listenAddress);
  exporterOptions = {
    enable = true;
    listenAddress = mkDefault cfg.exporters.listenAddress;
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

    exporters.mtailPort = mkOption {
      type = types.port;
      default = 3903;
      description = ''
        Port of mtail (unit `workorder-mtail`, where nginx runs), which counts the requests nginx
        refused for {option}`services.workorder.nginx.requestsInFlight` as
        `workorder_requests_shed_total{reason="in_flight_limit"}` (program: nix/mtail).
      '';
    };

    exporters.listenAddress = mkOption {
      type = types.str;
      default =
        if cfg.scrapers == [ ] then
          "127.0.0.1"
        else if lib.any (lib.hasInfix ":") cfg.scrapers then
          "[::]"
        else
          "0.0.0.0";
      defaultText = lib.literalExpression ''if scrapers == [ ] then "127.0.0.1" else if an IPv6 scraper then "[::]" else "0.0.0.0"'';
      description = ''
        Address the exporters listen on. With {option}`services.workorder.monitoring.scrapers`
        every interface (IPv6 and IPv4 when a scraper has an IPv6 address), the firewall admitting
        those addresses only.
      '';
    };

    scrapers = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "10.0.0.5" ];
      description = ''
        Addresses of the Prometheus servers that scrape this host from elsewhere: the firewall
        admits them to this host's exporters and, on an app node, to gunicorn's port
        (`/metrics/` with {option}`services.workorder.metricsTokenFile`'s token).
      '';
    };

    prometheus.enable = mkOption {
      type = types.bool;
      default = role == "all";
      defaultText = lib.literalExpression ''config.services.workorder.role == "all" (true where nix/module.nix is not imported)'';
      description = ''
        Run the Prometheus server on this host (false: exporters only, scraped from elsewhere). On
        the hosts of several machines (roles app, balancer, database) set it on one host, with
        {option}`services.workorder.monitoring.scrapeTargets` naming the others.
      '';
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
        `host:port` targets per job (django, node, postgres, redis, nginx, mtail), added to the local
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

    (mkIf (cfg.exporters.enable && cfg.scrapers != [ ]) (
      sourceFirewall {
        nftables =
          (config.networking.firewall.backend or (if config.networking.nftables.enable then "nftables" else "iptables"))
          == "nftables";
        rules = [
          {
            sources = cfg.scrapers;
            ports = exporterPorts;
          }
        ];
      }
    ))

    (mkIf cfg.exporters.enable {
      services.prometheus.exporters.node = exporterOptions // {
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
      (mkIf postgresHere {
        services.prometheus.exporters.postgres = exporterOptions // {
          runAsLocalSuperUser = mkDefault true;
        };
      })
      (mkIf redisHere {
        services.prometheus.exporters.redis = exporterOptions // {
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
      (mkIf nginxHere {
        services.nginx.statusPage = mkDefault true;
        services.prometheus.exporters.nginx = exporterOptions;
        # nginx writes one line per request refused for the in-flight limit to the shed log (nginx
        # group, 0640); mtail counts them. It writes nothing; its own log goes to the journal.
        systemd.services.workorder-mtail = {
          description = "mtail: requests nginx refused for workorder's in-flight limit";
          after = [ "nginx.service" ];
          wantedBy = [ "multi-user.target" ];
          serviceConfig = deployment.hardening // {
            ExecStart = utils.escapeSystemdExecArgs [
              (lib.getExe pkgs.mtail)
              "-logtostderr"
              "-progs"
              ./mtail
              "-logs"
              deployment.defaults.nginx.shedLog
              "-address"
              mtailAddress
              "-port"
              (toString cfg.exporters.mtailPort)
            ];
            DynamicUser = true;
            SupplementaryGroups = [ config.services.nginx.group ];
            Restart = "always";
            RestartSec = 5;
          };
        };
      })
    ]))
  ];
}
