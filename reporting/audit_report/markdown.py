"""The report as Markdown for a clinic manager, and the audit's message to staff (email or chat).

Untrusted text is neutralised for Markdown (`_md`): no raw HTML, code span, link, leading block marker or bare
URL, and table cells stay intact.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from reporting.audit_report.text import _as_int, _fmt_count
from reporting.audit_report.view import ALL_HEADER, Narrative, Row, _build_view, summary_line

# Markdown: `\` and `|` are escaped so table cells stay intact; `<`, `>`, backticks, brackets, `*` and `_` so
# text never becomes raw HTML, a code span, a link or emphasis.
_MD_ESCAPES = str.maketrans({ord(c): "\\" + c for c in "\\|<>`[]*_"})
# A line that would start a heading, a quote, a list or a thematic break when it begins a paragraph.
_MD_LEADING = re.compile(r"^([#>]|[-+=~](?=[\s=~-]|$)|\d+[.)](?=\s|$))")
# Bare URLs and `www.` hosts become links in GitHub-flavoured Markdown: defang them (`https[:]//`, `www[.]`).
_MD_URL = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*):(?=//)|\b(www)\.")


# --- Markdown ----------------------------------------------------------------------------------------


def _md(text: str) -> str:
    """Text safe in Markdown (a table cell, a heading, a paragraph): no unescaped `|`, raw HTML, code span,
    link, leading block marker or bare URL."""
    escaped = _MD_URL.sub(lambda m: f"{m.group(1)}[:]" if m.group(1) else f"{m.group(2)}[.]", text)
    escaped = escaped.translate(_MD_ESCAPES).strip()
    return _MD_LEADING.sub(r"\\\1", escaped)


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]], out: list[str]) -> None:
    out.append("| " + " | ".join(_md(h) for h in header) + " |")
    out.append("|" + "|".join("---" for _ in header) + "|")
    out.extend("| " + " | ".join(_md(cell) for cell in row) + " |" for row in rows)


def _all_cells(r: Row) -> tuple[str, ...]:
    return (
        r.scheduled,
        r.actual,
        r.name,
        r.session_id,
        r.scheduled_minutes,
        r.actual_minutes,
        r.billable_minutes,
        r.overrun_minutes,
        r.flags_text,
        r.submissions_text,
    )


def render_markdown(
    report: Mapping[str, Any], *, narrative: Narrative | str | None, zone: ZoneInfo, overrun_threshold_minutes: float
) -> str:
    """The report for a clinic manager: banner, summary, what to do (grouped by action), then every session."""
    view = _build_view(report, narrative=narrative, zone=zone, overrun_threshold_minutes=overrun_threshold_minutes)
    out: list[str] = [f"# {_md(view.title)}", ""]
    if view.incomplete:
        out += [f"> **{_md(view.incomplete)}.** {_md(view.incomplete_detail)}", ""]
    out.append(
        f"Source: {_md(view.source)} · Team: {_md(view.team_id)} · Intake collection: {_md(view.collection_id)}  "
    )
    out.append(
        f"Window: {_md(view.window_text)} · Times are in {_md(view.zone_name)} · Generated {_md(view.generated_text)}"
    )
    if view.cache_text:
        out[-1] += "  "
        out.append(_md(view.cache_text))
    from_list = _as_int(report.get("summaries_from_list"))
    if from_list:  # summaries not needed: the session list carried their facts
        out += [
            "",
            f"Summaries not needed: {_fmt_count(from_list)} (the session list carried the actual end and the "
            "participants' entry times).",
        ]
    out += ["", "## Summary", "", " ".join(_md(s) for s in view.sentences), ""]
    for paragraph in view.narrative:
        out += [_md(paragraph), ""]
    if view.narrative_note:
        out += [f"*{_md(view.narrative_note)}*", ""]
    _md_table(("Total", "Value"), view.totals, out)

    out += ["", "## To do", ""]
    if not view.todo:
        out.append("Nothing to do: no session needs attention.")
    for group in view.todo:
        out += [f"### {_md(group.heading)}", "", _md(group.action), ""]
        _md_table([c.title for c in group.columns], group.rows, out)
        out.append("")

    out += ["", "## All sessions", ""]
    if view.rows:
        _md_table(ALL_HEADER, (_all_cells(r) for r in view.rows), out)
    else:
        out.append("No sessions in this window.")
    out.append("")
    return "\n".join(out)


# --- the message to staff ----------------------------------------------------------------------------

MESSAGE_ROWS_PER_GROUP = 10  # sessions listed per To-do group in a message (the report has them all)


def render_message(
    report: Mapping[str, Any],
    *,
    zone: ZoneInfo,
    overrun_threshold_minutes: float,
    names: bool,
    rerun: str | None = None,
    report_path: str | None = None,
) -> tuple[str, str]:
    """The audit's message to staff (title, Markdown body): the totals and the To-do list, for email or chat.
    `names`: the channel may carry patient data (the sessions' names); else time and session id only. `rerun`: the
    command that runs the audit again (for an incomplete report)."""
    view = _build_view(report, narrative=None, zone=zone, overrun_threshold_minutes=overrun_threshold_minutes)
    title = view.title if not view.incomplete else f"INCOMPLETE: {view.title}"
    out = [f"**{summary_line(report)}**", ""]
    if view.incomplete:
        out += [f"**{view.incomplete}.** {view.incomplete_detail}", ""]
        if rerun:
            out += [f"Run it again: `{rerun}`", ""]
    out += [f"- {label}: {value}" for label, value in view.totals]
    out += ["", "**To do**", ""]
    if not view.todo:
        out.append("Nothing to do: no session needs attention.")
    for group in view.todo:
        out.append(f"- **{group.heading}**: {group.action}")
        for row in [r for r in view.flagged if group.code in r.codes][:MESSAGE_ROWS_PER_GROUP]:
            who = f"{row.name} · " if names and row.name else ""
            out.append(f"    - {row.scheduled} · {who}`{row.session_id}`")
        if len(group.rows) > MESSAGE_ROWS_PER_GROUP:
            out.append(f"    - and {len(group.rows) - MESSAGE_ROWS_PER_GROUP} more (see the report)")
    if report_path:
        out += ["", f"The full report: `{report_path}` (on the machine that ran the audit)."]
    return title, "\n".join(out) + "\n"
