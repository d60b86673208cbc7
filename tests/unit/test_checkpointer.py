"""The service's checkpoint clock: its interval is refused when it is not 1..3600 seconds, and a
tick signs a checkpoint only when the log has grown since the last one."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import ConfigError
from keys.keystore import Keystore
from lineage.audit import AccessLog
from service.checkpointer import INTERVAL_ENV, Checkpointer, interval


@pytest.mark.parametrize("raw, seconds", [("", 3600.0), ("1", 1.0), ("600", 600.0), ("3600", 3600.0), (" 90 ", 90.0)])
def test_the_interval_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch, raw: str, seconds: float) -> None:
    monkeypatch.setenv(INTERVAL_ENV, raw)
    assert interval() == seconds


@pytest.mark.parametrize("raw", ["0", "-5", "3601", "86400", "1h", "nan", "inf"])
def test_an_interval_longer_than_an_hour_or_not_a_number_is_refused(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(INTERVAL_ENV, raw)
    with pytest.raises(ConfigError, match=INTERVAL_ENV):
        interval()


def test_a_tick_checkpoints_only_a_grown_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVSHARE_ROOT_KEY", f"file:{tmp_path / 'root.key'}")
    keystore = Keystore(tmp_path / "home" / "keystore")
    keystore.init([], [])
    log = AccessLog(tmp_path / "home" / "audit", keystore, tmp_path / "home" / "state" / "head.json")
    clock = Checkpointer(log, 3600)
    clock.tick()
    clock.tick()
    assert [c["size"] for _, c in log.tree.checkpoints()] == [0]
    log.append({"event": "request", "purpose": "核验"})
    clock.tick()
    clock.tick()
    assert [c["size"] for _, c in log.tree.checkpoints()] == [0, 1]
    assert [c["reason"] for _, c in log.tree.checkpoints()] == ["service", "service"]
    assert log.verify().checkpoints == 2
