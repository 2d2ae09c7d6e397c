"""Tests for graphs.report: the audit report as Markdown, HTML (inline pygal chart) and JSON files."""

from __future__ import annotations

import json
import math
import os
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from graphs import report as report_module
from graphs.report import (
    REPORT_KEYS,
    SESSION_KEYS,
    TOTALS_KEYS,
    render_html,
    render_json,
    render_markdown,
    report_basename,
    write_reports,
)

SYDNEY = ZoneInfo("Australia/Sydney")  # UTC+11 in March (daylight saving)
# 2025-03-04 00:00 to 2025-03-05 00:00 in Sydney.
SINCE = datetime(2025, 3, 3, 13, 0, tzinfo=UTC)
UNTIL = SINCE + timedelta(days=1)
OPTIONS: dict[str, Any] = {"zone": SYDNEY, "overrun_threshold_minutes": 10.0}
UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def session(
    index: int,
    *,
    name: str | None = None,
    start: datetime | None = None,
    minutes: float = 30.0,
    over: float | None = 0.0,
    submissions: list[str] | None = None,
    flags: list[str] | None = None,
) -> dict[str, Any]:
    """One report row as graphs.audit writes it (over=None: the summary has no actual end)."""
    scheduled_start = start or SINCE + timedelta(minutes=30 + index * 7 % 600)
    scheduled_end = scheduled_start + timedelta(minutes=minutes)
    actual_end = None if over is None else scheduled_end + timedelta(minutes=over)
    actual_minutes = None if actual_end is None else round((actual_end - scheduled_start).total_seconds() / 60, 1)
    return {
        "session_id": f"sess-{index:05d}",
        "session_name": name if name is not None else f"Patient {index}",
        "scheduled_start": iso(scheduled_start),
        "scheduled_end": iso(scheduled_end),
        "actual_start": iso(scheduled_start),
        "actual_end": iso(actual_end) if actual_end else None,
        "scheduled_minutes": minutes,
        "actual_minutes": actual_minutes,
        "billable_minutes": None if actual_minutes is None else math.ceil(actual_minutes),
        "overrun_minutes": over,
        "submission_ids": [f"sub-{index:05d}"] if submissions is None else submissions,
        "flags": flags or [],
    }


def make_report(sessions: list[dict[str, Any]], *, team_id: str = "team-1") -> dict[str, Any]:
    def count(flag: str) -> int:
        return sum(flag in s["flags"] for s in sessions)

    return {
        "team_id": team_id,
        "collection_id": "coll-1",
        "window": {"since": iso(SINCE), "until": iso(UNTIL)},
        "generated_at": iso(UNTIL + timedelta(hours=7)),
        "totals": {
            "sessions": len(sessions),
            "missing_forms": count("missing_form"),
            "pending_forms": count("pending_form"),
            "overruns": count("overrun"),
            "no_actual_end": count("no_actual_end"),
            "billable_minutes": sum(s["billable_minutes"] or 0 for s in sessions),
        },
        "sessions": sessions,
    }


@pytest.fixture
def sample() -> dict[str, Any]:
    """Six sessions, four flagged, one with an untrusted name holding `|`, a newline and a script tag."""
    return make_report(
        [
            session(0),
            session(1, submissions=[], flags=["missing_form"]),
            session(2, submissions=["sub-a", "sub-b"], flags=["pending_form"]),
            session(3, over=25.5, flags=["overrun"]),
            session(4, over=None, submissions=[], flags=["missing_form", "no_actual_end"]),
            session(5, name="Ann | Bob\n<script>alert('x')</script>"),
        ]
    )


def section(markdown: str, heading: str) -> str:
    """The text under `## heading`, up to the next `## ` heading."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"no section {heading!r}"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    """Body rows of the first Markdown table in `text`, split on unescaped pipes."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert len(lines) >= 2 and set(lines[1]) <= set("|-: "), "not a table"
    width = len(UNESCAPED_PIPE.split(lines[0]))
    rows = [UNESCAPED_PIPE.split(line) for line in lines[2:]]
    for row in rows:
        assert len(row) == width, f"row has a different column count: {row}"
    return [[cell.strip() for cell in row[1:-1]] for row in rows]


