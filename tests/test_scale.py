"""Scale past one process: the costs a fleet's audit process keeps low (the rate store's state written without
`dataclasses.asdict`, copied in memory without a JSON round trip; one TLS context for every client), and a fleet
split over workers (`audit --fleet ... --shard I/N`: each clinic in exactly one worker, by a stable hash)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import app
from agent.errors import BadInput
from agent.fleet import Clinic, parse_shard, select_shard, shard_of
from tools.client import TrutoClient, shared_ssl_context
from tools.ratelimit import RateLimitGovernor
from tools.ratestore import AccountRate, MemoryRateStore


def busy_state() -> AccountRate:
    return AccountRate(
        sends=[1.5 + i / 7 for i in range(100)],
        hold_until=12.25,
        hold_reason="429 rate limited (Retry-After)",
        limit=50,
        remaining=3,
        pending=[2.0, 2.5],
        observed_at=1.0,
        reset_at=11.0,
        headroom_held_until=300.0,
    )


def test_the_rate_state_is_written_as_before_and_reads_back() -> None:
    state = busy_state()
    assert state.to_json() == json.dumps(asdict(state), separators=(",", ":"))  # every field, in order
    state.hold_reason = "changed"
    assert AccountRate.from_json(state.to_json()).hold_reason == "changed"
    assert AccountRate.from_json(state.to_json()) == state


def test_the_memory_store_changes_a_copy_and_keeps_nothing_of_a_failed_change() -> None:
    store = MemoryRateStore()
    store.transact("a", lambda s: s.sends.extend([1.0, 2.0]))

    def fail(state: AccountRate) -> None:
        state.sends.append(3.0)
        state.pending.append(3.0)
        state.remaining = 0
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.transact("a", fail)
    kept = store.transact("a", lambda s: AccountRate.from_json(s.to_json()))
    assert kept.sends == [1.0, 2.0] and kept.pending == [] and kept.remaining is None


async def test_every_client_of_the_process_shares_one_tls_context() -> None:
    clients = [
        TrutoClient(base_url="https://api.truto.one", api_key="k", integrated_account_id=f"ia-{i}", governor=g)
        for i, g in enumerate([RateLimitGovernor(), RateLimitGovernor()])
    ]
    try:
        contexts = [c._http._transport._pool._ssl_context for c in clients]  # type: ignore[attr-defined]
        assert contexts[0] is contexts[1] is shared_ssl_context()
    finally:
        for client in clients:
            await client.aclose()


def test_accounts_are_assigned_to_workers_stably_and_evenly() -> None:
    accounts = [f"ia-{i:04d}" for i in range(1000)]
    shards = [shard_of(a, 4) for a in accounts]
    assert shards == [shard_of(a, 4) for a in accounts]  # the same in every call (and process: no salted hash)
    assert shard_of("clinic-1", 4) == 0 and shard_of("clinic-2", 4) == 3  # pinned: a run tomorrow assigns the same
    counts = Counter(shards)
    assert set(counts) == {0, 1, 2, 3} and max(counts.values()) < 1.2 * 250
    clinics = [Clinic(account=a) for a in accounts[:40]]
    parts = [select_shard(clinics, i, 4) for i in range(4)]
    assert sorted(c.account for part in parts for c in part) == sorted(c.account for c in clinics)
    assert all(shard_of(c.account, 1) == 0 for c in clinics)


@pytest.mark.parametrize("text", ["0/4", "5/4", "1/0", "a/b", "2", "1/1001", ""])
def test_a_bad_shard_is_named(text: str) -> None:
    with pytest.raises(BadInput, match="--shard"):
        parse_shard(text)


def test_parse_shard_reads_one_based_numbers() -> None:
    assert parse_shard("1/4") == (0, 4) and parse_shard("4/4") == (3, 4)


def test_shard_workers_audit_each_clinic_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TRUTO_API_KEY", "TRUTO_INTEGRATED_ACCOUNT_ID", "TRUTO_MCP_URL", "COVIU_TEAM_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COVIU_AGENT_SANDBOX", "1")
    monkeypatch.setenv("COVIU_AGENT_STATE", str(tmp_path / "state" / "checkpoints.sqlite"))
    monkeypatch.setenv("COVIU_AGENT_PLANNER", "rules")
    accounts = ["clinic-1", "clinic-2", "clinic-3", "clinic-4", "clinic-5"]
    audited: list[str] = []
    for i in (1, 2):
        out = tmp_path / "reports"
        result = CliRunner().invoke(
            app, ["audit", "--accounts", ",".join(accounts), "--shard", f"{i}/2", "--out", str(out), "--json"]
        )
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        audited += [c["account"] for c in summary["clinics"]]
        assert {c["account"] for c in summary["clinics"]} == {a for a in accounts if shard_of(a, 2) == i - 1}
        assert Path(summary["summary_files"]["json"]).name.endswith(f"-shard-{i}-of-2.json")
    assert sorted(audited) == accounts


def test_shard_without_a_fleet_is_bad_input(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COVIU_AGENT_SANDBOX", "1")
    monkeypatch.setenv("COVIU_AGENT_STATE", str(tmp_path / "state.sqlite"))
    result = CliRunner().invoke(app, ["audit", "--shard", "1/2"])
    assert result.exit_code == 2 and "--shard" in result.output
    result = CliRunner().invoke(app, ["audit", "--accounts", "clinic-1", "--shard", "3/2"])
    assert result.exit_code == 2 and "--shard" in result.output


def test_a_worker_may_pace_its_accounts_in_its_own_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.services import TrutoAccount, _rate_store
    from agent.settings import Settings
    from tools.clock import SystemClock
    from tools.ratestore import SqliteRateStore

    monkeypatch.setenv("COVIU_AGENT_STATE", str(tmp_path / "state.sqlite"))
    account = TrutoAccount("https://api.truto.one", "key", "ia-1")
    assert isinstance(_rate_store(Settings(), account, SystemClock()), SqliteRateStore)  # the default: shared
    monkeypatch.setenv("COVIU_AGENT_RATE_STORE", "Process")
    assert _rate_store(Settings(), account, SystemClock()) is None  # this process's memory


def test_a_bad_rate_store_setting_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COVIU_AGENT_STATE", str(tmp_path / "state.sqlite"))
    monkeypatch.setenv("COVIU_AGENT_RATE_STORE", "redis")
    monkeypatch.setenv("COVIU_AGENT_SANDBOX", "1")
    result = CliRunner().invoke(app, ["audit", "--accounts", "clinic-1"])
    assert result.exit_code == 2 and "COVIU_AGENT_RATE_STORE" in result.output


def test_a_fleet_of_clinics_on_one_sqlite_state_finishes_every_clinic(tmp_path: Path) -> None:
    # The run log's blocking SQLite write ran on the event loop: it waited for the file's lock (30 s) while another
    # clinic's connection, holding it, waited for the loop to commit; clinics failed with "database is locked".
    import os
    import subprocess
    import sys

    keep = ("PATH", "HOME", "LANG", "SYSTEMROOT")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        COVIU_AGENT_SANDBOX="1",
        COVIU_AGENT_STATE=str(tmp_path / "state" / "checkpoints.sqlite"),
        COVIU_AGENT_PLANNER="rules",
    )
    accounts = [f"clinic-{i}" for i in range(1, 6)]
    command = [sys.executable, "-c", "from agent.cli import main; main()", "audit", "--accounts", ",".join(accounts)]
    done = subprocess.run(
        [*command, "--out", str(tmp_path), "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    summary = json.loads(done.stdout)
    assert [c["error"] for c in summary["clinics"]] == [None] * len(accounts)
    assert done.returncode == 0


async def test_the_sqlite_checkpointer_waits_for_a_writer_longer_than_five_seconds(tmp_path: Path) -> None:
    # a fleet's clinics write their checkpoints to one file at about the same moments: aiosqlite's default 5 s wait
    # for the lock left clinics failing with "database is locked" (4 of 50 in the bench)
    import sqlite3
    import threading

    from agent.checkpoint import open_checkpointer

    path = tmp_path / "state.sqlite"
    async with open_checkpointer(str(path)) as saver:
        await saver.setup()  # type: ignore[attr-defined]
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(5.5, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        async with open_checkpointer(str(path)) as saver:
            await saver.adelete_thread("t")  # a write: waits for the holder's commit
    finally:
        release.join()
        holder.close()
