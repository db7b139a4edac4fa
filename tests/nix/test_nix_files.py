"""Checks of the Nix side that run without building anything (Debian's nix-bin is enough).

- every tracked .nix file parses (`nix-instantiate --parse`);
- flake.lock pins nixpkgs (rev, narHash, lastModified) on a nixos-25.11 branch, and flake.nix has the
  outputs the issues ask for, for x86_64-linux and aarch64-linux, without extra inputs;
- the VM tests' Python test scripts evaluate (pure Nix, no nixpkgs needed) and compile;
- every name the module hands to the Python code exists there: environment variables, console
  scripts, management commands and their flags, backup and load-test flags, the rules files;
- the nginx layout and the backup invocation match the production-stack test's twin
  (tests/harness/nginx.py, tests/harness/stack.py), so a divergence is a failing test.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "nix" / "module.nix"
FLAKE = REPO / "flake.nix"
BACKEND = REPO / "backend" / "workorder"
LOADTEST = REPO / "loadtest" / "workorder_loadtest"


def nix_instantiate() -> str:
    for candidate in (shutil.which("nix-instantiate"), "/usr/bin/nix-instantiate"):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("nix-instantiate not found: install Debian's nix-bin (tests/run.sh does)")


def tracked_nix_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "*.nix"], cwd=REPO, capture_output=True, text=True, check=True).stdout
        files = [REPO / line for line in out.splitlines() if line.strip()]
    except (OSError, subprocess.CalledProcessError):
        files = []
    # Not yet committed files of this area count too; a checkout without git falls back to a walk.
    walked = [p for p in REPO.rglob("*.nix") if not any(part.startswith(".") for part in p.relative_to(REPO).parts)]
    return sorted(set(files) | set(walked))


def read(path: Path) -> str:
    return path.read_text()


def nix_eval_json(expr: str) -> object:
    result = subprocess.run([nix_instantiate(), "--eval", "--strict", "--json", "--readonly-mode", "-E", expr],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- parsing -------------------------------------------------------------------------------------
NIX_FILES = tracked_nix_files()


def test_the_nix_files_exist():
    names = {str(p.relative_to(REPO)) for p in NIX_FILES}
    for required in ("flake.nix", "nix/package.nix", "nix/loadtest.nix", "nix/module.nix",
                     "nix/tests/vm-loadtest.nix", "nix/tests/vm-backup.nix"):
        assert required in names


@pytest.mark.parametrize("path", NIX_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_nix_file_parses(path: Path):
    result = subprocess.run([nix_instantiate(), "--parse", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{path}: {result.stderr}"


# --- flake.lock and flake.nix ---------------------------------------------------------------------
def test_flake_lock_pins_nixpkgs():
    lock = json.loads(read(REPO / "flake.lock"))
    assert lock["version"] == 7
    assert lock["root"] == "root"
    assert lock["nodes"]["root"]["inputs"] == {"nixpkgs": "nixpkgs"}, "one input, nixpkgs"
    node = lock["nodes"]["nixpkgs"]
    locked, original = node["locked"], node["original"]
    assert re.fullmatch(r"[0-9a-f]{40}", locked["rev"])
    assert re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", locked["narHash"])
    assert isinstance(locked["lastModified"], int) and locked["lastModified"] > 1_700_000_000
    assert locked["type"] == original["type"] == "github"
    assert (locked["owner"], locked["repo"]) == ("NixOS", "nixpkgs")
    assert re.fullmatch(r"nixos-\d\d\.\d\d", original["ref"]), "a stable NixOS branch"
    # flake.nix asks for the same branch as the lock's "original".
    assert f'github:NixOS/nixpkgs/{original["ref"]}' in read(FLAKE)


def test_flake_outputs():
    text = read(FLAKE)
    assert "flake-utils" not in text, "no extra flake inputs"
    assert re.search(r'"x86_64-linux"\s+"aarch64-linux"', text)
    for output in ("packages = ", "apps = ", "nixosModules.default", "checks = ", "devShells = ", "formatter = "):
        assert output in text, output
    for name in ("workorder = ", "workorder-loadtest = ", "default = workorder", "loadtest = {", "manage = {",
                 "vm-loadtest = pkgs.testers.runNixOSTest", "vm-backup = pkgs.testers.runNixOSTest",
                 "formatter = forAllSystems (pkgs: pkgs.nixfmt)"):
        assert name in text, name


def test_pure_flake_helpers_evaluate():
    """The parts of the flake that need no nixpkgs: the lock's inputs and the systems list."""
    value = nix_eval_json('(builtins.fromJSON (builtins.readFile ./flake.lock)).nodes.nixpkgs.original.ref')
    assert value.startswith("nixos-")


