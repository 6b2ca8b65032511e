"""Every command in README.md and docs/*.md is run by a test or by CI (issue 12).

The commands are read from the docs (shell code blocks, and inline code that starts with a
known program). REGISTRY says how each one is covered: the tests that run it, CI, this file
(run here), or, for what cannot run on this machine (Docker), the tests that check it instead.
A docs command no entry covers fails, so does an entry naming a test, a make target, a script,
a subcommand, a flag, a compose service or a repository path that does not exist.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# Inline code is a command when its first word is one of these (or .venv/bin/...) and it has arguments.
PROGRAMS = {"make", "stellar", "stellar-serve", "python", "python3", "dagster", "dagster-daemon",
            "dagster-webserver", "dg", "docker", "mlflow", "pg_dump", "psql", "curl", "grpcurl", "buf", "uv",
            "pytest", "cp", "rm", "sh", "bash", "npm"}
SHELL_FENCES = {"bash", "sh", "shell", "console"}
SEPARATORS = {";", "&&", "||", "|"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


# ---------------------------------------------------------------------------------------------
# Reading the commands out of the docs


@dataclass(frozen=True)
class DocCommand:
    where: str              # "docs/serving.md:22"
    argv: tuple[str, ...]   # normalised: no env assignments, no .venv/bin/, no "..." placeholders

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.argv).split())


def _tokens(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    return list(lexer)


def _segments(tokens: list[str]) -> list[list[str]]:
    """Split on ; && || | and drop redirections, shell keywords and env assignments."""
    segments, current, skip_next = [], [], False
    for token in tokens:
        if skip_next:
            skip_next = False
        elif token in SEPARATORS:
            segments.append(current)
            current = []
        elif token in (">", ">>", "<"):
            skip_next = True
        else:
            current.append(token)
    segments.append(current)
    cleaned = []
    for segment in segments:
        if segment[:1] == ["do"]:
            segment = segment[1:]
        while segment and ASSIGNMENT.match(segment[0]):
            segment = segment[1:]
        if segment and segment[0] not in ("for", "done", "then", "fi"):
            cleaned.append(segment)
    return cleaned


def normalise(tokens: list[str]) -> tuple[str, ...]:
    words = [t.strip("[]") for t in tokens if t not in ("...", "…")]
    words = [w for w in words if w]
    if words and words[0].startswith(".venv/bin/"):
        words[0] = words[0][len(".venv/bin/"):]
    return tuple(words)


def _logical_lines(block: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Join continuation lines (trailing backslash) and lines inside an open quote."""
    lines, start, pending = [], None, ""
    for number, line in block:
        start = number if start is None else start
        pending = f"{pending}\n{line}" if pending else line
        if pending.rstrip().endswith("\\"):
            pending = pending.rstrip()[:-1]
            continue
        try:
            _tokens(pending)
        except ValueError:  # an unclosed quote goes on on the next line
            continue
        lines.append((start, pending))
        start, pending = None, ""
    if pending:
        lines.append((start, pending))
    return lines


def _fenced_commands(name: str, lines: list[str]) -> list[DocCommand]:
    commands, block, fence = [], [], None
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            if fence is None:
                fence, block = stripped[3:].strip().lower(), []
            else:
                if fence in SHELL_FENCES:
                    for start, text in _logical_lines(block):
                        commands += [DocCommand(f"{name}:{start}", normalise(s)) for s in _segments(_tokens(text))]
                fence = None
        elif fence is not None:
            block.append((number, line.lstrip("$ ") if stripped.startswith("$ ") else line))
    return [c for c in commands if c.argv]


def _prose(lines: list[str]) -> str:
    """The text outside code blocks, with the blocks blanked so line numbers stay right."""
    kept, inside = [], False
    for line in lines:
        if line.strip().startswith("```"):
            inside = not inside
            kept.append("")
        else:
            kept.append("" if inside else line)
    return "\n".join(kept)


def inline_spans(name: str, lines: list[str]) -> list[tuple[str, str]]:
    prose = _prose(lines)
    return [(f"{name}:{prose.count(chr(10), 0, m.start()) + 1}", " ".join(m.group(1).split()))
            for m in re.finditer(r"`([^`]+)`", prose)]


def _is_command(words: list[str]) -> bool:
    return len(words) >= 2 and (words[0] in PROGRAMS or words[0].startswith(".venv/bin/"))


