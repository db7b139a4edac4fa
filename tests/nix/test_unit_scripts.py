"""The shell scripts the NixOS module runs (nix/scripts/), run here under `bash -euo pipefail`
and checked by shellcheck, so a script that only fails under strict shell options, or evaluates
data as code, fails CI instead of a unit.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "nix" / "scripts").glob("*.sh"))
GENERATE_SECRET_KEY = REPO / "nix" / "scripts" / "generate-secret-key.sh"
MANAGE = REPO / "nix" / "scripts" / "workorder-manage.sh"


def strict_bash(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-euo", "pipefail", *map(str, args)], capture_output=True, text=True,
                          timeout=60, env=env)


def test_every_script_is_referenced_by_the_module():
    module = "".join((REPO / "nix" / name).read_text() for name in ("module.nix", "monitoring.nix", "pitr.nix"))
    assert SCRIPTS
    for script in SCRIPTS:
        assert f"./scripts/{script.name}" in module, f"{script.name} is not used by nix/module.nix, monitoring.nix or pitr.nix"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_passes_shellcheck(script: Path):
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck not found: install Debian's shellcheck (tests/run.sh does)"
    result = subprocess.run([shellcheck, "--shell=bash", "--severity=style", str(script)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_secret_key_is_generated_once_private_and_without_sigpipe(tmp_path):
    key_file = tmp_path / "secret_key"
    first = strict_bash(GENERATE_SECRET_KEY, key_file)
    assert first.returncode == 0, first.stderr
    key = key_file.read_text()
    assert len(key) == 64 and key.replace("-", "").replace("_", "").isalnum()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not (tmp_path / "secret_key.tmp").exists()
    again = strict_bash(GENERATE_SECRET_KEY, key_file)
    assert again.returncode == 0 and key_file.read_text() == key, "an existing key is never replaced"
    other = tmp_path / "other"
    assert strict_bash(GENERATE_SECRET_KEY, other).returncode == 0
    assert other.read_text() != key


def test_secret_key_script_requires_its_argument():
    result = strict_bash(GENERATE_SECRET_KEY)
    assert result.returncode != 0 and "usage" in result.stderr


@pytest.fixture
def manage_env(tmp_path):
    """A stub workorder-manage that prints its arguments and environment, and the wrapper's inputs."""
    stub = tmp_path / "workorder-manage"
    stub.write_text("#!/bin/sh\necho \"args: $*\"\necho \"cwd: $(pwd)\"\nenv | sort\n")
    stub.chmod(0o755)
    module_env = tmp_path / "module.env"
    module_env.write_text("DATABASE_URL=postgresql:///workorder?host=/run/postgresql\nLOG_LEVEL=INFO\n")
    user_env = tmp_path / "user.env"
    user_env.write_text(
        "# a comment\n"
        "; another comment\n"
        "\n"
        "LOG_LEVEL=WARNING\n"
        "INJECTED=$(touch " + str(tmp_path / "pwned") + ")\n"
        "QUOTED=\"a value with spaces\"\n"
        "SINGLE='x=1'\n"
        "not a variable line\n"
    )
    secret = tmp_path / "secret"
    secret.write_text("s3cret-key\n")
    secret.chmod(0o400)
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    env = {
        "PATH": os.environ["PATH"],
        "WORKORDER_MANAGE_BIN": str(stub),
        "WORKORDER_MANAGE_USER": user,
        "WORKORDER_MANAGE_DIR": str(tmp_path),
        "WORKORDER_MANAGE_ENV_FILES": f"{module_env}:{user_env}",
        "WORKORDER_MANAGE_SECRETS": f"DJANGO_SECRET_KEY={secret}",
    }
    return env, tmp_path


def parsed_env(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line and not line.startswith("args:"))


def test_manage_wrapper_reads_environment_files_as_data(manage_env):
    env, tmp_path = manage_env
    result = strict_bash(MANAGE, "check", "--deploy", env=env)
    assert result.returncode == 0, result.stderr
    assert "args: check --deploy" in result.stdout
    assert f"cwd: {tmp_path}" in result.stdout
    seen = parsed_env(result.stdout)
    assert not (tmp_path / "pwned").exists(), "a $(command) in an environment file was executed"
    assert seen["INJECTED"] == f"$(touch {tmp_path / 'pwned'})"
    assert seen["LOG_LEVEL"] == "WARNING", "the user's environment file wins over the module's"
    assert seen["DATABASE_URL"] == "postgresql:///workorder?host=/run/postgresql"
    assert seen["QUOTED"] == "a value with spaces" and seen["SINGLE"] == "x=1"
    assert "not a KEY=VALUE line" in result.stderr
    assert not any(name.startswith("WORKORDER_MANAGE_") for name in seen), "the wrapper's inputs leak"


@pytest.mark.skipif(os.geteuid() != 0, reason="the secrets are read only when run as root")
def test_manage_wrapper_passes_root_only_secrets(manage_env):
    env, _ = manage_env
    result = strict_bash(MANAGE, "check", env=env)
    assert result.returncode == 0, result.stderr
    assert parsed_env(result.stdout)["DJANGO_SECRET_KEY"] == "s3cret-key"


def test_manage_wrapper_refuses_other_users(manage_env):
    env, _ = manage_env
    if os.geteuid() == 0:
        # root may always run it; as another user the wrapper must refuse.
        env = {**env, "WORKORDER_MANAGE_USER": "nobody"}
        result = subprocess.run(["runuser", "-u", "daemon", "--", "bash", "-euo", "pipefail", str(MANAGE), "check"],
                                capture_output=True, text=True, timeout=60, env=env)
    else:
        result = strict_bash(MANAGE, "check", env={**env, "WORKORDER_MANAGE_USER": "nobody"})
    assert result.returncode == 1 and "run it as root" in result.stderr
