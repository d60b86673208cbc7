"""RFC 6962 / RFC 9162 Merkle trees (keys.merkle): known vectors, proofs from every source agreeing,
verification refusing every alteration, and the on-disk levels surviving torn and lagging files."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from keys.merkle import (
    EMPTY_ROOT,
    Frontier,
    Levels,
    ListHashes,
    SubtreeHashes,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

# The Certificate Transparency reference test leaves and the MTH of the first 1..8 of them.
CT_LEAVES = [bytes.fromhex(h) for h in [
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]]
CT_ROOTS = [bytes.fromhex(h) for h in [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]]
CT_HASHES = [leaf_hash(d) for d in CT_LEAVES]

# The perfect subtree hashes of the 8-leaf tree, level by level (transparency-dev/merkle testonly).
CT_NODES = [[bytes.fromhex(h) for h in level] for level in [
    ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
     "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
     "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
     "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
     "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
     "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
     "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
     "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"],
    ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
     "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
     "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
     "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"],
    ["d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
     "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]]


def _h(text: str) -> bytes:
    return bytes.fromhex(text)


# Inclusion proofs (index counted from 0, size) of the same reference (proof/verify_test.go).
CT_INCLUSION = [
    (0, 8, [_h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            _h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            _h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")]),
    (5, 8, [_h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            _h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            _h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]),
    (2, 3, [_h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (1, 5, [_h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            _h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            _h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")]),
    (0, 1, []),
]
CT_CONSISTENCY = [
    (1, 1, []),
    (1, 8, [_h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            _h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            _h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")]),
    (6, 8, [_h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            _h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            _h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]),
    (2, 5, [_h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            _h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")]),
    (6, 7, [_h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            _h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            _h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]),
]
OTHER = _h("abacaba000000000000000000000000000000000000000000060061e00123456")


def _random_leaves(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [leaf_hash(rng.randbytes(rng.randrange(0, 40))) for _ in range(n)]


def _levels(folder: Path, leaves: list[bytes], durable: bool = False) -> Levels:
    levels = Levels(folder, durable=durable)
    levels.append_many(leaves)
    return levels


def _flip(proof: list[bytes], i: int) -> list[bytes]:
    wrong = list(proof)
    wrong[i] = bytes([wrong[i][0] ^ 8]) + wrong[i][1:]
    return wrong


# -- hashing and roots ---------------------------------------------------------------------------

def test_leaf_and_node_hashes_are_domain_separated_sha256() -> None:
    assert EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    assert node_hash(b"L" * 32, b"R" * 32) == hashlib.sha256(b"\x01" + b"L" * 32 + b"R" * 32).digest()
    assert leaf_hash(b"") == CT_ROOTS[0]


def test_roots_of_the_ct_vectors() -> None:
    assert root([]) == EMPTY_ROOT
    for n in range(1, 9):
        assert root(CT_HASHES[:n]) == CT_ROOTS[n - 1], n


def test_frontier_roots_of_the_ct_vectors() -> None:
    frontier = Frontier()
    assert frontier.root() == EMPTY_ROOT and frontier.size == 0
    for n, h in enumerate(CT_HASHES, start=1):
        frontier.append(h)
        assert (frontier.size, frontier.root()) == (n, CT_ROOTS[n - 1])


def test_levels_roots_and_records_of_the_ct_vectors(tmp_path: Path) -> None:
    levels = Levels(tmp_path / "tree")
    assert levels.size == 0 and levels.root() == EMPTY_ROOT
    for n, h in enumerate(CT_HASHES, start=1):
        levels.append(h)
        assert (levels.size, levels.root()) == (n, CT_ROOTS[n - 1])
        assert [levels.root(s) for s in range(n + 1)] == [EMPTY_ROOT, *CT_ROOTS[:n]]
    for k, nodes in enumerate(CT_NODES):
        assert (tmp_path / "tree" / f"level-{k}.bin").read_bytes() == b"".join(nodes), k
    assert not (tmp_path / "tree" / "level-4.bin").exists()


def test_ct_reference_proofs_are_made_and_verify() -> None:
    hashes = ListHashes(CT_HASHES)
    for index, size, proof in CT_INCLUSION:
        assert inclusion_proof(index, size, hashes) == proof, (index, size)
        assert verify_inclusion(CT_HASHES[index], index, size, proof, CT_ROOTS[size - 1])
    for old, new, proof in CT_CONSISTENCY:
        assert consistency_proof(old, new, hashes) == proof, (old, new)
        assert verify_consistency(old, new, CT_ROOTS[old - 1], CT_ROOTS[new - 1], proof)


def test_consistency_edge_cases_of_the_reference() -> None:
    r1, r2 = b"1" * 32, b"2" * 32
    assert verify_consistency(0, 0, r1, r1, [])
    assert not verify_consistency(0, 0, r1, r2, [])
    assert verify_consistency(0, 1, r1, r2, [])
    assert verify_consistency(0, 7, EMPTY_ROOT, r2, [])
    assert not verify_consistency(0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])
    assert not verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])
    assert verify_consistency(1, 1, r2, r2, [])
    assert not verify_consistency(1, 1, r1, r2, [])
    assert not verify_consistency(1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])
    assert not verify_consistency(1, 0, r1, r2, [])
    assert not verify_consistency(2, 1, r1, r2, [])
    assert not verify_consistency(1, 2, r1, r2, [])


def test_inclusion_edge_cases_of_the_reference() -> None:
    h = leaf_hash(b"data")
    assert verify_inclusion(h, 0, 1, [], h)
    assert not verify_inclusion(h, 0, 1, [], b"")
    assert not verify_inclusion(b"", 0, 1, [], h)
    for index, size in [(0, 0), (1, 0), (1, 1), (2, 1)]:
        assert not verify_inclusion(OTHER, index, size, [], EMPTY_ROOT)
        assert not verify_inclusion(EMPTY_ROOT, index, size, [], EMPTY_ROOT)


@pytest.mark.parametrize("bad", [None, "x" * 32, 1.5, -1, [b"x"], [None]])
def test_verifiers_never_raise_on_nonsense(bad: object) -> None:
    good = CT_INCLUSION[0]
    assert not verify_inclusion(bad, good[0], good[1], good[2], CT_ROOTS[7])  # type: ignore[arg-type]
    assert not verify_inclusion(CT_HASHES[0], bad, 8, good[2], CT_ROOTS[7])  # type: ignore[arg-type]
    assert not verify_inclusion(CT_HASHES[0], 0, 8, bad, CT_ROOTS[7])  # type: ignore[arg-type]
    assert not verify_consistency(1, 8, bad, CT_ROOTS[7], CT_CONSISTENCY[1][2])  # type: ignore[arg-type]
    assert not verify_consistency(bad, 8, CT_ROOTS[0], CT_ROOTS[7], CT_CONSISTENCY[1][2])  # type: ignore[arg-type]
    assert not verify_consistency(1, 8, CT_ROOTS[0], CT_ROOTS[7], bad)  # type: ignore[arg-type]


def test_proofs_refuse_impossible_requests() -> None:
    hashes = ListHashes(CT_HASHES)
    for index, size in [(0, 0), (3, 3), (-1, 3)]:
        with pytest.raises(ValueError):
            inclusion_proof(index, size, hashes)
    with pytest.raises(ValueError):
        consistency_proof(4, 3, hashes)
    with pytest.raises(ValueError):
        hashes.subtree(4, 5)
    with pytest.raises(ValueError):
        ListHashes([b"short"])
    assert consistency_proof(0, 5, hashes) == [] and consistency_proof(5, 5, hashes) == []


# -- every size, every index: the sources agree and verification refuses alterations -----------

SIZES = range(1, 41)


@pytest.mark.parametrize("n", SIZES)
def test_inclusion_proofs_agree_verify_and_refuse_alterations(n: int, tmp_path: Path) -> None:
    leaves = _random_leaves(n, seed=n)
    memory, disk = ListHashes(leaves), _levels(tmp_path, leaves)
    assert isinstance(memory, SubtreeHashes) and isinstance(disk, SubtreeHashes)
    roots = [root(leaves[:s]) for s in range(n + 1)]
    assert disk.root() == roots[n]
    for i in range(n):
        proof = inclusion_proof(i, n, memory)
        assert inclusion_proof(i, n, disk) == proof
        leaf, top = leaves[i], roots[n]
        assert verify_inclusion(leaf, i, n, proof, top)
        wrong = [
            (OTHER, i, n, proof, top), (leaf, i, n, proof, OTHER), (leaf, i, n, proof, EMPTY_ROOT),
            (leaf, i, n, proof + [OTHER], top), (leaf, i, n, proof + [top], top),
            (leaf, i, n, [OTHER] + proof, top), (leaf, i, n, [top] + proof, top),
            (leaf, i, n, proof + [b""], top),
            (leaf, i, 2 * n, proof, top), (leaf, i, n // 2, proof, top), (leaf, i, 0, proof, top),
        ]
        wrong += [(leaf, i2, n, proof, top) for i2 in {i - 1, i + 1, i ^ 2, i ^ 1, n} if i2 != i]
        wrong += [(leaf, i, n, _flip(proof, j), top) for j in range(len(proof))]
        if proof:
            wrong.append((leaf, i, n, proof[:-1], top))
            wrong.append((leaf, i, n, proof[1:], top))
        if len(proof) > 1:
            wrong.append((leaf, i, n, [proof[0], OTHER, *proof[1:]], top))
        # Another size, with that size's own root: the proof is for n alone.
        wrong += [(leaf, i, s, proof, roots[s]) for s in range(i + 1, n)]
        for args in wrong:
            assert not verify_inclusion(*args), (n, i, args[1:3])


@pytest.mark.parametrize("n", SIZES)
def test_consistency_proofs_agree_verify_and_refuse_alterations(n: int, tmp_path: Path) -> None:
    leaves = _random_leaves(n, seed=1000 + n)
    memory, disk = ListHashes(leaves), _levels(tmp_path, leaves)
    roots = [root(leaves[:s]) for s in range(n + 1)]
    for m in range(n + 1):
        proof = consistency_proof(m, n, memory)
        assert consistency_proof(m, n, disk) == proof
        r1, r2 = roots[m], roots[n]
        assert verify_consistency(m, n, r1, r2, proof)
        if not proof:  # m in (0, n): nothing to prove; a non-empty proof is refused
            assert m in (0, n)
            assert not verify_consistency(m, n, r1, r2, [OTHER])
            continue
        wrong = [
            (m, n, OTHER, r2, proof), (m, n, r1, OTHER, proof), (m, n, r2, r1, proof), (m, n, r1, r2, []),
            (m, n, r1, r2, proof + [OTHER]), (m, n, r1, r2, proof + [r1]), (m, n, r1, r2, proof + [r2]),
            (m, n, r1, r2, [OTHER] + proof), (m, n, r1, r2, [r1] + proof), (m, n, r1, r2, [r2] + proof),
            (m, n, r1, r2, [proof[0]] + proof), (m, n, r1, r2, proof[:-1]), (m, n, r1, r2, proof[1:]),
            (m, 2 * n, r1, r2, proof), (m, n, r1, r1, proof), (n, m, r2, r1, proof),
        ]
        if n // 2 > m:
            wrong.append((m, n // 2, r1, r2, proof))
        wrong += [(m, n, r1, r2, _flip(proof, j)) for j in range(len(proof))]
        # Another old size, with its own root or with m's.
        wrong += [(m2, n, roots[m2], r2, proof) for m2 in range(1, n) if m2 != m]
        wrong += [(m2, n, r1, r2, proof) for m2 in {m - 1, m + 1, m ^ 2} if 0 < m2 < n and m2 != m]
        # Another new size, with its own root.
        wrong += [(m, s, r1, roots[s], proof) for s in range(m + 1, n)]
        for args in wrong:
            assert not verify_consistency(*args), (m, n, args[:2])


def test_a_neighbouring_size_with_the_same_root_is_bound_by_the_signed_size_not_the_proof() -> None:
    """What the verifiers cannot refuse, as in every RFC 9162 verifier: the proof of leaf 0 in a
    tree of 5 recomputes the same root when the size is claimed to be 6, because the hashing steps
    are the same. A root means something only with its size, as a signed checkpoint binds them."""
    leaves = _random_leaves(6, seed=7)
    proof = inclusion_proof(0, 5, ListHashes(leaves))
    assert verify_inclusion(leaves[0], 0, 6, proof, root(leaves[:5]))
    assert not verify_inclusion(leaves[0], 0, 6, proof, root(leaves))


def test_levels_subtree_matches_the_list_for_every_range(tmp_path: Path) -> None:
    leaves = _random_leaves(23, seed=3)
    memory, disk = ListHashes(leaves), _levels(tmp_path, leaves)
    for start in range(24):
        for size in range(24 - start):
            assert disk.subtree(start, size) == memory.subtree(start, size), (start, size)
    with pytest.raises(ValueError):
        disk.subtree(20, 4)
    with pytest.raises(ValueError):
        disk.subtree(-1, 2)


# -- Frontier ------------------------------------------------------------------------------------

def test_frontier_round_trips_through_json_and_keeps_appending() -> None:
    leaves = _random_leaves(45, seed=4)
    frontier = Frontier()
    for n, h in enumerate(leaves, start=1):
        frontier.append(h)
        copy = Frontier.from_json(json.loads(json.dumps(frontier.to_json())))
        assert (copy.size, copy.root()) == (n, root(leaves[:n]))
        assert copy.to_json() == frontier.to_json()
    state = Frontier()
    for h in leaves[:13]:
        state.append(h)
    resumed = Frontier.from_json(state.to_json())
    for h in leaves[13:]:
        resumed.append(h)
    assert resumed.root() == root(leaves)
    assert [s["size"] for s in Frontier.from_json(state.to_json()).to_json()["subtrees"]] == [8, 4, 1]


@pytest.mark.parametrize("bad", [
    None, [], {"size": 3}, {"size": -1, "subtrees": []}, {"size": 1, "subtrees": []},
    {"size": 3, "subtrees": [{"size": 1, "hash": "00" * 32}, {"size": 2, "hash": "00" * 32}]},
    {"size": 1, "subtrees": [{"size": 1, "hash": "00" * 31}]},
    {"size": 1, "subtrees": [{"size": True, "hash": "00" * 32}]},
    {"size": 1, "subtrees": [{"size": 1, "hash": "zz" * 32}]},
    {"size": 1, "subtrees": [{"size": 1, "hash": "00" * 32}], "extra": 1},
])
def test_frontier_refuses_a_state_that_is_not_one(bad: object) -> None:
    with pytest.raises(ValueError):
        Frontier.from_json(bad)


# -- Levels on disk ------------------------------------------------------------------------------

def _level_counts(folder: Path) -> dict[int, int]:
    return {int(p.stem.split("-")[1]): p.stat().st_size for p in folder.glob("level-*.bin")}


def _fits(folder: Path, size: int) -> bool:
    counts = _level_counts(folder)
    return all(counts.get(k, 0) == (size >> k) * 32 for k in range(max(counts, default=0) + 1))


@pytest.mark.parametrize("durable", [True, False])
def test_levels_persist_and_append_in_batches(tmp_path: Path, durable: bool) -> None:
    leaves = _random_leaves(5000, seed=5)
    Levels(tmp_path, durable=durable).append_many(iter(leaves[:4500]))
    again = Levels(tmp_path, durable=durable)
    for h in leaves[4500:4503]:
        again.append(h)
    again.append_many(h for h in leaves[4503:])
    frontier = Frontier()
    for h in leaves:
        frontier.append(h)
    assert Levels(tmp_path).size == 5000 and Levels(tmp_path).root() == frontier.root()
    assert _fits(tmp_path, 5000)
    hashes = ListHashes(leaves)
    for i in (0, 1, 2047, 4095, 4999):
        assert inclusion_proof(i, 5000, again) == inclusion_proof(i, 5000, hashes)
    assert consistency_proof(3333, 5000, again) == consistency_proof(3333, 5000, hashes)


def test_a_bad_leaf_hash_stops_the_batch_and_keeps_the_ones_before(tmp_path: Path) -> None:
    leaves = _random_leaves(3, seed=6)
    levels = Levels(tmp_path)
    with pytest.raises(ValueError):
        levels.append_many([*leaves, b"short"])
    assert levels.size == 3 and levels.root() == root(leaves) and _fits(tmp_path, 3)
    with pytest.raises(ValueError):
        levels.append("x" * 32)  # type: ignore[arg-type]


def test_a_torn_last_record_is_absent_and_cut_on_the_next_append(tmp_path: Path) -> None:
    leaves = _random_leaves(8, seed=8)
    levels = _levels(tmp_path, leaves[:5])
    with open(tmp_path / "level-0.bin", "ab") as f:
        f.write(leaves[5][:7])
    with open(tmp_path / "level-1.bin", "ab") as f:
        f.write(b"\xff" * 31)
    assert levels.size == 5 and levels.root() == root(leaves[:5])
    levels.append(leaves[5])
    assert levels.size == 6 and levels.root() == root(leaves[:6]) and _fits(tmp_path, 6)
    levels.append_many(leaves[6:])
    assert levels.root() == root(leaves) and _fits(tmp_path, 8)


def test_a_lagging_level_is_read_around_and_repaired(tmp_path: Path) -> None:
    leaves = _random_leaves(13, seed=9)
    levels = _levels(tmp_path, leaves[:12])
    with open(tmp_path / "level-1.bin", "r+b") as f:  # a crash after level 0 was written
        f.truncate(4 * 32)
    (tmp_path / "level-2.bin").unlink()
    (tmp_path / "level-3.bin").unlink(missing_ok=True)
    assert levels.root() == root(leaves[:12])
    assert inclusion_proof(11, 12, levels) == inclusion_proof(11, 12, ListHashes(leaves[:12]))
    levels.append(leaves[12])
    assert levels.root() == root(leaves) and _fits(tmp_path, 13)


def test_records_beyond_the_leaves_are_ignored_and_cut(tmp_path: Path) -> None:
    leaves = _random_leaves(6, seed=10)
    levels = _levels(tmp_path, leaves[:5])
    with open(tmp_path / "level-1.bin", "ab") as f:  # a record whose leaves never reached level 0
        f.write(b"\xee" * 32)
    (tmp_path / "level-5.bin").write_bytes(b"\xdd" * 64)
    assert levels.size == 5 and levels.root() == root(leaves[:5])
    levels.append(leaves[5])
    assert levels.root() == root(leaves)
    assert _fits(tmp_path, 6) and (tmp_path / "level-5.bin").stat().st_size == 0


def test_truncate_and_rebuild(tmp_path: Path) -> None:
    leaves = _random_leaves(37, seed=11)
    levels = _levels(tmp_path, leaves, durable=True)
    levels.truncate(20)
    assert levels.size == 20 and levels.root() == root(leaves[:20]) and _fits(tmp_path, 20)
    other = _random_leaves(17, seed=12)
    levels.append_many(other)
    assert levels.root() == root(leaves[:20] + other) and _fits(tmp_path, 37)
    levels.truncate(100)
    assert levels.size == 37
    levels.truncate(0)
    assert levels.size == 0 and levels.root() == EMPTY_ROOT
    with pytest.raises(ValueError):
        levels.truncate(-1)


def test_reset_empties_the_tree(tmp_path: Path) -> None:
    levels = _levels(tmp_path / "t", _random_leaves(9, seed=13))
    (tmp_path / "t" / "other.txt").write_text("kept")
    levels.reset()
    assert levels.size == 0 and levels.root() == EMPTY_ROOT
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["other.txt"]
    Levels(tmp_path / "missing").reset()
    assert Levels(tmp_path / "missing").size == 0


# -- an independent implementation, when installed -----------------------------------------------

def test_cross_check_with_pymerkle() -> None:
    pymerkle = pytest.importorskip("pymerkle")
    data = [random.Random(14).randbytes(i % 7 + 1) for i in range(33)]
    tree = pymerkle.InmemoryTree(algorithm="sha256")
    append = getattr(tree, "append_entry", None) or tree.append
    for d in data:
        append(d)
    leaves = [leaf_hash(d) for d in data]
    hashes = ListHashes(leaves)

    def raw(value: bytes | str) -> bytes:
        return bytes.fromhex(value) if isinstance(value, str) else bytes(value)

    for size in range(1, 34):
        assert raw(tree.get_state(size)) == root(leaves[:size]), size
        for index in range(size):
            path = [raw(p) for p in tree.prove_inclusion(index + 1, size).path]
            assert path[0] == leaves[index]  # pymerkle's path starts with the leaf itself
            assert path[1:] == inclusion_proof(index, size, hashes), (index, size)
