"""Code kept only for what an earlier version left behind (a thread waiting at a node the graph no longer has, side
rows under an older key) says when it goes: a comment `Remove after YYYY-MM-DD` beside it. Past that day this test
fails, naming the file and line, so the compatibility code is removed (with its tests) rather than kept for ever."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agent", "tools", "graphs", "reporting", "workers", "sandbox", "evals")
REMOVE_AFTER = re.compile(r"remove after (\d{4}-\d{2}-\d{2})", re.IGNORECASE)


def dated_removals(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> list[tuple[str, int, date]]:
    """(file, line, date) of every `Remove after YYYY-MM-DD` in the product's sources."""
    found = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                for match in REMOVE_AFTER.finditer(line):
                    found.append((str(path.relative_to(root)), number, date.fromisoformat(match.group(1))))
    return found


def overdue(found: list[tuple[str, int, date]], today: date) -> list[str]:
    return [
        f"{name}:{line}: remove the code this comment marks (due {due})" for name, line, due in found if today > due
    ]


def test_the_legacy_audit_paths_carry_a_removal_date() -> None:
    # the audit's upgrade paths (the old `reconcile` node; side rows under the raw thread id) are dated
    lines = [
        line
        for path in sorted((ROOT / "graphs").rglob("*.py"))
        for line in path.read_text(encoding="utf-8").splitlines()
        if REMOVE_AFTER.search(line)
    ]
    assert any("reconcile" in line for line in lines)
    assert any("thread id" in line for line in lines)


def test_no_dated_removal_is_overdue() -> None:
    found = dated_removals()
    assert found, "the scan finds the dated removals"
    assert overdue(found, datetime.now(UTC).date()) == []


def test_a_removal_past_its_date_is_reported_with_its_place(tmp_path: Path) -> None:
    (tmp_path / "graphs").mkdir()
    (tmp_path / "graphs" / "old.py").write_text("x = 1\n# A path for old threads. Remove after 2027-03-01.\n")
    found = dated_removals(tmp_path, ("graphs",))
    assert found == [("graphs/old.py", 2, date(2027, 3, 1))]
    assert overdue(found, date(2027, 3, 1)) == []
    assert overdue(found, date(2027, 3, 2)) == ["graphs/old.py:2: remove the code this comment marks (due 2027-03-01)"]
