"""nix/python-versions.json, the version table, for the tests and for tests/run.sh.

    python tests/harness/versions.py nixpkgs-constraints OUT   # writes OUT, prints the relaxed pins

`nixpkgs-constraints` turns backend/constraints.txt into the constraints of the nixpkgs-versions
environment (.venv-nixpkgs): the packages Nix overrides keep constraints.txt's version (Nix builds
exactly that), the others get the version nixpkgs has (`nixpkgsTest`). Packages nixpkgs installs
below a dependant's declared bound (`relaxedIn`, nixpkgs' pythonRelaxDeps) cannot be expressed as a
pip constraint; they are printed as `name==version` lines for a second `pip install --no-deps`.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TABLE = REPO_ROOT / "nix" / "python-versions.json"
CONSTRAINTS = REPO_ROOT / "backend" / "constraints.txt"


def normalize(name: str) -> str:
    """PEP 503 name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def table() -> dict:
    return json.loads(TABLE.read_text())


def python_entries() -> list[dict]:
    return [entry for entry in table()["python"] if entry["role"] != "interpreter"]


def constraint_versions(text: str | None = None) -> dict[str, str]:
    text = CONSTRAINTS.read_text() if text is None else text
    versions = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            versions[normalize(name)] = version.strip()
    return versions


def nixpkgs_constraints(text: str | None = None) -> tuple[str, list[str]]:
    """(constraints for the nixpkgs-versions environment, pins to install without dependencies)."""
    text = CONSTRAINTS.read_text() if text is None else text
    replaced = {normalize(e["name"]): e["nixpkgsTest"] for e in python_entries() if "nixpkgsTest" in e}
    relaxed = {normalize(e["name"]) for e in python_entries() if e.get("relaxedIn")}
    lines, late = [], []
    for line in text.splitlines():
        name = normalize(line.partition("==")[0].strip()) if line.strip() else ""
        if name in relaxed:
            late.append(f"{name}=={replaced.get(name, line.partition('==')[2].strip())}")
        elif name in replaced:
            lines.append(f"{name}=={replaced[name]}")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n", late


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "nixpkgs-constraints":
        print(__doc__, file=sys.stderr)
        return 2
    constraints, late = nixpkgs_constraints()
    Path(argv[1]).write_text(constraints)
    print("\n".join(late))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
