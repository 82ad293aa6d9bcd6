"""Tolerant parsing of /api/v1/apis (protocol section 1)."""

from __future__ import annotations

from syncflow.apis import parse_apis


def test_defaults_and_unknown_fields() -> None:
    result = parse_apis(
        [
            {
                "slug": "items",
                "extra": {"x": 1},
                "columns": [{"name": "ID", "is_business_key": True, "foo": "bar"}, {"name": "DESC"}],
            },
        ]
    )
    api = result.apis[0]
    assert api.delta_strategy == "full"
    assert api.name == ""
    assert api.description == ""
    assert api.business_keys == ("ID",)
    assert [c.pg_type for c in api.columns] == ["text", "text"]
    assert api.columns[0].is_nullable is False
    assert api.columns[1].is_nullable is True
    assert api.unsyncable_reason is None


def test_strategy_is_case_insensitive_and_unknown_warns() -> None:
    result = parse_apis(
        [
            {
                "slug": "a",
                "delta_strategy": "RowVersion",
                "columns": [{"name": "k", "is_business_key": True}],
            },
            {"slug": "b", "delta_strategy": "magic", "columns": [{"name": "k", "is_business_key": True}]},
        ]
    )
    assert result.apis[0].delta_strategy == "rowversion"
    assert result.apis[1].delta_strategy == "full"
    assert result.apis[1].warnings == ("b: unknown delta_strategy 'magic'; using 'full'",)


def test_business_keys_by_alias_or_source_name() -> None:
    cols = [{"name": "ORDER_NO", "output_alias": "order_no"}, {"name": "LINE", "output_alias": "line_no"}]
    result = parse_apis([{"slug": "o", "business_key_columns": ["order_no", "LINE"], "columns": cols}])
    assert result.apis[0].business_keys == ("order_no", "line_no")
    assert all(c.is_business_key and not c.is_nullable for c in result.apis[0].columns)


def test_unsyncable_apis_are_kept_with_reason_and_others_go_on() -> None:
    result = parse_apis(
        [
            {"slug": "nokey", "columns": [{"name": "a"}]},
            {"slug": "badkey", "business_key_columns": ["zzz"], "columns": [{"name": "a"}]},
            {"slug": "garbage", "columns": "not a list"},
            {"name": "No slug here", "columns": []},
            "not even an object",
            {"slug": "good", "columns": [{"name": "id", "is_business_key": True}]},
        ]
    )
    reasons = {a.slug: a.unsyncable_reason for a in result.apis}
    assert reasons == {
        "nokey": "no business key: neither business_key_columns nor is_business_key is given",
        "badkey": "business key 'zzz' is not among the columns",
        "garbage": "the column list is missing or not a list",
        "good": None,
    }
    assert result.warnings == [
        "API No slug here has no slug; skipped",
        "API #5 is not a JSON object; skipped",
    ]


def test_unknown_type_warning_names_entity_column_and_type() -> None:
    result = parse_apis(
        [
            {
                "slug": "geo",
                "columns": [
                    {"name": "ID", "is_business_key": True},
                    {"name": "SHAPE", "data_type": "SDO_GEOMETRY"},
                ],
            }
        ]
    )
    assert result.apis[0].warnings == ("geo: column 'SHAPE' has unknown type 'SDO_GEOMETRY'; stored as text",)
