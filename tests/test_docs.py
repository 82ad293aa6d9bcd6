"""The README and syncflow.toml.example say what the code does.

Docs drift silently: a renamed option, a new config key, a changed default or
exit code. Each check here reads the docs and the code and fails naming what
one of them lacks.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from typer.main import get_command

import syncflow.cli  # noqa: F401 - imports every module that defines a SyncFlowError subclass
from syncflow import client, doctor, errors, health, pages, ping, sync
from syncflow.cli import app
from syncflow.config import (
    ConnectorConfig,
    DatabaseConfig,
    EntityOverride,
    NotifyConfig,
    Settings,
    SyncConfig,
    resolve,
)

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLE = ROOT / "syncflow.toml.example"

# A group that runs one of its commands when the next word is none of them (``runs erp.items``).
DEFAULT_SUBCOMMAND: dict[tuple[str, ...], str] = {("runs",): "list"}
# Shell words that end a command line in a code block.
SHELL_STOP = {"#", ">", ">>", "2>&1", "&&", "||", ";", "|"}


# -- the command tree ------------------------------------------------------------------------


def _root() -> Any:
    return get_command(app)


def _subcommands(cmd: Any) -> dict[str, Any]:
    return dict(getattr(cmd, "commands", None) or {})


def _options(cmd: Any) -> dict[str, Any]:
    return {
        name: param
        for param in cmd.params
        if param.param_type_name == "option"
        for name in (*param.opts, *param.secondary_opts)
    }


def _all_commands() -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []

    def walk(cmd: Any, path: tuple[str, ...]) -> None:
        for name, sub in _subcommands(cmd).items():
            found.append((*path, name))
            walk(sub, (*path, name))

    walk(_root(), ())
    return found


def _check_invocation(words: list[str], where: str, mentioned: set[tuple[str, ...]]) -> list[str]:  # noqa: C901 - a small parser of the README's command lines
    """Problems with one documented ``syncflow ...`` line; records the commands it names."""
    root = _root()
    global_options = _options(root)
    cmd: Any = root
    path: tuple[str, ...] = ()
    problems: list[str] = []
    shown = "syncflow " + " ".join(words)
    i = 0
    while i < len(words):
        word = words[i]
        if path in DEFAULT_SUBCOMMAND and word not in _subcommands(cmd) and word not in ("-h", "--help"):
            name = DEFAULT_SUBCOMMAND[path]
            cmd, path = _subcommands(cmd)[name], (*path, name)
            mentioned.add(path)
        i += 1
        if word.startswith("-"):
            param = None
            for name in word.split("=", 1)[0].split("|"):
                if name in ("-h", "--help"):
                    continue
                param = _options(cmd).get(name) or global_options.get(name)
                if name in _options(cmd):
                    mentioned.add((*path, name))
                if param is None:
                    problems.append(f"{where}: `{shown}`: `syncflow {' '.join(path)}` has no option {name}")
            if param is not None and not param.is_flag and "=" not in word:
                i += 1  # the option's value
            continue
        subs = _subcommands(cmd)
        if not subs:
            continue  # an argument of a command
        names = word.split("|")
        if all(name in subs for name in names):
            for name in names:
                mentioned.add((*path, name))
            if len(names) > 1:
                break
            cmd, path = subs[word], (*path, word)
        else:
            problems.append(
                f"{where}: `{shown}`: `syncflow {' '.join(path)}` has no command {word!r}".replace("  ", " ")
            )
            break
    return problems


def _words(text: str) -> list[str]:
    """A documented command line as words: brackets, ``...`` and trailing punctuation dropped."""
    text = text.replace("\\|", "|").replace("[", " ").replace("]", " ")
    words = [w.rstrip(":,;") for w in text.split()]
    return [w for w in words if w and w not in ("...", "|")]


def _without_fences(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def _documented_invocations() -> Iterator[tuple[list[str], str]]:  # noqa: C901 - a small parser of the README's command lines
    """Every ``syncflow ...`` command line the README shows, as (words after "syncflow", where)."""
    top = set(_subcommands(_root()))
    # The commands table: its first column names commands without the "syncflow" prefix.
    section = README.split("## Commands", 1)[1].split("\n\n", 2)[1]
    for line in section.splitlines():
        if line.startswith("| `"):
            first = re.split(r"(?<!\\)\|", line)[1]
            for span in re.findall(r"`([^`]+)`", first):
                yield _words(span), f"commands table ({span})"
    # Code blocks of shell lines (not the TOML ones).
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", README, flags=re.MULTILINE | re.DOTALL):
        if lang not in ("bash", "sh", "cron", "console", ""):
            continue
        for line in body.splitlines():
            words = line.split()
            starts = [n for n, w in enumerate(words) if w == "syncflow" or w.endswith("/bin/syncflow")]
            if not starts:
                continue
            rest: list[str] = []
            for w in words[starts[0] + 1 :]:
                if w in SHELL_STOP or w.startswith("#"):
                    break
                rest.append(w)
            yield _words(" ".join(rest)), f"code block line {line.strip()!r}"
    # Inline code: `syncflow ...`, or `<command> ... --option`.
    for span in re.findall(r"`([^`]+)`", _without_fences(README)):
        words = _words(span)
        if words and words[0] == "syncflow":
            yield words[1:], f"`{' '.join(words)}`"
        elif words and words[0] in top and any(w.startswith("--") for w in words):
            yield words, f"`{' '.join(words)}`"


def test_the_readme_finds_command_lines_to_check() -> None:
    """The parsing below must see the README's commands, or the checks would pass on nothing."""
    found = [" ".join(words) for words, _ in _documented_invocations()]
    table = [where for _, where in _documented_invocations() if where.startswith("commands table")]
    assert len(table) >= len(_subcommands(_root())), table
    assert "sync --all" in found
    assert any(f.startswith("connector add NAME --url URL") for f in found)
    assert any("--env-file /etc/syncflow/env sync --all" in f for f in found)


