"""nix/deployment.nix: the facts the NixOS module and the production-stack test share.

The module imports the file and the stack test renders the same evaluation (tests/harness), so
there is no second copy to keep in step. What is left to prove is that the facts are right:
- every environment variable it sets is one the code reads;
- its backup arguments are accepted by workorder-backup's own parser;
- its nginx layout renders to a configuration that real nginx accepts, with the locations and
  headers the service needs, and the gunicorn locations reuse upstream connections;
- its hardening block, rendered as NixOS renders unit files, is accepted by systemd without a
  warning;
- the module takes each of these from the file (nothing restated in module.nix).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import deployment
from harness.nginx import NginxConfig, NginxServer

REPO = Path(__file__).resolve().parents[2]
BACKEND = REPO / "backend" / "workorder"
MODULE = (REPO / "nix" / "module.nix").read_text()

ENVIRONMENT_ARGS = {
    "stateDir": "/var/lib/workorder", "staticRoot": "/nix/store/x/static", "mediaRoot": "/var/lib/workorder/media",
    "hostName": "workorder.example.org", "behindTls": True, "databaseUrl": "postgresql:///workorder",
    "redisUrl": "unix:///run/redis-workorder/redis.sock?db=0", "gunicornBind": "unix:/run/workorder/gunicorn.sock",
    "daphneBind": "unix:/run/workorder/daphne.sock", "secretKeyFile": "/var/lib/workorder/secret_key",
    "databasePasswordFile": "/run/credentials/x/database_password",
}


def evaluated(**params) -> dict:
    return deployment.evaluate(**params)


def python_sources() -> str:
    return "\n".join(path.read_text() for path in sorted(BACKEND.rglob("*.py")))


def test_every_environment_variable_is_read_by_the_code():
    result = evaluated(environment=ENVIRONMENT_ARGS, serverEnvironment={"multiprocDir": "/run/workorder/prometheus"})
    names = set(result["environment"]) | set(result["serverEnvironment"])
    assert {"DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS", "GUNICORN_BIND", "DAPHNE_BIND", "STATIC_ROOT",
            "MEDIA_ROOT", "PROMETHEUS_MULTIPROC_DIR", "DJANGO_SECRET_KEY_FILE"} <= names
    sources = python_sources()
    settings = (BACKEND / "settings.py").read_text()
    for name in sorted(names - {"DJANGO_SETTINGS_MODULE"}):  # Django's own
        base = name.removesuffix("_FILE")  # settings.py reads FOO_FILE through env_secret("FOO")
        found = f'"{name}"' in sources or f'env_secret("{base}")' in settings
        if name == "PROMETHEUS_MULTIPROC_DIR":  # read by prometheus_client, handled in gunicorn_conf.py
            found = name in sources
        assert found, f"nix/deployment.nix sets {name}, which nothing in backend/workorder reads"


def test_environment_follows_tls_and_leaves_out_what_is_not_configured():
    tls = evaluated(environment=ENVIRONMENT_ARGS)["environment"]
    assert tls["CSRF_TRUSTED_ORIGINS"] == "https://workorder.example.org"
    assert tls["WORKORDER_BEHIND_TLS"] == "true"
    assert tls["ALLOWED_HOSTS"].split(",")[0] == "workorder.example.org"
    plain_args = {**ENVIRONMENT_ARGS, "behindTls": False, "secretKeyFile": None}
    del plain_args["redisUrl"], plain_args["databasePasswordFile"]
    plain = evaluated(environment=plain_args)["environment"]
    assert plain["CSRF_TRUSTED_ORIGINS"] == "http://workorder.example.org,https://workorder.example.org"
    assert "REDIS_URL" not in plain and "DATABASE_PASSWORD_FILE" not in plain
    assert deployment.without_nulls(plain).get("DJANGO_SECRET_KEY_FILE") is None


def test_backup_arguments_are_accepted_by_workorder_backup():
    from workorder.backup.cli import build_parser

    args = evaluated(backupArgs={"directory": "/var/backup/workorder", "mediaDir": "/var/lib/workorder/media",
                                 "metricsFile": "/var/lib/textfiles/workorder_backup.prom"})["backupArgs"]
    parsed = build_parser().parse_args(args)
    defaults = deployment.defaults()["backup"]
    assert parsed.command == "backup"
    assert (parsed.retention_days, parsed.keep_at_least) == (defaults["retentionDays"], defaults["keepAtLeast"])
    assert parsed.verify_restore is defaults["verifyRestore"] is True
    assert parsed.metrics_file.endswith("workorder_backup.prom")
    unverified = evaluated(backupArgs={"directory": "/b", "mediaDir": "/m", "metricsFile": "/f",
                                       "verifyRestore": False})["backupArgs"]
    assert build_parser().parse_args(unverified).verify_restore is False


def test_backup_defaults_are_the_contract():
    """30 days, never fewer than 7 verified sets, daily at 02:00 (the module's option defaults)."""
    backup = deployment.defaults()["backup"]
    assert backup == {"startAt": "*-*-* 02:00:00", "retentionDays": 30, "keepAtLeast": 7, "verifyRestore": True}


@pytest.fixture
def rendered_nginx(tmp_path):
    config = NginxConfig(gunicorn_socket=tmp_path / "g.sock", daphne_socket=tmp_path / "d.sock",
                         static_root=tmp_path / "static", media_root=tmp_path / "media")
    server = NginxServer(tmp_path / "nginx", config)
    return server, config.layout()


def location_blocks(text: str) -> dict[str, str]:
    return {match.group(1): match.group(2) for match in re.finditer(r"location ([^{]+?) \{\n(.*?)\n\s*\}", text, re.DOTALL)}


def test_nginx_layout_renders_to_a_configuration_nginx_accepts(rendered_nginx):
    server, _ = rendered_nginx
    server.check()  # raises with nginx's message when invalid
    blocks = location_blocks(server.render())
    assert {"/api/", "/admin/", "= /health/", "= /ready/", "/ws/", "/static/", "/media/", "= /",
            "= /metrics", "/metrics/"} <= set(blocks)
    assert "return 302 /api/docs/;" in blocks["= /"]
    for path in ("= /metrics", "/metrics/"):
        assert "deny all;" in blocks[path]


def test_gunicorn_locations_reuse_upstream_connections_and_ws_upgrades(rendered_nginx):
    """Every location that includes proxy headers loses the http-level `Connection ""`: the gunicorn
    ones restate it (else nginx sends `Connection: close` and the keepalive pool is dead)."""
    server, layout = rendered_nginx
    blocks = location_blocks(server.render())
    for path, location in layout["locations"].items():
        if location.get("proxyPass") == "http://workorder-gunicorn":
            assert 'proxy_set_header Connection "";' in blocks[path], path
    assert "proxy_set_header Connection $connection_upgrade;" in blocks["/ws/"]
    assert 'proxy_set_header Connection "";' not in blocks["/ws/"]
    assert "keepalive 32;" in layout["upstreams"]["workorder-gunicorn"]["extraConfig"]


def test_security_headers_and_rate_limit_come_from_the_defaults(rendered_nginx):
    _, layout = rendered_nginx
    defaults = deployment.defaults()["nginx"]
    for name, value in defaults["securityHeaders"].items():
        assert f'add_header {name} "{value}" always;' in layout["virtualHostExtraConfig"]
    assert "limit_req_status 429;" in layout["virtualHostExtraConfig"]
    assert f"rate={defaults['rateLimit']};" in layout["commonHttpConfig"]
    assert f"burst={defaults['rateBurst']} nodelay" in layout["locations"]["/api/"]["extraConfig"]


def test_ready_is_closed_to_the_outside_like_metrics(rendered_nginx):
    server, _ = rendered_nginx
    blocks = location_blocks(server.render())
    assert "deny all;" in blocks["= /ready/"]
    assert "proxy_pass" not in blocks["= /ready/"]
    assert "proxy_pass" in blocks["= /health/"]  # liveness stays open for outside load balancers


def test_body_limit_is_one_value_for_nginx_and_django():
    """nginx's client_max_body_size and the environment's DATA_UPLOAD_MAX_MEMORY_SIZE both come from
    defaults.maxRequestBodySize (and follow it when the module passes another value)."""
    nginx_args = {"gunicornSocket": "/g", "daphneSocket": "/d", "staticRoot": "/s", "mediaRoot": "/m",
                  "shedLog": "/l"}
    default = deployment.defaults()["maxRequestBodySize"]
    for size in (None, 4096):
        extra = {} if size is None else {"maxRequestBodySize": size}
        result = evaluated(nginx={**nginx_args, **extra}, environment={**ENVIRONMENT_ARGS, **extra})
        expected = size or default
        assert f"client_max_body_size {expected};" in result["nginx"]["virtualHostExtraConfig"].splitlines()
        assert result["environment"]["DATA_UPLOAD_MAX_MEMORY_SIZE"] == str(expected)
    settings = (BACKEND / "settings.py").read_text()
    assert 'env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 1024 * 1024)' in settings and default == 1024 * 1024


def test_nginx_refusals_of_long_request_lines_and_large_bodies_are_json(rendered_nginx):
    """nginx answers these before gunicorn (4k header buffers hold exactly gunicorn's 4094-byte
    request line): their error pages are internal locations returning the API's JSON error shape."""
    server, layout = rendered_nginx
    extra = layout["virtualHostExtraConfig"].splitlines()
    assert "large_client_header_buffers 4 4k;" in extra
    blocks = location_blocks(server.render())
    for status, code in ((413, "request_too_large"), (414, "uri_too_long")):
        page = f"/__errors/{code}"
        assert f"error_page {status} {page};" in extra
        block = blocks[f"= {page}"]
        assert "internal;" in block and "default_type application/json;" in block
        body = re.search(rf"return {status} '(.*)';", block).group(1)
        assert set(json.loads(body)) == {"detail", "code", "errors"} and json.loads(body)["code"] == code


def unit_lines(section: dict) -> list[str]:
    """A serviceConfig attrset as NixOS writes it: a list is one line per element, booleans
    true/false, everything else as text."""
    lines = []
    for key, value in section.items():
        for item in value if isinstance(value, list) else [value]:
            text = ("true" if item else "false") if isinstance(item, bool) else str(item)
            lines.append(f"{key}={text}")
    return lines


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_hardening_block_is_accepted_by_systemd(tmp_path):
    hardening = evaluated()["hardening"]
    unit = tmp_path / "workorder-hardening-check.service"
    unit.write_text("\n".join(["[Unit]", "Description=hardening check", "[Service]", "Type=oneshot",
                               "ExecStart=/bin/true", *unit_lines(hardening), ""]))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in result.stderr.splitlines() if unit.name in line]
    assert result.returncode == 0 and not problems, result.stderr


