"""The deployment examples say what SyncFlow does: parsed, not just read."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SIGTERM_STOP_SECONDS = 10  # SyncFlow stops within this on SIGTERM (tests/resilience, docs)


def _cronjobs() -> dict[str, dict[str, Any]]:
    docs = list(yaml.safe_load_all((ROOT / "examples" / "kubernetes" / "cronjob.yaml").read_text(encoding="utf-8")))
    return {d["metadata"]["name"]: d for d in docs if d and d.get("kind") == "CronJob"}


def _period_seconds(schedule: str) -> int:
    minute = schedule.split()[0]
    if minute == "*":
        return 60
    m = re.fullmatch(r"\*/(\d+)", minute)
    return int(m.group(1)) * 60 if m else 3600  # a fixed minute: at most hourly


def test_kubernetes_cronjobs_are_bounded_and_pinned() -> None:
    jobs = _cronjobs()
    assert len(jobs) == 2
    commands = {}
    for name, job in jobs.items():
        spec = job["spec"]
        assert spec["concurrencyPolicy"] in ("Forbid", "Allow", "Replace"), name
        period = _period_seconds(spec["schedule"])
        # A start missed by more than this is skipped (the next schedule runs instead); under 10 s the
        # controller may miss every start.
        assert 10 <= spec["startingDeadlineSeconds"] <= period, name
        job_spec = spec["jobTemplate"]["spec"]
        pod = job_spec["template"]["spec"]
        grace = pod["terminationGracePeriodSeconds"]
        # SIGTERM stops SyncFlow within 10 s: the grace period covers that with room, and is not so long
        # that a hung pod holds its slot.
        assert SIGTERM_STOP_SECONDS < grace <= 60, name
        assert job_spec["activeDeadlineSeconds"] > grace, name
        (container,) = pod["containers"]
        image = container["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag and tag != "latest" and re.fullmatch(r"\d+\.\d+\.\d+", tag), image
        commands[name] = container["args"]
    assert sum("sync" in args for args in commands.values()) == 1
    discover = [name for name, args in commands.items() if "discover" in args]
    assert len(discover) == 1
    # Discovery runs on its own, slower schedule and never beside itself.
    d = jobs[discover[0]]["spec"]
    assert d["concurrencyPolicy"] == "Forbid" and _period_seconds(d["schedule"]) > 60
