"""YAML for catalogs, read strictly: what PyYAML accepts silently is refused or reported here.

- A repeated key in a mapping is reported with its line (PyYAML keeps the last value silently: a
  repeated ``sharing`` once made a never-shared field unconditional).
- Aliases (``*name``) and merge keys (``<<``) are refused: the catalogs do not need them, and an
  alias is what a "billion laughs" document is made of.
- Files over MAX_FILE_BYTES, values over MAX_SCALAR_CHARS and nesting deeper than MAX_DEPTH are
  refused before they are built, so a hostile file costs milliseconds, not memory.
- Impossible dates (2026-02-30) are a YAML problem with a line, not a ValueError.

Messages quote values through ``show``: cut, escaped, never printed whole.
"""

from __future__ import annotations

import stat
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node

MAX_FILE_BYTES = 256 * 1024
MAX_SCALAR_CHARS = 4096
MAX_DEPTH = 24
MAX_SHOWN_CHARS = 60
_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAP_TAG = "tag:yaml.org,2002:map"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


def show(value: Any, limit: int = MAX_SHOWN_CHARS) -> str:
    """A value as a message may quote it: repr (control characters escaped), cut to ``limit``."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}… ({len(text)} chars)"


class RefusedYaml(yaml.MarkedYAMLError):
    """A construct the catalogs refuse (alias, merge key, huge value, deep nesting)."""


class KeyLines(dict):  # type: ignore[type-arg]
    """A mapping as read, remembering the line (1-based) of each key."""

    def __init__(self) -> None:
        super().__init__()
        self.key_lines: dict[Any, int] = {}

    def line_of(self, key: Any) -> int | None:
        return self.key_lines.get(key)


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that records repeated keys and refuses aliases, merge keys and oversize input."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.repeated: list[str] = []
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            anchor = _cut(event.anchor or "", 30)
            raise RefusedYaml(problem=f"alias *{anchor} is not allowed in a catalog: write the value out",
                              problem_mark=event.start_mark)
        if isinstance(event, yaml.ScalarEvent) and len(event.value) > MAX_SCALAR_CHARS:
            size = len(event.value)
            raise RefusedYaml(problem=f"a value of {size} characters is over the limit of {MAX_SCALAR_CHARS}",
                              problem_mark=event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise RefusedYaml(problem=f"nesting deeper than {MAX_DEPTH} levels", problem_mark=event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        self._note_repeated_keys(node)
        return super().construct_mapping(node, deep=deep)

    def key_lines(self, node: MappingNode) -> dict[Any, int]:
        """Each hashable key of ``node`` with the line of its first occurrence."""
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # constructed once, then cached
            if isinstance(key, Hashable):
                lines.setdefault(key, key_node.start_mark.line + 1)
        return lines

    def _note_repeated_keys(self, node: MappingNode) -> None:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                raise RefusedYaml(problem="merge key << is not allowed in a catalog: write the keys out",
                                  problem_mark=key_node.start_mark)
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # SafeLoader reports the unhashable key itself
            line = key_node.start_mark.line + 1
            if key in first:
                self.repeated.append(f"line {line}: key {show(key)} is repeated (first on line {first[key]}); "
                                     "a repeated key would silently replace the first value")
            else:
                first[key] = line

    def construct_key_lines_map(self, node: MappingNode) -> Any:
        data = KeyLines()
        yield data
        data.update(self.construct_mapping(node))
        data.key_lines = self.key_lines(node)

    def construct_checked_timestamp(self, node: Node) -> Any:
        try:
            return self.construct_yaml_timestamp(node)
        except ValueError as exc:  # 2026-02-30: PyYAML matches the pattern, datetime refuses it
            what = f"{show(node.value)} is not a real date ({exc})"
            raise ConstructorError(problem=what, problem_mark=node.start_mark) from None


StrictLoader.add_constructor(_MAP_TAG, StrictLoader.construct_key_lines_map)
StrictLoader.add_constructor(_TIMESTAMP_TAG, StrictLoader.construct_checked_timestamp)


@dataclass(frozen=True)
class YamlFile:
    """One file as read: its data (None when it could not be read) and what is wrong with it."""

    data: Any
    problems: tuple[str, ...]

    @property
    def readable(self) -> bool:
        return self.data is not None


def read_yaml(path: Path, max_bytes: int = MAX_FILE_BYTES) -> YamlFile:
    """Read one YAML document strictly; problems are plain lines without the file name."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return YamlFile(None, ("is not a regular file",))
        with path.open("rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as exc:
        return YamlFile(None, (f"cannot be read ({exc.__class__.__name__}: {exc.strerror or 'error'})",))
    if len(raw) > max_bytes:
        return YamlFile(None, (f"is larger than {max_bytes} bytes; a catalog file is a few kilobytes",))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return YamlFile(None, (f"is not UTF-8 (at byte offset {exc.start})",))
    return parse_yaml(text)


def parse_yaml(text: str) -> YamlFile:
    loader = StrictLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        return YamlFile(None, (describe(exc),))
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as exc:
        return YamlFile(None, (f"cannot be read as YAML ({exc.__class__.__name__}: {_first_line(exc)})",))
    finally:
        loader.dispose()
    return YamlFile({} if data is None else data, tuple(loader.repeated))


def describe(exc: yaml.MarkedYAMLError) -> str:
    """One bounded line: where (line, column) and what, as PyYAML saw it."""
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = _cut(" ".join(p for p in (exc.context, exc.problem) if p) or exc.__class__.__name__)
    if isinstance(exc, RefusedYaml):
        return f"{where}{what}"
    return f"{where}cannot be read as YAML ({exc.__class__.__name__}: {what})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return _cut(text.splitlines()[0]) if text else ""


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