def test_every_documented_command_and_option_exists() -> None:
    """A README command line naming a command or option the CLI lacks would fail for the reader."""
    problems: list[str] = []
    for words, where in _documented_invocations():
        problems += _check_invocation(words, where, set())
    assert not problems, "\n".join(problems)


def test_every_command_is_in_the_readme() -> None:
    """A command nobody can find in the README is a command nobody uses."""
    mentioned: set[tuple[str, ...]] = set()
    for words, where in _documented_invocations():
        _check_invocation(words, where, mentioned)
    missing = [" ".join(path) for path in _all_commands() if path not in mentioned]
    assert not missing, "the README never shows: " + ", ".join(f"`syncflow {m}`" for m in missing)


def test_every_option_is_in_the_readme() -> None:
    """A command's option appears in a documented line of that command; a global one anywhere."""
    mentioned: set[tuple[str, ...]] = set()
    for words, where in _documented_invocations():
        _check_invocation(words, where, mentioned)
    missing = [f"`syncflow {name}`" for name in _options(_root()) if name.startswith("--") and name not in README]

    def walk(cmd: Any, path: tuple[str, ...]) -> None:
        for name in _options(cmd):
            if path and name.startswith("--") and (*path, name) not in mentioned:
                missing.append(f"`syncflow {' '.join(path)} {name}`")
        for sub_name, sub in _subcommands(cmd).items():
            walk(sub, (*path, sub_name))

    walk(_root(), ())
    assert not missing, "the README never shows: " + ", ".join(missing)


def test_the_invocation_check_catches_a_wrong_command_or_option() -> None:
    """The checker itself: an unknown option, subcommand or global option is reported."""
    seen: set[tuple[str, ...]] = set()
    assert _check_invocation(["sync", "--all", "--json"], "t", seen) == []
    assert _check_invocation(["--config", "F", "runs", "erp.items", "--limit", "5"], "t", seen) == []
    assert ("runs", "list") in seen
    assert ("runs", "list", "--limit") in seen
    assert _check_invocation(["sync", "--everything"], "t", seen) == [
        "t: `syncflow sync --everything`: `syncflow sync` has no option --everything"
    ]
    assert _check_invocation(["connector", "rename", "x"], "t", seen) == [
        "t: `syncflow connector rename x`: `syncflow connector` has no command 'rename'"
    ]