def header(text: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith("|"))
    return [cell.strip() for cell in UNESCAPED_PIPE.split(line)[1:-1]]


# --- names ---------------------------------------------------------------------------------------------


def test_report_basename() -> None:
    assert report_basename("team-1", "2025-03-04") == "audit-team-1-2025-03-04"


def test_report_basename_never_leaves_the_directory() -> None:
    name = report_basename("../../etc/x", "2025-03-04T00:00:00+11:00")
    assert "/" not in name and "\\" not in name and ":" not in name
    assert name.startswith("audit-")


# --- JSON ----------------------------------------------------------------------------------------------


def test_json_round_trips(sample: dict[str, Any]) -> None:
    text = render_json(sample)
    assert json.loads(text) == sample
    assert text.endswith("}\n")
    assert text.splitlines()[1].startswith('  "team_id"')  # indent=2


def test_json_key_order_follows_the_contract_whatever_the_input_order(sample: dict[str, Any]) -> None:
    shuffled = {key: sample[key] for key in reversed(list(sample))}
    shuffled["totals"] = dict(reversed(list(sample["totals"].items())))
    shuffled["sessions"] = [dict(reversed(list(s.items()))) for s in sample["sessions"]]
    text = render_json(shuffled)
    assert text == render_json(sample)
    parsed = json.loads(text)
    assert tuple(parsed) == REPORT_KEYS
    assert tuple(parsed["window"]) == ("since", "until")
    assert tuple(parsed["totals"]) == TOTALS_KEYS
    assert all(tuple(s) == SESSION_KEYS for s in parsed["sessions"])


def test_json_keeps_unknown_keys_after_the_contract_ones(sample: dict[str, Any]) -> None:
    extended = {"extra": 1, **sample}
    parsed = json.loads(render_json(extended))
    assert parsed == extended
    assert list(parsed)[-1] == "extra"


def test_json_refuses_nan(sample: dict[str, Any]) -> None:
    sample["sessions"][0]["actual_minutes"] = float("nan")
    with pytest.raises(ValueError):
        render_json(sample)


# --- Markdown ------------------------------------------------------------------------------------------


def test_markdown_sections_in_order(sample: dict[str, Any]) -> None:
    markdown = render_markdown(sample, narrative=None, **OPTIONS)
    title = markdown.splitlines()[0]
    assert title.startswith("# ") and "team-1" in title and "2025-03-04" in title and "Australia/Sydney" in title
    positions = [markdown.index(f"## {h}") for h in ("Summary", "Sessions needing attention", "All sessions")]
    assert positions == sorted(positions)


def test_markdown_summary_has_sentences_and_totals_table(sample: dict[str, Any]) -> None:
    summary = section(render_markdown(sample, narrative=None, **OPTIONS), "Summary")
    assert "6 sessions ended in this window; 4 need attention." in summary
    assert "2 sessions have no intake form." in summary
    assert "1 session has an intake form that is not locked yet." in summary
    assert "1 session ran more than 10 minutes past the scheduled end." in summary
    totals = {label: value for label, value in table_rows(summary)}
    assert totals["Sessions"] == "6"
    assert totals["Missing intake forms"] == "2"
    assert totals["Billable minutes"] == str(sample["totals"]["billable_minutes"])


def test_markdown_narrative_is_under_summary(sample: dict[str, Any]) -> None:
    narrative = "A steady day: two forms to chase."
    markdown = render_markdown(sample, narrative=narrative, **OPTIONS)
    assert narrative in section(markdown, "Summary")
    assert markdown.count(narrative) == 1
    assert "steady day" not in render_markdown(sample, narrative=None, **OPTIONS)


