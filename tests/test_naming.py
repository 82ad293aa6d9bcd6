"""Hostile names become safe, deterministic, unique PostgreSQL names."""

from __future__ import annotations

from syncflow.naming import MAX_IDENTIFIER_BYTES, assign_names, pg_name


def test_basic_rules() -> None:
    assert pg_name("PART_NO") == "part_no"
    assert pg_name("Item Number") == "item_number"
    assert pg_name("2nd_address") == "_2nd_address"
    assert pg_name('a"b;c') == "a_b_c"
    assert pg_name("Größe") == "gr__e"
    assert pg_name("order") == "order"  # reserved words are legal once quoted
    assert pg_name("_bridge_id") == "src_bridge_id"
    assert pg_name("").startswith("col_")


def test_hostile_names_are_all_distinct_and_valid() -> None:
    hostile = [
        'x"; DROP TABLE users; --',
        "order",
        "user",
        "select",
        "Mixed Case",
        "mixed_case",
        "名前",
        "名前2",
        "a b",
        "a-b",
        "_bridge_hash",
        "Ünïcödé",
    ]
    names = assign_names(hostile)
    assert len(set(names.values())) == len(hostile)
    for name in names.values():
        assert len(name.encode()) <= MAX_IDENTIFIER_BYTES
        assert all(ch.isascii() and (ch.isalnum() or ch == "_") for ch in name)
        assert not name.startswith("_bridge_")
    assert names["Mixed Case"] == "mixed_case"
    assert names["mixed_case"] == "mixed_case_2"
    assert names["a b"] == "a_b"
    assert names["a-b"] == "a_b_2"


def test_long_names_differing_at_the_end() -> None:
    a = "x" * 69 + "a"
    b = "x" * 69 + "b"
    na, nb = pg_name(a), pg_name(b)
    assert na != nb
    assert len(na) == len(nb) == MAX_IDENTIFIER_BYTES
    assert pg_name(a) == na  # deterministic


def test_existing_mapping_never_changes() -> None:
    first = assign_names(["Mixed Case", "mixed_case"])
    # Next run: metadata order changed and a new column arrived.
    second = assign_names(["mixed_case", "new col", "Mixed Case"], first)
    assert second["Mixed Case"] == first["Mixed Case"]
    assert second["mixed_case"] == first["mixed_case"]
    assert second["new col"] == "new_col"


def test_taken_names_are_avoided() -> None:
    assert assign_names(["items"], taken={"items"}) == {"items": "items_2"}


def test_history_table_names_end_in_the_reserved_suffix() -> None:
    from syncflow.naming import HISTORY_SUFFIX, history_table_name

    assert history_table_name("items") == "items__history"
    long = "x" * 60
    name = history_table_name(long)
    assert name.endswith(HISTORY_SUFFIX)
    assert len(name.encode()) <= MAX_IDENTIFIER_BYTES
    assert history_table_name("x" * 59 + "a") != history_table_name("x" * 59 + "b")


def test_data_tables_never_take_the_reserved_suffix() -> None:
    from syncflow.plan import choose_table

    assert choose_table("items__history", None, "erp", set()) == "items__history_2"
    assert choose_table("items__history", None, "erp", {"items__history_2"}) == "items__history_3"
    assert choose_table("items", None, "erp", set()) == "items"
