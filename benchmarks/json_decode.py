"""Time JSON decoders on a realistic APISmith page: 1000 rows, 12 columns.

Why: the client must decode numbers exactly (int / Decimal, never float);
this measures what that costs against orjson (which goes through float).
Run: .venv/bin/python benchmarks/json_decode.py [repeats]
"""

from __future__ import annotations

import decimal
import json
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec
import orjson


def page(rows: int = 1000) -> bytes:
    """A page shaped like the protocol's: envelope, oracle_keys, 12 data columns."""
    rnd = random.Random(7)  # noqa: S311 - test data, not crypto
    out = []
    for i in range(rows):
        data = {
            "item_number": f"ABC{i:06d}",
            "item_description": f"Bolt M{rnd.randint(3, 24)} x {rnd.randint(10, 200)} zinc plated",
            "base_uom": "EA",
            "weight_per_unit": round(rnd.uniform(0, 100), 3),
            "list_price": round(rnd.uniform(0, 10_000), 2),
            "qty_on_hand": rnd.randint(0, 1_000_000),
            "cost": float(f"{rnd.uniform(0, 1e6):.10f}"),
            "category_id": rnd.randint(1, 500),
            "active": rnd.choice(["Y", "N"]),
            "created_at": "2025-12-08T12:00:00Z",
            "notes": None if i % 3 else "reorder when below 100",
            "erp_rowversion": str(20251208120000 + i),
        }
        out.append(
            {"oracle_keys": {"PART_NO": data["item_number"]}, "row_version": data["erp_rowversion"], "data": data}
        )
    return orjson.dumps({"rows": out, "page": 1, "page_size": rows, "total": 52013, "has_more": True})


def bench(name: str, fn: Callable[[bytes], Any], body: bytes, repeats: int) -> None:
    fn(body)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeats):
            fn(body)
        best = min(best, (time.perf_counter() - started) / repeats)
    print(f"{name:48s} {best * 1000:8.2f} ms/page")


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    body = page()
    print(f"page: {len(body):,} bytes, best of 5 x {repeats} decodes")
    exact = msgspec.json.Decoder(float_hook=decimal.Decimal)
    bench("orjson.loads (floats: inexact, today)", orjson.loads, body, repeats)
    bench("msgspec Decoder() (floats: inexact)", msgspec.json.Decoder().decode, body, repeats)
    bench("msgspec Decoder(float_hook=Decimal) (exact)", exact.decode, body, repeats)
    bench(
        "json.loads(parse_float=Decimal) (exact)", lambda b: json.loads(b, parse_float=decimal.Decimal), body, repeats
    )
    bench("json.loads (floats: inexact)", json.loads, body, repeats)


if __name__ == "__main__":
    main()
