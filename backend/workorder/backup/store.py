"""The backup directory: backup sets, their manifests, atomic writes, the lock, leftovers, retention.

A backup set is a directory ``workorder-<UTC timestamp>`` (e.g. ``workorder-20261128T020000Z``)::

    workorder-20261128T020000Z/
        workorder-20261128T020000Z.dump        pg_dump --format=custom
        workorder-20261128T020000Z.media.tar   the media directory (absent with --no-media)
        SHA256SUMS                             `sha256sum -c SHA256SUMS` works by hand
        manifest.json                          written last: sha256 + size of each file, row counts, verified

It is built under a dot-prefixed temporary name in the same directory (``.workorder-<ts>.partial-<pid>``),
every file and the directory are fsynced, and only then is it renamed to its final name (one atomic
rename) and the parent directory fsynced. A set without a readable manifest.json is incomplete: list,
prune and restore ignore it, and verify reports it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .errors import BackupError, LockedError

PREFIX = "workorder-"
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
SET_RE = re.compile(r"^workorder-(\d{8}T\d{6}Z)$")
LEFTOVER_RE = re.compile(r"^\.workorder-\d{8}T\d{6}Z\.(partial|deleting)-(\d+)$")
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
LOCK = ".workorder-backup.lock"
MANIFEST_FORMAT = 1


def set_name(when: datetime) -> str:
    return PREFIX + when.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def parse_set_time(name: str) -> datetime | None:
    match = SET_RE.match(name)
    if not match:
        return None
    return datetime.strptime(match.group(1), TIMESTAMP_FORMAT).replace(tzinfo=UTC)


def io_reason(exc: OSError) -> str:
    path = f": {exc.filename}" if getattr(exc, "filename", None) else ""
    return f"{exc.strerror or exc}{path}"


# -- durable writes --------------------------------------------------------------------------------
def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_durably(path: Path, data: bytes) -> None:
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def replace_file_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write to .<name>.tmp-<pid> beside path, fsync, rename over path, fsync the directory."""
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- backup sets ------------------------------------------------------------------------------------
@dataclass
class BackupSet:
    path: Path
    manifest: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def created(self) -> datetime:
        return parse_set_time(self.name)  # type: ignore[return-value]

    @property
    def verified(self) -> bool:
        return bool(self.manifest.get("verified"))

    @property
    def size_bytes(self) -> int:
        return int(sum(f.get("size", 0) for f in self.manifest.get("files", {}).values()))

    @property
    def dump_path(self) -> Path:
        return self.path / self.manifest["dump"]

    @property
    def media_path(self) -> Path | None:
        media = self.manifest.get("media")
        return self.path / media["file"] if media else None


def load_set(path: Path) -> BackupSet:
    """A complete set, or BackupError saying why it is not one."""
    if parse_set_time(path.name) is None:
        raise BackupError(f"{path} is not a backup set (expected a directory named workorder-YYYYMMDDTHHMMSSZ)")
    manifest_path = path / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise BackupError(f"{path.name} is incomplete: no {MANIFEST}") from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{path.name} has an unreadable {MANIFEST}: {exc}") from exc
    if not isinstance(manifest, dict) or "dump" not in manifest or "files" not in manifest:
        raise BackupError(f"{path.name} has an invalid {MANIFEST}")
    return BackupSet(path, manifest)


