"""Strict YAML for catalogs: repeated keys, aliases, merge keys, size, depth, impossible dates."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.yaml_strict import MAX_DEPTH, MAX_SCALAR_CHARS, KeyLines, parse_yaml, read_yaml, show


def test_plain_document_reads_with_the_line_of_each_key():
    read = parse_yaml("a: 1\nb:\n  c: [x, y]\n")
    assert read.readable and read.problems == ()
    assert read.data == {"a": 1, "b": {"c": ["x", "y"]}}
    assert isinstance(read.data, KeyLines) and read.data.line_of("b") == 2 and read.data["b"].line_of("c") == 3


def test_empty_document_is_an_empty_mapping():
    assert parse_yaml("# nothing\n").data == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\nb: 2\na: 3\n", ["line 3: key 'a' is repeated (first on line 1)"]),
        ("m:\n  x: 1\n  y: 2\n  x: 1\n", ["line 4: key 'x' is repeated (first on line 2)"]),
        ("f: {k: 1, k: 2}\n", ["line 1: key 'k' is repeated (first on line 1)"]),
        ("1: a\n0x1: b\n", ["line 2: key 1 is repeated (first on line 1)"]),  # equal once constructed
        ("a: 1\na: 2\na: 3\n", ["line 2: key 'a'", "line 3: key 'a'"]),  # every repetition, not the first only
    ],
)
def test_repeated_keys_are_reported_with_lines_and_the_document_still_reads(text: str, expected: list[str]):
    read = parse_yaml(text)
    assert read.readable
    assert len(read.problems) == len(expected)
    for problem, fragment in zip(read.problems, expected):
        assert fragment in problem


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: &x [1]\nb: *x\n", "line 2, column 4: alias *x is not allowed"),
        ("a: &x 1\nb: [*x]\n", "alias *x is not allowed"),
        ("<<: {a: 1}\nb: 2\n", "line 1, column 1: merge key << is not allowed"),
        ("d: 2026-02-30\n", "'2026-02-30' is not a real date"),
        ("v: " + "x" * (MAX_SCALAR_CHARS + 1) + "\n", f"a value of {MAX_SCALAR_CHARS + 1} characters is over the limit"),
        ("v: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n", f"nesting deeper than {MAX_DEPTH} levels"),
        ("a: !!python/name:os.system\n", "could not determine a constructor"),
        ("a: 1\n---\nb: 2\n", "expected a single document"),
        ("a: [1\n", "cannot be read as YAML (ParserError"),
        ("? [a]\n: 1\n", "found unhashable key"),
    ],
)
def test_refused_documents_are_one_bounded_problem(text: str, fragment: str):
    read = parse_yaml(text)
    assert not read.readable
    assert len(read.problems) == 1 and fragment in read.problems[0], read.problems
    assert len(read.problems[0]) < 300 and "\n" not in read.problems[0]


def test_value_at_the_limit_and_nesting_at_the_depth_are_accepted():
    assert parse_yaml("v: " + "x" * MAX_SCALAR_CHARS + "\n").data == {"v": "x" * MAX_SCALAR_CHARS}
    nested = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    assert parse_yaml(nested).readable  # the document's own node is one level


def test_anchor_without_alias_is_harmless():
    assert parse_yaml("a: &x 1\n").data == {"a": 1}


def test_billion_laughs_is_refused_at_the_first_alias():
    text = "a: &a [lol, lol]\n" + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(20))
    read = parse_yaml(text)
    assert read.problems == ("line 2, column 8: alias *a is not allowed in a catalog: write the value out",)


def test_oversize_file_is_refused_without_reading_it_all(tmp_path: Path):
    path = tmp_path / "big.yaml"
    path.write_text("a: 1\n" + "#" * 2000 + "\n", encoding="utf-8")
    assert read_yaml(path, max_bytes=1000).problems == ("is larger than 1000 bytes; a catalog file is a few kilobytes",)
    assert read_yaml(path, max_bytes=4000).data == {"a": 1}


def test_non_regular_files_and_bad_bytes_are_problems(tmp_path: Path):
    endless = tmp_path / "zero.yaml"
    endless.symlink_to("/dev/zero")
    assert read_yaml(endless).problems == ("is not a regular file",)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("a: caf\xe9\n".encode("latin-1"))
    assert read_yaml(latin).problems == ("is not UTF-8 (at byte offset 6)",)
    assert "cannot be read (FileNotFoundError" in read_yaml(tmp_path / "missing.yaml").problems[0]


def test_show_escapes_and_cuts():
    assert show("\x1b[31mred") == "'\\x1b[31mred'"
    long = show("x" * 10_000)
    assert len(long) < 80 and long.endswith("(10002 chars)")
    assert show([1, 2]) == "[1, 2]"
