"""The report's three files, rendered first and then written atomically and owner-only
(tools/private_files.py): `audit-<team_id>-<day_label>.{md,json,html}`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from reporting.audit_report.html_page import render_html
from reporting.audit_report.markdown import render_markdown
from reporting.audit_report.schema import render_json
from reporting.audit_report.text import _text, report_basename
from reporting.audit_report.view import Narrative
from tools.private_files import private_dir, write_private

# --- files ---------------------------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_reports(
    report: Mapping[str, Any],
    out_dir: Path,
    day_label: str,
    *,
    narrative: Narrative | str | None,
    zone: ZoneInfo,
    overrun_threshold_minutes: float,
) -> dict[str, Path]:
    """Render all three formats, then write `audit-<team_id>-<day_label>.{md,json,html}` into `out_dir`."""
    options: dict[str, Any] = {
        "narrative": narrative,
        "zone": zone,
        "overrun_threshold_minutes": overrun_threshold_minutes,
    }
    # Render everything first: a rendering error leaves no partial set of files behind.
    texts = {
        "md": render_markdown(report, **options),
        "json": render_json(report),
        "html": render_html(report, **options),
    }
    out_dir = Path(out_dir)
    private_dir(out_dir)
    base = report_basename(_text(report.get("team_id")), day_label)
    paths: dict[str, Path] = {}
    for suffix, text in texts.items():
        path = out_dir / f"{base}.{suffix}"
        write_private(path, text)
        paths[suffix] = path
    _fsync_dir(out_dir)
    return paths
