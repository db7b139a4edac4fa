"""Point-in-time recovery in the NixOS module (nix/pitr.nix): the passphrase wrapper the units and
archive_command run (nix/scripts/pgbackrest-with-passphrase.sh), under `bash -euo pipefail`, with
`env` in pgBackRest's place; and the settings the runbook (docs/backup.md) relies on.

The wrapper with the real pgBackRest: backend/tests/test_backup_pitr.py.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WRAPPER = REPO / "nix" / "scripts" / "pgbackrest-with-passphrase.sh"
PITR = (REPO / "nix" / "pitr.nix").read_text()
RUNBOOK = (REPO / "docs" / "backup.md").read_text()


def run_wrapper(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "WORKORDER_PGBACKREST_BIN": "env",
            "WORKORDER_PGBACKREST_USER": pwd.getpwuid(os.getuid()).pw_name}
    return subprocess.run(["bash", "-euo", "pipefail", str(WRAPPER), *args], env={**base, **env},
                          capture_output=True, text=True, timeout=60, cwd="/")


def cipher_vars(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if re.match(r"PGBACKREST_REPO\d+_CIPHER_PASS=", line))


@pytest.fixture
def secrets(tmp_path):
    tmp_path.chmod(0o755)  # as root the wrapper runs its command through runuser
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "pgbackrest-passphrase").write_text("from the credential\n")
    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text("from the file")  # no trailing newline: still read
    return credentials, passphrase_file


def test_credential_wins_over_the_file_and_goes_to_the_configured_repository(secrets):
    credentials, passphrase_file = secrets
    result = run_wrapper({"CREDENTIALS_DIRECTORY": str(credentials), "WORKORDER_PGBACKREST_REPO": "2",
                          "WORKORDER_PGBACKREST_PASSPHRASE_FILE": str(passphrase_file)})
    assert result.returncode == 0, result.stderr
    assert cipher_vars(result.stdout) == {"PGBACKREST_REPO2_CIPHER_PASS": "from the credential"}


def test_file_is_read_when_there_is_no_credential(secrets):
    _, passphrase_file = secrets
    result = run_wrapper({"WORKORDER_PGBACKREST_PASSPHRASE_FILE": str(passphrase_file)})
    assert result.returncode == 0, result.stderr
    assert cipher_vars(result.stdout) == {"PGBACKREST_REPO1_CIPHER_PASS": "from the file"}


def test_no_passphrase_configured_means_no_cipher_variable():
    result = run_wrapper({"WORKORDER_PGBACKREST_PASSPHRASE_FILE": ""})
    assert result.returncode == 0, result.stderr
    assert cipher_vars(result.stdout) == {}


def test_empty_or_missing_passphrase_and_bad_repository_index_are_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("")
    result = run_wrapper({"WORKORDER_PGBACKREST_PASSPHRASE_FILE": str(empty)})
    assert result.returncode == 2 and "empty" in result.stderr
    result = run_wrapper({"WORKORDER_PGBACKREST_PASSPHRASE_FILE": str(tmp_path / "missing")})
    assert result.returncode == 2 and "cannot read" in result.stderr
    result = run_wrapper({"WORKORDER_PGBACKREST_REPO": "1; rm -rf /"})
    assert result.returncode == 2 and "must be a number" in result.stderr


def test_passphrase_never_reaches_the_store_or_a_command_line():
    assert "readFile" not in PITR
    # the option type shared by every secret file: a path outside the store (nix/secret-file.nix)
    assert re.search(r"passphraseFile = mkOption \{\s*type = secretFile;", PITR)
    assert "secretFile = import ./secret-file.nix lib;" in PITR
    assert re.search(r"types\.pathWith \{\s*inStore = false;", (REPO / "nix" / "secret-file.nix").read_text())
    # units and postgresql.service get it as a systemd credential, never as an argument
    assert PITR.count('"${credential}:${cfg.passphraseFile}"') == 2
    assert "cipher-pass" not in re.sub(r"#.*", "", PITR)


def test_archiving_settings_and_schedules_are_the_documented_ones():
    assert 'archive_mode = "on";' in PITR and 'archive_timeout = "60s";' in PITR
    # nixpkgs sets both without mkDefault: the wrapper must win, or archive-get/push cannot decrypt
    assert 'archive_command = mkForce "${pgbackrestCommand} --stanza=${stanza} archive-push \\"%p\\"";' in PITR
    assert "settings.cmd = mkForce pgbackrestCommand;" in PITR
    assert 'retention-full-type = "time";' in PITR and "retention-full = cfg.retentionDays;" in PITR
    for default, documented in [('"Sun *-*-* 01:00:00"', "Sunday 01:00"), ('"Mon..Sat *-*-* 01:00:00"', "01:00"),
                                ('"Wed *-*-* 04:00:00"', "Wednesday 04:00"), ('"/var/backup/pgbackrest"',
                                                                             "`/var/backup/pgbackrest`")]:
        assert f"default = {default};" in PITR
        assert documented in RUNBOOK
    assert 'lib.versionAtLeast config.system.stateVersion "26.05"' in PITR
    for step in ("--type=time", "--target-action=promote", "--target-timeline", "find /var/lib/postgresql/<version>"):
        assert step in RUNBOOK
