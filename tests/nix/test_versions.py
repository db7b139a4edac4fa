"""Version drift between what CI tests and what Nix ships fails here.

nix/python-versions.json is the one table: backend/constraints.txt (what CI installs), both
pyproject.toml files (what the code declares) and the Nix overrides (nix/python-overrides.nix builds
each `override` from its PyPI sdist) are checked against it, the overrides' hashes against PyPI,
and the two places where an older version would silently change behaviour are tried with the
older version itself: daphne's options (`workorder-daphne --check`) and gunicorn's settings.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tomllib
import urllib.request
from importlib import metadata
from pathlib import Path

import pytest

from harness import versions

REPO = Path(__file__).resolve().parents[2]
TABLE = versions.table()
ENTRIES = versions.python_entries()
BY_NAME = {versions.normalize(entry["name"]): entry for entry in ENTRIES}
PACKAGE_NIX = (REPO / "nix" / "package.nix").read_text()
SIDE_INSTALLS = Path(os.environ.get("WORKORDER_SIDE_INSTALLS", REPO / ".venv" / "side-installs"))


def major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def requirements(project: str) -> dict[str, list[str]]:
    data = tomllib.loads((REPO / project / "pyproject.toml").read_text())["project"]
    return {"runtime": data["dependencies"], "test": data.get("optional-dependencies", {}).get("test", [])}


def requirement_name(requirement: str) -> str:
    return versions.normalize(requirement.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0]
                              .split("!")[0].split("~")[0].strip())


def test_every_table_version_is_the_one_constraints_txt_installs():
    pinned = versions.constraint_versions()
    for name, entry in BY_NAME.items():
        assert name in pinned, f"{entry['name']} is in nix/python-versions.json but not in backend/constraints.txt"
        assert pinned[name] == entry["ci"], f"{entry['name']}: table says {entry['ci']}, constraints.txt {pinned[name]}"


def test_every_direct_dependency_of_both_projects_is_in_the_table():
    for project in ("backend", "loadtest"):
        for role, declared in requirements(project).items():
            for requirement in declared:
                name = requirement_name(requirement)
                assert name in BY_NAME, f"{project} needs {name}; add it to nix/python-versions.json"
                entry = BY_NAME[name]
                assert project in entry["sets"], f"{name}: the table does not list it for {project}"
                assert entry["role"] == role, f"{name}: {role} dependency of {project}, the table says {entry['role']}"
    declared = {(requirement_name(r), project) for project in ("backend", "loadtest")
                for reqs in requirements(project).values() for r in reqs}
    for name, entry in BY_NAME.items():
        if entry["role"] in ("runtime", "test"):
            for project in entry["sets"]:
                assert (name, project) in declared, f"the table lists {name} for {project}, its pyproject does not"


def test_the_interpreter_major_minor_is_the_one_the_table_says_ci_runs():
    interpreter = next(e for e in TABLE["python"] if e["role"] == "interpreter")
    assert major_minor(interpreter["ci"]) == f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.mark.parametrize("name", sorted(n for n, e in BY_NAME.items() if e["role"] == "runtime"))
def test_runtime_dependency_nix_ships_is_the_version_ci_tests(name):
    """Overridden to exactly constraints.txt's version, or (Django only) a series Nix asserts."""
    entry = BY_NAME[name]
    if "override" in entry:
        assert entry["override"]["version"] == entry["ci"]
        return
    assert entry["attr"] == "django_5", f"{name} is neither overridden nor asserted: Nix would ship a guess"
    assert f'lib.versions.majorMinor python.pkgs.django.version == "{major_minor(entry["ci"])}"' in PACKAGE_NIX


def test_the_venv_runs_the_table_versions():
    for name, entry in BY_NAME.items():
        if entry["role"] == "test" and entry.get("attr") is None:
            continue
        installed = metadata.version(name if name != "psycopg2-binary" else "psycopg2-binary")
        expected = entry.get("nixpkgsTest") if _in_nixpkgs_venv() else entry["ci"]
        assert installed == (expected or entry["ci"]), f"{name}: {installed} installed, the table says {expected}"


