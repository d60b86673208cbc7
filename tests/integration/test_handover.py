"""The stage hand-over between workers (sharing.handover) against a moto S3 server: two work
folders and two store caches, as on two machines, one run's files moving between them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from common.objstore import attach, parse_store
from sharing.handover import Handover
from tests.integration.test_object_store import BUCKET, _keys, s3_env  # noqa: F401 - the moto fixture

pytestmark = pytest.mark.integration
DS, RUN = "population", "run-1"


@pytest.fixture
def workers(s3_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201, F811
    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    url = parse_store(f"s3://{BUCKET}/handover-{tmp_path.name}")

    def worker(name: str, run: str = RUN) -> Handover:
        cache = attach(tmp_path / name / "store-cache", url)
        return Handover(cache, tmp_path / name / "work", DS, run)

    return worker, url


def _write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_what_one_worker_pushes_the_other_fetches_and_removals_follow(workers, s3_env) -> None:  # noqa: ANN001, F811
    worker, url = workers
    a, b = worker("a"), worker("b")
    assert a.active and b.active
    _write(a.folder / "plan.json", b'{"parts": 2}')
    _write(a.folder / "datakeys.json", b'{"keys": {}}')
    _write(a.places["staging"] / "upserts.parquet", b"PAR1 staged")
    assert a.push() == 3
    assert a.push() == 0, "nothing changed: nothing moves"
    assert b.fetch() == 3
    assert (b.folder / "plan.json").read_bytes() == b'{"parts": 2}'
    assert (b.places["staging"] / "upserts.parquet").read_bytes() == b"PAR1 staged"
    assert b.fetch() == 0, "an unchanged store moves nothing"
    # a later stage on b rewrites one file and removes another
    (b.folder / "plan.json").write_bytes(b'{"parts": 3}')
    (b.folder / "datakeys.json").unlink()
    assert b.push() == 1
    assert a.fetch() == 1
    assert (a.folder / "plan.json").read_bytes() == b'{"parts": 3}'
    assert not (a.folder / "datakeys.json").exists(), "removed on b, removed on a"
    # a local copy altered behind the ledger's back is fetched again
    (a.folder / "plan.json").write_bytes(b"damaged")
    assert a.fetch() == 1 and (a.folder / "plan.json").read_bytes() == b'{"parts": 3}'
    assert not [k for k in _keys(s3_env, url.key(".runs")) if k.endswith(".tmp")]


def test_a_mapped_part_hands_over_its_own_files_only(workers, s3_env) -> None:  # noqa: ANN001, F811
    worker, url = workers
    a, b = worker("a"), worker("b")
    _write(a.folder / "plan.json", b"{}")
    a.push()
    # parts 0 and 1 run side by side on worker a; part 1 is still writing when part 0 ends
    _write(a.folder / "candidates-0.parquet", b"part 0")
    _write(a.folder / "validate.0.json", b"{}")
    _write(a.folder / "candidates-1.parquet", b"part 1, half")
    assert a.push(part=0) == 2
    names = {k.rsplit("/", 1)[-1] for k in _keys(s3_env, url.key(".runs", DS, RUN))}
    assert {"candidates-0.parquet", "validate.0.json"} <= names and "candidates-1.parquet" not in names
    # part 1 ends and hands over its files; part 0's stay
    (a.folder / "candidates-1.parquet").write_bytes(b"part 1, whole")
    assert a.push(part=1) == 1
    assert b.fetch() == 4
    assert (b.folder / "candidates-1.parquet").read_bytes() == b"part 1, whole"
    # part 2 on worker b never deletes what parts 0 and 1 handed over, even when b lacks them locally
    (b.folder / "candidates-0.parquet").unlink()
    _write(b.folder / "candidates-2.parquet", b"part 2")
    assert b.push(part=2) == 1
    names = {k.rsplit("/", 1)[-1] for k in _keys(s3_env, url.key(".runs", DS, RUN))}
    assert {"candidates-0.parquet", "candidates-1.parquet", "candidates-2.parquet"} <= names


def test_a_finished_run_drops_its_prefix_and_the_next_run_drops_dead_ones(workers, s3_env) -> None:  # noqa: ANN001, F811
    worker, url = workers
    dead, done = worker("a", "run-dead"), worker("a", "run-done")
    for h in (dead, done):
        _write(h.folder / "plan.json", b"{}")
        h.push()
    done.drop()
    shutil.rmtree(done.folder)  # as pipeline._finish does
    assert _keys(s3_env, url.key(".runs", DS, "run-done")) == []
    assert done.push() == 0, "a finished run hands nothing over again"
    assert _keys(s3_env, url.key(".runs", DS, "run-done")) == []
    # the dataset's next run, under the lease, removes what the killed one left
    assert worker("b", "run-next").drop_others() == ["run-dead"]
    assert _keys(s3_env, url.key(".runs", DS)) == []


def test_a_local_store_hands_nothing_over(tmp_path: Path) -> None:
    h = Handover(tmp_path / "store", tmp_path / "work", DS, RUN)
    _write(h.folder / "plan.json", b"{}")
    assert not h.active
    assert h.push() == 0 and h.fetch() == 0 and h.drop_others() == []
    h.drop()
    assert (h.folder / "plan.json").read_bytes() == b"{}"