def _inline_commands(name: str, lines: list[str]) -> list[DocCommand]:
    commands = []
    for where, span in inline_spans(name, lines):
        try:
            tokens = _tokens(span)
        except ValueError:
            tokens = span.split()
        for segment in _segments(tokens):
            if _is_command(segment):
                commands.append(DocCommand(where, normalise(segment)))
    return commands


def extract_commands(name: str, markdown: str) -> list[DocCommand]:
    lines = markdown.splitlines()
    return _fenced_commands(name, lines) + _inline_commands(name, lines)


@cache
def docs_commands() -> tuple[DocCommand, ...]:
    found = []
    for path in DOCS:
        found += extract_commands(str(path.relative_to(REPO)), path.read_text(encoding="utf-8"))
    return tuple(found)


# ---------------------------------------------------------------------------------------------
# How each command is covered


@dataclass(frozen=True)
class ByTests:
    """Tests that run this command (or, where the note says so, the same code path)."""
    nodes: tuple[str, ...]
    note: str = ""


@dataclass(frozen=True)
class ByCI:
    """.ci/run runs `make test`; the note says where in that this command is."""
    note: str


@dataclass(frozen=True)
class RunHere:
    """This file runs it (test_run_here_commands): argv from the repository root, a line it prints."""
    argv: tuple[str, ...]
    expect: str


@dataclass(frozen=True)
class CheckedHere:
    """Not run by any test (the note says why): this file checks its program, subcommand and flags exist."""
    note: str


@dataclass(frozen=True)
class Smoke:
    """A benchmark this file runs with --smoke; `expect` is a line of its table."""
    script: str
    expect: str


@dataclass(frozen=True)
class CannotRunHere:
    """Docker cannot run on this machine: the named tests check the same thing another way."""
    why: str
    checked_by: tuple[str, ...]


COMPOSE_STATIC = "tests/stack/test_compose_config.py::test_compose_file_agrees_with_the_code"
DOCKERFILE = "tests/stack/test_compose_config.py::test_dockerfile_runs_as_non_root_with_healthchecks"
STACK = "tests/stack/test_stack.py"
CLASSIFY_CLI = "tests/serving/test_classify_cli.py"
ENTRY = "tests/test_entry_points.py"

