"""Merkle tree hashing and proofs of RFC 6962 / RFC 9162 (Certificate Transparency), SHA-256 or SM3.

What this is: the append-only Merkle tree of a transparency log, with nothing of the log itself.
Leaves are *leaf hashes* (``leaf_hash(data)``); every function below takes hashes, never data.

- ``leaf_hash(d) = SHA-256(0x00 || d)``, ``node_hash(l, r) = SHA-256(0x01 || l || r)``: the
  domain separation of RFC 9162 §2.1.1, so that no leaf can pose as an inner node;
- the hash is a ``TreeHash``: ``SHA256`` (the default everywhere, exactly RFC 6962) or ``SM3``
  (the 国密 profile: the same construction with SM3 for SHA-256, also 32 bytes). A tree is of
  one hash throughout; which one is bound to the key that signs the tree (``SIGNED_WITH``:
  Ed25519 -> SHA-256, SM2 -> SM3, as keys.profile's STANDARD and GM pair them), so a verifier
  takes the hash from the verifying key (``for_signature``), never from the data it checks;
- ``MTH(D[n])`` (RFC 9162 §2.1.1): the hash of the empty string for no leaves, the leaf hash for
  one, else ``node_hash(MTH(D[0:k]), MTH(D[k:n]))`` with k the largest power of two below n;
- an **inclusion proof** (RFC 9162 §2.1.3) shows that a leaf is at an index of the tree of a
  given size and root; ``inclusion_proof`` makes PATH(m, D[n]), ``verify_inclusion`` runs the
  verification algorithm of §2.1.3.2;
- a **consistency proof** (RFC 9162 §2.1.4) shows that the tree of one size is a prefix of the
  tree of a larger size; ``consistency_proof`` makes PROOF(m, D[n]), ``verify_consistency`` runs
  the algorithm of §2.1.4.2.

Why the pieces are shaped as they are: a log can hold far more records than fit in memory, so
proofs are computed from a ``SubtreeHashes`` source (the MTH of any range of leaves) rather than
from a list. ``ListHashes`` is the in-memory source (for tests and small trees); ``Levels`` is
the persistent one: a folder of ``level-K.bin`` files whose record i is the hash of the aligned
perfect subtree of leaves ``i*2^K .. (i+1)*2^K - 1``. Appending a leaf touches O(log n) records,
and any root or proof is made from O(log n) stored records, never a pass over the leaves.
``Frontier`` is the O(log n) state needed to keep appending and to know the root (the stack of
perfect subtrees of the tree so far), for a writer that keeps no files.

This module is pure (standard library only; SM3 is hashlib's, from OpenSSL) so that an offline checker can verify proofs with
it alone. The verifiers never raise on inputs of the right types: a bad proof is ``False``.

References: RFC 6962 §2.1 (https://www.rfc-editor.org/rfc/rfc6962#section-2.1) and its
successor RFC 9162 §2.1 (https://www.rfc-editor.org/rfc/rfc9162#section-2.1).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
LEVEL_FILE = "level-{}.bin"
_LEVEL_NAME = re.compile(r"^level-(0|[1-9][0-9]{0,2})\.bin$")
_CHUNK = 4096  # leaves Levels.append_many buffers before it writes (and, if durable, syncs)


def leaf_hash(data: bytes) -> bytes:
    """The RFC 6962 hash of a leaf's data: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + bytes(data)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 6962 hash of an inner node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + bytes(left) + bytes(right)).digest()


def _sm3(data: bytes) -> bytes:
    return hashlib.new("sm3", data).digest()


def sm3_leaf_hash(data: bytes) -> bytes:
    """The leaf hash of the SM3 tree: SM3(0x00 || data)."""
    return _sm3(b"\x00" + bytes(data))


def sm3_node_hash(left: bytes, right: bytes) -> bytes:
    """The inner-node hash of the SM3 tree: SM3(0x01 || left || right)."""
    return _sm3(b"\x01" + bytes(left) + bytes(right))


