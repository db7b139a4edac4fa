"""Failures of the backup tool. Each carries the process exit code documented in docs/backup.md."""

import re

from workorder.core.env import EXIT_CONFIGURATION, ConfigurationError

EXIT_OK = 0
EXIT_FAILED = 1  # a step failed: pg_dump, archive, disk full, database unreachable, ...
EXIT_USAGE = EXIT_CONFIGURATION  # bad command line (argparse) or missing configuration
EXIT_VERIFY = 3  # a backup failed verification: checksum, manifest, pg_restore --list, row counts
EXIT_REFUSED = 4  # restore refused: target database or media directory is not empty (use --force)
EXIT_LOCKED = 5  # another workorder-backup run holds the backup directory's lock


class BackupError(Exception):
    """A failed step. str(error) is the one-line reason printed on stderr."""

    exit_code = EXIT_FAILED


class ConfigError(BackupError, ConfigurationError):
    """Missing or malformed configuration: reported like every entry point's configuration error."""

    exit_code = EXIT_USAGE


class VerificationError(BackupError):
    exit_code = EXIT_VERIFY


class RefusedError(BackupError):
    exit_code = EXIT_REFUSED


class LockedError(BackupError):
    exit_code = EXIT_LOCKED


class Interrupted(BackupError):
    """Raised from the SIGTERM/SIGINT handler so that cleanup (finally blocks) still runs."""


_TOOL_PREFIX = re.compile(r"^(pg_dump|pg_restore|psql|createdb|dropdb)(: (error|fatal|detail|hint|warning))?:\s*", re.IGNORECASE)


def one_line(text: str, limit: int = 500) -> str:
    """Collapse a (multi-line) error message from libpq or a pg tool into one line."""
    parts = []
    for line in str(text).splitlines():
        line = _TOOL_PREFIX.sub("", line.strip())
        if line:
            parts.append(line)
    joined = re.sub(r"\s+", " ", " ".join(parts)).strip()
    if len(joined) > limit:
        joined = joined[: limit - 3] + "..."
    return joined