# (regular expression matched against the whole normalised command, coverage)
REGISTRY: list[tuple[str, object]] = [
    (r"make demo", ByTests(("tests/app/test_cli.py::test_the_readme_commands_are_all_there",
                            "tests/app/test_replay.py::test_replay_retrains_on_drift_promotes_and_predicts_with_the_new_champion"),
                           "`make demo` is `stellar demo` (Makefile, checked here); the replay it runs is run on a "
                           "short range; the full main job takes minutes and is not run by a test")),
    (r"stellar demo( --first-week --last-week)?",
     ByTests(("tests/app/test_replay.py::test_replay_retrains_on_drift_promotes_and_predicts_with_the_new_champion",
              "tests/app/test_cli.py::test_whole_survey_with_a_range_is_refused_before_anything_runs"),
             "the replay `stellar demo` runs, on a short range; the full range takes minutes")),
    (r"stellar demo --whole-survey",
     ByTests(("tests/app/test_replay.py::test_a_replay_from_the_first_survey_week_bootstraps_its_first_champion",
              "tests/app/test_cli.py::test_whole_survey_with_a_range_is_refused_before_anything_runs"),
             "GAP: the whole survey (10 minutes) is not replayed by a test, it is measured in docs/monitoring.md; "
             "its start at 2000-03-05 (the bootstrapped first champion) and the flag are")),
    (r"make test", ByCI(".ci/run is exactly `make test`")),
    (r"make ui|stellar ui", ByTests((f"{ENTRY}::test_stellar_ui_serves_on_the_port_asked",
                                     f"{ENTRY}::test_stellar_ui_help_shows_host_and_port_defaults"))),
    (r"dagster dev", ByTests((f"{ENTRY}::test_stellar_ui_serves_on_the_port_asked",
                              f"{ENTRY}::test_the_root_instance_is_the_one_stellar_opens_for_the_default_home"),
                             "`stellar ui` runs `dagster dev` on the instance `dagster` opens from the root")),
    (r"make mlflow-ui|mlflow ui --backend-store-uri sqlite:///\.stellar/mlflow/mlflow\.db",
     CheckedHere("GAP: starts a long-lived UI server no test starts; `mlflow ui` and --backend-store-uri are "
                 "checked here, the make target's recipe too")),
    (r"make serve|stellar serve|python -m stellar_serving serve( --port 50051 --metrics-port 9464)?",
     ByTests(("tests/serving/test_serving_process.py::test_serve_process_cli_csv_stream_and_sigterm_drain",
              f"{STACK}::test_prediction_server_serves_the_champion"))),
    (r"(stellar serve|python -m stellar_serving serve) --print-env",
     RunHere(("python", "-m", "stellar_serving", "serve", "--print-env"), "STELLAR_GRPC_PORT")),
    (r"stellar settings", ByTests(("tests/app/test_cli.py::test_settings_lists_the_apps_and_the_code_locations_variables_without_secret_values",))),
    (r"stellar --version", ByTests(("tests/app/test_cli.py::test_the_installed_entry_point_is_this_cli_and_prints_the_version",))),
    (r"stellar ingest( --allow-shrink)?",
     ByTests(("tests/app/test_ingest_command.py::test_ingest_defaults_to_the_weeks_the_source_covers_and_refuses_to_shrink",))),
    (r"stellar classify( --target \S+)?( --u [\d.]+ --g [\d.]+ --r [\d.]+ --i [\d.]+ --z [\d.]+ --redshift [\d.]+)?",
     ByTests(("tests/serving/test_serving_security.py::test_tls_with_token_from_library_and_cli",
              f"{CLASSIFY_CLI}::test_unreachable_server_is_one_error_line"))),
    (r"stellar classify --target \S+ --csv \S+ --output \S+ --tls-ca \S+ --token \S+",
     ByTests(("tests/serving/test_serving_process.py::test_serve_process_cli_csv_stream_and_sigterm_drain",
              "tests/serving/test_serving_security.py::test_tls_with_token_from_library_and_cli"),
             "--csv/--output against a real server process; --tls-ca/--token against a TLS server")),
    (r"stellar model-info( --target \S+)?",
     ByTests((f"{STACK}::test_prediction_server_serves_the_champion",
              f"{CLASSIFY_CLI}::test_version_names_the_package_and_the_api"),
             "GAP: the ModelInfo RPC is run through the client library; the CLI command only with --version "
             "(its flags are checked here)")),
    (r"stellar reload",
     ByTests(("tests/serving/test_serving_security.py::test_admin_scope_guards_only_reload",
              f"{STACK}::test_mlflow_down_prediction_server_keeps_serving_and_recovers"),
             "GAP: the ReloadModel RPC is run through the client library, not the CLI command")),
    (r"dg check defs", ByTests((f"{ENTRY}::test_dg_check_defs_from_the_root",))),
    (r"dg dev|dg launch", CheckedHere("GAP: `dg dev` is the UI server `stellar ui`/`dagster dev` tests cover, "
                                      "`dg launch` is not run; both commands are checked to exist here")),
    (r"dagster definitions validate -w workspace\.yaml",
     ByTests((f"{ENTRY}::test_dagster_definitions_validate_with_the_workspace",))),
    (r"dagster code-server start -m stellar_assets\.definitions|dagster-daemon run|mlflow server",
     ByTests((f"{STACK}::test_backfill_through_graphql_lands_in_postgres_and_s3",),
             "tests/stack runs the compose services' commands as local processes")),
    (r"dagster asset materialize( -m stellar_assets\.definitions)? --select model_selection( --config-json .*)?",
     ByTests(("tests/training/test_model_selection.py::test_selection_tracks_nested_runs_and_writes_defaults_the_challenger_uses",),
             "the same asset and config keys in a real run; the config JSON is checked against the asset here")),
    (r"python benchmarks/drift_power\.py", Smoke("benchmarks/drift_power.py", "  scenario ")),
    (r"python benchmarks/model_quality\.py", Smoke("benchmarks/model_quality.py", "  accuracy ")),
    (r"python benchmarks/loop_value\.py", Smoke("benchmarks/loop_value.py", "platform ")),
    (r"python benchmarks/replay_cost\.py", Smoke("benchmarks/replay_cost.py", "predict+drift per week vs Dagster's floor:")),
    (r"python benchmarks/ingestion_backfill\.py",
     Smoke("benchmarks/ingestion_backfill.py", "Dagster backfill, one run, SQLite:")),
    (r"python benchmarks/(serving_benchmark|promotion_gate|serving_concurrency|compiled_predictor|treeshap_c|batch_evaluators)\.py( --repeats \d+)?( --calls \d+)?( --check-rows \d+)?( --cold)?",
     ByTests(("tests/test_docs_commands.py::test_benchmark_help_runs",),
             "GAP: another engineer's script; only --help is run until it has a smoke option")),
    (r"mlflow models serve( --env-manager local)?",
     ByTests(("tests/test_docs_commands.py::test_benchmark_help_runs",),
             "the baseline benchmarks/serving_benchmark.py starts (checked here to still name it)")),
    (r"pytest tests/\S+( -m stack)?( -q)?", ByCI("`make test` runs the whole suite, this folder included")),
    (r"uv sync --extra test", ByCI("`make install` (a step of `make test`) runs `uv sync --frozen --extra test`")),
    (r"uv sync( --reinstall-package stellar)?|uv build --wheel|rm -rf stellar_api/_generated|python setup\.py build_py",
     ByTests(("tests/serving/test_serving_process.py::test_generated_stubs_are_a_package_with_relative_imports",),
             "not run here: it rewrites stellar_api/_generated in the shared tree; `make install` runs the same "
             "build hook and this test checks its output")),
    (r"cp \.env\.example \.env",
     CannotRunHere("the .env of the compose stack", ("tests/stack/test_compose_config.py::test_every_instance_variable_is_documented",
                                                      COMPOSE_STATIC))),
    (r"docker compose (up -d( --build)?|ps|build)",
     CannotRunHere("Docker cannot run on this machine", (COMPOSE_STATIC, DOCKERFILE,
                                                          f"{STACK}::test_backfill_through_graphql_lands_in_postgres_and_s3"))),
    (r"docker compose exec -T postgres pg_dump .*|docker run --rm --network stellar_default .* minio/mc:\S+ sh -c .*",
     CannotRunHere("Docker cannot run on this machine; the backup itself is not tested",
                   (COMPOSE_STATIC,))),
    (r"docker compose run --rm daemon dagster instance migrate|docker compose run --rm --entrypoint sh mlflow -c .*",
     CannotRunHere("Docker cannot run on this machine; the stack test starts on migrated schemas",
                   (f"{STACK}::test_postgres_restart_during_a_run_and_retrainings_never_overlap",
                    "tests/stack/test_compose_config.py::test_production_dagster_yaml_is_a_valid_instance_config"))),
]


