"""Tests for reporting.audit_report: the audit report as Markdown, HTML (inline pygal chart) and JSON files."""

from __future__ import annotations

import colorsys
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

from reporting.audit_report import (
    REPORT_KEYS,
    SESSION_KEYS,
    TOTALS_KEYS,
    render_html,
    render_json,
    render_markdown,
    report_basename,
    write_reports,
)
from reporting.audit_report import files as report_files
from reporting.audit_report import html_page as report_html
from reporting.audit_report import view as report_view

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
        "problem": None,
    }


def make_report(sessions: list[dict[str, Any]], *, team_id: str = "team-1") -> dict[str, Any]:
    def count(flag: str) -> int:
        return sum(flag in s["flags"] for s in sessions)

    return {
        "schema_version": 2,
        "complete": not any("summary_unavailable" in s["flags"] for s in sessions),
        "source": "acct-1",
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
            "summary_unavailable": count("summary_unavailable"),
            "implausible_times": count("implausible_times"),
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
    assert text.splitlines()[1:3] == ['  "schema_version": 2,', '  "complete": true,']  # indent=2


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
    positions = [markdown.index(f"## {h}\n") for h in ("Summary", "To do", "All sessions")]
    assert positions == sorted(positions)


def test_markdown_summary_has_sentences_and_totals_table(sample: dict[str, Any]) -> None:
    summary = section(render_markdown(sample, narrative=None, **OPTIONS), "Summary")
    assert "6 sessions were scheduled to end in this window; 4 need attention." in summary
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


def subsection(markdown: str, heading_start: str) -> str:
    """The text under `### heading_start...`, up to the next heading."""
    match = re.search(rf"^### {re.escape(heading_start)}[^\n]*\n(.*?)(?=^##|\Z)", markdown, re.M | re.S)
    assert match, f"no subsection {heading_start!r}"
    return match.group(1)


def test_markdown_to_do_groups_sessions_by_action(sample: dict[str, Any]) -> None:
    markdown = render_markdown(sample, narrative=None, **OPTIONS)
    todo = section(markdown, "To do")
    headings = re.findall(r"^### (.*)$", todo, re.M)
    assert headings == [
        "Chase intake forms (2 sessions)",
        "Lock pending forms (1 session)",
        "Check overruns (1 session)",
        "Check missing ends (1 session)",
    ]

    def ids(title: str) -> list[str]:
        text = subsection(todo, title)
        return [row[header(text).index("Session ID")] for row in table_rows(text)]

    assert ids("Chase intake forms") == ["sess-00001", "sess-00004"]
    assert ids("Lock pending forms") == ["sess-00002"]
    assert ids("Check overruns") == ["sess-00003"]
    assert ids("Check missing ends") == ["sess-00004"]
    pending = subsection(todo, "Lock pending forms")
    assert table_rows(pending)[0][header(pending).index("Submissions")] == "sub-a, sub-b"
    overruns = subsection(todo, "Check overruns")
    assert table_rows(overruns)[0][header(overruns).index("Overrun (min)")] == "25.5"
    assert "Sessions needing attention" not in markdown


def test_markdown_to_do_when_nothing_is_flagged() -> None:
    todo = section(render_markdown(make_report([session(0)]), narrative=None, **OPTIONS), "To do")
    assert "Nothing to do" in todo and "###" not in todo


def unreadable(index: int, problem: str) -> dict[str, Any]:
    row = session(index)
    row.update(
        actual_start=None,
        actual_end=None,
        actual_minutes=None,
        billable_minutes=None,
        overrun_minutes=None,
        flags=["summary_unavailable"],
        problem=problem,
    )
    return row


def implausible(index: int, raw_start: str | None, raw_end: str | None) -> dict[str, Any]:
    row = session(index)
    row.update(
        actual_start=None,
        actual_end=None,
        actual_minutes=None,
        billable_minutes=None,
        overrun_minutes=None,
        flags=["implausible_times"],
        raw_times={"actual_start": raw_start, "actual_end": raw_end},
    )
    return row


@pytest.fixture
def incomplete() -> dict[str, Any]:
    return make_report(
        [
            session(0),
            unreadable(1, "UpstreamError: 403 forbidden"),
            unreadable(2, "MalformedResponseError: HTML page"),
            implausible(3, "2026-11-24T09:00:00Z", "9999-12-31T23:59:59Z"),
        ]
    )


def test_incomplete_report_has_a_banner_at_the_top(incomplete: dict[str, Any]) -> None:
    assert incomplete["complete"] is False
    markdown = render_markdown(incomplete, narrative=None, **OPTIONS)
    banner = markdown.index("Incomplete: 2 sessions could not be checked")
    assert banner < markdown.index("## Summary")
    html = render_html(incomplete, narrative=None, **OPTIONS)
    assert html.index('class="banner"') < html.index("<h2>Summary</h2>")
    assert "Incomplete: 2 sessions could not be checked" in html


def test_complete_report_has_no_banner(sample: dict[str, Any]) -> None:
    assert "Incomplete" not in render_markdown(sample, narrative=None, **OPTIONS)
    del sample["complete"]  # a report from before schema 2
    assert "Incomplete" not in render_html(sample, narrative=None, **OPTIONS)


def test_could_not_be_checked_lists_the_problem(incomplete: dict[str, Any]) -> None:
    markdown = render_markdown(incomplete, narrative=None, **OPTIONS)
    text = subsection(section(markdown, "To do"), "Could not be checked")
    columns = header(text)
    rows = {row[columns.index("Session ID")]: row for row in table_rows(text)}
    assert rows["sess-00001"][columns.index("Problem")] == "UpstreamError: 403 forbidden"
    assert rows["sess-00002"][columns.index("Problem")] == "MalformedResponseError: HTML page"
    totals = dict(table_rows(section(markdown, "Summary")))
    assert totals["Could not be checked"] == "2"
    assert "2 sessions could not be checked" in section(markdown, "Summary")
    everything = section(markdown, "All sessions")
    (row,) = [r for r in table_rows(everything) if r[header(everything).index("Session ID")] == "sess-00001"]
    assert row[header(everything).index("Actual")] == "not checked"
    assert row[header(everything).index("Billable (min)")] == "—"


def test_implausible_times_show_the_raw_values(incomplete: dict[str, Any]) -> None:
    markdown = render_markdown(incomplete, narrative=None, **OPTIONS)
    text = subsection(section(markdown, "To do"), "Implausible times")
    columns = header(text)
    (row,) = table_rows(text)
    assert row[columns.index("Recorded start")] == "2026-11-24T09:00:00Z"
    assert row[columns.index("Recorded end")] == "9999-12-31T23:59:59Z"
    html = render_html(incomplete, narrative=None, **OPTIONS)
    assert "9999-12-31T23:59:59Z" in html.split('id="todo-implausible_times"')[1]


def test_header_names_the_clinic_when_known(sample: dict[str, Any]) -> None:
    sample["clinic_name"] = "Harbour Street Clinic"
    markdown = render_markdown(sample, narrative=None, **OPTIONS)
    assert markdown.splitlines()[0] == "# End-of-day audit: Harbour Street Clinic, 2025-03-04 (Australia/Sydney)"
    assert "<h1>End-of-day audit: Harbour Street Clinic," in render_html(sample, narrative=None, **OPTIONS)
    sample["clinic_name"] = None
    assert (
        render_markdown(sample, narrative=None, **OPTIONS)
        .splitlines()[0]
        .startswith("# End-of-day audit: team team-1,")
    )


def test_minutes_have_one_precision_everywhere(sample: dict[str, Any]) -> None:
    sample["sessions"][0]["overrun_minutes"] = 25.0  # the demo's overrun: shown "25" beside "25.5" before
    markdown = render_markdown(sample, narrative=None, **OPTIONS)
    everything = section(markdown, "All sessions")
    columns = header(everything)
    for row in table_rows(everything):
        for title in ("Scheduled (min)", "Actual (min)", "Overrun (min)"):
            assert re.fullmatch(r"\d[\d,]*\.\d|—", row[columns.index(title)]), (title, row)
        assert re.fullmatch(r"\d[\d,]*|—", row[columns.index("Billable (min)")]), row
    overruns = subsection(section(markdown, "To do"), "Check overruns")
    assert table_rows(overruns)[0][header(overruns).index("Overrun (min)")] in {"25.0", "25.5"}


def test_summary_line_counts_in_words() -> None:
    from reporting.audit_report import summary_line

    one = make_report([session(0, over=25.0, submissions=[], flags=["missing_form", "overrun"])])
    line = summary_line(one)
    assert line.startswith("1 session: 1 missing form, 0 pending forms, 1 overrun, 0 without an end;")
    assert "1 overruns" not in line and line.endswith("; 55 billable minutes")
    many = summary_line(make_report([session(0), session(1)]))
    assert many.startswith("2 sessions: 0 missing forms, 0 pending forms, 0 overruns")


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


def test_markdown_rows_outside_the_day_show_their_date() -> None:
    # Ended 23:58 the day before (Sydney) but scheduled to end in the window: listed first, with its date.
    late = session(0, start=SINCE - timedelta(minutes=30), minutes=30, over=-2.0)
    late["actual_end"] = iso(SINCE - timedelta(minutes=2))
    report = make_report([session(1, start=datetime(2025, 3, 3, 23, 5, tzinfo=UTC)), late])
    everything = section(render_markdown(report, narrative=None, **OPTIONS), "All sessions")
    columns = header(everything)
    first, second = table_rows(everything)
    assert first[columns.index("Time")] == "2025-03-03 23:30–00:00"
    assert first[columns.index("Actual")] == "2025-03-03 23:30–23:58"
    assert second[columns.index("Time")] == "10:05–10:35"  # on the day: no date


def test_markdown_multi_day_window_shows_dates() -> None:
    report = make_report([session(0, start=datetime(2025, 3, 3, 23, 5, tzinfo=UTC))])
    report["window"]["until"] = iso(UNTIL + timedelta(days=2))
    everything = section(render_markdown(report, narrative=None, **OPTIONS), "All sessions")
    assert "2025-03-04 10:05" in everything


def test_markdown_with_no_sessions() -> None:
    markdown = render_markdown(make_report([]), narrative=None, **OPTIONS)
    assert "No sessions were scheduled to end in this window." in markdown
    assert "Nothing to do: no session needs attention." in markdown
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
    for heading in ("Summary", "To do", "All sessions"):
        assert f"<h2>{heading}</h2>" in html
    assert "A steady day." in html
    attention = html.split("<h2>To do</h2>")[1].split("<h2>All sessions</h2>")[0]
    everything = html.split("<h2>All sessions</h2>")[1]
    for s in sample["sessions"]:
        assert (s["session_id"] in attention) == bool(s["flags"])
        assert s["session_id"] in everything
    assert everything.count("<tr") == len(sample["sessions"]) + 1  # plus the header row


def test_html_chart_is_inline_svg_and_self_contained(sample: dict[str, Any]) -> None:
    html = render_html(sample, narrative=None, **OPTIONS)
    assert "<svg" in html and "</svg>" in html
    assert "<figcaption>Scheduled, actual and overrun minutes of each of the 6 sessions" in html
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"\s(src|href|xlink:href)=", html)
    assert "<!--" not in html