@dataclass(frozen=True)
class TreeHash:
    """The hash of a tree: its name (as keys.profile names digests), the leaf and node hashes,
    the root of the empty tree and the plain digest (for what a log hashes beside its tree)."""

    name: str
    leaf: Callable[[bytes], bytes]
    node: Callable[[bytes, bytes], bytes]
    empty: bytes
    hashlib_name: str  # for hashlib.new: an incremental digest (``new``)

    def digest(self, data: bytes) -> bytes:
        return hashlib.new(self.hashlib_name, data).digest()

    def new(self) -> Any:  # noqa: ANN401 - a hashlib object
        return hashlib.new(self.hashlib_name)

    def __repr__(self) -> str:
        return f"TreeHash({self.name})"


SHA256 = TreeHash("SHA-256", leaf_hash, node_hash, EMPTY_ROOT, "sha256")
SM3 = TreeHash("SM3", sm3_leaf_hash, sm3_node_hash, _sm3(b""), "sm3")
TREE_HASHES = {h.name: h for h in (SHA256, SM3)}
# the hash a tree signed by a key of each signature algorithm is made with (keys.profile: the
# signing and digest algorithms of STANDARD and GM): a verifier takes it from its key
SIGNED_WITH = {"Ed25519": "SHA-256", "SM2": "SM3"}


def tree_hash(name: object) -> TreeHash:
    """The tree hash called ``name`` ("SHA-256" or "SM3"); ValueError for anything else."""
    found = TREE_HASHES.get(name) if isinstance(name, str) else None
    if found is None:
        raise ValueError(f"{name!r} is not a tree hash: one of {', '.join(TREE_HASHES)}")
    return found


