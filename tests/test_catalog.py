"""The catalog: merged argument schemas, envelopes, validation before sending, and the query/body split."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import pytest
from helpers_mock import COVIU_TOOLS, coviu_catalog
from hypothesis import given, settings
from hypothesis import strategies as st

from tools.catalog import MAX_STRING_LENGTH, ToolCatalog, ToolSpec
from tools.errors import ToolArgumentError, UnknownToolError
from tools.timeparse import parse_time


def spec(**entry: Any) -> ToolSpec:
    base: dict[str, Any] = {"name": "a_tool", "resource": "things", "method": "list"}
    return ToolSpec.from_truto({**base, **entry})


def tool(name: str) -> ToolSpec:
    return coviu_catalog().get(name)


def argument_error(s: ToolSpec, arguments: Any) -> ToolArgumentError:
    with pytest.raises(ToolArgumentError) as info:
        s.validate(arguments)
    return info.value


# --- the merged schema ------------------------------------------------------------------------------


def test_merge_unions_query_and_body_properties_and_body_wins_on_a_clash() -> None:
    s = spec(
        method="create",
        query_schema={"type": "object", "properties": {"dry_run": {"type": "boolean"}, "name": {"type": "integer"}}},
        body_schema={"type": "object", "properties": {"name": {"type": "string", "description": "body's"}}},
        required=["name"],
    )
    schema = s.args_schema
    assert schema["type"] == "object"
    assert set(schema["properties"]) == {"dry_run", "name"}
    assert schema["properties"]["name"] == {"type": "string", "description": "body's"}
    assert schema["properties"]["dry_run"] == {"type": "boolean"}
    assert schema["required"] == ["name"]


def test_merge_carries_required_and_drops_names_no_schema_defines() -> None:
    s = spec(
        query_schema={"type": "object", "properties": {"a": {"type": "string"}}},
        body_schema={"type": "object", "properties": {"b": {"type": "string"}}},
        required=["a", "b", "ghost"],
    )
    # A required name the model cannot see would make every call fail validation.
    assert s.args_schema["required"] == ["a", "b"]
    assert "ghost" not in s.args_schema["properties"]


def test_id_is_added_when_required_but_absent_from_both_schemas() -> None:
    s = tool("update_a_coviu_session_by_id")
    assert "id" in s.args_schema["required"]
    assert s.args_schema["properties"]["id"]["type"] == "string"
    assert s.wants("id")
    s.validate({"id": "s-1", "session_name": "Renamed"})
    assert argument_error(s, {"session_name": "Renamed"}).field == "id"


def test_id_from_query_schema_is_kept_as_defined() -> None:
    s = tool("get_single_coviu_session_by_id")
    assert s.args_schema["properties"]["id"] == {"type": "string", "description": "Session id."}
    assert s.args_schema["required"] == ["id"]


def test_id_from_body_schema_is_kept_as_defined() -> None:
    s = spec(
        method="update",
        body_schema={"type": "object", "properties": {"id": {"type": "integer"}, "note": {"type": "string"}}},
        required=["id"],
    )
    assert s.args_schema["properties"]["id"] == {"type": "integer"}
    s.validate({"id": 5})
    assert argument_error(s, {"id": "five"}).field == "id"


def test_no_schemas_means_no_arguments() -> None:
    s = spec()
    assert s.args_schema == {"type": "object", "properties": {}, "required": []}
    s.validate({})
    err = argument_error(s, {"x": 1})
    assert err.field == "x"
    assert "known arguments: none" in err.expected


def test_wants_reports_schema_membership() -> None:
    s = tool("list_all_coviu_sessions")
    assert s.wants("start_time")
    assert s.wants("limit")
    assert not s.wants("session_name")
    assert not s.wants("id")
    assert tool("update_a_coviu_session_by_id").wants("id")


@pytest.mark.parametrize(
    ("method", "read_only", "needs_approval"),
    [
        ("list", True, False),
        ("get", True, False),
        ("create", False, True),
        ("update", False, True),
        ("delete", False, True),
        ("end", False, True),
        ("cancel", False, True),
    ],
)
def test_read_only_and_needs_approval_by_method(method: str, read_only: bool, needs_approval: bool) -> None:
    s = spec(method=method)
    assert s.is_read_only is read_only
    assert s.needs_approval is needs_approval


# --- the /tools envelope ----------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["result", "results"])
def test_catalog_accepts_both_envelope_keys(key: str) -> None:
    catalog = ToolCatalog.from_truto_response({key: COVIU_TOOLS})
    assert len(catalog) == len(COVIU_TOOLS)
    assert catalog.names == sorted(t["name"] for t in COVIU_TOOLS)
    assert "create_a_coviu_session" in catalog
    found = catalog.find("sessions", "delete")
    assert found is not None
    assert found.name == "delete_a_coviu_session_by_id"
    assert catalog.find("sessions", "archive") is None


def test_catalog_accepts_a_bare_list() -> None:
    assert len(ToolCatalog.from_truto_response(COVIU_TOOLS[:2])) == 2


@pytest.mark.parametrize("payload", [{}, {"data": COVIU_TOOLS}, {"result": "nope"}, {"result": None}, "text", None])
def test_catalog_without_a_result_list_is_an_error(payload: Any) -> None:
    with pytest.raises(ValueError, match="neither a `result` nor a `results`"):
        ToolCatalog.from_truto_response(payload)


def test_tool_definition_without_a_resource_is_refused() -> None:
    with pytest.raises(ValueError, match="`resource`"):
        ToolSpec.from_truto({"name": "x", "method": "list"})


def test_unknown_tool_names_itself_and_the_catalog_size() -> None:
    catalog = coviu_catalog()
    with pytest.raises(UnknownToolError) as info:
        catalog.get("delete_everything")
    assert info.value.name == "delete_everything"
    assert "delete_everything" in str(info.value)
    assert f"{len(COVIU_TOOLS)} tools known" in str(info.value)


def test_subset_keeps_matching_specs() -> None:
    reads = coviu_catalog().subset(lambda s: s.is_read_only)
    assert reads.names == sorted(t["name"] for t in COVIU_TOOLS if t["method"] in ("list", "get"))


# --- validation errors name the field and what was expected -----------------------------------------


def test_missing_required_field_is_named() -> None:
    err = argument_error(
        tool("create_a_coviu_session"), {"start_time": "2026-11-26T10:00:00Z", "end_time": "2026-11-26T10:30:00Z"}
    )
    assert err.tool == "create_a_coviu_session"
    assert err.field == "session_name"
    assert "required" in err.expected
    assert "`session_name`" in str(err)


def test_wrong_type_names_field_type_and_value() -> None:
    err = argument_error(tool("list_all_coviu_sessions"), {"limit": "ten"})
    assert err.field == "limit"
    assert "type integer" in err.expected
    assert "'ten'" in err.expected
    assert err.got == "ten"


def test_enum_lists_the_allowed_values() -> None:
    err = argument_error(
        tool("create_a_coviu_participant"), {"session_id": "s-1", "display_name": "Ava", "role": "doctor"}
    )
    assert err.field == "role"
    assert "one of 'guest', 'host'" in err.expected
    assert "'doctor'" in err.expected


def test_bad_date_time_says_which_formats_are_accepted() -> None:
    err = argument_error(
        tool("create_a_coviu_session"),
        {"session_name": "x", "start_time": "next tuesday 10am", "end_time": "2026-11-26T10:30:00Z"},
    )
    assert err.field == "start_time"
    assert "ISO-8601" in err.expected
    assert "RFC-1123" in err.expected
    assert "next tuesday" in err.expected


def test_schema_description_is_included_in_the_error() -> None:
    err = argument_error(tool("list_all_coviu_sessions"), {"start_time": "soon"})
    assert "Sessions starting after this time." in err.expected


def test_minimum_is_reported() -> None:
    err = argument_error(tool("list_all_coviu_sessions"), {"limit": 0})
    assert err.field == "limit"
    assert "minimum 1" in err.expected


def test_unknown_argument_is_named_with_the_known_ones() -> None:
    err = argument_error(tool("get_single_coviu_session_by_id"), {"id": "s-1", "colour": "red"})
    assert err.field == "colour"
    assert "no such argument" in err.expected
    assert "known arguments: id" in err.expected


def test_overlong_string_is_refused_with_its_length() -> None:
    err = argument_error(
        tool("create_a_coviu_session"),
        {"session_name": "x" * 5000, "start_time": "2026-11-26T10:00:00Z", "end_time": "2026-11-26T10:30:00Z"},
    )
    assert err.field == "session_name"
    assert f"at most {MAX_STRING_LENGTH}" in err.expected
    assert "5000" in err.expected


def test_string_at_the_limit_is_accepted() -> None:
    tool("create_a_coviu_session").validate(
        {
            "session_name": "x" * MAX_STRING_LENGTH,
            "start_time": "2026-11-26T10:00:00Z",
            "end_time": "2026-11-26T10:30:00Z",
        }
    )


def test_overlong_string_nested_in_an_array_is_located() -> None:
    s = spec(
        method="create",
        body_schema={"type": "object", "properties": {"notes": {"type": "array", "items": {"type": "string"}}}},
    )
    err = argument_error(s, {"notes": ["ok", "y" * 5000]})
    assert err.field == "notes[1]"


def test_arguments_must_be_a_mapping() -> None:
    err = argument_error(tool("list_all_coviu_sessions"), ["limit", 5])
    assert err.field == ""
    assert "an object of named arguments" in str(err)


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-25T10:00:00Z",
        "2026-11-25T10:00:00.123456Z",
        "2026-11-25T21:00:00+11:00",
        "2026-11-25T10:00:00z",
        "Wed, 25 Nov 2026 10:00:00 GMT",
        "Wed, 25 Nov 2026 21:00:00 +1100",
    ],
)
def test_iso_8601_and_rfc_1123_date_times_are_accepted(value: str) -> None:
    s = tool("list_all_coviu_sessions")
    s.validate({"start_time": value})
    assert parse_time(value) == datetime(2026, 11, 25, 10, 0, tzinfo=UTC) + timedelta(
        microseconds=123456 if ".123456" in value else 0
    )


@pytest.mark.parametrize(
    "value", ["2026-11-25T10:00:00", "2026-11-25", "25/11/2026 10:00", "Wed, 25 Nov 2026 10:00:00", "", "10am"]
)
def test_naive_or_unparseable_date_times_are_refused(value: str) -> None:
    err = argument_error(tool("list_all_coviu_sessions"), {"start_time": value})
    assert err.field == "start_time"
    assert parse_time(value, allow_naive=False) is None


# --- property: wrong types for a required field always name that field ------------------------------

PROPERTY_SPEC = spec(
    name="make_widget",
    method="create",
    body_schema={"type": "object", "properties": {"count": {"type": "integer"}, "label": {"type": "string"}}},
    required=["count", "label"],
)

_SMALL_CONTAINERS = st.one_of(
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)
)
NOT_AN_INTEGER = st.one_of(
    st.text(max_size=40),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda f: math.isnan(f) or not f.is_integer()),
    _SMALL_CONTAINERS,
)
NOT_A_STRING = st.one_of(st.integers(), st.floats(allow_nan=True), st.booleans(), st.none(), _SMALL_CONTAINERS)


@settings(max_examples=150, deadline=None)
@given(bad=NOT_AN_INTEGER, label=st.text(max_size=50))
def test_property_wrong_type_for_required_integer_names_it(bad: Any, label: str) -> None:
    with pytest.raises(ToolArgumentError) as info:
        PROPERTY_SPEC.validate({"count": bad, "label": label})
    assert info.value.field == "count"
    assert "`count`" in str(info.value)
    assert "integer" in info.value.expected


@settings(max_examples=150, deadline=None)
@given(bad=NOT_A_STRING, count=st.integers())
def test_property_wrong_type_for_required_string_names_it(bad: Any, count: int) -> None:
    with pytest.raises(ToolArgumentError) as info:
        PROPERTY_SPEC.validate({"count": count, "label": bad})
    assert info.value.field == "label"
    assert "string" in info.value.expected


@settings(max_examples=100, deadline=None)
@given(count=st.integers(), label=st.text(max_size=MAX_STRING_LENGTH))
def test_property_well_typed_arguments_pass(count: int, label: str) -> None:
    PROPERTY_SPEC.validate({"count": count, "label": label})


@settings(max_examples=100, deadline=None)
@given(
    moment=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)).map(
        lambda d: d.replace(microsecond=0)
    ),
    offset_minutes=st.integers(min_value=-12 * 60, max_value=14 * 60),
)
def test_property_both_date_forms_of_an_instant_validate_and_agree(moment: datetime, offset_minutes: int) -> None:
    local = moment.astimezone(timezone(timedelta(minutes=offset_minutes)))
    iso = local.isoformat()
    rfc = format_datetime(moment, usegmt=True)
    s = tool("list_all_coviu_sessions")
    s.validate({"start_time": iso})
    s.validate({"start_time": rfc})
    assert parse_time(iso) == parse_time(rfc) == moment


# --- split ------------------------------------------------------------------------------------------


def test_split_sends_query_and_body_by_schema_membership() -> None:
    s = spec(
        method="create",
        query_schema={"type": "object", "properties": {"notify": {"type": "boolean"}}},
        body_schema={"type": "object", "properties": {"name": {"type": "string"}, "size": {"type": "integer"}}},
    )
    record_id, query, body = s.split({"notify": True, "name": "n", "size": 3})
    assert record_id is None
    assert query == {"notify": True}
    assert body == {"name": "n", "size": 3}


def test_split_a_clash_goes_to_the_body() -> None:
    s = spec(
        method="update",
        query_schema={"type": "object", "properties": {"name": {"type": "string"}}},
        body_schema={"type": "object", "properties": {"name": {"type": "string"}}},
        required=["id"],
    )
    assert s.split({"id": "r1", "name": "n"}) == ("r1", {}, {"name": "n"})


@pytest.mark.parametrize("method", ["get", "update", "delete"])
def test_split_puts_id_in_the_path_for_get_update_delete(method: str) -> None:
    s = spec(
        method=method,
        query_schema={"type": "object", "properties": {"id": {"type": "string"}, "expand": {"type": "string"}}},
        body_schema={"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}}},
    )
    record_id, query, body = s.split({"id": 42, "expand": "host", "name": "n"})
    assert record_id == "42"
    assert "id" not in query
    assert "id" not in body
    assert query == {"expand": "host"}
    assert body == {"name": "n"}


@pytest.mark.parametrize(("method", "where"), [("create", "body"), ("list", "query"), ("end", "body")])
def test_split_keeps_id_as_an_argument_for_create_list_and_custom(method: str, where: str) -> None:
    schema = {"type": "object", "properties": {"id": {"type": "string"}}}
    s = spec(method=method, **{f"{where}_schema": schema})
    record_id, query, body = s.split({"id": "x-1"})
    assert record_id is None
    assert (query if where == "query" else body) == {"id": "x-1"}
    assert (body if where == "query" else query) == {}