def test_html_chart_aggregates_many_sessions() -> None:
    sessions = [session(i, over=float(i % 20)) for i in range(500)]
    html = render_html(make_report(sessions), narrative=None, **OPTIONS)
    svg = re.search(r"<svg.*?</svg>", html, re.S)
    assert svg
    bars = svg.group(0).count('class="rect reactive tooltip-trigger"')
    assert 0 < bars <= 3 * report_html.CHART_BUCKETS_MAX
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

    monkeypatch.setattr(report_files.os, "replace", failing_replace)
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
    todo = section(markdown, "To do")
    groups = {
        title: [row[header(text).index("Session ID")] for row in table_rows(text)]
        for title in ("Chase intake forms", "Check overruns", "Check missing ends")
        for text in [subsection(todo, title)]
    }
    assert len(groups["Chase intake forms"]) == sum("missing_form" in s["flags"] for s in sessions)
    assert len(groups["Check overruns"]) == sum("overrun" in s["flags"] for s in sessions)
    assert len(groups["Check missing ends"]) == sum("no_actual_end" in s["flags"] for s in sessions)
    assert flagged == len({sid for ids in groups.values() for sid in ids})
    assert len(table_rows(section(markdown, "All sessions"))) == 10_000
    html = paths["html"].read_text(encoding="utf-8")
    svg = re.search(r"<svg.*?</svg>", html, re.S)
    assert svg and svg.group(0).count('class="rect reactive tooltip-trigger"') <= 3 * report_html.CHART_BUCKETS_MAX
    assert json.loads(paths["json"].read_text(encoding="utf-8")) == report
    assert os.path.getsize(paths["html"]) < 10_000_000


