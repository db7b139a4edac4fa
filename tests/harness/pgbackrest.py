"""A PostgreSQL cluster archiving its WAL into a pgBackRest repository, both in a temporary directory.

What the NixOS module sets up (nix/module.nix, services.workorder.backup.pointInTime), on loopback:
archive_mode = on, archive_command = `<wrapper> --stanza=main archive-push %p`, an encrypted
repository whose passphrase reaches pgBackRest through nix/scripts/pgbackrest-with-passphrase.sh
(the module's wrapper script) from a systemd-style credential directory, and pgBackRest's `cmd`
set to that wrapper, so the restore_command pgBackRest writes at restore time decrypts as well.

As root, PostgreSQL and pgBackRest run as `postgres` (the wrapper's runuser), like on NixOS.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

from .services import PostgresServer, _as_root, find_binary

REPO_ROOT = Path(__file__).resolve().parents[2]
WRAPPER_SCRIPT = REPO_ROOT / "nix" / "scripts" / "pgbackrest-with-passphrase.sh"
STANZA = "main"


def pgbackrest_binary() -> str:
    return find_binary("pgbackrest", ("/usr/bin/pgbackrest",))


class PitrCluster:
    """PostgreSQL + pgBackRest (stanza `main`): archive, backup, restore to a time or to the end."""

    def __init__(self, base_dir: str | Path, archive_timeout: str = "60s", passphrase: str = "correct horse battery"):
        self.base = Path(base_dir)
        self.base.mkdir(parents=True, exist_ok=True)
        self.repository = self.base / "repository"
        self.credentials = self.base / "credentials"
        self.config_file = self.base / "pgbackrest.conf"
        self.command = self.base / "pgbackrest.sh"
        self.archive_timeout = archive_timeout
        self.passphrase = passphrase
        self.pg = PostgresServer(base_dir=str(self.base / "pg"))
        self._archive_command = f"{self.command} --stanza={STANZA} archive-push %p"

    # -- set-up ---------------------------------------------------------------------------------
    def _owned_by_postgres(self, *paths: Path) -> None:
        if _as_root():
            pw = pwd.getpwnam("postgres")
            for path in paths:
                os.chown(path, pw.pw_uid, pw.pw_gid)

    def write_config(self) -> None:
        for path in (self.repository, self.base / "lock", self.base / "log", self.base / "spool", self.credentials):
            path.mkdir(parents=True, exist_ok=True)
        self._owned_by_postgres(self.base, self.repository, self.base / "lock", self.base / "log",
                                self.base / "spool")
        # The credential directory systemd would provide: readable by the service's user only.
        secret = self.credentials / "pgbackrest-passphrase"
        secret.write_text(self.passphrase + "\n")
        os.chmod(secret, 0o400)
        self._owned_by_postgres(self.credentials, secret)
        os.chmod(self.credentials, 0o500)
        # Like the module: [global] repository and behaviour, [main] the cluster.
        self.config_file.write_text(
            "[global]\n"
            f"repo1-path={self.repository}\n"
            "repo1-cipher-type=aes-256-cbc\n"
            "repo1-retention-full-type=time\n"
            "repo1-retention-full=30\n"
            "compress-type=zst\n"
            "start-fast=y\n"
            "job-retry=0\n"  # a damaged file is reported at once, not after a 15 s retry
            "log-level-console=warn\n"
            "log-level-file=off\n"
            f"lock-path={self.base / 'lock'}\n"
            f"log-path={self.base / 'log'}\n"
            f"spool-path={self.base / 'spool'}\n"
            f"cmd={self.command}\n"
            f"\n[{STANZA}]\n"
            f"pg1-path={self.pg.data_dir}\n"
            f"pg1-port={self.pg.port}\n"
            f"pg1-socket-path={self.pg.socket_dir}\n"
            f"pg1-user={self.pg.user}\n"
        )
        os.chmod(self.config_file, 0o644)
        # The Nix wrapper's job (writeShellApplication): fix the binary and the credential, then
        # run the committed script.
        self.command.write_text(
            "#!/bin/sh\n"
            f"export PGBACKREST_CONFIG={self.config_file}\n"
            f"export CREDENTIALS_DIRECTORY={self.credentials}\n"
            f"export WORKORDER_PGBACKREST_BIN={pgbackrest_binary()}\n"
            f"exec bash {WRAPPER_SCRIPT} \"$@\"\n"
        )
        os.chmod(self.command, 0o755)

    def configure_archiving(self, archive_command: str | None = None) -> None:
        """The module's postgresql.conf settings (after the cluster's own, so they win)."""
        command = archive_command or self._archive_command
        with open(self.pg.data_dir / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# services.workorder.backup.pointInTime\n"
                "archive_mode = on\n"
                f"archive_command = '{command}'\n"
                f"archive_timeout = '{self.archive_timeout}'\n"
                "wal_level = replica\n"
            )

    def set_archive_command(self, command: str | None) -> None:
        """archive_command can change with a reload (sighup), as NixOS' switch would apply it."""
        command = command or self._archive_command
        self.pg.psql(f"ALTER SYSTEM SET archive_command = '{command}'")
        self.pg.psql("SELECT pg_reload_conf()")

    def start(self) -> PitrCluster:
        self.write_config()  # also hands the base directory to postgres
        self.pg.init()
        self.configure_archiving()
        self.pg.start()
        self.write_config()  # the port is known now (start may pick another one)
        self.pgbackrest("stanza-create")
        return self

    def cleanup(self) -> None:
        self.pg.cleanup()
        shutil.rmtree(self.base, ignore_errors=True)

    # -- pgBackRest -----------------------------------------------------------------------------
    def pgbackrest(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        result = subprocess.run([str(self.command), f"--stanza={STANZA}", *args], capture_output=True, text=True,
                                errors="replace", timeout=timeout, cwd="/")
        if check and result.returncode != 0:
            raise RuntimeError(f"pgbackrest {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
                               f" {result.stdout.strip()}")
        return result

    def backup(self, kind: str = "full") -> None:
        self.pgbackrest("backup", f"--type={kind}")

    def info(self) -> list[dict]:
        return json.loads(self.pgbackrest("info", "--output=json").stdout)

    # -- WAL --------------------------------------------------------------------------------------
    def switch_and_wait_archived(self, timeout: float = 60) -> str:
        """Close the current WAL segment and wait until the archiver has pushed it; its name."""
        segment = self.pg.psql("SELECT pg_walfile_name(pg_switch_wal())")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            archived = self.pg.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
            if archived and archived[:24] >= segment:
                return segment
            time.sleep(0.2)
        raise TimeoutError(f"WAL segment {segment} not archived after {timeout}s "
                           f"(pg_stat_archiver: {self.pg.psql('SELECT * FROM pg_stat_archiver')})")

    # -- restore ---------------------------------------------------------------------------------
    def wipe(self) -> None:
        """Stop the server and delete the cluster's files: the disaster the restore recovers from."""
        self.pg.stop()
        for entry in self.pg.data_dir.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def restore(self, *options: str, timeout: float = 120) -> float:
        """pgbackrest restore with `options`, start, wait until recovery is over; seconds it took."""
        started = time.monotonic()
        self.pgbackrest("restore", *options)
        self.pg.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.pg.psql("SELECT pg_is_in_recovery()") == "f":
                    return time.monotonic() - started
            except subprocess.CalledProcessError:
                pass  # still starting up
            time.sleep(0.1)
        raise TimeoutError(f"still in recovery after {timeout}s:\n"
                           + "\n".join(self.pg.log_file.read_text(errors="replace").splitlines()[-20:]))