def scan(directory: Path) -> tuple[list[BackupSet], list[tuple[Path, str]]]:
    """(complete sets oldest first, [(path, reason)] for directories named like a set but incomplete)."""
    complete, broken = [], []
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        raise BackupError(f"cannot read backup directory {directory}: {io_reason(exc)}") from exc
    for entry in entries:
        if not SET_RE.match(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            complete.append(load_set(Path(entry.path)))
        except BackupError as exc:
            broken.append((Path(entry.path), str(exc)))
    return complete, broken


def resolve(directory: Path, spec: str) -> BackupSet:
    """BACKUP argument: "latest", a set name, or a path to a set directory or a file inside it."""
    if spec == "latest":
        complete, _ = scan(directory)
        if not complete:
            raise BackupError(f"no complete backup in {directory}")
        return complete[-1]
    candidate = Path(spec)
    if SET_RE.match(spec) and not candidate.exists():
        candidate = directory / spec
    if candidate.is_file():
        candidate = candidate.parent
    if not candidate.is_dir():
        raise BackupError(f"backup {spec} not found (looked for {candidate})")
    return load_set(candidate.resolve())


# -- building a set ------------------------------------------------------------------------------
class SetWriter:
    """Builds a set under a dot-prefixed temporary directory and publishes it with one rename."""

    def __init__(self, directory: Path, name: str):
        self.directory = directory
        self.name = name
        self.tmp = directory / f".{name}.partial-{os.getpid()}"
        self.final = directory / name
        os.mkdir(self.tmp, 0o700)

    def path(self, filename: str) -> Path:
        return self.tmp / filename

    def publish(self, manifest: dict) -> BackupSet:
        files = manifest["files"]
        sums = "".join(f"{info['sha256']}  {name}\n" for name, info in sorted(files.items()))
        write_file_durably(self.tmp / SUMS, sums.encode())
        # the manifest is written last: a set with a manifest is complete
        write_file_durably(self.tmp / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
        fsync_path(self.tmp)
        if os.path.lexists(self.final):
            raise BackupError(f"{self.final} already exists")
        os.rename(self.tmp, self.final)
        fsync_path(self.directory)
        return BackupSet(self.final, manifest)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def new_set_name(directory: Path) -> str:
    """The current UTC second; waits for the next second if that name is taken (bounded)."""
    for _ in range(5):
        name = set_name(datetime.now(UTC))
        if not os.path.lexists(directory / name):
            return name
        time.sleep(1.0 - (time.time() % 1.0) + 0.01)
    raise BackupError(f"cannot pick a new backup name in {directory}: {name} exists")


def ensure_directory(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"cannot create backup directory {directory}: {io_reason(exc)}") from exc
    if not directory.is_dir():
        raise BackupError(f"backup directory {directory} is not a directory")


@contextmanager
def directory_lock(directory: Path, exclusive: bool) -> Iterator[None]:
    """flock on <dir>/.workorder-backup.lock: exclusive for backup/prune, shared for verify/restore.

    Readers of a read-only directory (e.g. a mounted copy) go without the lock."""
    try:
        fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        if exclusive:
            raise BackupError(f"cannot write to backup directory {directory}: {io_reason(exc)}") from exc
        yield
        return
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(f"another workorder-backup run is using {directory} (lock {directory / LOCK})") from None
        yield
    finally:
        os.close(fd)


def remove_leftovers(directory: Path, started: float, log) -> None:
    """Remove temporary sets of killed runs: dot-prefixed, not ours, and older than this run.

    Called with the exclusive lock held, so no other live run can own them. Complete sets and
    anything not matching the temporary-name pattern are never touched."""
    for entry in os.scandir(directory):
        match = LEFTOVER_RE.match(entry.name)
        if not match or int(match.group(2)) == os.getpid():
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime >= started:
                continue
        except FileNotFoundError:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            try:
                os.unlink(entry.path)
            except OSError:
                pass
        log(f"removed leftover temporary {entry.name}")


def delete_set(backup: BackupSet) -> None:
    """Rename out of sight first (atomic), then delete the files."""
    doomed = backup.path.parent / f".{backup.name}.deleting-{os.getpid()}"
    os.rename(backup.path, doomed)
    fsync_path(backup.path.parent)
    shutil.rmtree(doomed)


# -- retention -------------------------------------------------------------------------------------
def plan_retention(sets: list[BackupSet], now: datetime, retention_days: int,
                   keep_at_least: int) -> tuple[list[BackupSet], list[BackupSet]]:
    """(keep, remove). Sets older than retention_days are removed, except the newest keep_at_least
    verified sets, whatever their age. If fewer than keep_at_least sets are verified, the newest
    unverified sets fill up the count, so a prune never leaves fewer than keep_at_least sets."""
    newest_first = sorted(sets, key=lambda s: s.created, reverse=True)
    protected = [s for s in newest_first if s.verified][:keep_at_least]
    if len(protected) < keep_at_least:
        protected += [s for s in newest_first if s not in protected][: keep_at_least - len(protected)]
    cutoff = now - timedelta(days=retention_days)
    keep, remove = [], []
    for backup in newest_first:
        if backup in protected or backup.created >= cutoff:
            keep.append(backup)
        else:
            remove.append(backup)
    return keep, remove


def human_size(size: float) -> str:
    """Bytes as people read them: 512 B, 1.5 KiB, ... GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
