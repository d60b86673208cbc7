"""SM3 and HMAC-SM3 of many messages at once, vectorised across rows with numpy.

What the gm profile's key pseudonyms and row fingerprints need (keys.pseudonyms): one digest per
value of an Arrow binary or string column, a million values at a time. ``cryptography`` hashes
one message per call, and a Python call per row costs more than the hashing, so the digests are
computed here SIMD-style across rows: every SM3 word is a numpy ``uint32`` array with one lane per
row, and each step of the compression function (GB/T 32905-2016) is one numpy operation over all
the rows of a chunk.

- Message bytes come straight from the Arrow offsets and data buffers (numpy views, any slice
  offset, 32- or 64-bit offsets); the 16 big-endian words of a block are gathered for all rows
  of a chunk in one ``take`` from four byte-shifted word views of the chunk's bytes, then masked
  and padded (0x80, zeros, bit length) with table look-ups.
- Rows are grouped by their number of blocks: a group is compressed block by block, all its rows
  at once, so rows of different lengths never wait for one another.
- HMAC-SM3 (RFC 2104): the states after the key's inner and outer pad blocks are computed once per
  key (``HmacSM3``), so a message of up to 55 bytes costs two compressions per row.
- Work goes in chunks of ``CHUNK_ROWS`` rows (their working set stays in cache) over a small thread
  pool: numpy releases the GIL inside its loops.

Checked against ``cryptography``'s SM3 and HMAC-SM3 (keys.gm) in tests/unit/test_sm3vec.py.
Nulls give null digests. Nothing here logs or prints values.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from common.errors import ConfigError

DIGEST_BYTES = 32
BLOCK_BYTES = 64
CHUNK_ROWS = 65536  # rows per chunk: the fastest of 8K-64K on an idle machine, 2 threads (benchmarks/sm3vec_bench.py)
THREADS = max(1, min(4, os.cpu_count() or 1))

_U32 = np.uint32
_Words = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (data, starts, lengths) -> (8, n) words
_IV = (0x7380166F, 0x4914B2B9, 0x172442D7, 0xDA8A0600, 0xA96F30BC, 0x163138AA, 0xE38DEE4D, 0xB0FB0E4E)


def _rotl_int(x: int, n: int) -> int:
    n %= 32
    return ((x << n) | (x >> (32 - n))) & 0xFFFFFFFF


_SHIFT = tuple(_U32(n) for n in range(33))
_T = tuple(_U32(_rotl_int(0x79CC4519 if j < 16 else 0x7A879D8A, j)) for j in range(64))

# a word whose bytes start ``rem`` bytes before the message's end (rem = -1 stands for any rem < 0,
# 4 for any rem >= 4): the bytes to keep, and where the 0x80 pad byte goes
_KEEP = np.array([0, 0, 0xFF000000, 0xFFFF0000, 0xFFFFFF00, 0xFFFFFFFF], dtype=_U32)
_PAD = np.array([0, 0x80000000, 0x00800000, 0x00008000, 0x00000080, 0], dtype=_U32)

_BINARY_TYPES = (pa.types.is_binary, pa.types.is_string, pa.types.is_large_binary, pa.types.is_large_string)

_pool: tuple[int, ThreadPoolExecutor] | None = None  # (pid, pool): a forked process makes its own
_pool_lock = threading.Lock()


# -- the compression function, across rows ---------------------------------------------------------

def _compress(state: list[np.ndarray], block: np.ndarray) -> None:
    """One SM3 compression of every row: ``state`` (8 arrays of n words) becomes V xor CF(V, B),
    in place; ``block`` is (16, n) message words (native uint32, big-endian values)."""
    n = block.shape[1]
    w = np.empty((68, n), dtype=_U32)
    w[:16] = block
    t1 = np.empty((3, n), dtype=_U32)
    t2 = np.empty((3, n), dtype=_U32)
    t3 = np.empty((3, n), dtype=_U32)
    for j in range(16, 68, 3):  # three words at a time: W[j..j+2] need only W[j-16..j-1]
        k = min(3, 68 - j)
        x, a, b, c = w[j:j + k], t1[:k], t2[:k], t3[:k]
        np.bitwise_xor(w[j - 16:j - 16 + k], w[j - 9:j - 9 + k], out=x)
        _rotl(w[j - 3:j - 3 + k], 15, a, b)
        np.bitwise_xor(x, a, out=x)  # x = W[j-16] ^ W[j-9] ^ (W[j-3] <<< 15)
        _rotl(x, 15, a, b)
        _rotl(x, 23, c, b)
        np.bitwise_xor(x, a, out=x)
        np.bitwise_xor(x, c, out=x)  # P1(x)
        _rotl(w[j - 13:j - 13 + k], 7, a, b)
        np.bitwise_xor(x, a, out=x)
        np.bitwise_xor(x, w[j - 6:j - 6 + k], out=x)

    A, B, C, D, E, F, G, H = (v.copy() for v in state)  # the standard's names
    s1, s2, s3 = t1[0], t2[0], t3[0]
    for j in range(64):
        _rotl(A, 12, s1, s2)  # s1 = A <<< 12
        np.add(s1, E, out=s2)
        np.add(s2, _T[j], out=s2)
        _rotl_inplace(s2, 7, s3)  # s2 = SS1
        np.bitwise_xor(s2, s1, out=s1)  # s1 = SS2
        # TT1 = FF(A, B, C) + D + SS2 + W'[j], accumulated in D's buffer
        np.add(D, s1, out=D)
        np.bitwise_xor(w[j], w[j + 4], s3)  # W'[j]
        np.add(D, s3, D)
        if j < 16:
            np.bitwise_xor(A, B, out=s1)
            np.bitwise_xor(s1, C, out=s1)
        else:  # majority: (A & B) | (C & (A | B))
            np.bitwise_or(A, B, out=s1)
            np.bitwise_and(s1, C, out=s1)
            np.bitwise_and(A, B, out=s3)
            np.bitwise_or(s1, s3, out=s1)
        np.add(D, s1, out=D)
        # TT2 = GG(E, F, G) + H + SS1 + W[j], accumulated in H's buffer
        np.add(H, s2, out=H)
        np.add(H, w[j], out=H)
        if j < 16:
            np.bitwise_xor(E, F, out=s1)
            np.bitwise_xor(s1, G, out=s1)
        else:  # choice: G ^ (E & (F ^ G))
            np.bitwise_xor(F, G, out=s1)
            np.bitwise_and(s1, E, out=s1)
            np.bitwise_xor(s1, G, out=s1)
        np.add(H, s1, out=H)
        _rotl_inplace(B, 9, s1)  # B's buffer becomes the new C
        _rotl_inplace(F, 19, s1)  # F's buffer becomes the new G
        # P0(TT2) = TT2 ^ (TT2 <<< 9) ^ (TT2 <<< 17), in H's buffer: the new E
        _rotl(H, 9, s1, s2)
        np.bitwise_xor(s1, H, out=s1)
        _rotl_inplace(H, 17, s2)
        np.bitwise_xor(H, s1, out=H)
        A, B, C, D, E, F, G, H = D, A, B, C, H, E, F, G  # renamed, not copied
    for v, new in zip(state, (A, B, C, D, E, F, G, H)):
        np.bitwise_xor(v, new, out=v)


def _rotl(x: np.ndarray, n: int, out: np.ndarray, tmp: np.ndarray) -> None:
    np.left_shift(x, _SHIFT[n], out)  # uint32 scalars, positional out: a Python int costs a microsecond a call
    np.right_shift(x, _SHIFT[32 - n], tmp)
    np.bitwise_or(out, tmp, out)


def _rotl_inplace(x: np.ndarray, n: int, tmp: np.ndarray) -> None:
    np.left_shift(x, _SHIFT[n], tmp)
    np.right_shift(x, _SHIFT[32 - n], x)
    np.bitwise_or(x, tmp, x)


# -- messages out of Arrow arrays --------------------------------------------------------------------

def _parts(array: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(data bytes, start offsets, lengths) of a binary/string array: numpy views of its buffers,
    sliced to the array's own rows (null rows have whatever length their offsets say, mostly 0)."""
    if pa.types.is_binary_view(array.type) or pa.types.is_string_view(array.type):
        array = array.cast(pa.large_binary())
    if not any(test(array.type) for test in _BINARY_TYPES):
        raise ConfigError(f"SM3 digests are of binary or string values, not {array.type}")
    offset_type = np.int64 if pa.types.is_large_binary(array.type) or pa.types.is_large_string(array.type) \
        else np.int32
    _, offsets_buf, data_buf = array.buffers()
    n = len(array)
    offsets = np.frombuffer(offsets_buf, dtype=offset_type, count=array.offset + n + 1)[array.offset:]
    offsets = offsets.astype(np.int64)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return data, offsets[:-1], np.diff(offsets)


