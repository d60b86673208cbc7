"""Keystore rules that need no files."""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from keys.keystore import KeyEntry, Keystore


@pytest.mark.parametrize(
    ("masters", "subscribers", "bad"),
    [
        (["Population.Footer"], [], "Population.Footer"),
        (["../escape"], [], "../escape"),
        (["publisher"], [], "publisher"),
        (["govshare.staging"], [], "govshare.staging"),
        (["subscriber.approval-general"], [], "subscriber.approval-general"),
        ([], ["Bad_Subscriber"], "Bad_Subscriber"),
        ([], ["../x"], "../x"),
    ],
)
def test_init_refuses_bad_or_reserved_names_before_touching_disk(tmp_path, masters, subscribers, bad) -> None:
    folder = tmp_path / "never-created"
    with pytest.raises(ConfigError) as info:
        Keystore(folder).init(masters, subscribers)
    assert any(bad in p for p in info.value.problems)
    assert not folder.exists()


def test_repr_names_the_folder_only(tmp_path) -> None:
    assert repr(Keystore(tmp_path)) == f"Keystore({str(tmp_path)!r})" == str(Keystore(tmp_path))


def test_key_entry_ignores_unknown_index_fields() -> None:
    doc = {"key_id": "a.v1", "name": "a", "version": 1, "algorithm": "AES-256-GCM", "purpose": "master",
           "created": "2026-01-01T00:00:00+00:00", "status": "active", "file": "a.v1.key", "check": "00",
           "added_by_a_later_version": True}
    assert KeyEntry.from_doc(doc).key_id == "a.v1"
