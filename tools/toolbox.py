"""A Toolbox bundles what every graph needs from the tool layer: client, catalog, executor, clock.

It is built once per process (the CLI, the LangGraph server entry, or a test) and injected.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Protocol

import httpx

from tools.catalog import ToolCatalog
from tools.client import DEFAULT_MAX_JSON_BYTES, DEFAULT_REQUEST_DEADLINE, DEFAULT_TIMEOUT, TrutoClient
from tools.clock import Clock, SystemClock
from tools.executor import BinaryLocator, DispatchFor, ProxyDispatch, ToolExecutor
from tools.ratelimit import DEFAULT_MAX_WAIT, GOVERNORS, RateLimitBudget, RateLimitGovernor
from tools.ratestore import RateStore
from tools.retry import DEFAULT_RETRY_POLICY, RetryPolicy, call_with_retries


@dataclass(frozen=True)
class Bounds:
    """How long anything may take: the run's rate-limit wait budget, each request's deadline, the JSON cap.

    `zone` is the clinic's time zone, so "rate limited until ..." is said in clinic time.
    """

    max_wait: float = DEFAULT_MAX_WAIT
    request_deadline: float = DEFAULT_REQUEST_DEADLINE
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES
    zone: tzinfo | None = None


class AsyncResource(Protocol):
    async def aclose(self) -> None: ...


@dataclass
class Toolbox:
    """The tool layer, ready to use."""

    client: TrutoClient
    catalog: ToolCatalog
    executor: ToolExecutor
    clock: Clock
    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY
    # Other things the toolbox owns and closes, e.g. the MCP source's session.
    resources: list[AsyncResource] = field(default_factory=list)

    @property
    def governor(self) -> RateLimitGovernor:
        return self.client.governor

    @property
    def budget(self) -> RateLimitBudget:
        """The run's rate-limit wait budget: the client's, which hands it to the governor with every send."""
        return self.client.budget

    def for_run(self, budget: RateLimitBudget) -> Toolbox:
        """This toolbox for one run with a budget of its own (the LangGraph server's runs share one toolbox per
        account): the same connection pool, catalog, governor and resources, every wait claimed from `budget`.
        The run's toolbox is not closed: its resources stay the shared toolbox's."""
        client = self.client.for_run(budget)
        return dataclasses.replace(self, client=client, executor=self.executor.for_client(client))

    @property
    def rate_limit_waits(self) -> dict[str, float | int]:
        """For `--json`: how many rate-limit waits this run sat out, and their total seconds."""
        return self.budget.as_dict()

    async def aclose(self) -> None:
        try:
            for resource in reversed(self.resources):
                await resource.aclose()
        finally:
            await self.client.aclose()


async def fetch_catalog(
    client: TrutoClient,
    *,
    methods: list[str] | None = None,
    tags: list[str] | None = None,
    clock: Clock | None = None,
) -> ToolCatalog:
    """`GET /integrated-account/{id}/tools`, retried like any read, turned into a catalog."""
    payload = await call_with_retries(
        "fetching the tool catalog",
        lambda: client.list_tools(methods=methods, tags=tags),
        clock=clock or client.clock,
        governor=client.governor,
        budget=client.budget,
    )
    return ToolCatalog.from_truto_response(payload, source="tools")


async def open_toolbox(
    *,
    base_url: str,
    api_key: str,
    integrated_account_id: str,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock | None = None,
    governor: RateLimitGovernor | None = None,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    catalog: ToolCatalog | None = None,
    methods: list[str] | None = None,
    rate_limit: int | None = None,
    bounds: Bounds | None = None,
    rate_store: RateStore | None = None,
    binary_locator: BinaryLocator | None = None,
    dispatch: DispatchFor = ProxyDispatch,
) -> Toolbox:
    """Build the client (sharing the account's governor) and fetch the catalog unless one is given.

    `binary_locator` finds downloaded files for binary tools; `dispatch` builds how calls are sent (default: the
    Truto proxy) from the client (its governor, budget and clock).

    `bounds` (default: `Bounds()`) gives the run a fresh rate-limit wait budget (the client's, handed to the
    governor with every send), and the client its request deadline and JSON cap. `rate_store`
    (`tools/ratestore.py`, e.g. `shared_rate_store(state)`) is where the account's pacing state lives when every
    process of a deployment must share one budget.
    """
    clock = clock or SystemClock()
    bounds = bounds or Bounds()
    if governor is None:
        # A governor of this run's own (its clock, limit and budget) on the account's shared state: in
        # `rate_store` when given (every process of the deployment), else in this process's memory.
        governor = GOVERNORS.for_account(
            integrated_account_id, clock=clock, limit=rate_limit, store=rate_store, base_url=base_url
        )
    client = TrutoClient(
        base_url=base_url,
        api_key=api_key,
        integrated_account_id=integrated_account_id,
        governor=governor,
        transport=transport,
        timeout=timeout,
        clock=clock,
        request_deadline=bounds.request_deadline,
        max_json_bytes=bounds.max_json_bytes,
        budget=RateLimitBudget(bounds.max_wait, zone=bounds.zone),
    )
    try:
        if catalog is None:
            catalog = await fetch_catalog(client, methods=methods, clock=clock)
    except BaseException:
        await client.aclose()
        raise
    executor = ToolExecutor(client, catalog, binary_locator=binary_locator, dispatch=dispatch)
    return Toolbox(client=client, catalog=catalog, executor=executor, clock=clock)