# --- the VM tests' scripts ------------------------------------------------------------------------
def vm_test_script(name: str) -> str:
    if name == "vm-loadtest":
        expr = ('(import ./nix/tests/vm-loadtest.nix { module = { }; workorder-loadtest = "/nix/store/x"; } '
                '{ lib = { }; }).testScript')
    else:
        expr = ('(import ./nix/tests/vm-backup.nix { module = { }; } { lib = { }; }).testScript '
                '{ nodes.machine.services.workorder.package = "/nix/store/x-workorder"; }')
    return nix_eval_json(expr)


@pytest.mark.parametrize("name", ["vm-loadtest", "vm-backup"])
def test_vm_test_script_compiles(name: str):
    script = vm_test_script(name)
    compile(script, name, "exec")
    assert "wait_for_unit(\"workorder.target\"" in script
    assert "copy_from_vm(" in script


def test_vm_loadtest_runs_the_gate_like_the_stack_test():
    script = vm_test_script("vm-loadtest")
    command = re.search(r'"workorder-loadtest (.*?)2>&1', script, re.S).group(1)
    flags = set(re.findall(r"(--[a-z-]+)", command))
    assert {"--host", "--users", "--spawn-rate", "--run-time", "--report-dir", "--password"} <= flags
    users = int(re.search(r"--users (\d+)", command).group(1))
    seconds = int(re.search(r"--run-time (\d+)s", command).group(1))
    assert users >= 100 and seconds >= 60
    assert "systemd-analyze security" in script
    assert "t.assertEqual(status, 0" in script
    for unit in ("workorder-gunicorn", "workorder-daphne"):
        assert unit in script


def test_loadtest_flags_exist():
    cli = read(LOADTEST / "cli.py") + read(LOADTEST / "options.py")
    for flag in ("--host", "--users", "--spawn-rate", "--run-time", "--report-dir", "--password"):
        assert f'"{flag}"' in cli, flag


# --- names the module hands to the Python side -----------------------------------------------------
def module_settings_names() -> set[str]:
    """The environment variable names the module sets (the settings block and the credentials)."""
    text = read(MODULE)
    block = text[text.index("services.workorder.settings = mapAttrs"):text.index("users.users.${user}")]
    names = set(re.findall(r"^\s+([A-Z][A-Z0-9_]+) =", block, re.M))
    servers = text[text.index("serverEnvironment = environment // {"):]
    names |= set(re.findall(r"^\s+([A-Z][A-Z0-9_]+) =", servers[:servers.index("};")], re.M))
    names |= set(re.findall(r"export ([A-Z][A-Z0-9_]+)=", text))
    names |= set(re.findall(r'^\s+([A-Z][A-Z0-9_]+)="\$\(cat', text, re.M))
    return names


def python_sources() -> str:
    return "\n".join(read(p) for p in sorted(BACKEND.rglob("*.py")))


def test_every_environment_variable_is_read_by_the_code():
    names = module_settings_names()
    assert {"DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS", "GUNICORN_BIND", "DAPHNE_BIND", "STATIC_ROOT",
            "MEDIA_ROOT", "PROMETHEUS_MULTIPROC_DIR", "DJANGO_SECRET_KEY_FILE"} <= names
    sources = python_sources()
    settings = read(BACKEND / "settings.py")
    for name in sorted(names):
        if name == "DJANGO_SETTINGS_MODULE":  # Django's own
            continue
        # settings.py reads FOO_FILE through env_secret("FOO").
        base = name[: -len("_FILE")] if name.endswith("_FILE") else name
        found = f'"{name}"' in sources or f"'{name}'" in sources or f'env_secret("{base}")' in settings
        if not found and name == "PROMETHEUS_MULTIPROC_DIR":
            found = name in sources  # read by prometheus_client itself, handled in gunicorn_conf.py
        assert found, f"the module sets {name}, which nothing in backend/workorder reads"


def test_database_url_for_local_postgres_is_the_contract_one():
    assert '"postgresql:///${cfg.database.name}?host=/run/postgresql"' in read(MODULE)
    assert '"unix://${redisServer.unixSocket}?db=0"' in read(MODULE)


