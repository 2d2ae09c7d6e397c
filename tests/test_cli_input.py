"""Property tests over CLI flags: every invalid value exits 2 with a message naming the flag, nothing sent."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from agent.cli import app

runner = CliRunner()
# nothing listens on port 9: a request would fail with exit 3, so exit 2 also proves nothing was sent
ENV = {"TRUTO_API_KEY": "k", "TRUTO_INTEGRATED_ACCOUNT_ID": "a", "TRUTO_BASE_URL": "http://127.0.0.1:9"}
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def invoke(args: list[str]):
    return runner.invoke(app, args, env=ENV)


@FAST
@given(st.one_of(st.integers(max_value=0), st.integers(min_value=721, max_value=10**9)))
def test_duration_out_of_range(minutes: int):
    result = invoke(["triage", "--duration-minutes", str(minutes)])
    assert result.exit_code == 2
    assert "--duration-minutes" in result.output


@FAST
@given(st.floats(max_value=-0.001, allow_nan=False, allow_infinity=False))
def test_negative_wait_threshold(minutes: float):
    result = invoke(["triage", "--wait-threshold-minutes", repr(minutes)])
    assert result.exit_code == 2
    assert "--wait-threshold-minutes" in result.output


def _not_a_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return True
    return False


@FAST
@given(st.text(min_size=1, max_size=40).filter(lambda t: _not_a_date(t) and not t.startswith("-")))
def test_impossible_dates(text: str):
    result = invoke(["audit", "--date", text])
    assert result.exit_code == 2
    assert "date" in result.output


@FAST
@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=300).filter(
        lambda t: not t.startswith("-") and any(c in t for c in "/ ?#%\\\n\t")
    )
)
def test_ids_with_path_characters_are_refused(text: str):
    result = invoke(["triage", "--queue-id", text])
    assert result.exit_code == 2
    assert "--queue-id" in result.output


@FAST
@given(st.integers(min_value=121, max_value=5000))
def test_huge_names(length: int):
    result = invoke(["triage", "--patient-name", "x" * length])
    assert result.exit_code == 2
    assert "--patient-name" in result.output


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["audit", "--since", "2026-11-25T00:00:00Z", "--until", "2026-11-24T00:00:00Z"], "until"),
        (["audit", "--since", "2026-11-01T00:00:00Z", "--until", "2026-12-25T00:00:00Z"], "31 days"),
        (["audit", "--overrun-threshold-minutes", "-3"], "--overrun-threshold-minutes"),
        (["queue", "watch", "--interval", "99999"], "--interval"),
    ],
)
def test_other_bad_flags(args: list[str], flag: str):
    result = invoke(args)
    assert result.exit_code == 2
    assert flag in result.output