def test_markdown_flagged_table_has_exactly_the_flagged_sessions(sample: dict[str, Any]) -> None:
    attention = section(render_markdown(sample, narrative=None, **OPTIONS), "Sessions needing attention")
    columns = header(attention)
    assert columns == ["Time", "Name", "Session ID", "Flags", "Overrun (min)", "Billable (min)", "Submissions"]
    rows = table_rows(attention)
    by_id = {row[columns.index("Session ID")]: row for row in rows}
    expected = [s["session_id"] for s in sample["sessions"] if s["flags"]]
    assert len(rows) == len(expected) and set(by_id) == set(expected)
    assert by_id["sess-00001"][columns.index("Flags")] == "no intake form"
    assert by_id["sess-00002"][columns.index("Flags")] == "intake form not locked"
    assert by_id["sess-00002"][columns.index("Submissions")] == "sub-a, sub-b"
    assert by_id["sess-00003"][columns.index("Overrun (min)")] == "25.5"
    assert by_id["sess-00004"][columns.index("Flags")] == "no intake form; no recorded end"
    assert by_id["sess-00004"][columns.index("Billable (min)")] == "—"


def test_markdown_all_sessions_table_has_every_session(sample: dict[str, Any]) -> None:
    everything = section(render_markdown(sample, narrative=None, **OPTIONS), "All sessions")
    columns = header(everything)
    rows = table_rows(everything)
    ids = [row[columns.index("Session ID")] for row in rows]
    assert sorted(ids) == sorted(s["session_id"] for s in sample["sessions"])


def test_markdown_pipe_and_newline_in_a_name_do_not_break_the_table(sample: dict[str, Any]) -> None:
    markdown = render_markdown(sample, narrative=None, **OPTIONS)
    everything = section(markdown, "All sessions")
    columns = header(everything)
    rows = table_rows(everything)  # asserts every row has the header's column count
    (row,) = [r for r in rows if r[columns.index("Session ID")] == "sess-00005"]
    name = row[columns.index("Name")]
    assert "\\|" in name and "\n" not in name
    assert "Ann" in name and "Bob" in name
    assert "<script>" not in markdown  # not raw HTML when the Markdown is viewed rendered


def test_markdown_times_are_hh_mm_in_the_clinic_zone() -> None:
    report = make_report([session(0, start=datetime(2025, 3, 3, 23, 5, tzinfo=UTC), minutes=30)])
    everything = section(render_markdown(report, narrative=None, **OPTIONS), "All sessions")
    columns = header(everything)
    (row,) = table_rows(everything)
    assert row[columns.index("Time")] == "10:05–10:35"  # 23:05Z is 10:05 in Sydney (UTC+11)


def test_markdown_multi_day_window_shows_dates() -> None:
    report = make_report([session(0, start=datetime(2025, 3, 3, 23, 5, tzinfo=UTC))])
    report["window"]["until"] = iso(UNTIL + timedelta(days=2))
    everything = section(render_markdown(report, narrative=None, **OPTIONS), "All sessions")
    assert "2025-03-04 10:05" in everything


def test_markdown_with_no_sessions() -> None:
    markdown = render_markdown(make_report([]), narrative=None, **OPTIONS)
    assert "No sessions ended in this window." in markdown
    assert "No session needs attention." in markdown
    assert "No sessions in this window." in markdown


# --- HTML ----------------------------------------------------------------------------------------------


def test_html_escapes_untrusted_names(sample: dict[str, Any]) -> None:
    html = render_html(sample, narrative="<b>bold</b> & more", **OPTIONS)
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(" in html
    assert "<script" not in html  # and the chart carries no script either
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt; &amp; more" in html


def test_html_has_the_same_content(sample: dict[str, Any]) -> None:
    html = render_html(sample, narrative="A steady day.", **OPTIONS)
    for heading in ("Summary", "Sessions needing attention", "All sessions"):
        assert f"<h2>{heading}</h2>" in html
    assert "A steady day." in html
    attention = html.split("<h2>Sessions needing attention</h2>")[1].split("<h2>All sessions</h2>")[0]
    everything = html.split("<h2>All sessions</h2>")[1]
    for s in sample["sessions"]:
        assert (s["session_id"] in attention) == bool(s["flags"])
        assert s["session_id"] in everything
    assert everything.count("<tr") == len(sample["sessions"]) + 1  # plus the header row


def test_html_chart_is_inline_svg_and_self_contained(sample: dict[str, Any]) -> None:
    html = render_html(sample, narrative=None, **OPTIONS)
    assert "<svg" in html and "</svg>" in html
    assert "<figcaption>Scheduled vs actual minutes for each of the 6 sessions" in html
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"\s(src|href|xlink:href)=", html)
    assert "<!--" not in html