def pyproject_scripts(path: Path) -> dict[str, str]:
    return tomllib.loads(read(path))["project"]["scripts"]


def test_console_scripts_exist():
    scripts = pyproject_scripts(REPO / "backend" / "pyproject.toml")
    scripts |= pyproject_scripts(REPO / "loadtest" / "pyproject.toml")
    used = set(re.findall(r"/bin/(workorder-[a-z]+)", read(MODULE) + read(REPO / "nix/tests/vm-backup.nix")))
    used |= set(re.findall(r'"(workorder-[a-z]+)"', read(FLAKE)))
    used |= set(re.findall(r'mainProgram = "(workorder-[a-z]+)"', read(REPO / "nix/package.nix") +
                           read(REPO / "nix/loadtest.nix")))
    assert {"workorder-manage", "workorder-daphne", "workorder-backup", "workorder-loadtest"} <= used
    for script in sorted(used):
        assert script in scripts, f"{script} is not a console script in any pyproject.toml"
        module_name, _, func = scripts[script].partition(":")
        pkg_root = REPO / ("loadtest" if module_name.startswith("workorder_loadtest") else "backend")
        source = pkg_root / (module_name.replace(".", "/") + ".py")
        assert source.exists(), source
        assert f"def {func}(" in read(source)


def test_gunicorn_config_and_wsgi_module_exist():
    text = read(MODULE)
    assert "-c python:workorder.gunicorn_conf" in text and "workorder.wsgi:application" in text
    assert (BACKEND / "gunicorn_conf.py").exists()
    assert "application" in read(BACKEND / "wsgi.py")
    # Type=notify relies on gunicorn's arbiter sending READY=1; the config must not daemonize.
    assert "daemon = True" not in read(BACKEND / "gunicorn_conf.py")


def management_command(name: str) -> str:
    matches = list(BACKEND.glob(f"*/management/commands/{name}.py"))
    assert matches, f"management command {name} not found"
    return read(matches[0])


def test_management_commands_and_flags_exist():
    module = read(MODULE)
    seed = management_command("seed_loadtest")
    for flag in re.findall(r"(--[a-z-]+)", module[module.index("seed_loadtest \\"):module.index("--force") + 7]):
        assert f'"{flag}"' in seed, f"seed_loadtest has no {flag}"
    management_command("seed_demo")  # used by vm-backup
    settings = read(BACKEND / "settings.py")
    assert '"rest_framework.authtoken"' in settings  # drf_create_token, used by vm-loadtest


def test_backup_invocation_matches_the_cli_and_the_stack_test():
    module = read(MODULE)
    invocation = module[module.index("workorder-backup backup \\"):module.index("--metrics-file") + 80]
    flags = re.findall(r"(--[a-z-]+)", invocation)
    cli = read(BACKEND / "backup" / "cli.py")
    for flag in flags:
        assert f'"{flag}"' in cli, f"workorder-backup has no {flag}"
    stack = read(REPO / "tests" / "harness" / "stack.py")
    stack_call = stack[stack.index("def backup_argv"):]
    stack_call = stack_call[:stack_call.index("\n\n")]
    assert set(flags) == set(re.findall(r'"(--[a-z-]+)"', stack_call)), "the stack test runs the unit's command"
    # The module's defaults are the contract's (30 days, keep 7, daily 02:00, Persistent).
    assert re.search(r"retentionDays = mkOption \{\s+type = types.ints.positive;\s+default = 30;", module)
    assert re.search(r"keepAtLeast = mkOption \{\s+type = types.ints.positive;\s+default = 7;", module)
    assert 'default = "*-*-* 02:00:00";' in module and "Persistent = true;" in module


def test_rules_files_are_loaded():
    rules = sorted((REPO / "nix" / "prometheus").glob("*.rules.yml"))
    assert rules, "nix/prometheus/*.rules.yml: the module loads every file matching this"
    assert 'hasSuffix ".rules.yml"' in read(MODULE)


# --- parity with the production-stack test's nginx ---------------------------------------------------
def harness_nginx_source() -> str:
    return read(REPO / "tests" / "harness" / "nginx.py")


