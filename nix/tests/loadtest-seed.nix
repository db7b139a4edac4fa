# Load-test accounts and realistic data for the VM load test (never part of the production
# module): `workorder-manage seed_loadtest` once migrations have run, before workorder.target.
{
  password,
  operators ? 200,
  supervisors ? 50,
  makers ? 50,
  workOrders ? 20000,
}:
{
  config,
  lib,
  utils,
  ...
}:
let
  cfg = config.services.workorder;
in
{
  systemd.services.workorder-seed-loadtest = {
    description = "workorder: seed load-test accounts and data (VM test only)";
    after = [ "workorder-migrate.service" ];
    requires = [ "workorder-migrate.service" ];
    before = [ "workorder.target" ];
    requiredBy = [ "workorder.target" ];
    inherit (config.systemd.services.workorder-migrate) environment;
    serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
      TimeoutStartSec = "60min";
      User = cfg.user;
      Group = cfg.group;
      # The local Redis' socket (an app node of several reaches Redis over TCP instead).
      SupplementaryGroups = lib.optional cfg.redis.createLocally config.services.redis.servers.workorder.group;
      # The service's credentials (the Redis password, a secret key file if one is set).
      inherit (config.systemd.services.workorder-migrate.serviceConfig) LoadCredential;
      WorkingDirectory = "/var/lib/workorder";
      ExecStart = utils.escapeSystemdExecArgs [
        "${cfg.package}/bin/workorder-manage"
        "seed_loadtest"
        "--operators"
        (toString operators)
        "--supervisors"
        (toString supervisors)
        "--makers"
        (toString makers)
        "--work-orders"
        (toString workOrders)
        "--password"
        password
        "--force"
      ];
    };
  };
}