def coverage_of(command: DocCommand):
    for pattern, coverage in REGISTRY:
        if re.fullmatch(pattern, command.text):
            return coverage
    return None


def named_tests() -> set[str]:
    nodes = set()
    for _, coverage in REGISTRY:
        nodes.update(getattr(coverage, "nodes", ()))
        nodes.update(getattr(coverage, "checked_by", ()))
    return nodes


# ---------------------------------------------------------------------------------------------
# What exists: tests, make targets, scripts, subcommands, flags, services


def node_exists(node: str) -> bool:
    path, _, name = node.partition("::")
    file = REPO / path
    if not file.is_file() or not name:
        return False
    tree = ast.parse(file.read_text(encoding="utf-8"))
    scope, *rest = name.split("[")[0].split("::")
    found = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == scope]
    if rest and found:
        return any(isinstance(m, ast.FunctionDef) and m.name == rest[0] for m in found[0].body)
    return bool(found) and isinstance(found[0], ast.FunctionDef)


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, re.M))


def make_recipe(target: str) -> str:
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n?)+)", (REPO / "Makefile").read_text(), re.M)
    return match.group(1) if match else ""


def flags_of(argv: tuple[str, ...]) -> list[str]:
    return [a.split("=")[0] for a in argv if a.startswith("-") and a not in ("-", "--")]


# Prints, as JSON, the options of a click command path under a root group (None: no such command).
CLICK_OPTIONS = """
import importlib, json, sys
import click
module, attr = sys.argv[1].split(":")
root = getattr(importlib.import_module(module), attr)
out = {}
for path in json.loads(sys.argv[2]):
    command, ctx = root, click.Context(root)
    for word in path:
        command = command.get_command(ctx, word) if isinstance(command, click.Group) else None
        if command is None:
            break
        ctx = click.Context(command, parent=ctx)
    out[" ".join(path)] = None if command is None else sorted(
        {o for p in command.params for o in [*p.opts, *getattr(p, "secondary_opts", [])]} | {"--help"})
print(json.dumps(out))
"""
CLICK_ROOTS = {"dagster": "dagster._cli:cli", "dg": "dagster_dg_cli.cli:cli", "mlflow": "mlflow.cli:cli"}