def for_signature(algorithm: object) -> TreeHash:
    """The tree hash bound to a signature algorithm (Ed25519: SHA-256, SM2: SM3); ValueError otherwise."""
    name = SIGNED_WITH.get(algorithm) if isinstance(algorithm, str) else None
    if name is None:
        raise ValueError(f"no tree hash is bound to the signature algorithm {algorithm!r}")
    return TREE_HASHES[name]


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2): where MTH splits n leaves."""
    return 1 << ((n - 1).bit_length() - 1)


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes | bytearray | memoryview) and len(value) == HASH_SIZE


def _check_hash(value: object, what: str = "a leaf hash") -> bytes:
    if not _is_hash(value):
        raise ValueError(f"{what} must be {HASH_SIZE} bytes")
    return bytes(value)  # type: ignore[arg-type]


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@runtime_checkable
class SubtreeHashes(Protocol):
    """A source of subtree hashes: what proofs are computed from."""

    def subtree(self, start: int, size: int) -> bytes:
        """MTH of ``leaves[start:start + size]`` (the empty tree's root when size is 0)."""
        ...


class ListHashes:
    """``SubtreeHashes`` over leaf hashes held in memory.

    A range's MTH is computed by the recursive split of RFC 9162; the hashes of aligned perfect
    subtrees are remembered, so the proofs of a tree cost O(n) hashing once, then O(log n).
    """

    def __init__(self, leaf_hashes: Iterable[bytes], hasher: TreeHash = SHA256) -> None:
        self._leaves = [_check_hash(h) for h in leaf_hashes]
        self._perfect: dict[tuple[int, int], bytes] = {}
        self._node, self._empty = hasher.node, hasher.empty

    def __len__(self) -> int:
        return len(self._leaves)

    def subtree(self, start: int, size: int) -> bytes:
        if not (_is_count(start) and _is_count(size)) or start + size > len(self._leaves):
            raise ValueError(f"no range of {size} leaf(s) at {start} in a tree of {len(self._leaves)}")
        return self._mth(start, size)

    def _mth(self, start: int, size: int) -> bytes:
        if size == 0:
            return self._empty
        if size == 1:
            return self._leaves[start]
        perfect = size & (size - 1) == 0 and start % size == 0
        if perfect and (start, size) in self._perfect:
            return self._perfect[(start, size)]
        k = _split(size)
        value = self._node(self._mth(start, k), self._mth(start + k, size - k))
        if perfect:
            self._perfect[(start, size)] = value
        return value


def root(leaves: Sequence[bytes], hasher: TreeHash = SHA256) -> bytes:
    """MTH of the given leaf *hashes* (not data): the empty tree's root (``hasher.empty``) for none."""
    hashes = ListHashes(leaves, hasher)
    return hashes.subtree(0, len(hashes))


def inclusion_proof(index: int, size: int, hashes: SubtreeHashes) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 §2.1.3.1: the sibling hashes from the leaf up to the root.

    ``hashes`` must hold at least ``size`` leaves; raises ``ValueError`` unless 0 <= index < size.
    """
    if not (_is_count(index) and _is_count(size)) or index >= size:
        raise ValueError(f"no leaf {index} in a tree of {size}")
    path: list[bytes] = []
    start, n, m = 0, size, index
    while n > 1:
        k = _split(n)
        if m < k:  # the leaf is on the left: the right subtree is the sibling
            path.append(hashes.subtree(start + k, n - k))
            n = k
        else:
            path.append(hashes.subtree(start, k))
            start, m, n = start + k, m - k, n - k
    path.reverse()  # gathered top-down; the proof runs bottom-up
    return path


def consistency_proof(old_size: int, new_size: int, hashes: SubtreeHashes) -> list[bytes]:
    """PROOF(old_size, D[new_size]) of RFC 9162 §2.1.4.1.

    Empty when the sizes are equal or ``old_size`` is 0 (nothing to prove); raises
    ``ValueError`` unless 0 <= old_size <= new_size.
    """
    if not (_is_count(old_size) and _is_count(new_size)) or old_size > new_size:
        raise ValueError(f"no consistency proof from a tree of {old_size} to one of {new_size}")
    if old_size == 0 or old_size == new_size:
        return []
    proof: list[bytes] = []
    start, m, n, whole = 0, old_size, new_size, True  # whole: the old tree is D[0:m] itself
    while m != n:
        k = _split(n)
        if m <= k:
            proof.append(hashes.subtree(start + k, n - k))
            n = k
        else:
            proof.append(hashes.subtree(start, k))
            start, m, n, whole = start + k, m - k, n - k, False
    if not whole:  # SUBPROOF(m, D[m], false) = {MTH(D[m])}
        proof.append(hashes.subtree(start, m))
    proof.reverse()
    return proof


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes,
                     hasher: TreeHash = SHA256) -> bool:
    """Whether ``proof`` shows leaf ``leaf_hash`` at ``index`` in the tree of ``size`` leaves
    whose root is ``root`` (RFC 9162 §2.1.3.2), nodes hashed with ``hasher``. Never raises: any
    bad input is ``False``."""
    node_hash = hasher.node
    try:
        if not (_is_hash(leaf_hash) and _is_hash(root) and _is_count(index) and _is_count(size)):
            return False
        items = list(proof)
        if index >= size or not all(_is_hash(p) for p in items):
            return False
        fn, sn = index, size - 1
        r = bytes(leaf_hash)
        for p in items:
            if sn == 0:
                return False
            if fn & 1 or fn == sn:
                r = node_hash(p, r)
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
            else:
                r = node_hash(r, p)
            fn >>= 1
            sn >>= 1
        return sn == 0 and r == bytes(root)
    except (TypeError, ValueError):
        return False


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes], hasher: TreeHash = SHA256) -> bool:
    """Whether ``proof`` shows the tree of ``old_size`` leaves and root ``old_root`` to be a prefix
    of the tree of ``new_size`` leaves and root ``new_root`` (RFC 9162 §2.1.4.2).

    Equal sizes need equal roots and an empty proof; an empty old tree is a prefix of every
    tree (the proof must be empty; ``old_root`` is not examined, as the empty tree's root is
    fixed: a checkpoint of size 0 claiming another root is to be refused where it is read).
    Never raises: any bad input is ``False``.
    """
    node_hash = hasher.node
    try:
        if not (_is_hash(old_root) and _is_hash(new_root) and _is_count(old_size) and _is_count(new_size)):
            return False
        path = list(proof)
        if old_size > new_size or not all(_is_hash(p) for p in path):
            return False
        if old_size == new_size:
            return not path and bytes(old_root) == bytes(new_root)
        if old_size == 0:
            return not path
        if not path:
            return False
        path = [bytes(p) for p in path]
        if old_size & (old_size - 1) == 0:  # the old tree is a perfect subtree: its root starts the path
            path.insert(0, bytes(old_root))
        fn, sn = old_size - 1, new_size - 1
        while fn & 1:
            fn >>= 1
            sn >>= 1
        fr = sr = path[0]
        for c in path[1:]:
            if sn == 0:
                return False
            if fn & 1 or fn == sn:
                fr = node_hash(c, fr)
                sr = node_hash(c, sr)
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
            else:
                sr = node_hash(sr, c)
            fn >>= 1
            sn >>= 1
        return sn == 0 and fr == bytes(old_root) and sr == bytes(new_root)
    except (TypeError, ValueError):
        return False


class Frontier:
    """The incremental state of a tree: the hashes of its perfect subtrees, largest first (one
    per set bit of the size), which is all that appending and the root need (O(log n))."""

    def __init__(self, hasher: TreeHash = SHA256) -> None:
        self._size = 0
        self._stack: list[bytes] = []
        self.hasher = hasher

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf_hash: bytes) -> None:
        h = _check_hash(leaf_hash)
        n = self._size
        node_hash = self.hasher.node
        while n & 1:  # merge the equal-sized perfect subtrees the new leaf completes
            h = node_hash(self._stack.pop(), h)
            n >>= 1
        self._stack.append(h)
        self._size += 1

    def root(self) -> bytes:
        """MTH of the leaves so far: the perfect subtrees folded right to left."""
        if not self._stack:
            return self.hasher.empty
        node_hash = self.hasher.node
        r = self._stack[-1]
        for h in reversed(self._stack[:-1]):
            r = node_hash(h, r)
        return r

    def _sizes(self) -> list[int]:
        return [1 << bit for bit in range(self._size.bit_length() - 1, -1, -1) if self._size >> bit & 1]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready object: ``{"size": n, "subtrees": [{"size": s, "hash": hex}, ...]}``,
        largest subtree first (the hash is not named: whoever stores it records the tree's hash)."""
        return {"size": self._size,
                "subtrees": [{"size": s, "hash": h.hex()} for s, h in zip(self._sizes(), self._stack, strict=True)]}

    @classmethod
    def from_json(cls, value: Any, hasher: TreeHash = SHA256) -> Frontier:  # noqa: ANN401 - JSON
        """The frontier ``to_json`` gave, of a tree of ``hasher``; raises ``ValueError`` when it
        does not describe one."""
        if not isinstance(value, dict) or set(value) != {"size", "subtrees"}:
            raise ValueError("a frontier is an object with exactly 'size' and 'subtrees'")
        size, subtrees = value["size"], value["subtrees"]
        if not _is_count(size) or not isinstance(subtrees, list):
            raise ValueError("a frontier's size must be a non-negative integer and its subtrees a list")
        frontier = cls(hasher)
        frontier._size = size
        expected = frontier._sizes()
        if len(subtrees) != len(expected):
            raise ValueError(f"a frontier of size {size} has {len(expected)} subtree(s), not {len(subtrees)}")
        for want, item in zip(expected, subtrees, strict=True):
            if not isinstance(item, dict) or set(item) != {"size", "hash"} or item["size"] != want \
                    or isinstance(item["size"], bool):
                raise ValueError(f"a frontier of size {size} has subtrees of sizes {expected}")
            text = item["hash"]
            if not isinstance(text, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", text):
                raise ValueError("a frontier's subtree hash must be 64 hex digits")
            frontier._stack.append(bytes.fromhex(text))
        return frontier


class Levels:
    """A persistent, append-only cache of a tree's aligned perfect subtree hashes, in a folder.

    File ``level-K.bin`` holds 32-byte records; record i is MTH(leaves[i*2^K : (i+1)*2^K]), so
    level 0 holds the leaf hashes and the tree's size is the number of records in level 0 (read
    from the file's length). Appending a leaf appends to level 0, and whenever a level's count
    becomes even the pair's parent is appended to the level above: O(log n) per leaf. Any range's
    MTH is computed from stored records by seek-and-read, O(log n) of them for the ranges that
    roots and proofs ask for; nothing here holds the leaves in memory.

    Crash tolerance: a torn last record (a file length not a multiple of 32) counts as absent
    and is cut off by the next append. A level that lags the one below (a crash between the two
    writes) is read around (its missing records are computed from the level below) and brought
    up to date by the next append; records a level holds beyond what the leaves make are ignored
    and cut off likewise. With ``durable`` every write is synced, level 0 before the levels
    above, so a stored upper record never outlives its leaves. One writer at a time.
    """

    def __init__(self, folder: Path, durable: bool = True, hasher: TreeHash = SHA256) -> None:
        self.folder = Path(folder)
        self.durable = durable
        self.hasher = hasher

    # -- reading -----------------------------------------------------------------------------

    def _path(self, level: int) -> Path:
        return self.folder / LEVEL_FILE.format(level)

    def _count(self, level: int) -> int:
        try:
            return self._path(level).stat().st_size // HASH_SIZE
        except FileNotFoundError:
            return 0

    @property
    def size(self) -> int:
        """The number of leaves: whole records in ``level-0.bin``."""
        return self._count(0)

    def subtree(self, start: int, size: int) -> bytes:
        """MTH of ``leaves[start:start + size]``: for an aligned range (start a multiple of the
        smallest power of two >= size, as in every root and proof), O(log n) stored records
        combined right to left; other ranges are split per RFC 9162 until they are aligned."""
        total = self.size
        if not (_is_count(start) and _is_count(size)) or start + size > total:
            raise ValueError(f"no range of {size} leaf(s) at {start} in a tree of {total}")
        with _Reader(self, total) as reader:
            return reader.mth(start, size)

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (all of them by default)."""
        return self.subtree(0, self.size if size is None else size)

    # -- writing -----------------------------------------------------------------------------

    def append(self, leaf_hash: bytes) -> None:
        """Append one leaf hash."""
        self.append_many((leaf_hash,))

    def append_many(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append leaf hashes in order; written (and synced, if durable) every few thousand, so
        the iterable is never held whole. A bad hash raises ``ValueError``, the ones before it kept."""
        with _Writer(self) as writer:
            for h in leaf_hashes:
                writer.append(_check_hash(h))

    def truncate(self, size: int) -> None:
        """Keep only the first ``size`` leaves on every level (for a rebuild). The top level is
        cut first, so a crash midway leaves upper levels lagging, which the next append repairs."""
        if not _is_count(size):
            raise ValueError("a tree size must be a non-negative integer")
        for level in sorted(self._levels_present(), reverse=True):
            path = self._path(level)
            keep = min(path.stat().st_size // HASH_SIZE, size >> level) * HASH_SIZE
            if path.stat().st_size != keep:
                with open(path, "r+b") as f:
                    f.truncate(keep)
                    if self.durable:
                        os.fsync(f.fileno())

    def reset(self) -> None:
        """Remove every level file: an empty tree."""
        for level in sorted(self._levels_present(), reverse=True):
            self._path(level).unlink(missing_ok=True)
        if self.durable:
            _sync_dir(self.folder)

    def _levels_present(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        found = []
        for entry in self.folder.iterdir():
            match = _LEVEL_NAME.match(entry.name)
            if match:
                found.append(int(match.group(1)))
        return found


def _sync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _Reader:
    """Reads of one query: the level files opened once, records read with pread."""

    def __init__(self, levels: Levels, size: int) -> None:
        self.levels = levels
        self.size = size
        self.fds: dict[int, int | None] = {}
        self.counts: dict[int, int] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self.fds.values():
            if fd is not None:
                os.close(fd)

    def _fd(self, level: int) -> int | None:
        if level not in self.fds:
            try:
                fd: int | None = os.open(self.levels._path(level), os.O_RDONLY)
            except FileNotFoundError:
                fd = None
            self.fds[level] = fd
            held = os.fstat(fd).st_size // HASH_SIZE if fd is not None else 0
            self.counts[level] = min(held, self.size >> level)  # records beyond the leaves are ignored
        return self.fds[level]

    def node(self, level: int, index: int) -> bytes:
        """Record ``index`` of ``level``, computed from the level below when the file lacks it."""
        fd = self._fd(level)
        if fd is not None and index < self.counts[level]:
            data = os.pread(fd, HASH_SIZE, index * HASH_SIZE)
            if len(data) == HASH_SIZE:
                return data
        if level == 0:
            raise ValueError(f"leaf {index} is not in {self.levels.folder}")
        return self.levels.hasher.node(self.node(level - 1, 2 * index), self.node(level - 1, 2 * index + 1))

    def mth(self, start: int, size: int) -> bytes:
        if size == 0:
            return self.levels.hasher.empty
        if size & (size - 1) == 0 and start % size == 0:
            level = size.bit_length() - 1
            return self.node(level, start >> level)
        k = _split(size)
        return self.levels.hasher.node(self.mth(start, k), self.mth(start + k, size - k))


class _Writer:
    """One batch of appends: repairs the files first, keeps the frontier of every level (the
    last record of each level whose count is odd), buffers new records and writes them level 0
    first."""

    def __init__(self, levels: Levels) -> None:
        self.levels = levels
        self.node_hash = levels.hasher.node
        self.counts: list[int] = []
        self.pending: dict[int, bytes] = {}  # level -> the left sibling awaiting its pair
        self.buffers: dict[int, bytearray] = {}
        self.buffered_leaves = 0

    def __enter__(self) -> Self:
        self._repair()
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()

    def _repair(self) -> None:
        """Cut torn records and records beyond what the level below makes; fill lagging levels."""
        levels = self.levels
        levels.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        top = max(levels._levels_present(), default=0)
        level = 0
        while True:
            path = levels._path(level)
            exists = path.exists()
            if level > 0 and self.counts[level - 1] < 2 and not exists and level > top:
                break
            held = path.stat().st_size if exists else 0
            count = held // HASH_SIZE
            if level > 0:
                count = min(count, self.counts[level - 1] // 2)
            if held != count * HASH_SIZE:
                with open(path, "r+b") as f:
                    f.truncate(count * HASH_SIZE)
                    if levels.durable:
                        os.fsync(f.fileno())
            if level > 0 and count < self.counts[level - 1] // 2:  # lagging: compute the rest from below
                with _Reader(levels, self.counts[0]) as reader, open(path, "ab") as f:
                    f.writelines(levels.hasher.node(reader.node(level - 1, 2 * i), reader.node(level - 1, 2 * i + 1))
                                 for i in range(count, self.counts[level - 1] // 2))
                    if levels.durable:
                        f.flush()
                        os.fsync(f.fileno())
                count = self.counts[level - 1] // 2
            self.counts.append(count)
            if count & 1:
                with open(path, "rb") as f:
                    f.seek((count - 1) * HASH_SIZE)
                    self.pending[level] = f.read(HASH_SIZE)
            level += 1

    def append(self, h: bytes) -> None:
        level = 0
        while True:
            if level == len(self.counts):
                self.counts.append(0)
            self.buffers.setdefault(level, bytearray()).extend(h)
            self.counts[level] += 1
            if self.counts[level] & 1:
                self.pending[level] = h
                break
            h = self.node_hash(self.pending.pop(level), h)
            level += 1
        self.buffered_leaves += 1
        if self.buffered_leaves >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        levels = self.levels
        created = False
        for level in sorted(self.buffers):
            data = self.buffers[level]
            if not data:
                continue
            path = levels._path(level)
            created = created or not path.exists()
            with open(path, "ab") as f:
                f.write(data)
                if levels.durable:
                    f.flush()
                    os.fsync(f.fileno())
            data.clear()
        if created and levels.durable:
            _sync_dir(levels.folder)
        self.buffered_leaves = 0
