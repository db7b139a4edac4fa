"""No tracked file names a work item or a file outside the repository (check_references.py)."""

from __future__ import annotations

from hygiene.check_references import PATTERNS, findings


def test_no_references_to_work_items_or_outside_files():
    problems = findings()
    assert not problems, "\n".join(problems)


def test_the_patterns_catch_what_they_should_and_allow_citations():
    def flagged(text: str) -> bool:
        return any(pattern.search(text) for pattern, _ in PATTERNS)

    # Built from parts, so this file does not contain what it tests for.
    item, shared, contract = "iss" + "ue", ".." + "/shared", "contracts" + ".md"
    assert flagged(f"see {item} 12 for the pin") and flagged(f"The {item} requires a table")
    assert flagged(f"see {shared}/DESIGN.md") and flagged(f"the contract in {contract}")
    assert not flagged("nixpkgs PR #416022 moved django_5 to 5.2; upstream issue #349572 is open")
