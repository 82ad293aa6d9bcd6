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
        assert repo, image
        assert "/" not in tag, image
        assert tag != "latest", image
        assert re.fullmatch(r"\d+\.\d+\.\d+", tag), image
        commands[name] = container["args"]
    assert sum("sync" in args for args in commands.values()) == 1
    discover = [name for name, args in commands.items() if "discover" in args]
    assert len(discover) == 1
    # Discovery runs on its own, slower schedule and never beside itself.
    d = jobs[discover[0]]["spec"]
    assert d["concurrencyPolicy"] == "Forbid"
    assert _period_seconds(d["schedule"]) > 60


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _locked(path: Path) -> dict[str, str]:
    """Package -> version of a hashed lock file; every pin must carry at least one hash."""
    text = path.read_text(encoding="utf-8")
    pins: dict[str, str] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", block)
        if m:
            assert "--hash=sha256:" in block, f"{m.group(1)} has no hash in {path.name}"
            pins[_normalize(m.group(1))] = m.group(2)
    return pins


def test_the_lock_files_pin_every_dependency_with_hashes() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime = _locked(ROOT / "requirements.lock")
    for dep in project["dependencies"]:
        name = _normalize(re.split(r"[\[<>=!~; ]", dep, maxsplit=1)[0])
        assert name in runtime, f"{name} is in pyproject.toml but not in requirements.lock: run scripts/lock.sh"
    build = _locked(ROOT / "requirements-build.lock")
    assert {"pip", "build", "setuptools", "wheel"} <= set(build)


def test_the_dockerfile_installs_from_the_locks_on_a_pinned_base() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base.group(1))
    assert text.count("FROM ${PYTHON_IMAGE}") == 2
    assert "--require-hashes -r requirements-build.lock" in text
    assert "--require-hashes -r requirements.lock" in text
    assert "--require-hashes -r /tmp/requirements.lock" in text
    assert "--no-isolation" in text  # the wheel is built with the pinned setuptools


def test_license_and_project_metadata() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License\n")
    assert {"Homepage", "Issues", "Changelog"} <= set(project["urls"])
    assert "Programming Language :: Python :: 3.11" in project["classifiers"]
