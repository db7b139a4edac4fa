# The deployment's facts, in one place: the nginx layout, the service environment, the backup
# command line, the systemd hardening block and the defaults of the options that shape them.
#
# Pure Nix without nixpkgs, so two consumers read the same values:
#   - nix/module.nix imports it and hands the values to services.nginx, systemd.services, ...;
#   - the Debian production-stack test evaluates it with `nix-instantiate --eval --strict --json`
#     (tests/harness/deployment.py) and renders nginx.conf, the environment and the backup
#     command from the result.
# Paths and sizes are arguments (the module passes /run/workorder/..., the test a temporary
# directory); everything else is decided here.
let
  concatLines = lines: builtins.concatStringsSep "\n" lines;
  mapToList = f: attrs: map (name: f name attrs.${name}) (builtins.attrNames attrs);
  boolString = value: if value then "true" else "false";
  optionalLines = condition: lines: if condition then lines else [ ];
in
rec {
  # Defaults of services.workorder options (the module's `default =` reads them from here).
  defaults = {
    hostName = "localhost";
    # The largest request body in bytes: nginx's client_max_body_size and Django's
    # DATA_UPLOAD_MAX_MEMORY_SIZE (both from this one value; backend/workorder/settings.py has the
    # same number as its default for runs without this file).
    maxRequestBodySize = 1048576;
    nginx = {
      rateLimit = "10r/s";
      rateBurst = 20;
      webSocketTimeout = "3600s";
      # nginx closes idle pooled upstream connections after this; gunicorn's keep-alive
      # (GUNICORN_KEEPALIVE, 75 s in workorder.gunicorn_conf) must stay longer.
      upstreamKeepalive = 32;
      upstreamKeepaliveTimeout = "60s";
      # Several app nodes (gunicornServers/daphneServers): passive health checks. A node that failed
      # this many times within failTimeout gets no requests for failTimeout, then one to try again.
      upstreamMaxFails = 3;
      upstreamFailTimeout = "10s";
      # Requests in flight to one application node (served or waiting in gunicorn's queue) before
      # nginx refuses more with an immediate 503 and `Retry-After` (`limit_conn`); 0: no limit.
      # gunicorn's X-Request-Start deadline stays behind it for what still waits too long. At twice
      # the capacity (tests/bench/overload.py) 64 kept the served p95 at 106 ms and 256 at 638 ms,
      # but 64 also refused requests at 1,000-1,500 users during logins' bursts, where 256 refused
      # 19 of ~50,000 (docs/performance.md, round nine).
      requestsInFlight = 256;
      # One line per request refused for that limit; mtail (nix/mtail) counts them for Prometheus.
      shedLog = "/var/log/nginx/workorder-shed.log";
      securityHeaders = {
        "X-Content-Type-Options" = "nosniff";
        "X-Frame-Options" = "DENY";
        "Referrer-Policy" = "same-origin";
        "Permissions-Policy" = "camera=(), microphone=(), geolocation=()";
        "Cross-Origin-Opener-Policy" = "same-origin";
      };
    };
    backup = {
      startAt = "*-*-* 02:00:00";
      retentionDays = 30;
      keepAtLeast = 7;
      verifyRestore = true;
    };
    metricsAllowedNetworks = "127.0.0.0/8,::1/128";
    # Least privilege: the backup runs as its own system user and PostgreSQL role (peer auth), which
    # alone may create (scratch) databases and reads every table through pg_read_all_data; the
    # application's role has no CREATEDB. Its textfile metrics are readable by this group only, which
    # node exporter joins. The redis exporter reaches the local Redis on this loopback port with the
    # password (the application uses the unix socket), not through Redis' group.
    backupUser = "workorder-backup";
    metricsGroup = "workorder-metrics";
    redisPort = 6380;
    # nginx is the only client of the unix sockets; gunicorn trusts its X-Forwarded-* headers.
    forwardedAllowIps = "127.0.0.1,::1";
    # Several nodes: the TCP ports on which each application node's gunicorn and daphne listen for
    # the balancer (its GUNICORN_BIND/DAPHNE_BIND, the balancer's gunicornServers/daphneServers).
    nodeGunicornPort = 8000;
    nodeDaphnePort = 8002;
  };

  # "host:port" for an upstream server or a bind address; an IPv6 address gets its brackets.
  hostPort =
    host: port:
    let
      bare = builtins.match "\\[(.*)]" host;
      isIPv6 = bare == null && builtins.match ".*:.*" host != null;
    in
    if isIPv6 then "[${host}]:${toString port}" else "${host}:${toString port}";

  # services.nginx pieces: `commonHttpConfig`, `upstreams`, and the virtual host's `extraConfig`
  # and `locations` (NixOS location options: proxyPass, proxyWebsockets, alias, return, extraConfig).
  # With recommendedProxySettings every proxyPass location includes its own proxy_set_header
  # lines, so the http-level `proxy_set_header Connection ""` is not inherited there: the gunicorn
  # locations repeat it, or nginx would send `Connection: close` and never reuse a pooled
  # upstream connection. /ws/ keeps proxyWebsockets' `Connection $connection_upgrade`.
  #
  # One node: gunicornSocket and daphneSocket (unix sockets). Several nodes behind this balancer:
  # gunicornServers and daphneServers, lists of "host:port" (each node's GUNICORN_BIND/DAPHNE_BIND
  # for the balancer), with passive health checks. Either way a request goes on to the next server
  # only when the first gave no answer (error, timeout) and only when it is idempotent: nginx's
  # default, written out (no `non_idempotent`), so a POST is never sent twice by the balancer.
  nginx =
    {
      gunicornSocket ? null,
      daphneSocket ? null,
      gunicornServers ? null,
      daphneServers ? null,
      upstreamMaxFails ? defaults.nginx.upstreamMaxFails,
      upstreamFailTimeout ? defaults.nginx.upstreamFailTimeout,
      staticRoot,
      mediaRoot,
      rateLimit ? defaults.nginx.rateLimit,
      rateBurst ? defaults.nginx.rateBurst,
      webSocketTimeout ? defaults.nginx.webSocketTimeout,
      upstreamKeepalive ? defaults.nginx.upstreamKeepalive,
      upstreamKeepaliveTimeout ? defaults.nginx.upstreamKeepaliveTimeout,
      requestsInFlight ? defaults.nginx.requestsInFlight,
      shedLog ? defaults.nginx.shedLog,
      securityHeaders ? defaults.nginx.securityHeaders,
      maxRequestBodySize ? defaults.maxRequestBodySize,
    }:
    let
      limitReq = "limit_req zone=workorder burst=${toString rateBurst} nodelay;";
      nodes = if gunicornServers == null then 1 else builtins.length gunicornServers;
      limitInFlight = optionalLines (requestsInFlight > 0) [
        "limit_conn workorder_inflight ${toString (requestsInFlight * nodes)};"
      ];
      nextUpstream = "proxy_next_upstream error timeout;";
      upstreamServers =
        socket: addresses:
        if addresses == null then
          { "unix:${socket}" = { }; }
        else
          builtins.listToAttrs (
            map (address: {
              name = address;
              value = {
                max_fails = upstreamMaxFails;
                fail_timeout = upstreamFailTimeout;
              };
            }) addresses
          );
      # The API's error shape (backend/workorder/core/exceptions.py) for what nginx refuses itself.
      jsonError = status: detail: code: {
        extraConfig = concatLines [
          "internal;"
          "default_type application/json;"
          "return ${toString status} '{\"detail\": \"${detail}\", \"code\": \"${code}\", \"errors\": {}}';"
        ];
      };
      # X-Request-Start: when nginx read the request, so gunicorn sheds what queued too long
      # (backend/workorder/core/shedding.py).
      toGunicorn = extra: {
        proxyPass = "http://workorder-gunicorn";
        extraConfig = concatLines (
          [
            ''proxy_set_header Connection "";''
            ''proxy_set_header X-Request-Start "t=$msec";''
            nextUpstream
          ]
          ++ extra
        );
      };
      closed = {
        extraConfig = "deny all;";
      };
    in
    {
      commonHttpConfig = concatLines [
        "limit_req_zone $binary_remote_addr zone=workorder:10m rate=${rateLimit};"
        # One counter for the whole virtual host: requests to gunicorn in flight, from every client.
        "limit_conn_zone $server_name zone=workorder_inflight:1m;"
        "log_format workorder_shed '$msec $request_method $uri';"
      ];
      upstreams = {
        workorder-gunicorn = {
          servers = upstreamServers gunicornSocket gunicornServers;
          extraConfig = concatLines [
            "keepalive ${toString upstreamKeepalive};"
            "keepalive_timeout ${upstreamKeepaliveTimeout};"
          ];
        };
        workorder-daphne = {
          servers = upstreamServers daphneSocket daphneServers;
          extraConfig = "";
        };
      };
      virtualHostExtraConfig = concatLines (
        [
          "limit_req_status 429;"
          # Refusals for the in-flight limit are counted from the shed log, not written as errors
          # (nginx's error log is at `error`; hundreds of lines a second under overload otherwise).
          "limit_conn_status 503;"
          "limit_conn_log_level info;"
          "error_page 503 @overloaded;"
          "client_max_body_size ${toString maxRequestBodySize};"
          # A request line longer than 4094 bytes is refused here (4k buffers hold exactly gunicorn's
          # limit_request_line of 4094), so gunicorn's HTML 414 is never reached. Read for the request
          # line from the default server of the address: this one, unless another vhost is default.
          "large_client_header_buffers 4 4k;"
          "error_page 413 /__errors/request_too_large;"
          "error_page 414 /__errors/uri_too_long;"
        ]
        ++ mapToList (name: value: ''add_header ${name} "${value}" always;'') securityHeaders
      );
      locations = {
        "= /".return = "302 /api/docs/";
        "/api/" = toGunicorn ([ limitReq ] ++ limitInFlight);
        "/admin/" = toGunicorn ([ limitReq ] ++ limitInFlight);
        # Liveness only (touches nothing), for outside load balancers.
        "= /health/" = toGunicorn [ ];
        # Readiness checks PostgreSQL and Redis: probed on gunicorn's loopback listener, like /metrics/.
        "= /ready/" = closed;
        "= /__errors/request_too_large" =
          jsonError 413 "The request body is larger than ${toString maxRequestBodySize} bytes." "request_too_large";
        "= /__errors/uri_too_long" = jsonError 414 "The request line is too long." "uri_too_long";
        # The in-flight limit's refusal: the application's own 503 for overload
        # (backend/workorder/core/shedding.py), answered by nginx at once. A named location keeps
        # the request's method and URI for the shed log (error_page to a URI would log a GET of
        # that URI); `types { }` so that no extension in the URI sets another Content-Type.
        # add_header here replaces the virtual host's, so the security headers are repeated.
        "@overloaded" = {
          extraConfig = concatLines (
            [
              "access_log ${shedLog} workorder_shed;"
              "types { }"
              "default_type application/json;"
              "add_header Retry-After 1 always;"
            ]
            ++ mapToList (name: value: ''add_header ${name} "${value}" always;'') securityHeaders
            ++ [
              "return 503 '{\"detail\": \"The service is overloaded; retry in a moment.\", \"code\": \"overloaded\", \"errors\": {}}';"
            ]
          );
        };
        "/ws/" = {
          proxyPass = "http://workorder-daphne";
          proxyWebsockets = true;
          extraConfig = concatLines [
            # Clients may send the token as ?token=, and nginx writes the full request line into every
            # error line of a request ("connect() failed ... request: ..." while daphne is down, limit_req
            # refusals) and $request into the access log. So /ws/ has no access log (daphne logs each
            # connection without its query string) and error lines only at emerg, a level nginx does not
            # use for a request's errors (a failed connect() is err or crit). daphne being down shows as
            # the WorkorderServiceDown alert and workorder_websocket_connections falling to 0 instead.
            "access_log off;"
            "error_log stderr emerg;"
            "proxy_read_timeout ${webSocketTimeout};"
            "proxy_send_timeout ${webSocketTimeout};"
            "proxy_buffering off;"
            nextUpstream
            limitReq
          ];
        };
        "/static/" = {
          alias = "${staticRoot}/";
          extraConfig = concatLines [
            "expires 30d;"
            "access_log off;"
          ];
        };
        "/media/".alias = "${mediaRoot}/";
        # Prometheus scrapes gunicorn's own listener; /metrics and everything below it stay
        # closed here (and /metricsX is no prefix match of either).
        "= /metrics" = closed;
        "/metrics/" = closed;
      };
    };

  # The environment of every workorder process (the names backend/workorder reads).
  environment =
    {
      stateDir,
      staticRoot,
      mediaRoot,
      hostName ? defaults.hostName,
      behindTls ? false,
      databaseUrl,
      redisUrl ? null,
      gunicornBind,
      daphneBind,
      secretKeyFile,
      databasePasswordFile ? null,
      maxRequestBodySize ? defaults.maxRequestBodySize,
      metricsAllowedNetworks ? defaults.metricsAllowedNetworks,
      forwardedAllowIps ? defaults.forwardedAllowIps,
      # Several app nodes on one database: how many (more than one requires a secret key shared by
      # all, settings.py), and the balancers whose X-Real-IP the nodes believe (a comma list of
      # networks; null: the application's default, loopback).
      nodes ? 1,
      trustedProxyNetworks ? null,
      # Names the nodes are also reached by, besides hostName (a node's own address, by which
      # Prometheus scrapes it).
      extraAllowedHosts ? [ ],
    }:
    {
      DJANGO_SETTINGS_MODULE = "workorder.settings";
      DJANGO_DEBUG = "false";
      WORKORDER_STATE_DIR = stateDir;
      STATIC_ROOT = staticRoot;
      MEDIA_ROOT = mediaRoot;
      ALLOWED_HOSTS = builtins.concatStringsSep "," (
        [
          hostName
          "localhost"
          "127.0.0.1"
          "[::1]"
        ]
        ++ extraAllowedHosts
      );
      # Behind TLS every request arrives over https; otherwise both schemes are trusted.
      CSRF_TRUSTED_ORIGINS =
        if behindTls then "https://${hostName}" else "http://${hostName},https://${hostName}";
      WORKORDER_BEHIND_TLS = boolString behindTls;
      DATABASE_URL = databaseUrl;
      WORKORDER_METRICS_ALLOWED_NETWORKS = metricsAllowedNetworks;
      GUNICORN_BIND = gunicornBind;
      GUNICORN_FORWARDED_ALLOW_IPS = forwardedAllowIps;
      DAPHNE_BIND = daphneBind;
      DJANGO_SECRET_KEY_FILE = secretKeyFile;
      DATA_UPLOAD_MAX_MEMORY_SIZE = toString maxRequestBodySize;
      WORKORDER_NODES = toString nodes;
    }
    // (
      if trustedProxyNetworks == null then { } else { WORKORDER_TRUSTED_PROXY_NETWORKS = trustedProxyNetworks; }
    )
    // (if redisUrl == null then { } else { REDIS_URL = redisUrl; })
    // (if databasePasswordFile == null then { } else { DATABASE_PASSWORD_FILE = databasePasswordFile; });

  # gunicorn and daphne only: prometheus_client's multiprocess directory, shared by every worker
  # and daphne so one scrape reports the sum. Other processes (migrate, backup, workorder-manage)
  # keep their metrics in memory, out of the scrape.
  serverEnvironment =
    { multiprocDir }:
    {
      PROMETHEUS_MULTIPROC_DIR = multiprocDir;
    };

  # SQL the backup role needs besides its attributes (LOGIN, CREATEDB: ensureUsers.ensureClauses in the
  # module): reading every table and sequence for pg_dump without owning them (PostgreSQL >= 14).
  backupRoleGrants = backupRole: [ ''GRANT pg_read_all_data TO "${backupRole}"'' ];

  # psql script that sets an application role's password from the systemd credential
  # database_password at runtime (the database host of several nodes): the file's content never
  # enters the store nor a command line; :'password' quotes it as a literal.
  rolePasswordSql = role: ''
    \set password `cat "$CREDENTIALS_DIRECTORY/database_password"`
    -- a failing statement must not be logged with the password in it
    SET log_min_error_statement = panic;
    SET password_encryption = 'scram-sha-256';
    ALTER ROLE "${role}" WITH LOGIN PASSWORD :'password';
  '';

  # `workorder-backup` arguments of the daily backup unit.
  backupArgs =
    {
      directory,
      mediaDir,
      metricsFile,
      retentionDays ? defaults.backup.retentionDays,
      keepAtLeast ? defaults.backup.keepAtLeast,
      verifyRestore ? defaults.backup.verifyRestore,
    }:
    [
      "backup"
      "--directory"
      directory
      "--media-dir"
      mediaDir
      "--retention-days"
      (toString retentionDays)
      "--keep-at-least"
      (toString keepAtLeast)
    ]
    ++ (if verifyRestore then [ "--verify-restore" ] else [ ])
    ++ [
      "--metrics-file"
      metricsFile
    ];

  # The hardening shared by every workorder unit (pretix's commonUnitConfig, tightened). The
  # module adds what depends on options (User, Group, credentials, address restrictions).
  hardening = {
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
  };
}
