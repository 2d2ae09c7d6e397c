"""The audit report's optional paragraph by the model: written from the aggregates only (counts and sums, whatever
the number of sessions), naming the model, every figure in it checked against the report's totals (a mismatch leaves
it out, said in the report). A failing model never costs the report."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from graphs import context as ctx
from graphs.context import Context, Services
from reporting.audit_flags import Flag

if TYPE_CHECKING:  # the renderers (jinja2, pygal) are imported where the report is written
    from reporting.audit_report import Narrative

log = logging.getLogger(__name__)


def aggregates(report: Mapping[str, Any]) -> dict[str, Any]:
    """The only facts the model sees: counts and sums, whatever the number of sessions."""
    rows = report["sessions"]
    overruns = [r["overrun_minutes"] for r in rows if Flag.OVERRUN in r["flags"]]
    return {
        "window": report["window"],
        "complete": report.get("complete", True),
        "totals": report["totals"],
        "longest_overrun_minutes": max(overruns) if overruns else 0,
        "flagged_sessions": sum(1 for r in rows if r["flags"]),
    }


_FIGURE = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w])|(?<![\w.])\d+(?:\.\d+)?(?![\w])")


def _facts(value: Any, *, in_text: bool = False) -> list[float]:
    """Every number in the aggregates; with `in_text`, only those written inside strings (the window's dates and
    times: a paragraph may name the day), else only the numbers themselves (counts and sums)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)] if math.isfinite(value) and not in_text else []
    if isinstance(value, str):
        return [float(x) for x in re.findall(r"\d+", value)] if in_text else []
    if isinstance(value, Mapping):
        return [n for item in value.values() for n in _facts(item, in_text=in_text)]
    if isinstance(value, list | tuple):
        return [n for item in value for n in _facts(item, in_text=in_text)]
    return []


_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
# Where a paragraph names a date or a time: its figures are checked against the window's, never a count's.
_DATE = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?"
    rf"|\b\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH}(?:,?\s+\d{{4}})?"
    rf"|\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?"
    r"|\b\d{1,2}:\d{2}(?::\d{2})?\b",
    re.IGNORECASE,
)


def unchecked_figures(text: str, facts: Mapping[str, Any]) -> list[str]:
    """The figures (in digits) of a model's paragraph that match none of the aggregates it was given, allowing the
    rounding the paragraph shows (17 or 17.5 for 17.46). A figure inside a date or time the paragraph names is
    checked against the window's; any other against the counts and sums only (a count that happens to be a digit
    of the day is still checked). Empty: every figure is one of the report's."""
    known = _facts(facts)
    day = set(_facts(facts, in_text=True))
    unmatched: list[str] = []
    for match in _DATE.finditer(text):
        unmatched.extend(t for t in re.findall(r"\d+", match.group(0)) if float(t) not in day)
    for token in _FIGURE.findall(_DATE.sub(" ", text)):
        number = float(token.replace(",", ""))
        places = len(token.split(".")[1]) if "." in token else 0
        if not any(round(fact, places) == number or fact == number for fact in known):
            unmatched.append(token)
    return unmatched


def model_name(model: Any) -> str:
    """The configured model's name, for the report's attribution."""
    for attribute in ("model_name", "model", "model_id"):
        name = getattr(model, attribute, None)
        if isinstance(name, str) and name:
            return name
    return str(getattr(model, "_llm_type", type(model).__name__))


async def narrate(services: Services, context: Context | None, report: Mapping[str, Any]) -> Narrative | None:
    """One optional paragraph from the model, built from the aggregates only, naming the model, every figure checked
    against the report's totals (a mismatch leaves it out, said in the report and logged). A failing model never
    costs the report: it is written without the paragraph."""
    if ctx.planner(context, services) != "llm" or services.model is None:
        return None
    import json

    from graphs.planning import invoke_model
    from prompts import load_prompt
    from reporting.audit_report import Narrative

    name = model_name(services.model)
    facts = aggregates(report)
    prompt = load_prompt("audit", aggregates=json.dumps(facts, sort_keys=True))
    try:
        reply = await invoke_model(services, services.model, prompt, what="writing the audit's summary paragraph")
    except Exception as exc:  # the narrative is optional: any model failure leaves it out
        log.warning("audit: the report's narrative was left out: the model call failed (%s)", type(exc).__name__)
        return Narrative(name, left_out=f"the model call failed ({type(exc).__name__})")
    text = str(reply.content).strip()[:1500]
    if not text:
        return None
    unmatched = unchecked_figures(text, facts)
    if unmatched:
        shown = ", ".join(unmatched[:5])
        log.warning(
            "audit: the model's narrative was left out: its figure(s) %s match none of the report's totals", shown
        )
        return Narrative(name, left_out=f"its figure(s) {shown} match none of the report's totals")
    return Narrative(name, text=text)