def _in_nixpkgs_venv() -> bool:
    return Path(sys.prefix).name == ".venv-nixpkgs"


def pypi_sha256(pname: str, version: str) -> str:
    name = versions.normalize(pname)
    request = urllib.request.Request(f"https://pypi.org/simple/{name}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    filename = f"{pname}-{version}.tar.gz"
    matches = [f["hashes"]["sha256"] for f in files if f["filename"] == filename]
    assert matches, f"PyPI has no {filename} (fetchPypi's URL is built from pname and version)"
    return matches[0]


@pytest.mark.parametrize("name", sorted(n for n, e in BY_NAME.items() if "override" in e))
def test_override_hash_is_the_pypi_sdist(name):
    override = BY_NAME[name]["override"]
    digest = bytes.fromhex(pypi_sha256(override["pname"], override["version"]))
    assert override["hash"] == "sha256-" + base64.b64encode(digest).decode()


def side_install(package: str, version: str) -> Path:
    """`pip install --no-deps --target` of one exact version, cached; put first on PYTHONPATH."""
    target = SIDE_INSTALLS / f"{package}-{version}"
    if not (target / ".complete").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                        "--target", str(target), f"{package}=={version}"], check=True, timeout=300)
        (target / ".complete").touch()
    return target


def run_with(path: Path | None, code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DAPHNE_", "GUNICORN_"))}
    environ.update(DJANGO_SECRET_KEY="version-test-only", WORKORDER_STATE_DIR=str(tmp_path), **env)
    if path:
        environ["PYTHONPATH"] = str(path)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=environ,
                          cwd=tmp_path)


DAPHNE_CHECK = "import sys; from workorder.daphne_main import main; sys.argv[1:] = ['--check']; main()"


@pytest.mark.parametrize("version, accepted", [("4.2.1", False), ("4.2.3", True)])
def test_daphne_check_parses_the_units_command_line_with_daphnes_own_parser(tmp_path, version, accepted):
    """4.2.1 (nixpkgs before the CVE fix) lacks the WebSocket size limits: --check fails naming it."""
    result = run_with(side_install("daphne", version), DAPHNE_CHECK, tmp_path,
                      DAPHNE_BIND=f"unix:{tmp_path}/daphne.sock")
    output = result.stdout + result.stderr
    if accepted:
        assert result.returncode == 0, output
        assert f"daphne {version} accepts" in output
    else:
        assert result.returncode == 2, output
        assert f"daphne {version} rejects" in output and "--websocket-max-message-size" in output


GUNICORN_CHECK = ("import gunicorn, workorder.gunicorn_conf as conf; "
                  "print(gunicorn.__version__, sorted(conf._setting_names()))")


def shipped_gunicorn() -> str:
    entry = BY_NAME["gunicorn"]
    return entry["override"]["version"] if "override" in entry else entry["nixpkgs"]["26.05"]


@pytest.mark.parametrize("which", ["shipped by the flake", "nixpkgs without the override"])
def test_every_gunicorn_setting_exists_in_gunicorn(tmp_path, which):
    version = shipped_gunicorn() if which == "shipped by the flake" else "23.0.0"
    result = run_with(side_install("gunicorn", version), GUNICORN_CHECK, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(version), result.stdout


def test_gunicorn_conf_exits_2_naming_a_setting_gunicorn_lacks(tmp_path):
    config = tmp_path / "conf_with_unknown_setting.py"
    config.write_text("from workorder.gunicorn_conf import *  # noqa: F403 - the real settings\n"
                      "from workorder import gunicorn_conf as _base\n"
                      "_base.websocket_max_frames = 3\n"
                      "_base._check_gunicorn_knows_every_setting()\n")
    result = run_with(None, f"import runpy; runpy.run_path({str(config)!r})", tmp_path)
    assert result.returncode == 2
    assert "does not know the setting(s) websocket_max_frames" in result.stderr
