"""The PostgreSQL state store fails in one line (a service: exit 3), never with a traceback or its password, and
creates the schema that the README's `?options=-csearch_path%3D...` suffix names.

The unreachable-server cases need no PostgreSQL; the schema case needs `COVIU_TEST_POSTGRES_URL` (`.ci/run` sets it).
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
from typer.testing import CliRunner

from agent.checkpoint import StateStoreUnavailable, open_checkpointer, search_path_schema
from agent.cli import app

PASSWORD = "hunter2-not-shown"


def test_the_search_path_schema_is_read_from_the_url() -> None:
    assert search_path_schema("postgresql://u:p@h/db?options=-csearch_path%3Dcoviu_agent") == "coviu_agent"
    assert search_path_schema("postgresql://u:p@h/db?options=-csearch_path%3Dmine,public") == "mine"
    assert search_path_schema("postgresql://u:p@h/db") is None


async def test_an_unreachable_server_is_one_line_without_the_password() -> None:
    with pytest.raises(StateStoreUnavailable) as caught:
        async with open_checkpointer(f"postgresql://coviu:{PASSWORD}@127.0.0.1:1/coviu"):
            pass
    message = str(caught.value)
    assert "postgresql://127.0.0.1:1/coviu" in message and "unavailable" in message
    assert PASSWORD not in message and "\n" not in message


def test_the_cli_says_it_in_one_line_and_exits_3(tmp_path: object) -> None:
    env = {"COVIU_AGENT_STATE": f"postgresql://coviu:{PASSWORD}@127.0.0.1:1/coviu", "TRUTO_API_KEY": ""}
    result = CliRunner().invoke(app, ["audit", "--out", str(tmp_path)], env=env)
    assert result.exit_code == 3, result.output
    assert PASSWORD not in result.output and "Traceback" not in result.output
    assert "state store" in result.output


@pytest.mark.postgres
async def test_a_missing_search_path_schema_is_created() -> None:
    url = os.environ.get("COVIU_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("COVIU_TEST_POSTGRES_REQUIRED") == "1":
            pytest.fail("COVIU_TEST_POSTGRES_URL is not set (COVIU_TEST_POSTGRES_REQUIRED=1)")
        pytest.skip("POSTGRES NOT TESTED: set COVIU_TEST_POSTGRES_URL")
    import psycopg
    from psycopg import sql

    schema = f"coviu_test_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(url)
    with_schema = urlunsplit(parts._replace(query=f"options={quote(f'-csearch_path={schema}')}"))
    try:
        async with open_checkpointer(with_schema) as saver:
            assert saver is not None
        async with await psycopg.AsyncConnection.connect(url) as conn:
            cursor = await conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (schema,)
            )
            row = await cursor.fetchone()
            assert row is not None and row[0] >= 1  # LangGraph's checkpoint tables live in the new schema
    finally:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
