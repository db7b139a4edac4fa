"""Prometheus textfile-collector metrics (node exporter --collector.textfile.directory).

Written atomically (temp file in the same directory, fsync, rename) so the exporter never reads half
a file. last_run_* and last_duration describe the latest attempt; last_success_timestamp, the sizes and
last_verified describe the newest successful backup and survive failed runs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .store import replace_file_atomically

METRICS = {
    "workorder_backup_last_success_timestamp_seconds": "Unix time the newest successful backup finished (0: never).",
    "workorder_backup_last_run_timestamp_seconds": "Unix time the latest backup run finished, successful or not.",
    "workorder_backup_last_run_success": "1 if the latest backup run succeeded, else 0.",
    "workorder_backup_last_duration_seconds": "Duration of the latest backup run.",
    "workorder_backup_last_size_bytes": "Size of the newest successful backup set (dump + media archive).",
    "workorder_backup_previous_size_bytes": "Size of the backup set before the newest one (0: none).",
    "workorder_backup_last_verified": "1 if the newest successful backup passed a restore test (--verify-restore).",
}

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(\S+)")


def read_metrics(path: Path | None) -> dict[str, float]:
    values: dict[str, float] = {}
    if not path:
        return values
    try:
        text = Path(path).read_text()
    except OSError:
        return values
    for line in text.splitlines():
        match = _LINE.match(line)
        if match and match.group(1) in METRICS:
            try:
                values[match.group(1)] = float(match.group(2))
            except ValueError:
                pass
    return values


def _format(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render(values: dict[str, float]) -> str:
    lines = []
    for name, help_text in METRICS.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {_format(values.get(name, 0))}"]
    return "\n".join(lines) + "\n"


def write_metrics(path: Path, values: dict[str, float]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file_atomically(path, render(values).encode(), mode=0o644)


def remove_stale_temp(path: Path) -> None:
    """Temp files of killed runs beside the metrics file (.<name>.tmp-<pid> with a dead pid)."""
    pattern = re.compile(r"^\." + re.escape(path.name) + r"\.tmp-(\d+)$")
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        match = pattern.match(entry.name)
        if not match or int(match.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(match.group(1)), 0)
            continue  # still alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        try:
            os.unlink(entry.path)
        except OSError:
            pass
