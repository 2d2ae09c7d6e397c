"""The one pager: Truto's list envelope walked to its end, checked page by page.

Every list (graphs, queue watch, CLI, assistant, recordings) goes through `PageWalk`: it demands a real list
envelope (`result` or `results` holding a list), follows `next_cursor` to the end, stops with an upstream error on a
repeated cursor, too many pages, or too many pages in a row with nothing new, and drops rows it has already seen (by
the resource's id), so an overlapping page is never counted twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tools.errors import CoviuAgentError, MalformedResponseError

MAX_PAGES = 10_000  # a bound on any walk: 2 million rows at Truto's largest page
# Pages in a row that offer a next cursor but bring no new row (empty, or only rows already seen): an upstream that
# ignores the cursor, not a list; stopped long before MAX_PAGES (which would be 10,000 requests).
MAX_BARREN_PAGES = 20

# The field that identifies a row, per Coviu resource (Truto passes Coviu's records through).
ROW_ID_FIELDS: Mapping[str, tuple[str, ...]] = {
    "sessions": ("session_id", "id"),
    "submissions": ("item_submission_id", "id"),
    "waiting_queue_calls": ("callId", "call_id", "id"),
    "participants": ("participant_id", "id"),
}
DEFAULT_ID_FIELDS = ("id",)


class PaginationError(CoviuAgentError):
    """A list did not page the way Truto's envelope promises (a repeating cursor, no end): an upstream error."""


def list_envelope(page: Any, *, tool: str = "list") -> tuple[list[Any], str | None]:
    """(rows, next_cursor) from Truto's envelope; anything else is a malformed response, never an empty list."""
    if not isinstance(page, Mapping):
        raise MalformedResponseError(f"{tool}: expected a list envelope, got {_kind(page)}")
    items = page.get("result")
    if items is None:
        items = page.get("results")
    if not isinstance(items, list):
        keys = ", ".join(sorted(str(k) for k in page)[:8]) or "none"
        raise MalformedResponseError(
            f"{tool}: expected a `result` or `results` list, got {_kind(items)} (keys: {keys})"
        )
    cursor = page.get("next_cursor")
    if cursor is None or cursor is False or cursor == "":  # the last page (`false` too, as some APIs say it)
        return items, None
    if isinstance(cursor, bool) or not isinstance(cursor, str | int):
        raise MalformedResponseError(f"{tool}: `next_cursor` is {_kind(cursor)}, expected a string")
    return items, str(cursor)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return "text" if value.strip() else "an empty body"
    return type(value).__name__


def row_id_getter(resource: str) -> Callable[[Any], str | None]:
    fields = ROW_ID_FIELDS.get(resource, DEFAULT_ID_FIELDS)

    def row_id(row: Any) -> str | None:
        if not isinstance(row, Mapping):
            return None
        for key in fields:
            value = row.get(key)
            if value not in (None, ""):
                return str(value)
        return None

    return row_id


class PageWalk:
    """One list walked page by page. Feed each page to `take`; `cursor` is where the next page starts.

    Its progress (`cursor`, `seen_cursors`) is plain data, so a graph can checkpoint it and resume; `seen_ids`
    are the rows already taken (a resumed walk passes the ids it kept).
    """

    def __init__(
        self,
        tool: str,
        resource: str,
        *,
        cursor: str | None = None,
        seen_cursors: Iterable[str] = (),
        seen_ids: Iterable[str] = (),
        max_pages: int = MAX_PAGES,
    ) -> None:
        self.tool = tool
        self.cursor = cursor
        self.seen_cursors: list[str] = list(seen_cursors)
        self._seen_cursor_set = set(self.seen_cursors)
        self._seen_ids = set(seen_ids)
        self._row_id = row_id_getter(resource)
        self.max_pages = max_pages
        self.pages_read = 0
        self.duplicates = 0
        self.barren_pages = 0  # consecutive pages with a next cursor and no new row
        self.done = False

    def take(self, page: Any) -> list[Any]:
        """The page's new rows (duplicates dropped); moves the cursor on, or marks the walk done."""
        items, next_cursor = list_envelope(page, tool=self.tool)
        self.pages_read += 1
        fresh: list[Any] = []
        for item in items:
            key = self._row_id(item)
            if key is not None:
                if key in self._seen_ids:
                    self.duplicates += 1
                    continue
                self._seen_ids.add(key)
            fresh.append(item)
        if not next_cursor:
            self.cursor = None
            self.done = True
            return fresh
        if next_cursor in self._seen_cursor_set or next_cursor == self.cursor:
            raise PaginationError(f"{self.tool}: page cursor repeated by the upstream; stopped to avoid a loop")
        if len(self.seen_cursors) + 1 >= self.max_pages:
            raise PaginationError(f"{self.tool}: more than {self.max_pages} pages; stopped")
        self.barren_pages = 0 if fresh else self.barren_pages + 1
        if self.barren_pages >= MAX_BARREN_PAGES:
            raise PaginationError(
                f"{self.tool}: {self.barren_pages} pages in a row brought no new row but another cursor; "
                "stopped (the upstream does not seem to page)"
            )
        self.seen_cursors.append(next_cursor)
        self._seen_cursor_set.add(next_cursor)
        self.cursor = next_cursor
        return fresh