def test_module_takes_the_facts_from_deployment_nix():
    assert "deployment = import ./deployment.nix;" in MODULE
    assert "deployment.hardening" in MODULE and "deployment.backupArgs" in MODULE
    assert "deployment.environment" in MODULE and "deployment.nginx" in MODULE
    assert "inherit (nginxLayout) locations;" in MODULE
    # Nothing else in the module declares a location, an upstream or a hardening directive.
    assert MODULE.count("locations") == 1
    for directive in ("ProtectSystem", "NoNewPrivileges", "SystemCallFilter", "CapabilityBoundingSet"):
        assert directive not in MODULE, f"{directive} belongs in nix/deployment.nix's hardening block"


# --- several machines (services.workorder.role) ----------------------------------------------------
def nix_value(expression: str):
    result = subprocess.run([deployment.nix_instantiate(), "--eval", "--strict", "--json", "--readonly-mode", "-E",
                             f"let d = import {json.dumps(str(REPO / 'nix' / 'deployment.nix'))}; in {expression}"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_host_port_brackets_ipv6_addresses_only():
    """A node address becomes nginx's upstream server and gunicorn/daphne's bind address."""
    assert nix_value('map (h: d.hostPort h 8000) [ "10.0.0.11" "fd00::11" "[fd00::11]" "app1.internal" ]') == [
        "10.0.0.11:8000", "[fd00::11]:8000", "[fd00::11]:8000", "app1.internal:8000"]


def test_a_node_answers_the_host_prometheus_scrapes_it_by():
    env = deployment.evaluate(environment={**ENVIRONMENT_ARGS, "extraAllowedHosts": ["10.0.0.11"]})["environment"]
    assert env["ALLOWED_HOSTS"].split(",") == ["workorder.example.org", "localhost", "127.0.0.1", "[::1]", "10.0.0.11"]
    single = deployment.evaluate(environment=ENVIRONMENT_ARGS)["environment"]
    assert single["ALLOWED_HOSTS"].split(",")[-1] == "[::1]"


def test_role_password_sql_reads_the_credential_file_and_holds_no_secret():
    """The database host sets the app role's password from the systemd credential at runtime, as a
    psql variable quoted as a literal (:'password'); the script in the store holds no password."""
    sql = nix_value('d.rolePasswordSql "workorder"')
    assert sql.splitlines()[0] == '\\set password `cat "$CREDENTIALS_DIRECTORY/database_password"`'
    assert "ALTER ROLE \"workorder\" WITH LOGIN PASSWORD :'password';" in sql
    assert "SET password_encryption = 'scram-sha-256';" in sql
    assert "database_password:${cfg.database.passwordFile}" in MODULE
    assert "deployment.rolePasswordSql cfg.database.user" in MODULE