def test_nginx_locations_match_the_stack_test():
    module = read(MODULE)
    block = module[module.index("locations = {"):module.index("systemd.services.nginx.serviceConfig")]
    module_locations = set(re.findall(r'^\s+"([^"]+)"(?:\.| =)', block, re.M))
    harness_locations = set(re.findall(r"^\s+location ((?:= )?/[^ {]*) \{\{", harness_nginx_source(), re.M))
    harness_locations.discard("/nginx_status")  # services.nginx.statusPage in NixOS
    assert module_locations == harness_locations


def test_nginx_rate_limit_and_headers_match_the_stack_test():
    module = read(MODULE)
    harness = harness_nginx_source()
    assert "limit_req_zone $binary_remote_addr zone=workorder:10m rate=" in module
    assert "limit_req_zone $binary_remote_addr zone=workorder:10m rate=" in harness
    assert "limit_req_status 429;" in module and "limit_req_status 429;" in harness
    assert 'default = "10r/s";' in module and "default = 20;" in module
    assert 'rate_limit: str = "10r/s"' in harness and "rate_burst: int = 20" in harness
    # Security headers: same names and values on both sides.
    tree = ast.parse(harness)
    harness_headers = next(ast.literal_eval(node.value) for node in tree.body
                           if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "SECURITY_HEADERS")
    block = module[module.index("securityHeaders = mkOption"):]
    block = block[block.index("default = {"):block.index("};")]
    module_headers = dict(re.findall(r'"([A-Za-z-]+)" = "([^"]*)";', block))
    assert module_headers == harness_headers
    # The upstream keep-alive pool (must stay below gunicorn's keep-alive, see gunicorn_conf.py).
    assert "keepalive 32;" in module and "keepalive_timeout 60s;" in module
    assert "upstream_keepalive: int = 32" in harness and "upstream_keepalive_timeout: int = 60" in harness
    assert 'default = "3600s";' in module and 'ws_timeout: str = "3600s"' in harness


def test_hardening_block():
    module = read(MODULE)
    for directive in ('ProtectSystem = "strict";', "PrivateTmp = true;", "NoNewPrivileges = true;",
                      'CapabilityBoundingSet = [ "" ];', "RestrictAddressFamilies = [", '"@system-service"',
                      'UMask = "0027";', 'Type = "notify";', 'Type = "exec";', "LoadCredential = credentials;"):
        assert directive in module, directive
    assert "kill -s HUP $MAINPID" in module, "gunicorn reloads gracefully on HUP"


def test_environment_matches_the_stack_test():
    """The stack test gives gunicorn/daphne/workorder-manage the module's variables (tests/harness/stack.py)."""
    stack = read(REPO / "tests" / "harness" / "stack.py")
    stack_names = set(re.findall(r'"([A-Z][A-Z0-9_]+)"', stack))
    # Not set by the stack test on purpose: the default already is the module's value
    # (DJANGO_DEBUG off), or they only exist with an external database / in the admin wrapper.
    optional = {"DJANGO_DEBUG", "DATABASE_PASSWORD", "DATABASE_PASSWORD_FILE", "DJANGO_SECRET_KEY"}
    missing = module_settings_names() - stack_names - optional
    assert not missing, f"the module sets {sorted(missing)}, the production-stack test does not"


def _requirement_names(requirements: list[str]) -> set[str]:
    names = set()
    for requirement in requirements:
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower().replace("_", "-").replace(".", "-")
        names.add({"psycopg2-binary": "psycopg2"}.get(name, name))  # Nix builds psycopg2 against libpq
    return names


def _nix_dependency_list(path: Path, function: str) -> set[str]:
    text = read(path)
    block = text[text.index(f"{function} =") :]
    block = block[block.index("[") + 1 : block.index("]")]
    return set(block.split())


@pytest.mark.parametrize("package, nix_file", [("backend", "package.nix"), ("loadtest", "loadtest.nix")])
def test_nix_dependencies_match_pyproject(package: str, nix_file: str):
    """Every dependency in pyproject.toml is in the Nix expression (nixpkgs attribute = normalised name)."""
    project = tomllib.loads(read(REPO / package / "pyproject.toml"))["project"]
    nix = REPO / "nix" / nix_file
    assert _requirement_names(project["dependencies"]) == _nix_dependency_list(nix, "runtimeDependencies")
    test_extra = _requirement_names(project.get("optional-dependencies", {}).get("test", []))
    assert test_extra == _nix_dependency_list(nix, "testDependencies")
