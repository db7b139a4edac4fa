"""The seeded database, built once per test run and cloned for every stack that needs it: `SeedCache`.

Seeding the full-size data (seed_loadtest's account pools, 20,000 work orders topped up until the
tasks reach 100,000, then ANALYZE) costs ~40 s of CPU on a 2-core machine. `SeedCache.template(spec)`
does it once per `SeedSpec` (the seed parameters are the cache key) in a PostgreSQL cluster of its
own: the database half of a `Stack` (PostgreSQL, Redis, `migrate`, `seed_loadtest`, ANALYZE), run
through the same `workorder-manage` with the same environment as every stack. Then that cluster is
shut down cleanly (`pg_ctl stop -m fast`: a shutdown checkpoint, every page on disk).

Every stack seeded from the cache starts its own PostgreSQL from a file-level copy of that data
directory (`cp -a`), the cross-cluster form of `CREATE DATABASE … TEMPLATE … STRATEGY FILE_COPY`:
`CREATE DATABASE … TEMPLATE` only clones inside one cluster, and each stack owns its cluster (its
production settings, the fault test restarts it, stop() stops it). As with a template database, the
source must have no connections while it is copied: the template cluster is not running then, which
`clone_into` checks. The copy carries the rows, the `workorder` role and database, the applied
migrations and the planner statistics (pg_statistic lives in the database), so a clone is exactly
the seeded database; the stack still runs `migrate` on it (a no-op, as at every boot of the module).

The template is seeded with durability off (fsync, synchronous_commit, full_page_writes): that
changes how fast rows reach the disk, not which rows exist. The clones run with the stack's own
settings (fsync on by default).

    cache = SeedCache()
    stack = Stack(StackOptions(seed_cache=cache))   # the first such stack builds the template
    ...
    cache.cleanup()

The accounts' password is the template's: a stack cloned from it takes `template.password` into
its options (workorder-loadtest and Stack.login read it from there).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SeedSpec:
    """What seed_loadtest is asked for: the cache key."""

    work_orders: int
    min_tasks: int
    operators: int
    supervisors: int
    makers: int

    @classmethod
    def of(cls, options) -> SeedSpec:
        return cls(options.work_orders, options.min_tasks, options.operators, options.supervisors, options.makers)


@dataclass
class SeedTemplate:
    spec: SeedSpec
    data_dir: Path  # a cleanly shut-down PostgreSQL data directory
    password: str
    counts: dict[str, int]
    timings: dict[str, float]
    clones: int = 0


@dataclass
class SeedCache:
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="wo-seed-")))
    log: object = print
    templates: dict[SeedSpec, SeedTemplate] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o711)  # PostgreSQL runs as `postgres` when we are root: it must traverse

    def template(self, spec: SeedSpec) -> SeedTemplate:
        with self._lock:
            if spec not in self.templates:
                self.templates[spec] = self._build(spec)
            return self.templates[spec]

    def _build(self, spec: SeedSpec) -> SeedTemplate:
        from .stack import Stack, StackOptions  # stack.py imports this module

        options = StackOptions(work_orders=spec.work_orders, min_tasks=spec.min_tasks, operators=spec.operators,
                               supervisors=spec.supervisors, makers=spec.makers, durable_postgres=False,
                               monitoring=False)
        base = Path(tempfile.mkdtemp(prefix="template-", dir=self.base))
        builder = Stack(options, base_dir=base, log=self.log, name="seed template")
        t0 = time.monotonic()
        self.log(f"[seed template] building {spec} once for this run in {base}")
        try:
            builder.start_database()
            builder.psql("CHECKPOINT")
        finally:
            builder.stop()  # pg_ctl stop -m fast: a clean shutdown, so the files are a consistent copy
        builder.timings["template (total)"] = round(time.monotonic() - t0, 1)
        self.log(f"[seed template] ready in {builder.timings['template (total)']:.0f}s: {builder.counts}")
        return SeedTemplate(spec=spec, data_dir=builder.postgres.data_dir, password=options.password,
                            counts=dict(builder.counts), timings=dict(builder.timings))

    def clone_into(self, spec: SeedSpec, data_dir: Path) -> SeedTemplate:
        """Copy the template cluster for `spec` (built on first use) to `data_dir` (must not exist)."""
        template = self.template(spec)
        if (template.data_dir / "postmaster.pid").exists():
            raise RuntimeError(f"the template cluster {template.data_dir} is running: it cannot be copied")
        if data_dir.exists():
            raise FileExistsError(f"{data_dir} exists: a clone needs a fresh data directory")
        # cp -a keeps owner (postgres, when we are root), modes (0700) and symlinks; reflink where the
        # file system can (btrfs, XFS), a plain copy elsewhere.
        subprocess.run(["cp", "-a", "--reflink=auto", str(template.data_dir), str(data_dir)], check=True,
                       capture_output=True, text=True)
        template.clones += 1
        return template

    def cleanup(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)
        self.templates.clear()