# -- syncflow.toml.example --------------------------------------------------------------------

# A commented-out table header or key (one "# " deep); "# # prose" stays a comment.
_COMMENTED = re.compile(r"^# (?=\[|[A-Za-z_][A-Za-z0-9_]* = )")


def _example_with_everything() -> str:
    """The example with its commented-out tables and keys switched on."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    return "\n".join(_COMMENTED.sub("", line) for line in lines) + "\n"


def _example_tables() -> list[tuple[str, type[BaseModel], dict[str, Any]]]:
    """(table name, the model that reads it, its keys) for every table of the example."""
    data = tomllib.loads(_example_with_everything())
    tables: list[tuple[str, type[BaseModel], dict[str, Any]]] = []
    for name, model in (("database", DatabaseConfig), ("sync", SyncConfig), ("notify", NotifyConfig)):
        tables.append((name, model, data.get(name, {})))
    for conn_name, conn in data.get("connectors", {}).items():
        keys = {k: v for k, v in conn.items() if k != "entities"}
        tables.append((f"connectors.{conn_name}", ConnectorConfig, keys))
        for slug, override in conn.get("entities", {}).items():
            tables.append((f"connectors.{conn_name}.entities.{slug}", EntityOverride, override))
    return tables


def test_every_key_in_the_example_is_accepted(tmp_path: Path) -> None:
    """Including the commented-out ones: uncommenting a documented key must not be an error."""
    path = tmp_path / "syncflow.toml"
    path.write_text(_example_with_everything(), encoding="utf-8")
    loaded = resolve(cli_path=path, env={})  # a ConfigError names each unknown key
    assert "items" in loaded.settings.connectors["erp"].entities
    assert loaded.settings.notify.ping_url is not None
    assert resolve(cli_path=EXAMPLE, env={}).settings.connectors["erp"].entities == {}


def test_every_accepted_key_is_in_the_example() -> None:
    """Every setting the models read appears in its own table of the example."""
    tables = _example_tables()
    assert {model for _, model, _ in tables} == {
        DatabaseConfig,
        SyncConfig,
        NotifyConfig,
        ConnectorConfig,
        EntityOverride,
    }, "the example lacks a [connectors.X] or [connectors.X.entities.SLUG] table"
    assert set(Settings.model_fields) == {"database", "sync", "notify", "connectors"}, "a new top-level table"
    missing = [
        f"[{table}] {info.alias or field}"
        for table, model, keys in tables
        for field, info in model.model_fields.items()
        if field != "entities" and (info.alias or field) not in keys
    ]
    assert not missing, "keys missing from syncflow.toml.example: " + ", ".join(missing)


def test_the_example_shows_each_default() -> None:
    """Its header says "every key is shown with its default": where a key has one, it is the one shown."""
    wrong = []
    for table, model, keys in _example_tables():
        for field, info in model.model_fields.items():
            key = info.alias or field
            if key not in keys or info.is_required() or info.default is None or field == "entities":
                continue  # no default to show: the example shows a sample value
            if keys[key] != info.default:
                wrong.append(f"[{table}] {key} = {keys[key]!r}, but the default is {info.default!r}")
    assert not wrong, "\n".join(wrong)


# -- numbers the README states ----------------------------------------------------------------

SYNC_DEFAULTS = SyncConfig()


def _number(text: str) -> Decimal:
    """``50 %`` → 0.5, ``256 MiB`` → bytes, ``30`` / ``300 s`` / ``25,000`` → the number."""
    m = re.fullmatch(r"([\d,.]+)\s*(%|MiB|s)?", text.strip())
    assert m, f"not a number: {text!r}"
    value = Decimal(m.group(1).replace(",", ""))
    return {"%": value / 100, "MiB": value * 2**20}.get(m.group(2) or "", value)


def test_settings_named_with_a_value_in_the_readme_show_their_default() -> None:
    """``max_delete_fraction`` (50 %) and the like: the number in brackets is the default."""
    claims = re.findall(r"`(\w+)` \(([\d,.]+\s*(?:%|MiB|s)?)\)", README)
    checked = []
    for key, text in claims:
        if key in SyncConfig.model_fields:
            default = getattr(SYNC_DEFAULTS, key)
            assert _number(text) == Decimal(str(default)), f"README: `{key}` ({text}), but the default is {default}"
            checked.append(key)
    assert {"max_delete_fraction", "max_response_bytes", "progress_interval_seconds", "retry_attempts"} <= set(
        checked
    ), checked


# (what the README says, with the number as group 1; the value in the code)
README_NUMBERS: list[tuple[str, float]] = [
    (r"every ([\d,]+) rows the batch is deduplicated", sync.BATCH_ROWS),
    (r"waits between attempts are at most (\d+) s", client.MAX_RETRY_WAIT),
    (r"source\s+that keeps changing through (\w+) reads", pages.MAX_PASSES),
    (r"exit 1 when one failed (\d+) times in a row", health.FAILURE_THRESHOLD),
    (r"clock skew: warn above (\d+) s", doctor.SKEW_WARN_SECONDS),
    (r"warn above \d+ s, fail above (\d+) s", doctor.SKEW_FAIL_SECONDS),
    (r"warn within (\d+) days", doctor.TOKEN_WARN_DAYS),
    (r"Each ping waits at most (\d+) s per attempt", ping.PING_TIMEOUT),
    (r"Each ping waits at most \d+ s per attempt, (\d+) attempts", ping.PING_ATTEMPTS),
]
_WORDS = {"two": 2, "three": 3, "four": 4}


@pytest.mark.parametrize(("pattern", "value"), README_NUMBERS, ids=[p for p, _ in README_NUMBERS])
def test_numbers_in_the_readme_are_the_code_s(pattern: str, value: float) -> None:
    """A limit changed in the code must change in the README too."""
    m = re.search(pattern, README)
    assert m, f"the README no longer says {pattern!r}: update README_NUMBERS with what it says now"
    said = m.group(1)
    assert Decimal(_WORDS.get(said, said.replace(",", ""))) == Decimal(str(value)), f"README: {m.group(0)!r}"


def test_discover_wait_timeout_default_is_the_readme_s() -> None:
    """The README gives ``discover --wait-timeout``'s default."""
    m = re.search(r"`--wait-timeout` seconds per entity, default (\d+)", README)
    assert m, "the README no longer gives discover's --wait-timeout default"
    option = _options(_subcommands(_root())["discover"])["--wait-timeout"]
    assert float(m.group(1)) == option.default


