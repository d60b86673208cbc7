"""Per-version data keys and their HPKE envelopes (keys.datakeys, sharing.datakeys).

A version's files open only with that version's data keys; each 有条件共享 field has a key of its
own; envelopes open only for the subscriber key, dataset, version, group and key id they were
sealed for; the sharing store itself holds no key, wrapped or not.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from common.catalog import load_catalog
from common.errors import IntegrityError
from govshare.cli import main
from keys.datakeys import FOOTER, data_key, envelope_info, open_sealed, seal
from keys.keystore import Keystore
from keys.kms import decryption_with
from sharing.datakeys import groups_for, manifest_keys, version_keys
from sharing.read import read_view
from sharing.store import SharingStore

pytestmark = pytest.mark.integration


def store_and_keys(home, dataset: str = "population"):
    ks = Keystore(home.keystore)
    store = SharingStore(home.store, dataset)
    return store, ks, store.read_manifest(store.latest())


def test_each_version_has_keys_of_its_own(home, sources, tmp_path):
    assert main(["sync", "population"]) == 0
    assert main(["sync", "population", "--full"]) == 0
    store, ks, _ = store_and_keys(home)
    first, second = (manifest_keys(store.read_manifest(v)) for v in (1, 2))
    assert set(first) == {FOOTER, "id_number", "name", "birth_date", "household_address",
                          "id_number__masked", "name__masked"}
    assert not set(first.values()) & set(second.values())
    # the store holds no key material: no data key file, no master key, in any version folder
    for path in store.root.rglob("*"):
        assert not path.name.endswith((".key", ".json")) or path.name == "manifest.json", path


def test_the_given_keys_open_the_granted_columns_and_nothing_else(home, sources):
    assert main(["sync", "population"]) == 0
    store, ks, manifest = store_and_keys(home)
    ds = load_catalog().dataset("population")
    unconditional = [f.name for f in ds.published_fields if f.sharing == "unconditional"]
    groups = groups_for(manifest, unconditional)
    assert groups == [FOOTER]
    keys = {key_id: key for key_id, key in version_keys(ks, manifest, groups).values()}
    view = read_view(store, decryption_with(keys), ds, [manifest], unconditional, 1, 1, keep_deletes=False)
    assert view.num_rows == manifest.doc["rows"]["upserts"] > 0  # folded by _key_ref, without the key field
    upserts = store.version_dir(1) / "upserts.parquet"
    for field in ("id_number", "name"):
        with pytest.raises(IntegrityError, match="no data key"):
            pq.ParquetFile(upserts, decryption_properties=decryption_with(keys)).read(columns=[field])
    with pytest.raises(IntegrityError, match="no data key"):
        pq.ParquetFile(upserts, decryption_properties=decryption_with({}))  # no footer key: nothing opens
    with_name = {key_id: key for key_id, key in version_keys(ks, manifest, groups_for(manifest, ["name"])).values()}
    names = pq.ParquetFile(upserts, decryption_properties=decryption_with(with_name)).read(columns=["name"])
    assert names.num_rows == view.num_rows
    with pytest.raises(IntegrityError, match="no data key"):
        pq.ParquetFile(upserts, decryption_properties=decryption_with(with_name)).read(columns=["id_number"])


def test_an_envelope_opens_only_for_what_it_was_sealed_for():
    agent, other = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    key = b"k" * 32
    info = envelope_info("population", 3, "id_number", "dk-" + "a" * 32, "approval-household")
    sealed = seal(key, agent.public_key(), info)
    assert open_sealed(sealed, agent, info) == key
    assert key not in sealed
    for wrong in (envelope_info("population", 4, "id_number", "dk-" + "a" * 32, "approval-household"),
                  envelope_info("population", 3, "name", "dk-" + "a" * 32, "approval-household"),
                  envelope_info("population", 3, "id_number", "dk-" + "a" * 32, "approval-general"),
                  envelope_info("legal_entity", 3, "id_number", "dk-" + "a" * 32, "approval-household")):
        with pytest.raises(IntegrityError):
            open_sealed(sealed, agent, wrong)
    with pytest.raises(IntegrityError):
        open_sealed(sealed, other, info)
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(IntegrityError):
        open_sealed(bytes(tampered), agent, info)


def test_a_data_key_bound_to_another_group_is_refused(home, sources):
    assert main(["sync", "population"]) == 0
    store, ks, manifest = store_and_keys(home)
    keys = manifest_keys(manifest)
    assert data_key(ks, keys["name"]) != data_key(ks, keys["id_number"])
    swapped = dict(manifest.doc)
    swapped["data_keys"] = [{"group": "name", "key_id": keys["id_number"]}, {"group": FOOTER, "key_id": keys[FOOTER]}]
    forged = type(manifest)(version=manifest.version, raw=json.dumps(swapped).encode(), doc=swapped)
    with pytest.raises(IntegrityError, match="not of population/name"):
        version_keys(ks, forged, ["name"])
    # a data key file altered in the keystore does not unwrap
    path = home.keystore / "datakeys" / f"{keys['name']}.json"
    doc = json.loads(path.read_text())
    doc["group"] = "id_number"
    path.write_text(json.dumps(doc))
    with pytest.raises(IntegrityError):
        data_key(ks, keys["name"])