def test_html_chart_aggregates_many_sessions() -> None:
    sessions = [session(i, over=float(i % 20)) for i in range(500)]
    html = render_html(make_report(sessions), narrative=None, **OPTIONS)
    svg = re.search(r"<svg.*?</svg>", html, re.S)
    assert svg
    bars = svg.group(0).count('class="rect reactive tooltip-trigger"')
    assert 0 < bars <= 200
    assert "per hour of scheduled start" in html


def test_html_without_sessions_has_no_chart() -> None:
    html = render_html(make_report([]), narrative=None, **OPTIONS)
    assert "<svg" not in html and "No sessions in this window." in html


# --- files ---------------------------------------------------------------------------------------------


def test_write_reports_paths_modes_and_contents(tmp_path: Path, sample: dict[str, Any]) -> None:
    out_dir = tmp_path / "new" / "reports"
    paths = write_reports(sample, out_dir, "2025-03-04", narrative="Calm.", **OPTIONS)
    assert set(paths) == {"md", "json", "html"}
    for suffix, path in paths.items():
        assert path == out_dir / f"audit-team-1-2025-03-04.{suffix}"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(out_dir.stat().st_mode) & 0o077 == 0
    assert json.loads(paths["json"].read_text(encoding="utf-8")) == sample
    assert paths["md"].read_text(encoding="utf-8") == render_markdown(sample, narrative="Calm.", **OPTIONS)
    assert "<svg" in paths["html"].read_text(encoding="utf-8")
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(p.name for p in paths.values())  # no temp files


def test_write_reports_replaces_existing_files_with_private_ones(tmp_path: Path, sample: dict[str, Any]) -> None:
    old = tmp_path / "audit-team-1-2025-03-04.json"
    old.write_text("old")
    old.chmod(0o644)
    paths = write_reports(sample, tmp_path, "2025-03-04", narrative=None, **OPTIONS)
    assert json.loads(paths["json"].read_text(encoding="utf-8")) == sample
    assert stat.S_IMODE(paths["json"].stat().st_mode) == 0o600


def test_write_is_atomic_when_the_rename_fails(
    tmp_path: Path, sample: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "audit-team-1-2025-03-04.md"
    old.write_text("previous report")

    def failing_replace(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(report_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_reports(sample, tmp_path, "2025-03-04", narrative=None, **OPTIONS)
    assert [p.name for p in tmp_path.iterdir()] == [old.name]  # temp file removed
    assert old.read_text() == "previous report"  # the old file untouched


def test_write_reports_sanitizes_the_team_id(tmp_path: Path, sample: dict[str, Any]) -> None:
    sample["team_id"] = "../escape"
    paths = write_reports(sample, tmp_path / "out", "2025-03-04", narrative=None, **OPTIONS)
    assert all(p.parent == tmp_path / "out" for p in paths.values())


# --- scale ---------------------------------------------------------------------------------------------


def test_ten_thousand_sessions_render(tmp_path: Path) -> None:
    sessions = []
    for i in range(10_000):
        over = None if i % 97 == 0 else float(i % 23)
        flags = (["missing_form"] if i % 11 == 0 else []) + (["overrun"] if over and over > 10 else [])
        flags += ["no_actual_end"] if over is None else []
        sessions.append(session(i, over=over, submissions=[] if i % 11 == 0 else None, flags=flags))
    report = make_report(sessions)
    flagged = sum(1 for s in sessions if s["flags"])

    paths = write_reports(report, tmp_path, "2025-03-04", narrative="Busy.", **OPTIONS)
    markdown = paths["md"].read_text(encoding="utf-8")
    assert len(table_rows(section(markdown, "Sessions needing attention"))) == flagged
    assert len(table_rows(section(markdown, "All sessions"))) == 10_000
    html = paths["html"].read_text(encoding="utf-8")
    svg = re.search(r"<svg.*?</svg>", html, re.S)
    assert svg and svg.group(0).count('class="rect reactive tooltip-trigger"') <= 200
    assert json.loads(paths["json"].read_text(encoding="utf-8")) == report
    assert os.path.getsize(paths["html"]) < 10_000_000