def _digest_words(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                  init: tuple[int, ...], prefix_bytes: int) -> np.ndarray:
    """(8, n) digest words of messages data[start:start+length], hashing on from state ``init``
    after ``prefix_bytes`` (a multiple of 64) already compressed."""
    n = len(starts)
    out = np.empty((8, n), dtype=_U32)
    if n == 0:
        return out
    lo, hi = int(starts.min()), int((starts + lengths).max())
    blocks = (lengths + (prefix_bytes % BLOCK_BYTES) + 8) // BLOCK_BYTES + 1
    most = int(blocks.max())
    # the chunk's bytes, zero-padded past the end so that every gathered word is in bounds
    words = -(-(hi - lo + most * BLOCK_BYTES + 4) // 4)
    local = np.zeros(words * 4 + 4, dtype=np.uint8)
    local[:hi - lo] = data[lo:hi]
    shifted = np.empty((4, words), dtype=_U32)  # shifted[r, i]: the word at byte 4i + r, byte-swapped once gathered
    for r in range(4):
        shifted[r] = local[r:r + 4 * words].view(_U32)
    flat = shifted.reshape(-1)
    rel = starts - lo
    base_all = (rel % 4) * words + rel // 4
    order = np.argsort(blocks, kind="stable") if most > int(blocks.min()) else None
    groups = [np.arange(n)] if order is None else np.split(order, np.flatnonzero(np.diff(blocks[order])) + 1)
    word_index = np.arange(16, dtype=np.int64)
    for rows in groups:
        count, m = int(blocks[rows[0]]), len(rows)
        base, size = (base_all, lengths) if order is None else (base_all[rows], lengths[rows])
        shortest, longest = int(size.min()), int(size.max())
        state = [np.full(m, v, dtype=_U32) for v in init]
        for k in range(count):
            at = BLOCK_BYTES * k
            # words [0, last) hold some row's bytes or pad byte, and only [first, last) need masking:
            # before first every row's bytes fill the word, from last on every word is zero
            last = min(16, max(0, (longest - at) // 4 + 1))
            first = min(last, max(0, (shortest - at) // 4))
            block = np.empty((16, m), dtype=_U32) if last == 16 else np.zeros((16, m), dtype=_U32)
            if last:  # row by row (each row's words are neighbours in memory), then turned into (words, rows)
                # (mode "clip": the indices are in bounds anyway, and "raise" makes take ten times slower)
                gathered = flat.take(base[:, None] + (16 * k + word_index[:last]), mode="clip")
                gathered.byteswap(inplace=True)  # SM3 reads big-endian words
                block[:last] = gathered.T
            if first < last:
                rem = size[None, :] - (at + 4 * word_index[first:last, None])
                np.clip(rem, -1, 4, out=rem)
                rem += 1
                tail = block[first:last]
                np.bitwise_and(tail, _KEEP.take(rem, mode="clip"), out=tail)
                np.bitwise_or(tail, _PAD.take(rem, mode="clip"), out=tail)
            if k == count - 1:
                bits = (size + prefix_bytes) * 8
                block[14] = (bits >> 32).astype(_U32)
                block[15] = (bits & 0xFFFFFFFF).astype(_U32)
            _compress(state, block)
        for i, v in enumerate(state):
            if order is None:
                out[i] = v
            else:
                out[i, rows] = v
    return out


def _outer_words(inner: np.ndarray, init: tuple[int, ...]) -> np.ndarray:
    """(8, n) SM3 words, from state ``init`` after one 64-byte block, of the 32-byte messages
    whose words are ``inner`` (8, n): HMAC's outer hash."""
    n = inner.shape[1]
    block = np.zeros((16, n), dtype=_U32)
    block[:8] = inner
    block[8] = 0x80000000
    block[15] = (BLOCK_BYTES + DIGEST_BYTES) * 8
    state = [np.full(n, v, dtype=_U32) for v in init]
    _compress(state, block)
    return np.stack(state)


# -- the public functions ------------------------------------------------------------------------------

class HmacSM3:
    """HMAC-SM3 (RFC 2104) under one key: the inner and outer pad blocks are compressed once here."""

    def __init__(self, key: bytes) -> None:
        key = bytes(key)
        if len(key) > BLOCK_BYTES:
            key = _single_sm3(key)
        key = key.ljust(BLOCK_BYTES, b"\0")
        self._inner = _pad_state(bytes(b ^ 0x36 for b in key))
        self._outer = _pad_state(bytes(b ^ 0x5C for b in key))

    def digests(self, values: pa.Array | pa.ChunkedArray, size: int = DIGEST_BYTES, *,
                threads: int | None = None, chunk_rows: int = CHUNK_ROWS) -> pa.Array:
        """HMAC-SM3 of every value, its first ``size`` bytes, as ``fixed_size_binary(size)`` (null: null)."""
        def words(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
            inner = _digest_words(data, starts, lengths, self._inner, BLOCK_BYTES)
            return _outer_words(inner, self._outer)

        return _digests(values, size, words, threads, chunk_rows)


def sm3_digests(values: pa.Array | pa.ChunkedArray, size: int = DIGEST_BYTES, *,
                threads: int | None = None, chunk_rows: int = CHUNK_ROWS) -> pa.Array:
    """SM3 of every value of a binary or string array, its first ``size`` bytes, as
    ``fixed_size_binary(size)`` (null: null)."""
    def words(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return _digest_words(data, starts, lengths, _IV, 0)

    return _digests(values, size, words, threads, chunk_rows)


def hmac_sm3_digests(key: bytes, values: pa.Array | pa.ChunkedArray, size: int = DIGEST_BYTES, *,
                     threads: int | None = None, chunk_rows: int = CHUNK_ROWS) -> pa.Array:
    """HMAC-SM3 of every value under ``key``, its first ``size`` bytes (see HmacSM3)."""
    return HmacSM3(key).digests(values, size, threads=threads, chunk_rows=chunk_rows)


def _digests(values: pa.Array | pa.ChunkedArray, size: int, words: _Words, threads: int | None,
             chunk_rows: int) -> pa.Array:
    if not 1 <= size <= DIGEST_BYTES:
        raise ConfigError(f"an SM3 digest has 1 to {DIGEST_BYTES} bytes, not {size}")
    if chunk_rows < 1:
        raise ConfigError(f"chunks have at least one row, not {chunk_rows}")
    arrays = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    if isinstance(values, pa.ChunkedArray) and not arrays:
        arrays = [pa.array([], values.type)]
    n = sum(len(a) for a in arrays)
    digest = np.empty((n, 8), dtype=">u4")  # row-major: row i's digest is 32 consecutive bytes
    jobs = []
    at = 0
    for array in arrays:
        data, starts, lengths = _parts(array)
        # equal chunks of at most chunk_rows (a 100K batch: two of 50K, one per thread, not 64K + 36K)
        pieces = -(-len(array) // chunk_rows) if len(array) else 0
        bounds = [len(array) * i // pieces for i in range(pieces + 1)] if pieces else []
        for first, last in zip(bounds, bounds[1:]):
            jobs.append((at + first, at + last, data, starts[first:last], lengths[first:last]))
        at += len(array)

    def run(job: tuple) -> None:
        first, last, data, starts, lengths = job
        digest[first:last] = words(data, starts, lengths).T

    workers = THREADS if threads is None else max(1, threads)
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            run(job)
    else:
        list(_executor(workers).map(run, jobs))  # list(): re-raises a job's error
    body = digest.view(np.uint8).reshape(n, DIGEST_BYTES)[:, :size]
    body = np.ascontiguousarray(body)
    validity = _validity(arrays, n)
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(size), n, [validity, pa.py_buffer(body)])


def _validity(arrays: list[pa.Array], n: int) -> pa.Buffer | None:
    if not any(a.null_count for a in arrays):
        return None
    valid = pa.concat_arrays([a.is_valid() for a in arrays]) if len(arrays) > 1 else arrays[0].is_valid()
    return valid.buffers()[1] if valid.offset == 0 else pa.concat_arrays([valid]).buffers()[1]


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid() or _pool[1]._max_workers != workers:
            _pool = (os.getpid(), ThreadPoolExecutor(workers, thread_name_prefix="sm3vec"))
        return _pool[1]


def _pad_state(block: bytes) -> tuple[int, ...]:
    """The SM3 state after compressing one 64-byte block from the IV."""
    state = [np.full(1, v, dtype=_U32) for v in _IV]
    _compress(state, np.frombuffer(block, dtype=">u4").astype(_U32).reshape(16, 1))
    return tuple(int(v[0]) for v in state)


def _single_sm3(message: bytes) -> bytes:
    array = pa.array([message], pa.binary())
    return sm3_digests(array, threads=1)[0].as_py()
