"""The layout's rules, checked on the source: which package may import which, no import cycles,
and MLflow's tag names and artifact paths written only in stellar_mlflow/names.py."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Each package and the stellar packages it may import (lower layers only).
ALLOWED = {
    "stellar_core": set(),
    "stellar_mlflow": {"stellar_core"},
    "stellar_api": {"stellar_core"},
    "stellar_serving": {"stellar_core", "stellar_mlflow", "stellar_api"},
    "stellar_assets": {"stellar_core", "stellar_mlflow", "stellar_api"},
    "stellar_app": {"stellar_core", "stellar_mlflow", "stellar_api", "stellar_assets", "stellar_serving"},
}
# Third-party frameworks a package must not depend on.
FORBIDDEN_LIBRARIES = {"stellar_core": {"dagster", "mlflow", "dagster_mlflow", "grpc"},
                       "stellar_serving": {"dagster"}, "stellar_api": {"dagster", "mlflow"},
                       "stellar_mlflow": {"dagster"}}


def _python_files(package: str):
    return [p for p in (ROOT / package).rglob("*.py") if "_generated" not in p.parts]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_each_package_imports_only_the_layers_below_it():
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in _python_files(package):
            for name in _imports(path):
                top = name.split(".")[0]
                if top.startswith("stellar_") and top != package and top not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)} imports {name}")
                if top in FORBIDDEN_LIBRARIES.get(package, set()):
                    wrong.append(f"{path.relative_to(ROOT)} imports {name} ({package} must not depend on {top})")
    assert wrong == []


def _module_graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for package in ALLOWED for path in _python_files(package)}
    # `from a.b import c` names module a.b (c is then an attribute, or a module counted on its own line).
    return {module: {name for name in _imports(path) if name in modules and name != module}
            for module, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """Every back edge of a depth-first walk, as the cycle it closes."""
    state: dict[str, int] = {}
    found: list[str] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_cycles_between_modules():
    assert cycles(_module_graph()) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a -> b -> c -> a"]
    assert cycles({"a": {"b"}, "b": set()}) == []


TAG_CALL = re.compile(r"""(set_tag|set_model_version_tag)\([^)]*?["'][a-z_./]+["']\s*,""")
TAG_KEY = re.compile(r"""(set_tags|tags=)\s*\(?\{[^}]*?["'][a-z_.]+["']\s*:""", re.S)
ARTIFACT = re.compile(r"""log_(figure|dict|text|table|artifacts?)\([^)]*["'][a-z_]+/[a-z_.]+["']""")


def test_mlflow_names_are_written_only_in_stellar_mlflow_names():
    found = []
    for package in ALLOWED:
        for path in _python_files(package):
            relative = path.relative_to(ROOT).as_posix()
            if relative == "stellar_mlflow/names.py":
                continue
            text = path.read_text()
            for pattern in (TAG_CALL, ARTIFACT):
                found += [f"{relative}: {m.group(0)[:80]}" for m in pattern.finditer(text)]
            # Dagster run tags (stellar/..., dagster/...) are not MLflow's: only MLflow calls are scanned.
            found += [f"{relative}: {m.group(0)[:80]}" for m in TAG_KEY.finditer(text)
                      if "mlflow" in text[max(0, m.start() - 200):m.start()] or "create_run" in text[max(0, m.start() - 200):m.start()]]
    assert found == []
