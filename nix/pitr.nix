# services.workorder.backup.pointInTime: restore to any moment of the last 30 days.
#
# PostgreSQL archives every WAL segment (archive_mode = on, archive_timeout = 60s) into a pgBackRest
# repository through nixpkgs' services.pgbackrest (stanza "default", which that module sets up for
# the local server); a weekly full and a daily differential backup run on timers, retention keeps
# full backups by time so that every moment of the last `retentionDays` days stays restorable, and
# `pgbackrest verify` runs weekly. The daily pg_dump of nix/module.nix stays as it is.
#
# Everything pgBackRest does here runs as `postgres`, which owns the repository: archive-push
# inside postgresql.service, the backup/verify/metrics units, and `workorder-pgbackrest` (the
# admin wrapper, which switches to postgres itself). The repository's passphrase is a file read at
# runtime (systemd credential, nix/scripts/pgbackrest-with-passphrase.sh), never the store.
# Options, defaults and the nixpkgs files they come from: nix/README.md. Runbook: docs/backup.md.
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
    literalExpression
    mkForce
    mkIf
    mkMerge
    mkOption
    optional
    optionalAttrs
    types
    ;

  app = config.services.workorder;
  cfg = app.backup.pointInTime;
  postgresql = config.services.postgresql;
  deployment = import ./deployment.nix;
  inherit (deployment.defaults) metricsGroup;

  # nixpkgs' pgbackrest module defines this stanza for the local PostgreSQL (instances.localhost:
  # path = dataDir, user = postgres) and points archive_command at it.
  stanza = "default";
  repoName = "workorder";
  repo = config.services.pgbackrest.repos.${repoName};
  # pgBackRest numbers the repositories in attribute-name order (nixpkgs' flattenWithIndex).
  repoIndex =
    1
    + lib.lists.findFirstIndex (name: name == repoName) 0 (
      builtins.attrNames config.services.pgbackrest.repos
    );
  localRepository = (repo.type or "posix") == "posix";
  credential = "pgbackrest-passphrase";

  # pgBackRest with the passphrase from the credential (units) or the file (root's shell).
  wrapper = pkgs.writeShellApplication {
    name = "workorder-pgbackrest";
    runtimeInputs = [
      pkgs.coreutils
      pkgs.util-linux
    ];
    text = ''
      export WORKORDER_PGBACKREST_BIN=${lib.escapeShellArg (lib.getExe pkgs.pgbackrest)}
      export WORKORDER_PGBACKREST_REPO=${toString repoIndex}
      export WORKORDER_PGBACKREST_PASSPHRASE_FILE=${
        lib.escapeShellArg (if cfg.passphraseFile == null then "" else cfg.passphraseFile)
      }
      export WORKORDER_PGBACKREST_USER=postgres
      exec ${pkgs.bash}/bin/bash ${./scripts/pgbackrest-with-passphrase.sh} "$@"
    '';
  };
  pgbackrestCommand = "${wrapper}/bin/workorder-pgbackrest";

  textfile = app.monitoring.textfileDirectory;
  # The units write their metrics here (as postgres), and systemd copies them, as root, into the
  # textfile directory with the ownership the dump backup's file has (backup user, metrics group):
  # that directory stays the backup user's, 0750.
  stateDir = "/var/lib/workorder-pitr";
  publish = name: [
    "-+${pkgs.coreutils}/bin/install -m 0644 -o ${app.backup.user} -g ${metricsGroup} -T ${stateDir}/${name} ${textfile}/.${name}.tmp"
    "-+${pkgs.coreutils}/bin/mv -fT ${textfile}/.${name}.tmp ${textfile}/${name}"
  ];

  # The longest mount point (config.fileSystems) holding `path`.
  mountOf =
    path:
    lib.foldl' (
      best: mountPoint:
      if
        (mountPoint == "/" || path == mountPoint || lib.hasPrefix "${mountPoint}/" path)
        && builtins.stringLength mountPoint > builtins.stringLength best
      then
        mountPoint
      else
        best
    ) "" (lib.mapAttrsToList (_: fs: fs.mountPoint) config.fileSystems);

  unitEnvironment = {
    # The local server as the postgres role (peer authentication), for pg_stat_archiver.
    DATABASE_URL = "postgresql:///postgres?host=/run/postgresql&port=${toString postgresql.settings.port}";
    WORKORDER_PGBACKREST_STANZA = stanza;
    WORKORDER_PGBACKREST_COMMAND = pgbackrestCommand;
  }
  // optionalAttrs localRepository { WORKORDER_PGBACKREST_REPOSITORY = cfg.repository; };

  lockPath = "/run/pgbackrest";

  pitrUnit =
    description: serviceConfig:
    {
      inherit description;
      after = [ "postgresql.target" ];
      # Requisite, not Requires: a timer firing while PostgreSQL is stopped for a restore must not
      # start it (its preStart would initdb an empty data directory).
      requisite = [ "postgresql.target" ];
      environment = unitEnvironment;
      unitConfig.RequiresMountsFor = optional localRepository cfg.repository;
      serviceConfig =
        deployment.hardening
        // {
          Type = "oneshot";
          User = "postgres";
          Group = "postgres";
          LoadCredential = optional (cfg.passphraseFile != null) "${credential}:${cfg.passphraseFile}";
          EnvironmentFile = mkIf (cfg.environmentFile != null) cfg.environmentFile;
          # The lock directory (settings.lock-path), shared with an administrator's runs.
          ReadWritePaths = [ lockPath ] ++ optional localRepository cfg.repository;
          StateDirectory = "workorder-pitr";
          StateDirectoryMode = "0750";
          Nice = 10;
          IOSchedulingClass = "idle";
        }
        // serviceConfig;
    };

  # The backups run on the one host of a cluster that has services.workorder.singletonJobs.
  timer = description: onCalendar: mkIf app.singletonJobs {
    inherit description;
    wantedBy = [ "timers.target" ];
    timerConfig = {
      OnCalendar = onCalendar;
      Persistent = true;
      RandomizedDelaySec = "5min";
    };
  };
