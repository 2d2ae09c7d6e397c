"""The end-of-day audit report as files: Markdown for the clinic manager, HTML with an inline pygal chart, and JSON.

The JSON is the audit's report as given (keys in the contract's order). Markdown and HTML render one view of it:
a banner when the report is incomplete, a summary, a "To do" section grouped by what the manager has to do, a
chart, then every session. Text from outside (session names, problems, raw times, the clinic's name) is untrusted:
control and bidi characters are shown escaped, Markdown metacharacters and bare URLs are neutralised, and the HTML
template autoescapes. Files hold patient data, so they are written atomically and owner-only
(tools/private_files.py).

One concern per module, each importing only those above it: `text` (file names, untrusted text, numbers, times),
`view` (the view every renderer shows; the totals read from the report, never counted again), `markdown` (the
Markdown report and the message to staff), `html_page` (the HTML page and its pygal chart), `schema` (the JSON and
its key order), `files` (`write_reports`). The public names are importable from here.
"""

from __future__ import annotations

from reporting.audit_flags import TOTALS_KEYS
from reporting.audit_report.files import write_reports
from reporting.audit_report.html_page import (
    CHART_BUCKETS_MAX,
    CHART_COLORS,
    CHART_LABEL_MAX,
    CHART_X_LABELS_MAX,
    HTML_TEMPLATE,
    PER_SESSION_CHART_MAX,
    TEMPLATES_DIR,
    ChartData,
    render_html,
)
from reporting.audit_report.markdown import MESSAGE_ROWS_PER_GROUP, render_markdown, render_message
from reporting.audit_report.schema import REPORT_KEYS, SESSION_KEYS, WINDOW_KEYS, render_json
from reporting.audit_report.text import NONE_TEXT, report_basename
from reporting.audit_report.view import (
    ALL_HEADER,
    SANDBOX_SOURCE,
    Column,
    Narrative,
    Row,
    TodoGroup,
    View,
    summary_line,
)

__all__ = [
    "ALL_HEADER",
    "CHART_BUCKETS_MAX",
    "CHART_COLORS",
    "CHART_LABEL_MAX",
    "CHART_X_LABELS_MAX",
    "HTML_TEMPLATE",
    "MESSAGE_ROWS_PER_GROUP",
    "NONE_TEXT",
    "PER_SESSION_CHART_MAX",
    "REPORT_KEYS",
    "SANDBOX_SOURCE",
    "SESSION_KEYS",
    "TEMPLATES_DIR",
    "TOTALS_KEYS",
    "WINDOW_KEYS",
    "ChartData",
    "Column",
    "Narrative",
    "Row",
    "TodoGroup",
    "View",
    "render_html",
    "render_json",
    "render_markdown",
    "render_message",
    "report_basename",
    "summary_line",
    "write_reports",
]
