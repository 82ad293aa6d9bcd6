"""Sources that page wrongly end the run with a clear error, never a loop."""

from __future__ import annotations

import json
from typing import Any

from tests.helpers import Cli


def test_a_source_that_ignores_page_fails_fast(demo_cli: Cli, demo: Any) -> None:
    pages = "".join(f"\n[connectors.erp.entities.{s}]\npage_size = 10\n" for s in ("orders", "items"))
    demo_cli.config.write_text(demo_cli.config.read_text() + pages)
    assert demo_cli("discover").exit_code == 0
    demo.state.ignore_page = True
    demo.state.requests.clear()
    for ref in ("erp.orders", "erp.items"):
        r = demo_cli("sync", ref, "--json")
        assert r.exit_code == 1, r.stderr
        (run,) = json.loads(r.stdout)
        assert run["status"] == "failed"
        assert "ignores the 'page' parameter" in run["error_message"]
    # A handful of requests, not thousands.
    assert len([q for q in demo.state.requests if "/data/" in q]) < 20