# -- exit codes -------------------------------------------------------------------------------


def _exit_code_table() -> set[int]:
    section = README.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    codes: set[int] = set()
    for line in section.splitlines():
        cells = line.split("|")
        if len(cells) > 2 and re.fullmatch(r"[\d /]+", cells[1].strip()):
            codes.update(int(c) for c in cells[1].split("/"))
    return codes


def _error_classes(base: type[errors.SyncFlowError]) -> Iterator[type[errors.SyncFlowError]]:
    yield base
    for sub in base.__subclasses__():
        yield from _error_classes(sub)


def _codes_the_cli_can_exit_with() -> set[int]:
    """0, every SyncFlowError subclass's exit_code (db.py adds one), and the EXIT_* codes the CLI raises."""
    from_errors = {cls.exit_code for cls in _error_classes(errors.SyncFlowError)}
    constants = {value for name, value in vars(errors).items() if name.startswith("EXIT_")}
    return {0} | from_errors | constants


def test_the_exit_code_table_matches_the_error_tree() -> None:
    """Cron and CI act on exit codes: the README's table is the contract."""
    table = _exit_code_table()
    code = _codes_the_cli_can_exit_with()
    assert {0, 1, 2} <= table, table  # the parsing found the table
    assert not code - table, f"exit codes missing from the README's table: {sorted(code - table)}"
    assert not table - code, f"the README's table has exit codes the CLI never uses: {sorted(table - code)}"


def test_the_ping_table_names_every_other_exit_code() -> None:
    """``POST {url}/{code}`` lists the codes that are neither 0 nor 1."""
    m = re.search(r"any other exit code \(([\d, ]+)\)", README)
    assert m, "the run pings table no longer lists the other exit codes"
    listed = {int(c) for c in m.group(1).split(",")}
    assert listed == _exit_code_table() - {0, 1}, listed
