"""Developer sessions: tests, lint, typecheck, demo, bench, fuzz, mutation."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite against the local PostgreSQL (PG* variables; default 127.0.0.1, postgres)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "examples", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "examples", "benchmarks", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]", "mypy")
    session.run("mypy", "src", "tests")


@nox.session
def demo(session: nox.Session) -> None:
    """The README's first command: the demo APISmith, discovery and sync, end to end."""
    session.run("bash", "scripts/demo.sh", external=True)


@nox.session(python=False)
def bench(session: nox.Session) -> None:
    """The benchmark suite (writes docs/benchmarks.md); pass e.g. -- --sizes 20000 --repeat 1 for a smoke run."""
    session.run("python", "-m", "pip", "install", "--quiet", "-e", ".", external=True)
    session.run("python", "benchmarks/bench.py", *session.posargs, external=True)


@nox.session(python=False)
def fuzz(session: nox.Session) -> None:
    """The property tests' long profile (thousands of generated histories; 30+ minutes) before a release."""
    session.run("python", "-m", "pip", "install", "--quiet", "-e", ".[test]", external=True)
    session.run(
        "python",
        "-m",
        "pytest",
        "tests/property",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={"HYPOTHESIS_PROFILE": "fuzz"},
        external=True,
    )


@nox.session(python=False)
def mutation(session: nox.Session) -> None:
    """mutmut over the modules that decide correctness ([tool.mutmut] in pyproject.toml); see docs/testing.md.

    Pass mutant name patterns to run a part, e.g. ``nox -s mutation -- "syncflow.guard*"``.
    """
    session.run("python", "-m", "pip", "install", "--quiet", "-e", ".[dev]", external=True)
    session.run("mutmut", "run", "--max-children", "2", *session.posargs, external=True)
    session.run("python", "scripts/mutation_score.py", external=True)
