"""Checks of the Nix side that run without building anything (Debian's nix-bin is enough).

- every tracked .nix file parses (`nix-instantiate --parse`);
- flake.lock pins nixpkgs (rev, narHash, lastModified) on a nixos-25.11 branch, and flake.nix has the
  outputs the issues ask for, for x86_64-linux and aarch64-linux, without extra inputs;
- the VM tests' Python test scripts evaluate (pure Nix, no nixpkgs needed) and compile;
- every console script, management command and load-test flag the Nix files name exists.
The deployment's facts shared with the production-stack test (nginx layout, environment, backup
command, hardening) live in nix/deployment.nix: tests/nix/test_deployment.py checks them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from harness import deployment

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
                     "nix/tests/vm-loadtest.nix", "nix/tests/vm-backup.nix", "nix/tests/vm-multinode.nix"):
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
                 "vm-multinode = pkgs.testers.runNixOSTest",
                 "formatter = forAllSystems (pkgs: pkgs.nixfmt)"):
        assert name in text, name


def test_pure_flake_helpers_evaluate():
    """The parts of the flake that need no nixpkgs: the lock's inputs and the systems list."""
    value = nix_eval_json('(builtins.fromJSON (builtins.readFile ./flake.lock)).nodes.nixpkgs.original.ref')
    assert value.startswith("nixos-")


# --- the VM tests' scripts ------------------------------------------------------------------------
MULTINODE_ADDRESSES = {"app1": "192.168.1.1", "app2": "192.168.1.2", "db": "192.168.1.4", "lb": "192.168.1.5"}
MULTINODE = '(import ./nix/tests/vm-multinode.nix { module = { }; workorder-loadtest = "/nix/store/x"; } { lib = { }; })'


def vm_test_script(name: str) -> str:
    if name == "vm-loadtest":
        expr = ('(import ./nix/tests/vm-loadtest.nix { module = { }; workorder-loadtest = "/nix/store/x"; } '
                '{ lib = { }; }).testScript')
    elif name == "vm-multinode":
        nodes = " ".join(f'{node}.networking.primaryIPAddress = "{ip}";' for node, ip in MULTINODE_ADDRESSES.items())
        expr = f"{MULTINODE}.testScript {{ nodes = {{ {nodes} }}; }}"
    else:
        expr = ('(import ./nix/tests/vm-backup.nix { module = { }; } { lib = { }; }).testScript '
                '{ nodes.machine.services.workorder.package = "/nix/store/x-workorder"; }')
    return nix_eval_json(expr)


@pytest.mark.parametrize("name", ["vm-loadtest", "vm-backup", "vm-multinode"])
def test_vm_test_script_compiles(name: str):
    script = vm_test_script(name)
    compile(script, name, "exec")
    assert "wait_for_unit(\"workorder.target\"" in script
    assert "copy_from_vm(" in script


def test_vm_multinode_checks_the_scale_out_contract():
    """The multi-node VM test gates what docs/nixos.md promises: one migration run, the SLA through
    the balancer, no acknowledged write lost when app1 stops, a notification across nodes, and
    Prometheus scraping every machine, with the nodes' addresses filled in from the test network."""
    script = vm_test_script("vm-multinode")
    assert 't.assertEqual(sorted(applied)[0], 0' in script and 't.assertEqual(sum(applied), rows' in script
    command = re.search(r'"workorder-loadtest (.*?)2>&1', script, re.DOTALL).group(1)
    assert "--host http://lb" in command and int(re.search(r"--users (\d+)", command).group(1)) >= 100
    assert 't.assertEqual(status, 0' in script and 't.assertEqual(summary["verdict"], "pass")' in script
    assert "systemctl stop workorder-gunicorn.service workorder-daphne.service" in script
    assert 't.assertEqual(result["failed_after_5s"], [])' in script
    assert 't.assertEqual(stored, len(ids)' in script
    assert f"ws://{MULTINODE_ADDRESSES['app1']}:8002/ws/notifications/" in script
    assert "app2.succeed(" in script and "notify([" in script
    assert "length == 10" in script


def test_vm_multinode_global_timeout_covers_its_own_waits():
    timeout = nix_eval_json(f"{MULTINODE}.globalTimeout")
    script = vm_test_script("vm-multinode")
    waits = [int(value) for value in re.findall(r"timeout=(\d+)", script)]
    assert timeout > sum(sorted(waits)[-3:]), (timeout, waits)


@pytest.mark.parametrize("name", ["failover-load.py", "ws-listen.py"])
def test_vm_multinode_helper_scripts_compile_and_are_used(name: str):
    path = REPO / "nix" / "tests" / name
    compile(read(path), name, "exec")
    assert f"./{name}" in read(REPO / "nix" / "tests" / "vm-multinode.nix")


