"""No tracked file names a work item or a file outside the repository (check_references.py)."""

from __future__ import annotations

from hygiene.check_references import PATTERNS, findings


def test_no_references_to_work_items_or_outside_files():
    problems = findings()
    assert not problems, "\n".join(problems)


def test_the_patterns_catch_what_they_should_and_allow_citations():
    def flagged(text: str) -> bool:
        return any(pattern.search(text) for pattern, _ in PATTERNS)

    assert flagged("see issue 12 for the pin") and flagged("The issue requires a table")
    assert flagged("see ../shared/DESIGN.md") and flagged("the contract in contracts.md")
    assert not flagged("nixpkgs PR #416022 moved django_5 to 5.2; upstream issue #349572 is open")
