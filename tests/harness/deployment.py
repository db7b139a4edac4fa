"""nix/deployment.nix, the deployment's facts, evaluated for the Debian stack.

The NixOS module imports the same file; here `nix-instantiate --eval --strict --json` (Debian's
nix-bin is enough, no nixpkgs needed) evaluates it with this stack's paths, and the harness renders
nginx.conf (tests/harness/nginx.py), the processes' environment and the backup command line
(tests/harness/stack.py) from the result. Nothing here repeats a value of the module.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT_NIX = REPO_ROOT / "nix" / "deployment.nix"

_EXPRESSION = """
{ params }:
let
  p = builtins.fromJSON params;
  d = import %(path)s;
  call = name: if p ? ${name} then d.${name} p.${name} else null;
in
{
  inherit (d) defaults hardening;
  nginx = call "nginx";
  environment = call "environment";
  serverEnvironment = call "serverEnvironment";
  backupArgs = call "backupArgs";
  backupRoleGrants = call "backupRoleGrants";
}
"""


def nix_instantiate() -> str:
    for candidate in (shutil.which("nix-instantiate"), "/usr/bin/nix-instantiate"):
        if candidate and Path(candidate).exists():
            return candidate
    raise FileNotFoundError("nix-instantiate not found: install Debian's nix-bin (tests/run.sh does)")


@functools.lru_cache(maxsize=64)
def _evaluate(params_json: str) -> str:
    expression = _EXPRESSION % {"path": json.dumps(str(DEPLOYMENT_NIX))}
    result = subprocess.run(
        [nix_instantiate(), "--eval", "--strict", "--json", "--readonly-mode", "-E", expression,
         "--argstr", "params", params_json],
        capture_output=True, text=True, timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"evaluating {DEPLOYMENT_NIX} failed:\n{result.stderr}")
    return result.stdout


def evaluate(**params: dict) -> dict:
    """`evaluate(nginx={...}, environment={...})`: each keyword calls the function of that name in
    nix/deployment.nix with the given arguments; `defaults` and `hardening` are always there."""
    return json.loads(_evaluate(json.dumps(params, sort_keys=True, default=str)))


def defaults() -> dict:
    return evaluate()["defaults"]


def without_nulls(environment: dict) -> dict[str, str]:
    """The module drops null settings; so does the harness."""
    return {name: str(value) for name, value in environment.items() if value is not None}