# --- untrusted text ------------------------------------------------------------------------------------

HOSTILE = "# Heading `code` *bold* [x](https://evil.example) www.evil.example \u202egnp.exe\u202c \x1b[31m"


def test_markdown_neutralises_untrusted_text(sample: dict[str, Any]) -> None:
    sample["sessions"][1]["session_name"] = HOSTILE
    sample["clinic_name"] = "# Clinic https://evil.example"
    markdown = render_markdown(sample, narrative="# not a heading\n\nsee https://evil.example", **OPTIONS)
    assert re.findall(r"^#+ ", markdown, re.M) == ["# ", "## ", "## ", "### ", "### ", "### ", "### ", "## "]
    assert "https://" not in markdown and "www.evil" not in markdown  # no bare URL becomes a link
    assert "https[:]//evil.example" in markdown.replace("\\[", "[").replace("\\]", "]")
    assert re.search(r"(?<!\\)`", markdown) is None  # no code span
    assert re.search(r"(?<!\\)\*", markdown.replace("**Incomplete", "")) is None
    assert "\u202e" not in markdown and "\x1b" not in markdown  # bidi and control characters shown escaped
    assert "\\u202egnp" in markdown.replace("\\\\", "\\")
    assert "\\# not a heading" in markdown


def test_html_shows_bidi_and_control_characters_escaped(sample: dict[str, Any]) -> None:
    sample["sessions"][1]["session_name"] = HOSTILE
    sample["sessions"][1]["flags"] = ["summary_unavailable"]
    sample["sessions"][1]["problem"] = "UpstreamError: \u202eevil\x00"
    html = render_html(sample, narrative=None, **OPTIONS)
    assert "\u202e" not in html and "\x1b" not in html and "\x00" not in html
    assert "\\u202egnp.exe" in html and "UpstreamError: \\u202eevil\\x00" in html


