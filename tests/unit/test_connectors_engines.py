"""One engine class per database: only the factory asks which database a URL names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from common.catalog import load_catalog
from connectors import Source
from connectors.factory import ENGINES, source_for
from connectors.sql import SqlSource

CONNECTORS = Path(__file__).parents[2] / "connectors"
# what a module reads to learn which database it talks to
_ENGINE_QUESTIONS = frozenset({"get_backend_name", "drivername", "dialect_name"})


def _engine_questions(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and node.attr in _ENGINE_QUESTIONS:
            found.append(f"{path.name}:{node.lineno} .{node.attr}")
        if isinstance(node, ast.Attribute) and node.attr == "name" and isinstance(node.value, ast.Attribute) \
                and node.value.attr == "dialect":
            found.append(f"{path.name}:{node.lineno} .dialect.name")
    return found


# connections.py turns Airflow's connection fields into the URL the factory then reads
_ASKING = ("factory.py", "connections.py")


@pytest.mark.parametrize("module", sorted(p.name for p in CONNECTORS.glob("*.py") if p.name not in _ASKING))
def test_no_module_but_the_factory_asks_which_database_it_reads(module: str) -> None:
    assert _engine_questions(CONNECTORS / module) == []


def test_the_factory_asks() -> None:
    assert _engine_questions(CONNECTORS / "factory.py")  # the check above finds what it looks for


@pytest.mark.parametrize(
    ("url", "backend"),
    [("sqlite:////tmp/x.db", "sqlite"), ("postgresql+psycopg://u@h/db", "postgresql"),
     ("mysql+pymysql://u@h/db", "mysql"), ("mariadb+pymysql://u@h/db", "mariadb")],
)
def test_every_engine_is_a_source_of_its_own(url: str, backend: str) -> None:
    source = source_for(load_catalog().dataset("population"), make_url(url))
    assert type(source) is ENGINES[backend]
    assert type(source) is not SqlSource
    assert isinstance(source, Source)
    assert repr(source).startswith(f"{type(source).__name__}(population, population_db")


def test_one_class_per_database() -> None:
    classes = {engine.name: engine for engine in ENGINES.values()}
    assert sorted(classes) == ["MariaDB/MySQL", "PostgreSQL", "SQLite"]
    assert len(set(classes.values())) == 3
