"""The repository explains itself: no tracked file names a work item by its number or quotes one,
or points at files outside the repository (a sibling directory, a contract file that does not exist).
References to other projects' trackers (`NixOS/nixpkgs#416022`, "PR #416022") are citations and
allowed; PATTERNS below is the exact rule.

    python tests/hygiene/check_references.py     # exit 1 and one line per finding
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEXT_SUFFIXES = {".py", ".md", ".nix", ".sh", ".toml", ".yml", ".yaml", ".cfg", ".ini", ".txt", ".json", ".cjs", ""}
PATTERNS = [
    (re.compile(r"\b(?:issue|ticket)\s+\d+\b", re.IGNORECASE), "names a work item"),
    (re.compile(r"\bthe (?:issue|ticket) (?:requires|asks|says|wants)\b", re.IGNORECASE), "quotes a work item"),
    (re.compile(r"\.\./shared/|/work/shared\b"), "points outside the repository"),
    (re.compile(r"\bcontracts\.md\b"), "names a file that does not exist"),
]


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [REPO / name for name in out.decode().split("\0") if name]


def findings() -> list[str]:
    found = []
    for path in tracked_files():
        # This directory quotes the patterns it looks for.
        if path.suffix not in TEXT_SUFFIXES or not path.is_file() or path.parent == Path(__file__).resolve().parent:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for pattern, why in PATTERNS:
                if pattern.search(line):
                    found.append(f"{path.relative_to(REPO)}:{number}: {why}: {line.strip()[:120]}")
    return found


def main() -> int:
    problems = findings()
    print("\n".join(problems) or "no references to work items or outside files")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
