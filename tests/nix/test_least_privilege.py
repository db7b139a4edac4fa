"""Least privilege in the NixOS module (nix/module.nix, nix/monitoring.nix, nix/deployment.nix),
checked without building anything:

- the application's PostgreSQL role has no CREATEDB (`ensureClauses.createdb = false`: nixpkgs'
  postgresql-setup runs `ALTER ROLE ... nocreatedb` at every start, which also migrates old
  installs); the backup runs as its own user and role, which alone gets CREATEDB, and reads every
  table through the grants of nix/deployment.nix (applied by workorder-backup-grants.service);
- the backup unit has no StateDirectory (systemd would chown /var/lib/workorder to it) and no
  credential but an external database's password; its directory belongs to the backup user;
- the backup's textfile metrics belong to the group workorder-metrics, which node exporter joins
  (not the application's group);
- the local Redis requires a password (requirePassFile), which reaches the application as the
  credential redis_password and the redis exporter through --redis.password-file; the exporter is
  in no Redis group and scrapes over loopback TCP;
- redis-exporter-passwords.sh writes valid JSON whatever the password holds, readable by its owner only.

The Debian stack test (tests/stack/test_stack.py::test_least_privilege_roles_and_redis_password)
runs the same roles, grants, password and exporter flags for real.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
from pathlib import Path

from harness import deployment

REPO = Path(__file__).resolve().parents[2]
MODULE = (REPO / "nix" / "module.nix").read_text()
MONITORING = (REPO / "nix" / "monitoring.nix").read_text()
SCRIPT = REPO / "nix" / "scripts" / "redis-exporter-passwords.sh"


def block(text: str, start: str) -> str:
    """The text from `start` to its matching closing brace (a Nix attribute set or let body)."""
    index = text.index(start)
    depth, i = 0, text.index("{", index)
    while True:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[index:i + 1]
        i += 1


def test_deployment_defaults_name_the_backup_user_the_metrics_group_and_the_redis_port():
    defaults = deployment.defaults()
    assert defaults["backupUser"] == "workorder-backup"
    assert defaults["metricsGroup"] == "workorder-metrics"
    assert defaults["redisPort"] == 6380
    grants = deployment.evaluate(backupRoleGrants="workorder-backup")["backupRoleGrants"]
    assert grants == ['GRANT pg_read_all_data TO "workorder-backup"']


def test_application_role_loses_createdb_backup_role_gets_it():
    ensure = MODULE[MODULE.index("ensureUsers = ["):MODULE.index("systemd.services.workorder-backup-grants")]
    app, _, backup = ensure.partition("++ optional cfg.backup.enable")
    assert "name = cfg.database.user;" in app and "ensureClauses.createdb = false;" in app
    assert "createdb = true" not in MODULE
    assert "name = backupUser;" in backup and "ensureClauses.createdb = cfg.backup.verifyRestore;" in backup
    grants = block(MODULE, "systemd.services.workorder-backup-grants")
    assert "deployment.backupRoleGrants backupUser" in grants and 'User = "postgres";' in grants
    assert '"postgresql.target"' in grants
    assert 'lib.versionAtLeast config.services.postgresql.package.version "14"' in MODULE
    assert "backupUser != cfg.user" in MODULE


def test_backup_unit_runs_as_the_backup_user_without_the_application_state():
    unit = block(MODULE, "systemd.services.workorder-backup = {")
    assert "serviceConfig = backupHardening //" in unit
    assert '"workorder-backup-grants.service"' in unit
    assert "DATABASE_URL = backupDatabaseUrl;" in unit
    hardening = block(MODULE, "backupHardening =")
    assert "User = backupUser;" in hardening and "Group = backupUser;" in hardening
    assert "SupplementaryGroups = [ cfg.group ];" in hardening  # reads the media directory
    assert "StateDirectory" not in hardening and "LoadCredential = toCredentials" in hardening
    assert "DJANGO_SECRET_KEY" not in hardening and "REDIS_PASSWORD" not in hardening
    assert re.search(r'"postgresql:///\$\{cfg\.database\.name\}\?host=/run/postgresql&user=\$\{backupUser\}"', MODULE)
    assert '"d ${cfg.backup.directory} 0700 ${backupUser} ${backupUser} - -"' in MODULE
    assert '"Z ${cfg.backup.directory} - ${backupUser} ${backupUser} - -"' in MODULE


def test_textfile_metrics_go_to_the_metrics_group_only():
    assert '"d ${cfg.monitoring.textfileDirectory} 0750 ${backupUser} ${metricsGroup} - -"' in MODULE
    node = MONITORING[MONITORING.index("prometheus-node-exporter.serviceConfig.SupplementaryGroups"):]
    node = node[:node.index("];") + 2]
    assert "deployment.defaults.metricsGroup" in node and "app.group" not in node
    assert "app.group" not in MONITORING


def test_redis_requires_a_password_the_app_and_the_exporter_have():
    redis = block(MODULE, "services.redis.servers.workorder = {")
    assert "requirePassFile = cfg.redis.passwordFile;" in redis
    assert "inherit (cfg.redis) port;" in redis
    assert "REDIS_PASSWORD = cfg.redis.passwordFile;" in MODULE  # -> LoadCredential redis_password
    generator = block(MODULE, "systemd.services.workorder-redis-password")
    assert "./scripts/generate-secret-key.sh" in generator and 'StateDirectoryMode = "0700";' in generator
    exporter = block(MONITORING, "systemd.services.prometheus-redis-exporter = {")
    assert '"redis_password:${app.redis.passwordFile}"' in exporter
    assert "./scripts/redis-exporter-passwords.sh" in exporter
    assert "SupplementaryGroups" not in exporter and "redisServer.group" not in MONITORING
    assert "servers.workorder.group" not in MONITORING
    flags = block(MONITORING, "services.prometheus.exporters.redis = exporterOptions // {")
    assert '"-redis.addr=${redisAddr}"' in flags and '"-redis.password-file=${redisPasswords}"' in flags
    assert 'redisAddr = "redis://127.0.0.1:${toString app.redis.port}";' in MONITORING


def test_settings_put_the_redis_credential_into_the_url():
    settings = (REPO / "backend" / "workorder" / "settings.py").read_text()
    assert 'REDIS_URL = redis_url_with_password(env("REDIS_URL"), env_secret("REDIS_PASSWORD"))' in settings


def test_redis_exporter_password_file_is_json_and_private(tmp_path):
    password = tmp_path / "password"
    password.write_text('a"b\\c d:@/%\n')
    output = tmp_path / "passwords.json"
    result = subprocess.run(["bash", "-euo", "pipefail", str(SCRIPT), "redis://127.0.0.1:6380", str(output),
                             str(password)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert json.loads(output.read_text()) == {"redis://127.0.0.1:6380": 'a"b\\c d:@/%'}
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "redis_password").write_text("from-the-credential")
    result = subprocess.run(["bash", "-euo", "pipefail", str(SCRIPT), "redis://x", str(output)],
                            capture_output=True, text=True, timeout=30,
                            env={"PATH": "/usr/bin:/bin", "CREDENTIALS_DIRECTORY": str(credentials)})
    assert result.returncode == 0, result.stderr
    assert json.loads(output.read_text()) == {"redis://x": "from-the-credential"}
    missing = subprocess.run(["bash", "-euo", "pipefail", str(SCRIPT), "redis://x", str(output)],
                             capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert missing.returncode != 0 and "usage" in missing.stderr