# --- chart ---------------------------------------------------------------------------------------------


def chart_svg(html: str) -> str:
    svg = re.search(r"<svg.*?</svg>", html, re.S)
    assert svg
    return svg.group(0)


def series_colours(svg: str) -> list[str]:
    return re.findall(r"\.color-\d+ a:visited\{stroke:(#[0-9a-fA-F]{6})", svg)


def is_red(colour: str) -> bool:
    """Hue within 20 degrees of pure red, clearly saturated (pygal's default first series is #F44336)."""
    hue, lightness, saturation = colorsys.rgb_to_hls(*(int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)))
    return (hue * 360 < 20 or hue * 360 > 340) and saturation > 0.4 and 0.2 < lightness < 0.85


def test_chart_colours_are_neutral_not_red(sample: dict[str, Any]) -> None:
    colours = series_colours(chart_svg(render_html(sample, narrative=None, **OPTIONS)))
    assert len(colours) >= 3
    assert not any(is_red(c) for c in colours), colours
    assert colours[0].lower() == report_html.CHART_COLORS[0]  # scheduled: neutral


@pytest.mark.parametrize("count", [1, 8, 24])
def test_few_sessions_chart_one_labelled_row_each(count: int) -> None:
    rows = [session(i, name=f"Patient with a rather long name number {i}") for i in range(count)]
    svg = chart_svg(render_html(make_report(rows), narrative=None, **OPTIONS))
    # Labels on the vertical axis: one line per session, never side by side.
    assert 'class="graph horizontalbar-graph' in svg
    assert svg.count('class="rect reactive tooltip-trigger"') == 3 * count
    labels = re.findall(r"<text[^>]*>([^<]*Patient[^<]*)</text>", svg)
    assert len(labels) == count and all(len(label) <= report_html.CHART_LABEL_MAX + 6 for label in labels)


@pytest.mark.parametrize("count", [25, 500, 10_000])
def test_many_sessions_chart_hours_with_few_labels(count: int) -> None:
    rows = [session(i, over=float(i % 20)) for i in range(count)]
    svg = chart_svg(render_html(make_report(rows), narrative=None, **OPTIONS))
    assert 'class="graph bar-graph vertical"' in svg
    bars = svg.count('class="rect reactive tooltip-trigger"')
    assert 0 < bars <= 3 * report_html.CHART_BUCKETS_MAX
    written = re.findall(r'<text[^>]*class="major"[^>]*>([^<]*)</text>', svg)
    hours = [t for t in written if re.fullmatch(r"\d\d:00", t)]
    assert 0 < len(hours) <= report_html.CHART_X_LABELS_MAX


def test_the_chart_marks_overruns_by_the_threshold_in_force() -> None:
    rows = [session(0, over=1.0), session(1, over=5.0), session(2, over=25.5, flags=["overrun"])]
    view = report_view._build_view(make_report(rows), narrative=None, **OPTIONS)
    data = report_html._chart_data(view.rows, SYDNEY, view.day, view.threshold_text)
    assert data.overrun == [0.0, 0.0, 25.5]  # 1 and 5 minutes late are not overruns at a 10-minute threshold
    assert data.actual[1] == 35.0  # the overtime still shows in the actual bar
    assert "more than 10 min late" in data.caption
    many = [session(i, over=5.0) for i in range(30)] + [session(99, over=30.0, flags=["overrun"])]
    view = report_view._build_view(make_report(many), narrative=None, **OPTIONS)
    buckets = report_html._chart_data(view.rows, SYDNEY, view.day, view.threshold_text)
    assert sum(v or 0 for v in buckets.overrun) == 30.0


def test_the_first_sentence_says_what_the_sessions_were_selected_by() -> None:
    # a session scheduled to end at the window's start ran early and ended the day before: it is in the count,
    # and the words say "scheduled to end", which is what the count counts
    early = session(0, start=SINCE - timedelta(minutes=30), over=-2.0)
    markdown = render_markdown(make_report([early, session(1)]), narrative=None, **OPTIONS)
    assert "2 sessions were scheduled to end in this window" in markdown
    assert "ended in this window" not in markdown