def test_vm_loadtest_runs_the_gate_like_the_stack_test():
    script = vm_test_script("vm-loadtest")
    command = re.search(r'"workorder-loadtest (.*?)2>&1', script, re.DOTALL).group(1)
    flags = set(re.findall(r"(--[a-z-]+)", command))
    assert {"--host", "--users", "--spawn-rate", "--run-time", "--report-dir", "--password"} <= flags
    users = int(re.search(r"--users (\d+)", command).group(1))
    seconds = int(re.search(r"--run-time (\d+)s", command).group(1))
    assert users >= 100 and seconds >= 60
    assert "systemd-analyze security" in script
    assert "t.assertEqual(status, 0" in script
    for unit in ("workorder-gunicorn", "workorder-daphne"):
        assert unit in script


def test_vm_loadtest_fills_exactly_the_default_in_flight_limit_before_expecting_a_refusal():
    """The VM test freezes gunicorn, holds the module's default number of requests in flight and
    expects the next one refused by nginx and counted by mtail: its count must follow the default."""
    script = vm_test_script("vm-loadtest")
    parallel = re.search(r"--parallel-max (\d+) .*?\?n=\[1-(\d+)\]", script, re.DOTALL)
    held = int(parallel.group(2))
    assert int(parallel.group(1)) >= held
    assert held == deployment.defaults()["nginx"]["requestsInFlight"]
    assert "--signal=SIGSTOP workorder-gunicorn.service" in script and "--signal=SIGCONT" in script
    assert 'workorder_requests_shed_total{reason=\\"in_flight_limit\\"}' in script


def test_vm_loadtest_global_timeout_covers_its_own_waits():
    """runNixOSTest kills the driver after `globalTimeout` (3600 s by default): it must exceed the
    longest waits the script allows (the seeded stack coming up, then the load run)."""
    timeout = nix_eval_json('(import ./nix/tests/vm-loadtest.nix { module = { }; workorder-loadtest = "/nix/store/x"; } '
                            '{ lib = { }; }).globalTimeout')
    script = vm_test_script("vm-loadtest")
    waits = [int(value) for value in re.findall(r"timeout=(\d+)", script)]
    assert timeout > sum(sorted(waits)[-2:]), (timeout, waits)


def test_loadtest_flags_exist():
    cli = read(LOADTEST / "cli.py") + read(LOADTEST / "options.py")
    for flag in ("--host", "--users", "--spawn-rate", "--run-time", "--report-dir", "--password"):
        assert f'"{flag}"' in cli, flag


# --- names the module hands to the Python side -----------------------------------------------------
def pyproject_scripts(path: Path) -> dict[str, str]:
    return tomllib.loads(read(path))["project"]["scripts"]


def test_console_scripts_exist():
    scripts = pyproject_scripts(REPO / "backend" / "pyproject.toml")
    scripts |= pyproject_scripts(REPO / "loadtest" / "pyproject.toml")
    used = set(re.findall(r"/bin/(workorder-[a-z]+)", read(MODULE) + read(REPO / "nix/tests/vm-backup.nix")
                          + read(REPO / "nix/tests/loadtest-seed.nix")))
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


def management_command(name: str) -> str:
    matches = list(BACKEND.glob(f"*/management/commands/{name}.py"))
    assert matches, f"management command {name} not found"
    return read(matches[0])


def test_management_commands_and_flags_exist():
    seed_module = read(REPO / "nix" / "tests" / "loadtest-seed.nix")
    seed = management_command("seed_loadtest")
    flags = re.findall(r'"(--[a-z-]+)"', seed_module)
    assert {"--operators", "--work-orders", "--password", "--force"} <= set(flags)
    for flag in flags:
        assert f'"{flag}"' in seed, f"seed_loadtest has no {flag}"
    management_command("seed_demo")  # used by vm-backup
    management_command("issue_token")  # used by vm-loadtest (the WebSocket check)
    module = read(REPO / "nix" / "module.nix")
    for command in re.findall(r'"\$\{cfg\.package\}/bin/workorder-manage"\s+"([a-z_]+)"', module):
        if command != "migrate":  # Django's own
            management_command(command)  # e.g. prune_idempotency_keys (the singletonJobs timer)


def test_rules_files_are_loaded():
    rules = sorted((REPO / "nix" / "prometheus").glob("*.rules.yml"))
    assert rules, "nix/prometheus/*.rules.yml: the module loads every file matching this"
    assert 'hasSuffix ".rules.yml"' in read(REPO / "nix" / "monitoring.nix")
