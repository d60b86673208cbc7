"""The floors: imports between the project's own modules run downward only.

Every import counts, wherever it stands: at the top, inside a function, under TYPE_CHECKING.
Folders form layers (README, "The layout is the architecture"); inside a folder, modules may
import each other but never in a loop. Nothing imports the DAG files. Tests, benchmarks and
scripts are not part of the product and are not read.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# folder -> floor; a folder may import only folders on lower floors (and itself)
FLOORS = {
    "common": 0,  # ground types: errors, catalog, check vocabulary, columns, schema, home, times, run and stage results, files
    "keys": 1,  # keystore, protection, pseudonyms, masking
    "connectors": 2,  # reading sources
    "validation": 2,  # judging records
    "sharing": 3,  # versions, state, reading and delivering views
    "lineage": 4,  # run records, OpenLineage, reports, the access log
    "service": 5,  # the publisher's HTTPS sharing service: Delta Sharing and the agent protocol
    "agent": 5,  # the subscriber's agent: enrolment, verified pulls over HTTPS, local decryption
    "govshare": 6,  # stage wiring, pulls, the demo generator, the CLI, the Airflow task adapter
    "dags": 7,  # when: the Airflow DAG files
}


def modules() -> dict[str, Path]:
    found = {}
    for folder in FLOORS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The project's modules that ``path`` imports, anywhere in the file."""

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; name the module in full")
        else:
            continue
        for name in names:
            if name.split(".")[0] in FLOORS and (module := resolve(name)):
                targets.add(module)
    return targets


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), i.e. import loops."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def folder(module: str) -> str:
    return module.split(".")[0]


def test_the_checker_sees_imports_anywhere(tmp_path: Path) -> None:
    """The parser counts imports in functions and under TYPE_CHECKING, and finds a planted loop."""
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sharing.store import X\n"
                      "def f():\n    import keys.keystore\n    from common import errors\n", encoding="utf-8")
    known = {"sharing.store": Path(), "keys.keystore": Path(), "common": Path(), "common.errors": Path()}
    assert imports(source, known) == {"sharing.store", "keys.keystore", "common", "common.errors"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_every_product_folder_is_on_a_floor() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "benchmarks"}
    assert packages <= set(FLOORS), f"packages without a floor (add them to FLOORS and the README): {packages - set(FLOORS)}"


def test_no_import_cycle_between_modules() -> None:
    assert cycles(graph()) == []


def test_no_import_cycle_between_folders() -> None:
    edges: dict[str, set[str]] = defaultdict(set)
    for module, targets in graph().items():
        edges[folder(module)] |= {folder(t) for t in targets} - {folder(module)}
    assert cycles(dict(edges)) == []


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_a_folder_imports_only_lower_floors(name: str) -> None:
    upward = sorted(f"{module} -> {target}" for module, targets in graph().items() if folder(module) == name
                    for target in targets if folder(target) != name and FLOORS[folder(target)] >= FLOORS[name])
    assert upward == []


def test_nothing_imports_the_dag_files() -> None:
    assert sorted(m for m, targets in graph().items() for t in targets if folder(t) == "dags" and folder(m) != "dags") == []


def test_library_code_never_imports_the_pipeline_or_the_cli() -> None:
    """Below the stage wiring, code takes what it uses: it never reaches up for the run."""
    top = {"govshare.pipeline", "govshare.cli", "govshare.airflow_tasks", "govshare.delivery"}
    reaching = sorted(f"{m} -> {t}" for m, targets in graph().items() if folder(m) != "govshare" and folder(m) != "dags"
                      for t in targets & top)
    assert reaching == []
