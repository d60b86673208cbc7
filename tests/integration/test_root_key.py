"""The root key outside the home (GOVSHARE_ROOT_KEY): a copy of the home alone decrypts nothing;
the same flow with the root key in SoftHSM2 over PKCS#11; homes made before root keys migrate."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from keys.rootkey import MAGIC

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
SOFTHSM = Path("/usr/lib/softhsm/libsofthsm2.so")
PULL = ("pull", "population", "--subscriber", "approval-household", "--purpose", "核验")


def _env(root: Path, demo_sources, **extra: str) -> dict[str, str]:  # noqa: ANN001
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOVSHARE_", "AIRFLOW_CONN_"))}
    env.update({"GOVSHARE_HOME": str(root / "home"), "GOVSHARE_GX": "inline", "PYTHONPATH": str(PROJECT),
                "GOVSHARE_ROOT_KEY": f"file:{root / 'keys-elsewhere' / 'root.key'}"})
    for conn_id, uri in demo_sources.connection_uris().items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = uri
    env.update(extra)
    return env


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "govshare.cli", *args], cwd=PROJECT, env=env, capture_output=True,
                          text=True, timeout=300)


def _ok(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = _run(env, *args)
    assert done.returncode == 0, (args, done.stderr)
    assert "Traceback" not in done.stderr
    return done


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, demo_sources) -> tuple[Path, dict[str, str]]:  # noqa: ANN001
    root = tmp_path_factory.mktemp("root-key")
    env = _env(root, demo_sources)
    _ok(env, "init")
    _ok(env, "sync", "population")
    _ok(env, *PULL, "--out", str(root / "reference.parquet"))
    return root, env


def test_init_makes_the_root_key_outside_the_home_and_wraps_every_key_file(published) -> None:  # noqa: ANN001
    root, _ = published
    key = root / "keys-elsewhere" / "root.key"
    assert key.is_file() and key.stat().st_mode & 0o777 == 0o600 and len(key.read_bytes()) == 32
    key_files = list((root / "home" / "keystore").glob("*.key"))
    assert len(key_files) >= 10
    for path in key_files:
        content = path.read_bytes()
        assert content.startswith(MAGIC), path.name
        assert b"BEGIN PRIVATE KEY" not in content and len(content) != 32


def test_a_copied_home_without_its_root_key_decrypts_nothing(published, tmp_path: Path) -> None:  # noqa: ANN001
    root, env = published
    copy = tmp_path / "copy"
    shutil.copytree(root / "home", copy / "home")
    out = str(tmp_path / "stolen.parquet")
    unset = {**env, "GOVSHARE_HOME": str(copy / "home")}
    unset.pop("GOVSHARE_ROOT_KEY")
    denied = _run(unset, *PULL, "--out", out)
    assert denied.returncode == 2 and "GOVSHARE_ROOT_KEY" in denied.stderr, denied.stderr
    other = _run({**unset, "GOVSHARE_ROOT_KEY": f"file:{tmp_path / 'another' / 'root.key'}"}, "init")
    assert other.returncode == 3, other.stderr  # init itself refuses: the home's keys are another root's
    wrong = _run({**unset, "GOVSHARE_ROOT_KEY": f"file:{tmp_path / 'another' / 'root.key'}"}, *PULL, "--out", out)
    assert wrong.returncode == 3 and "root key" in wrong.stderr, wrong.stderr
    assert not Path(out).exists()
    # and the published files show nothing without the keys (encrypted footers)
    upserts = next((copy / "home" / "store" / "population" / "versions").glob("*/upserts.parquet"))
    with pytest.raises(OSError):
        pq.read_table(upserts)


def test_a_root_key_inside_the_home_is_refused(published, tmp_path: Path) -> None:  # noqa: ANN001
    root, env = published
    inside = _run({**env, "GOVSHARE_ROOT_KEY": f"file:{root / 'home' / 'root.key'}"}, *PULL,
                  "--out", str(tmp_path / "x.parquet"))
    assert inside.returncode == 2 and "inside GOVSHARE_HOME" in inside.stderr, inside.stderr
    for bad in ("file:", "file:relative/root.key", "s3://bucket/key", "pkcs11:label=x"):
        done = _run({**env, "GOVSHARE_ROOT_KEY": bad}, *PULL, "--out", str(tmp_path / "x.parquet"))
        assert done.returncode == 2 and "GOVSHARE_ROOT_KEY" in done.stderr, (bad, done.stderr)


def test_a_home_from_before_root_keys_is_refused_then_migrated_by_init(published, tmp_path: Path) -> None:  # noqa: ANN001
    from keys.rootkey import open_file, root_key

    root, env = published
    old = tmp_path / "old"
    shutil.copytree(root / "home", old / "home")
    provider = root_key(env["GOVSHARE_ROOT_KEY"], old / "home")
    for path in (old / "home" / "keystore").glob("*.key"):  # as homes were written before root keys: raw
        key_id = path.name.removesuffix(".key")
        path.write_bytes(open_file(provider, path.read_bytes(), f"govshare-key/1\n{key_id}\n{path.name}".encode(),
                                   str(path)))
    old_env = {**env, "GOVSHARE_HOME": str(old / "home")}
    refused = _run(old_env, *PULL, "--out", str(tmp_path / "a.parquet"))
    assert refused.returncode == 2 and "govshare init" in refused.stderr, refused.stderr
    assert "wrapped" in _ok(old_env, "init").stdout
    assert all(p.read_bytes().startswith(MAGIC) for p in (old / "home" / "keystore").glob("*.key"))
    _ok(old_env, *PULL, "--out", str(tmp_path / "b.parquet"))
    assert pq.read_table(tmp_path / "b.parquet").equals(pq.read_table(root / "reference.parquet"))


NEEDS_SOFTHSM = pytest.mark.skipif(not SOFTHSM.is_file() or shutil.which("softhsm2-util") is None,
                                   reason="Debian's softhsm2 is not installed (make test installs it)")


def _softhsm_env(tmp_path: Path, demo_sources) -> dict[str, str]:  # noqa: ANN001
    tokens = tmp_path / "softhsm" / "tokens"
    tokens.mkdir(parents=True)
    conf = tmp_path / "softhsm" / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    hsm = {"SOFTHSM2_CONF": str(conf)}
    made = subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "govshare-test", "--pin", "4321",
                           "--so-pin", "87654321"], env={**os.environ, **hsm}, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    return _env(tmp_path, demo_sources, **hsm, GOVSHARE_ROOT_KEY="pkcs11:token=govshare-test",
                GOVSHARE_PKCS11_PIN="4321", GOVSHARE_PKCS11_MODULE=str(SOFTHSM))


@NEEDS_SOFTHSM
def test_the_same_flow_with_the_root_key_in_softhsm2(tmp_path: Path, demo_sources) -> None:  # noqa: ANN001
    env = _softhsm_env(tmp_path, demo_sources)
    _ok(env, "init")
    for path in (tmp_path / "home" / "keystore").glob("*.key"):
        assert path.read_bytes().startswith(MAGIC + b"pkcs11:token=govshare-test\n"), path.name
    _ok(env, "sync", "population")
    _ok(env, *PULL, "--out", str(tmp_path / "p.parquet"))
    table = pq.read_table(tmp_path / "p.parquet")
    assert table.num_rows > 0 and "id_number" in table.column_names
    wrong_pin = _run({**env, "GOVSHARE_PKCS11_PIN": "0000"}, *PULL, "--out", str(tmp_path / "q.parquet"))
    assert wrong_pin.returncode == 2 and "GOVSHARE_PKCS11_PIN" in wrong_pin.stderr, wrong_pin.stderr
    no_pin = {k: v for k, v in env.items() if k != "GOVSHARE_PKCS11_PIN"}
    assert _run(no_pin, *PULL, "--out", str(tmp_path / "q.parquet")).returncode == 2
    no_token = _run({**env, "GOVSHARE_ROOT_KEY": "pkcs11:token=nonesuch"}, *PULL, "--out", str(tmp_path / "q.parquet"))
    assert no_token.returncode == 3 and "nonesuch" in no_token.stderr, no_token.stderr  # not the home's root
    assert not (tmp_path / "q.parquet").exists()


def test_rotating_the_root_key_rewraps_every_key_file_and_destroys_the_old_one(published, tmp_path: Path) -> None:  # noqa: ANN001
    root, env = published
    copy = tmp_path / "rotated"
    shutil.copytree(root / "home", copy / "home")
    old_key = root / "keys-elsewhere" / "root.key"
    key = copy / "root.key"
    shutil.copy(old_key, key)
    renv = {**env, "GOVSHARE_HOME": str(copy / "home"), "GOVSHARE_ROOT_KEY": f"file:{key}"}
    before = {p.name: p.read_bytes() for p in (copy / "home" / "keystore").glob("*.key")}
    old_id = before["publisher.v1.key"].partition(b"\n")[0]
    # an interrupted rotation: a few files re-wrapped under the .next key, the rest not yet
    from keys.keystore import Keystore
    from keys.rootkey import FileRootKey, open_file, seal_file

    nxt = FileRootKey(key.with_name("root.key.next"))
    nxt.create()
    current = FileRootKey(key)
    for name in sorted(before)[:3]:
        path = copy / "home" / "keystore" / name
        aad = f"govshare-key/1\n{name.removesuffix('.key')}\n{name}".encode()
        path.write_bytes(seal_file(nxt, open_file(current, path.read_bytes(), aad, name), aad))
    _ok(renv, *PULL, "--out", str(tmp_path / "mid.parquet"))  # both roots open, mid-rotation
    done = _ok(renv, "keys", "rotate", "--root")
    assert "re-wrapped" in done.stdout and not key.with_name("root.key.next").exists()
    after = {p.name: p.read_bytes() for p in (copy / "home" / "keystore").glob("*.key")}
    assert set(after) == set(before) and all(after[n] != before[n] for n in before)
    assert all(c.partition(b"\n")[0] != old_id for c in after.values())
    assert key.read_bytes() != old_key.read_bytes()
    _ok(renv, *PULL, "--out", str(tmp_path / "after.parquet"))
    assert pq.read_table(tmp_path / "after.parquet").equals(pq.read_table(root / "reference.parquet"))
    stale = _run({**renv, "GOVSHARE_ROOT_KEY": f"file:{old_key}"}, *PULL, "--out", str(tmp_path / "old.parquet"))
    assert stale.returncode == 3 and not (tmp_path / "old.parquet").exists()
    assert len(Keystore(copy / "home" / "keystore", root=FileRootKey(key)).master_key("population.footer.v1")) == 32


def _token_keys(env: dict[str, str]) -> dict[int, str]:
    """The govshare root key versions in the test token, read in a separate process (as an HSM
    operator would list them)."""
    code = ("import json, os; from keys.rootkey import Pkcs11RootKey; "
            "k = Pkcs11RootKey('govshare-test', os.environ['GOVSHARE_PKCS11_PIN'], os.environ['GOVSHARE_PKCS11_MODULE']); "
            "print(json.dumps(k.key_versions()))")
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return {int(v): label for v, label in __import__("json").loads(done.stdout).items()}


@NEEDS_SOFTHSM
def test_rotating_a_root_key_in_softhsm2_makes_a_new_version_in_the_token_and_destroys_the_old(
        tmp_path: Path, demo_sources) -> None:  # noqa: ANN001
    env = _softhsm_env(tmp_path, demo_sources)
    _ok(env, "init")
    _ok(env, "sync", "population")
    _ok(env, *PULL, "--out", str(tmp_path / "before.parquet"))
    keystore = tmp_path / "home" / "keystore"
    assert _token_keys(env) == {1: "govshare-root"}

    done = _ok(env, "keys", "rotate", "--root")
    assert "re-wrapped" in done.stdout
    assert _token_keys(env) == {2: "govshare-root.v2"}  # the old key is destroyed inside the token
    for path in keystore.glob("*.key"):
        assert path.read_bytes().startswith(MAGIC + b"pkcs11:token=govshare-test;key=govshare-root.v2\n"), path.name
    _ok(env, *PULL, "--out", str(tmp_path / "after.parquet"))
    assert pq.read_table(tmp_path / "after.parquet").equals(pq.read_table(tmp_path / "before.parquet"))
    assert '"event": "key-rotated"' in _ok(env, "audit", "list", "--event", "key-rotated", "--json").stdout
    logged = (tmp_path / "home" / "audit" / "access-log.jsonl").read_text(encoding="utf-8")
    assert '"active":"pkcs11:token=govshare-test;key=govshare-root.v2"' in logged.replace(", ", ",").replace(": ", ":")

    # interrupted: v3 made in the token and only some files re-wrapped; the next run finishes v3
    code = ("import os, sys; from pathlib import Path; from keys.rootkey import Pkcs11RootKey, open_file, seal_file; "
            "k = Pkcs11RootKey('govshare-test', os.environ['GOVSHARE_PKCS11_PIN'], os.environ['GOVSHARE_PKCS11_MODULE']); "
            "nxt = k.rotation(); "
            "paths = sorted(Path(sys.argv[1]).glob('*.key'))[:2]; "
            "[p.write_bytes(seal_file(nxt, open_file(k, p.read_bytes(), "
            "f'govshare-key/1\\n{p.name[:-4]}\\n{p.name}'.encode(), p.name), "
            "f'govshare-key/1\\n{p.name[:-4]}\\n{p.name}'.encode())) for p in paths]")
    half = subprocess.run([sys.executable, "-c", code, str(keystore)], cwd=PROJECT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert half.returncode == 0, half.stderr
    assert _token_keys(env) == {2: "govshare-root.v2", 3: "govshare-root.v3"}
    _ok(env, *PULL, "--out", str(tmp_path / "mid.parquet"))  # both versions open, mid-rotation
    _ok(env, "keys", "rotate", "--root")
    assert _token_keys(env) == {3: "govshare-root.v3"}  # finished, not a v4
    assert all(p.read_bytes().startswith(MAGIC + b"pkcs11:token=govshare-test;key=govshare-root.v3\n")
               for p in keystore.glob("*.key"))
    _ok(env, *PULL, "--out", str(tmp_path / "last.parquet"))
    assert pq.read_table(tmp_path / "last.parquet").equals(pq.read_table(tmp_path / "before.parquet"))