def subcommand_path(argv: tuple[str, ...]) -> tuple[str, ...]:
    """The words before the first option or argument that looks like a value."""
    words = []
    for word in argv[1:]:
        if word.startswith("-") or not re.fullmatch(r"[a-z][a-z-]*", word):
            break
        words.append(word)
    return tuple(words)


@cache
def click_options(program: str, paths: tuple[tuple[str, ...], ...]) -> dict:
    done = subprocess.run([sys.executable, "-c", CLICK_OPTIONS, CLICK_ROOTS[program], json.dumps(paths)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def help_text(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO, env=quiet_env())


def quiet_env() -> dict[str, str]:
    """A newcomer's shell from the root: no stellar/Dagster/MLflow settings, the venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "STELLAR_", "MLFLOW_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@cache
def benchmark_help() -> dict[str, subprocess.CompletedProcess]:
    """`--help` of every benchmark script, run side by side (each pays for its own imports)."""
    scripts = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "benchmarks").glob("*.py"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = pool.map(lambda s: help_text([sys.executable, s, "--help"]), scripts)
    return dict(zip(scripts, done))


def stellar_command_options(name: str) -> set[str] | None:
    """The options `stellar NAME` takes: click's, or the server parser's for the serving commands."""
    import contextlib
    import io

    import click

    from stellar_app.cli import stellar
    from stellar_serving import cli as serving_cli

    command = stellar.commands.get(name)
    if command is None:
        return None
    options = {o for p in command.params if isinstance(p, click.Option) for o in [*p.opts, *p.secondary_opts]}
    if options:
        return options | {"--help", "-h"}
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown), contextlib.suppress(SystemExit):
        serving_cli.main([name, "--help"])
    return options_in_help(shown.getvalue())


def options_in_help(text: str) -> set[str]:
    """Every option an argparse help text shows (whole words: --smok is not --smoke)."""
    return set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", text))


def _stellar_problems(argv: tuple[str, ...]) -> list[str]:
    from stellar_app.cli import stellar

    if argv[1:2] and argv[1].startswith("-"):
        known = {o for p in stellar.params for o in p.opts} | {"-h", "--help"}
        return [f"stellar has no option {f}" for f in flags_of(argv) if f not in known]
    options = stellar_command_options(argv[1])
    if options is None:
        return [f"stellar has no command {argv[1]!r} (it has {sorted(stellar.commands)})"]
    return [f"stellar {argv[1]} has no option {f}" for f in flags_of(argv[2:]) if f not in options]


def _python_problems(argv: tuple[str, ...]) -> list[str]:
    if argv[1:3] == ("-m", "stellar_serving"):
        options = stellar_command_options(argv[3])
        if options is None:
            return [f"python -m stellar_serving has no command {argv[3]!r}"]
        return [f"python -m stellar_serving {argv[3]} has no option {f}" for f in flags_of(argv[4:]) if f not in options]
    script = argv[1]
    if not (REPO / script).is_file():
        return [f"{script} does not exist"]
    if script.startswith("benchmarks/"):
        shown = benchmark_help()[script]
        if shown.returncode != 0:
            return [f"{script} --help failed: {shown.stderr[-2000:]}"]
        options = options_in_help(shown.stdout)
        return [f"{script} has no option {f}" for f in flags_of(argv[2:]) if f not in options]
    return []


def _make_problems(argv: tuple[str, ...]) -> list[str]:
    return [f"the Makefile has no target {t!r}" for t in argv[1:] if t not in make_targets()]


def _pytest_problems(argv: tuple[str, ...]) -> list[str]:
    paths = [a for a in argv[1:] if a.startswith("tests")]
    return [f"{p} does not exist" for p in paths if not (REPO / p.split("::")[0]).exists()]


COMPOSE_OPTIONS_WITH_VALUES = {"--entrypoint", "-e", "--env", "-u", "--user", "-w", "--workdir"}


def compose_service_and_command(argv: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """`docker compose exec|run [options] SERVICE COMMAND...`: the service and the command it runs."""
    rest, k = argv[3:], 0
    while k < len(rest) and rest[k].startswith("-"):
        k += 2 if rest[k] in COMPOSE_OPTIONS_WITH_VALUES else 1
    service, inside = rest[k], rest[k + 1:]
    if inside[:1] == ("-c",) and "--entrypoint" in argv:  # --entrypoint sh SERVICE -c 'SCRIPT'
        inside = normalise(_tokens(inside[1]))
    return service, inside


def nested_command(argv: tuple[str, ...]) -> tuple[str, ...] | None:
    """The command a compose service runs for this docs command, when it is one of ours to check."""
    if argv[:3] in (("docker", "compose", "exec"), ("docker", "compose", "run")):
        inside = compose_service_and_command(argv)[1]
        return inside if inside and inside[0] in ("dagster", "mlflow", "stellar") else None
    return None


def _docker_problems(argv: tuple[str, ...]) -> list[str]:
    services = compose()["services"]
    if argv[1] == "run":  # a one-off container: its image must be the one the compose file pins
        images = {str(s.get("image")) for s in services.values()}
        image = next((a for a in argv if re.fullmatch(r"[\w.-]+/[\w.-]+:[\w.-]+", a)), None)
        return [] if image in images else [f"image {image} is not one docker-compose.yml pins ({sorted(images)})"]
    if argv[1] != "compose":
        return [f"unknown docker command {argv[1]!r}"]
    if argv[2] not in ("exec", "run"):
        return [] if argv[2] in ("up", "ps", "build", "down", "logs") else [f"unknown compose command {argv[2]!r}"]
    service, _ = compose_service_and_command(argv)
    if service not in services:
        return [f"docker-compose.yml has no service {service!r}"]
    inside = nested_command(argv)
    return problems_of(inside) if inside else []


def _click_problems(argv: tuple[str, ...], options: dict) -> list[str]:
    path = subcommand_path(argv)
    known = options[" ".join(path)]
    if known is None:
        return [f"{argv[0]} has no command {' '.join(path)!r}"]
    return [f"{argv[0]} {' '.join(path)} has no option {f}" for f in flags_of(argv[1 + len(path):]) if f not in known]


def problems_of(argv: tuple[str, ...]) -> list[str]:
    program = argv[0]
    if program in CLICK_ROOTS:
        options = all_click_options().get(program, {})
        if " ".join(subcommand_path(argv)) not in options:  # a command from outside the docs (self-tests)
            options = click_options(program, (subcommand_path(argv),))
        return _click_problems(argv, options)
    checks = {"stellar": _stellar_problems, "python": _python_problems, "make": _make_problems,
              "pytest": _pytest_problems, "docker": _docker_problems}
    if program in checks:
        return checks[program](argv)
    if program in ("dagster-daemon", "stellar-serve"):
        return [] if (BIN / program).exists() else [f"{program} is not installed in the venv"]
    if program in ("cp", "rm"):
        argv = tuple(a for a in argv if not a.startswith("-"))
        return [] if (REPO / argv[1]).exists() else [f"{argv[1]} does not exist"]
    if program == "uv":  # uv is pinned in the Makefile and installed by it, not in the venv
        return [] if argv[1] in ("sync", "build") else [f"uv {argv[1]} is not a step of the build"]
    return [f"no check for the program {program!r}: add one to problems_of"]


@cache
def all_click_options() -> dict[str, dict]:
    """One subprocess per click program (dagster, dg, mlflow) for every path the docs use, side by side."""
    wanted: dict[str, set] = {p: set() for p in CLICK_ROOTS}
    for command in docs_commands():
        argv = nested_command(command.argv) or command.argv
        if argv[0] in CLICK_ROOTS:
            wanted[argv[0]].add(subcommand_path(argv))
    wanted = {p: tuple(sorted(paths)) for p, paths in wanted.items() if paths}
    with ThreadPoolExecutor(max_workers=len(wanted) or 1) as pool:
        return dict(zip(wanted, pool.map(lambda p: click_options(p, wanted[p]), wanted)))


# ---------------------------------------------------------------------------------------------
# The extractor itself (a command it misses is a command nobody checks)

SAMPLE_DOC = """Run `make demo`, then `stellar ui [--port 3000]`; `stellar` alone is a name, `stellar_core/` a path.

```bash
# a comment
FOO=1 .venv/bin/python benchmarks/x.py --fast \\
  --out o.json   # trailing comment
for db in a b; do
  docker compose exec -T postgres pg_dump "$db" > "b/$db.dump"
done
docker run --rm img:1 sh -c 'one &&
   two'
```

```text
make not-a-command
```
"""


def test_the_extractor_reads_fences_continuations_loops_and_inline_commands():
    found = [(c.where, c.text) for c in extract_commands("x.md", SAMPLE_DOC)]
    assert found == [
        ("x.md:5", "python benchmarks/x.py --fast --out o.json"),
        ("x.md:8", "docker compose exec -T postgres pg_dump $db"),
        ("x.md:10", "docker run --rm img:1 sh -c one && two"),
        ("x.md:1", "make demo"),
        ("x.md:1", "stellar ui --port 3000"),
    ]


def test_the_docs_hold_the_commands_a_newcomer_runs():
    texts = {c.text for c in docs_commands()}
    assert {"make demo", "make test", "make ui", "stellar settings", "dg check defs"} <= texts


# ---------------------------------------------------------------------------------------------
# The registry covers the docs, and names only what exists


def test_every_docs_command_has_a_registry_entry():
    missing = [f"{c.where}: {c.text}" for c in docs_commands() if coverage_of(c) is None]
    assert not missing, "docs commands no test covers (add a REGISTRY entry and the test):\n" + "\n".join(missing)


def test_every_registry_entry_still_matches_a_docs_command():
    texts = [c.text for c in docs_commands()]
    stale = [p for p, _ in REGISTRY if not any(re.fullmatch(p, t) for t in texts)]
    assert not stale, f"registry entries no docs command uses any more: {stale}"


def test_every_test_the_registry_names_exists():
    missing = sorted(n for n in named_tests() if not node_exists(n))
    assert not missing, f"the registry names tests that do not exist: {missing}"


def test_node_exists_tells_a_missing_test():
    assert node_exists("tests/test_docs_commands.py::test_node_exists_tells_a_missing_test")
    assert not node_exists("tests/test_docs_commands.py::test_that_was_never_written")
    assert not node_exists("tests/no_such_file.py::test_x")


def test_ci_runs_make_test_and_make_test_runs_the_suite():
    assert re.search(r"^make test$", (REPO / ".ci" / "run").read_text(), re.M)
    assert "$(VENV)/bin/pytest" in make_recipe("test")
    assert "sync --frozen --extra test" in make_recipe("$(VENV)/.installed")


def test_make_targets_run_the_commands_the_docs_pair_them_with():
    assert make_recipe("demo").strip() == "$(VENV)/bin/stellar demo"
    assert make_recipe("ui").strip() == "$(VENV)/bin/stellar ui"
    assert make_recipe("serve").strip() == "$(VENV)/bin/stellar serve"
    assert "$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///" in make_recipe("mlflow-ui")


def test_every_program_target_script_command_and_flag_in_the_docs_exists():
    problems = [f"{c.where}: {c.text}: {p}" for c in docs_commands() for p in problems_of(c.argv)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("argv, problem", [
    (("make", "deploy"), "the Makefile has no target 'deploy'"),
    (("stellar", "train"), "stellar has no command 'train'"),
    (("stellar", "demo", "--weeks"), "stellar demo has no option --weeks"),
    (("stellar", "classify", "--colour"), "stellar classify has no option --colour"),
    (("python", "benchmarks/no_such.py"), "benchmarks/no_such.py does not exist"),
    (("python", "benchmarks/drift_power.py", "--smok"), "benchmarks/drift_power.py has no option --smok"),
    (("python", "stellar_assets/demo.py"), "stellar_assets/demo.py does not exist"),
    (("docker", "compose", "exec", "-T", "postgress", "psql"), "docker-compose.yml has no service 'postgress'"),
    (("docker", "compose", "run", "--rm", "daemon", "dagster", "instance", "migrait"),
     "dagster has no command 'instance migrait'"),
])
def test_a_wrong_docs_command_is_named(argv, problem):
    found = problems_of(argv)
    assert any(p.startswith(problem) for p in found), found


def test_the_documented_model_selection_config_fits_the_asset():
    import dagster as dg

    from stellar_assets.definitions import defs

    [command] = {c.text: c for c in docs_commands() if "--config-json" in c.argv}.values()
    config = json.loads(command.argv[command.argv.index("--config-json") + 1])
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={dg.AssetKey("model_selection")})
    dg.validate_run_config(job, config)  # raises, naming the entry, when a key is gone or mistyped


# ---------------------------------------------------------------------------------------------
# Repository paths and modules the docs name


REPO_DIRS = {p.name for p in REPO.iterdir() if p.is_dir() and not p.name.startswith(".")}


def referenced_paths() -> list[tuple[str, str]]:
    """Inline code that is a path inside the repository (it starts with one of its folders)."""
    found = []
    for path in DOCS:
        for where, span in inline_spans(str(path.relative_to(REPO)), path.read_text(encoding="utf-8").splitlines()):
            if re.fullmatch(r"[\w.-]+(/[\w.*-]+)+/?", span) and span.split("/")[0] in REPO_DIRS:
                found.append((where, span))
    return found


def referenced_modules() -> list[tuple[str, str]]:
    """Inline code that names a project module or object: stellar_x.y.z (call arguments dropped)."""
    found = []
    for path in DOCS:
        for where, span in inline_spans(str(path.relative_to(REPO)), path.read_text(encoding="utf-8").splitlines()):
            match = re.fullmatch(r"(stellar_\w+(?:\.\w+)+)(?::(\w+))?(\(.*\))?", span)
            if match:
                found.append((where, match.group(1) + (f".{match.group(2)}" if match.group(2) else "")))
    return found


def git_ignored(path: str) -> bool:
    """A git-ignored path is what a run writes (benchmarks/results/...), not a file of the repository."""
    return subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0


def test_every_repository_path_in_the_docs_exists():
    missing = [f"{where}: {p}" for where, p in referenced_paths()
               if not list(REPO.glob(p.rstrip("/"))) and not git_ignored(p)]
    assert not missing, "\n".join(missing)


def test_every_relative_link_in_the_docs_exists():
    missing = []
    for path in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
            if not re.match(r"[a-z]+:", target) and not (path.parent / target).exists():
                missing.append(f"{path.relative_to(REPO)}: {target}")
    assert not missing, "\n".join(missing)


def test_every_module_and_object_the_docs_name_exists():
    import importlib

    missing = []
    for where, dotted in referenced_modules():
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                target = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            try:
                for attr in parts[cut:]:
                    target = getattr(target, attr)
            except AttributeError:
                missing.append(f"{where}: {dotted}")
            break
        else:
            missing.append(f"{where}: {dotted}")
    assert not missing, "\n".join(missing)


# ---------------------------------------------------------------------------------------------
# What this file runs


def run_here_entries() -> list[RunHere]:
    return list(dict.fromkeys(c for _, c in REGISTRY if isinstance(c, RunHere)))


@pytest.mark.parametrize("entry", run_here_entries(), ids=lambda e: " ".join(e.argv))
def test_run_here_commands(entry, tmp_path):
    argv = [str(BIN / entry.argv[0]) if (BIN / entry.argv[0]).exists() else entry.argv[0], *entry.argv[1:]]
    if entry.argv[0] == "python":
        argv[0] = sys.executable
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**quiet_env(), "DAGSTER_HOME": str(tmp_path), "STELLAR_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert entry.expect in done.stdout, done.stdout


@pytest.mark.parametrize("script", sorted(p.relative_to(REPO).as_posix() for p in (REPO / "benchmarks").glob("*.py")))
def test_benchmark_help_runs(script):
    shown = benchmark_help()[script]
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "usage:" in shown.stdout


def smoke_entries() -> list[Smoke]:
    return [c for _, c in REGISTRY if isinstance(c, Smoke)]


@pytest.mark.parametrize("entry", smoke_entries(), ids=lambda e: e.script)
def test_benchmark_smoke_run_prints_its_table(entry, sdss_sample_path):
    done = subprocess.run([sys.executable, entry.script, "--smoke"], capture_output=True, text=True,
                          timeout=600, cwd=REPO, env=quiet_env())
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert any(line.startswith(entry.expect) for line in done.stdout.splitlines()), done.stdout


def test_every_documented_benchmark_is_run_by_a_smoke_test_or_listed_as_help_only():
    documented = {c.argv[1] for c in docs_commands() if c.argv[0] == "python" and c.argv[1].startswith("benchmarks/")}
    smoked = {e.script for e in smoke_entries()}
    help_only = {s for s in documented - smoked
                 if isinstance(coverage_of(DocCommand("", ("python", s))), ByTests)}
    assert documented == smoked | help_only, documented - smoked - help_only