in
{
  options.services.workorder.backup.pointInTime = {
    enable = mkOption {
      type = types.bool;
      default =
        app.database.createLocally && app.backup.enable && lib.versionAtLeast config.system.stateVersion "26.05";
      defaultText = literalExpression ''config.services.workorder.database.createLocally && config.services.workorder.backup.enable && lib.versionAtLeast config.system.stateVersion "26.05"'';
      description = ''
        Continuous WAL archiving and point-in-time recovery with pgBackRest (nixpkgs'
        {option}`services.pgbackrest`): any moment of the last {option}`retentionDays` days can be
        restored (docs/backup.md). On by default for new installations (`system.stateVersion`
        26.05 or later) with a local PostgreSQL; existing ones turn it on explicitly, which
        restarts PostgreSQL once (`archive_mode` is read at server start only).
      '';
    };
    repository = mkOption {
      type = types.str;
      default = "/var/backup/pgbackrest";
      description = ''
        Local path of the pgBackRest repository (owned by postgres, 0750). Put a filesystem of
        its own there (a separate disk, not the database's): a warning says when no
        `fileSystems` entry separates it from the data directory. For SFTP or S3 set
        `services.pgbackrest.repos.workorder.type` and its options, and the secrets in
        {option}`environmentFile` (docs/backup.md).
      '';
    };
    passphraseFile = mkOption {
      type = secretFile;
      default = null;
      example = "/run/secrets/pgbackrest-passphrase";
      description = ''
        File whose first line encrypts the repository (`repo-cipher-type = aes-256-cbc`; given to
        pgBackRest as `PGBACKREST_REPO<n>_CIPHER_PASS` at runtime). Readable by root only: systemd
        hands it to postgresql.service and the units as a credential. Encryption is fixed when the
        repository is created. Keep a copy off this machine: without it, no restore.
      '';
    };
    environmentFile = mkOption {
      type = secretFile;
      default = null;
      example = "/run/secrets/pgbackrest.env";
      description = ''
        `PGBACKREST_*` variables for a remote repository's secrets (e.g.
        `PGBACKREST_REPO1_S3_KEY=...`, `PGBACKREST_REPO1_S3_KEY_SECRET=...`), for
        postgresql.service (archive-push) and the units; nixpkgs refuses these options in the
        store-bound configuration file.
      '';
    };
    retentionDays = mkOption {
      type = types.ints.positive;
      default = 30;
      description = ''
        `repo-retention-full` with `repo-retention-full-type = time`: full backups older than this
        are expired, except the newest of them, so every moment of the window stays restorable.
      '';
    };
    fullBackupAt = mkOption {
      type = types.str;
      default = "Sun *-*-* 01:00:00";
      description = "systemd calendar expression of the full backup (`pgbackrest backup --type=full`).";
    };
    diffBackupAt = mkOption {
      type = types.str;
      default = "Mon..Sat *-*-* 01:00:00";
      description = "systemd calendar expression of the differential backup (`--type=diff`).";
    };
    verifyAt = mkOption {
      type = types.str;
      default = "Wed *-*-* 04:00:00";
      description = "systemd calendar expression of `pgbackrest verify` (reads the whole repository).";
    };
  };

  config = mkIf (app.enable && cfg.enable) (mkMerge [
    {
      assertions = [
        {
          assertion = app.database.createLocally;
          message = "services.workorder.backup.pointInTime archives the local PostgreSQL: it needs services.workorder.database.createLocally.";
        }
        {
          assertion = app.backup.enable;
          message = "services.workorder.backup.pointInTime writes its metrics beside the dump backup's: it needs services.workorder.backup.enable.";
        }
      ];
      warnings =
        optional (cfg.passphraseFile == null) ''
          services.workorder.backup.pointInTime.passphraseFile is not set: the pgBackRest repository
          is not encrypted (the choice is fixed when the repository is created).
        ''
        ++ optional (
          localRepository && mountOf cfg.repository != "" && mountOf cfg.repository == mountOf postgresql.dataDir
        ) ''
          services.workorder.backup.pointInTime.repository (${cfg.repository}) is on the same
          filesystem (${mountOf cfg.repository}) as PostgreSQL's data directory: one disk failure
          takes the database and its backups. Mount a separate disk there (fileSystems).
        '';

      services.pgbackrest = {
        enable = true;
        repos.${repoName} = {
          # local: the attribute name would otherwise become repo-host
          host = null;
          path = cfg.repository;
          retention-full-type = "time";
          retention-full = cfg.retentionDays;
          cipher-type = mkIf (cfg.passphraseFile != null) "aes-256-cbc";
        };
        settings = {
          compress-type = "zst";
          process-max = 2;
          # Not /tmp/pgbackrest (the default): the units' /tmp is private and read-only.
          lock-path = lockPath;
        };
        stanzas.${stanza} = {
          # The restore_command pgBackRest writes at restore time runs this: the wrapper, so that
          # archive-get can decrypt.
          settings.cmd = mkForce pgbackrestCommand;
          instances.localhost = {
            socket-path = "/run/postgresql";
            inherit (postgresql.settings) port;
          };
        };
      };

      services.postgresql.settings = {
        archive_mode = "on";
        archive_timeout = "60s";
        # nixpkgs sets the plain binary (no mkDefault); the wrapper adds the passphrase.
        archive_command = mkForce "${pgbackrestCommand} --stanza=${stanza} archive-push \"%p\"";
      };
      # archive-push runs inside postgresql.service (ProtectSystem = "strict"): the repository
      # must be writable there ("-": a missing directory does not stop the database).
      systemd.services.postgresql.serviceConfig = {
        ReadWritePaths = [ "-${lockPath}" ] ++ optional localRepository "-${cfg.repository}";
        LoadCredential = optional (cfg.passphraseFile != null) "${credential}:${cfg.passphraseFile}";
        EnvironmentFile = mkIf (cfg.environmentFile != null) cfg.environmentFile;
      };

      systemd.tmpfiles.rules = [
        "d ${lockPath} 0770 postgres postgres - -"
      ]
      ++ optional localRepository "d ${cfg.repository} 0750 postgres postgres - -";

      environment.systemPackages = [ wrapper ];

      systemd.services.workorder-pitr-backup-full = pitrUnit "workorder: pgBackRest full backup" {
        # stanza-create is idempotent (as in nixpkgs' own jobs): the first run creates the stanza.
        ExecStartPre = "${pgbackrestCommand} --stanza=${stanza} stanza-create";
        ExecStart = "${pgbackrestCommand} --stanza=${stanza} backup --type=full";
        TimeoutStartSec = "12h";
      };
      systemd.services.workorder-pitr-backup-diff = pitrUnit "workorder: pgBackRest differential backup" {
        ExecStartPre = "${pgbackrestCommand} --stanza=${stanza} stanza-create";
        # Without a full backup pgBackRest takes a full one instead.
        ExecStart = "${pgbackrestCommand} --stanza=${stanza} backup --type=diff";
        TimeoutStartSec = "12h";
      };
      systemd.services.workorder-pitr-verify = pitrUnit "workorder: pgbackrest verify" {
        ExecStart = utils.escapeSystemdExecArgs [
          "${app.package}/bin/workorder-backup"
          "pitr-verify"
          "--metrics-file"
          "${stateDir}/workorder_pitr_verify.prom"
        ];
        # ExecStopPost: also after a failed verify, whose metrics say so.
        ExecStopPost = publish "workorder_pitr_verify.prom";
        TimeoutStartSec = "12h";
      };
      systemd.services.workorder-pitr-metrics = pitrUnit "workorder: point-in-time recovery metrics" {
        ExecStart = utils.escapeSystemdExecArgs [
          "${app.package}/bin/workorder-backup"
          "pitr-metrics"
          "--metrics-file"
          "${stateDir}/workorder_pitr.prom"
        ];
        ExecStopPost = publish "workorder_pitr.prom";
        TimeoutStartSec = "5min";
        Nice = 0;
        IOSchedulingClass = "best-effort";
      };

      systemd.timers.workorder-pitr-backup-full =
        timer "workorder: weekly full pgBackRest backup" cfg.fullBackupAt;
      systemd.timers.workorder-pitr-backup-diff =
        timer "workorder: daily differential pgBackRest backup" cfg.diffBackupAt;
      systemd.timers.workorder-pitr-verify = timer "workorder: weekly pgbackrest verify" cfg.verifyAt;
      systemd.timers.workorder-pitr-metrics = {
        description = "workorder: point-in-time recovery metrics every minute";
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnCalendar = "minutely";
          AccuracySec = "5s";
        };
      };
    }
  ]);
}
