"""DDL builders are pure: checked as strings, without a connection."""

from __future__ import annotations

import pytest

from syncflow import ddl
from syncflow.models import StoredColumn


def col(name: str, pg_type: str = "text") -> StoredColumn:
    return StoredColumn(api_name=name, source_name=name, data_type="x", pg_name=name, pg_type=pg_type)


def test_create_table_quotes_everything() -> None:
    stmt = ddl.create_table("erp", "order", [col("user", "varchar(10)"), col('a"b')], ["user"])
    text = stmt.as_string(None)
    assert text.startswith('CREATE TABLE "erp"."order" (')
    assert '"user" varchar(10) NOT NULL' in text
    assert '"a""b" text,' in text
    assert 'CONSTRAINT "order_bk" UNIQUE ("user")' in text
    assert "_bridge_rowversion text" in text


def test_unsafe_type_is_refused() -> None:
    with pytest.raises(ValueError, match="refusing"):
        ddl.add_column("s", "t", col("x", "text; DROP TABLE t"))


def test_derived_names_fit_63_bytes() -> None:
    long = "t" * 63
    name = ddl.derived_name(long, "rowversion_idx")
    assert len(name) <= 63
    assert name.endswith("_rowversion_idx")
    assert ddl.derived_name("items", "bk") == "items_bk"
