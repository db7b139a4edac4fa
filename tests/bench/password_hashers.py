#!/usr/bin/env python
"""Password hasher benchmark (a script, not a test): what one login's check_password costs.

    .venv/bin/python tests/bench/password_hashers.py                 # defaults below
    .venv/bin/python tests/bench/password_hashers.py --checks 30

For each hasher, a fresh Python process (so one hasher's memory peak cannot hide another's) configures
Django with that hasher alone (the package's classes, as production uses them), makes one hash, then
times `check_password` N times: CPU ms per check (process_time), wall ms, and the peak memory a check
adds (ru_maxrss after minus before: Argon2's 19 MiB block is allocated by C code, which tracemalloc
does not see). "logins/s on 2 cores" is 2 × 1000 / CPU ms, the ceiling when logins do nothing else.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BACKEND = REPO_ROOT / "backend"

HASHERS = [
    ("PBKDF2-SHA256, 1,000,000 iterations", "workorder.accounts.hashers.BoundedPBKDF2PasswordHasher"),
    ("Argon2id, m=19 MiB, t=2, p=1", "workorder.accounts.hashers.BoundedArgon2PasswordHasher"),
]

CHILD = r"""
import json, resource, sys, time
from django.conf import settings
settings.configure(PASSWORD_HASHERS=[sys.argv[1]], WORKORDER_PASSWORD_HASH_CONCURRENCY=1,
                   WORKORDER_PASSWORD_HASH_WAIT_MS=60000, USE_TZ=True)
from django.contrib.auth.hashers import check_password, get_hasher, make_password
checks = int(sys.argv[2])
get_hasher("default")  # imports argon2 / hashlib before the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
encoded = make_password("correct horse battery staple")
cpu0, wall0 = time.process_time(), time.perf_counter()
for _ in range(checks):
    assert check_password("correct horse battery staple", encoded)
cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"cpu_ms": cpu * 1000 / checks, "wall_ms": wall * 1000 / checks,
                  "peak_kib": after - before, "algorithm": encoded.split("$", 1)[0]}))
"""


def measure(hasher: str, checks: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(BACKEND), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", CHILD, hasher, str(checks)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=20, help="check_password calls per hasher (default 20)")
    parser.add_argument("--cores", type=int, default=2, help="cores for the logins/s column (default 2)")
    args = parser.parse_args()
    print(f"| hasher | CPU ms / check | wall ms / check | peak memory MiB | logins/s on {args.cores} cores |")
    print("|---|---|---|---|---|")
    for label, hasher in HASHERS:
        row = measure(hasher, args.checks)
        print(f"| {label} | {row['cpu_ms']:.1f} | {row['wall_ms']:.1f} | {row['peak_kib'] / 1024:.1f} | "
              f"{args.cores * 1000 / row['cpu_ms']:.0f} |", flush=True)
    print(f"\n{args.checks} checks per hasher, one fresh process each; Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs visible.")


if __name__ == "__main__":
    main()
