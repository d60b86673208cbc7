"""Great Expectations on large chunks, in this process or in a child process beside it.

GX costs a fixed ~0.14 s per ``graph_validate`` call and ~3 s of pure-Python import, so it runs
on chunks of ``GX_CHUNK_ROWS`` rows accumulated from several batches, never per batch. Memory is
bounded by that constant (plus one batch), never by the table's size: a batch is sliced so that
no run sees more than ``chunk_rows`` rows.

``InlineGx`` runs the suite in the caller's process. ``GxWorker`` runs the same ``InlineGx`` in a
child (``python -m validation.gx_worker``) on the machine's other core: the caller's batches go to
it from a feeder thread and a bounded queue, so neither GX's import nor its runs sit on the
critical path. GX only counts; the quarantine masks stay validation.rules'. Both give totals per
rule: the unexpected count summed and the success and-ed over every run.

A child is warm once it has imported GX, and serves one *session* (one GxWorker) after another:
after a successful finish() it waits, idle, in a per-process pool of ``IDLE_WORKERS`` children,
and the next GxWorker of this process takes it instead of starting a child and paying the import
again. A child whose session failed, or whose GxWorker was closed before its counts were read, is
killed and never reused. Idle children are stopped when the interpreter exits (their stdin is
closed, so they exit; killed if they do not within ``STOP_SECONDS``), and exit by themselves if
the parent dies (their stdin reaches end of file).

What the child may say is one JSON line of counts per session on stdout. Its stderr goes to
/dev/null and its own stdout (GX, C libraries) is pointed there too: nothing the child logs or
prints can carry a row value out. A failure is reported by exception type and stage only, never
by its message; after one the child exits.

Protocol, parent to child on stdin, per session: an 8-byte big-endian length and a pickle of
(dataset, rules, today, chunk_rows); then messages, each an 8-byte big-endian length and that
many bytes: the Arrow IPC schema of the batches, then one Arrow IPC record batch per message;
then a zero length, the end of the session (alone when no batch was fed). Every read takes exactly
the bytes announced, so nothing is read past a session's end. End of file where a header would
start ends the child; anywhere else it is an error.

Why a hand-written child and not the standard library (measured for issue 9, 2026-12, on this
2-core machine under load 1.6-7.6, runs interleaved): a ``ProcessPoolExecutor(max_workers=1,
mp_context=forkserver, initializer=<import GX>)`` fed ``batch.serialize()`` buffers, with a
semaphore for back-pressure, needed 305 code lines against this module's 460 and ran GX as fast
(warm child, 1.05M population rows in memory, 4 runs: 2.19 s median against 2.24 s here; in
``benchmarks.run --rows 1000000`` the child's GX time 4.3 s against 4.2 s, 7 runs), but ingest got
slower (median 17.6 s against 14.7 s, slower in 6 of 7 pairs) because its child cannot see
whether a batch is waiting, so it cannot run what it holds early (``CATCH_UP_ROWS``; with that
turned off here, ingest took 7.5/34.0/14.5 s against 3.7/6.5/8.3 s), and its pickled copies cost
the parent 0.06-0.12 s of CPU and 50-60 MiB of peak per million rows (0.015 s, 156 MiB here). It also
read private attributes (``_processes``, ``_broken``) to kill a failed child and name its exit
code (public only from Python 3.14), left its worker blocked for ever on its call queue when the
parent was SIGKILLed (here stdin reaches end of file), and forkserver re-imports the parent's
main script. ``multiprocessing.Pool`` silently replaces a killed worker and never delivers its
result (a hang), and GX 1.x validates only in the calling process. So the child stays.
"""

from __future__ import annotations

import atexit
import json
import os
import pickle
import queue
import re
import resource
import subprocess
import sys
import threading
import time
import weakref
from datetime import date
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self

from common.catalog import Dataset
from common.errors import ConfigError, GovshareError, InternalError
from validation.gx_suite import outcomes
from validation.rules import Rule

if TYPE_CHECKING:
    import pyarrow as pa

    from validation.gx_suite import SuiteRunner

GX_CHUNK_ROWS = 500_000  # rows per GX run; bounds GX's memory (pandas frames of this many rows)
QUEUE_BATCHES = 16  # batches waiting for the child before feed() blocks
CATCH_UP_ROWS = 100_000  # a child with no batch waiting runs what it holds from this many rows on
IDLE_WORKERS = 1  # warm children kept idle per process, for the next GxWorker
STOP_SECONDS = 2.0  # how long a child gets to exit by itself before it is killed

Totals = dict[str, tuple[int, bool]]  # rule id -> (unexpected rows, success)

_LENGTH_BYTES = 8  # every length on the pipe: the header's, each message's, the end marker (0)
_MAX_HEADER_BYTES = 16 * 1024 * 1024
_MAX_MESSAGE_BYTES = 1 << 40
_END_OF_SESSION = bytes(_LENGTH_BYTES)
_END = object()  # end of the batches, on the feeder's queue
_ERROR = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,80} in [a-z ]{1,40}")


class InlineGx:
    """The dataset's suite in this process, run once per ``chunk_rows`` rows fed."""

    def __init__(self, dataset: Dataset, rules: tuple[Rule, ...], today: date, chunk_rows: int = GX_CHUNK_ROWS,
                 runner: SuiteRunner | None = None) -> None:
        from validation.gx_suite import SuiteRunner

        if chunk_rows < 1:
            raise ConfigError(f"GX chunk of dataset {dataset.id} must hold at least one row, not {chunk_rows}")
        self.dataset = dataset
        self.chunk_rows = chunk_rows
        self.runner: SuiteRunner = runner or SuiteRunner(dataset, rules, today)  # a runner holds no rows between runs
        self.seconds = 0.0  # time spent in feed() and finish(): GX's frames and runs
        self.rows = 0
        self._pending: list[dict[str, pa.Table]] = []
        self._pending_rows = 0
        self._totals: Totals = {r.id: (0, True) for r in rules}
        self._finished = False

    def feed(self, batch: pa.RecordBatch) -> None:
        """A normalised batch with at least the columns the suite reads and ``is_deleted``."""
        if self._finished:
            raise InternalError(f"GX of dataset {self.dataset.id} was fed a batch after its totals were taken")
        started = time.perf_counter()
        try:
            offset = 0
            while offset < batch.num_rows:
                part = batch.slice(offset, self.chunk_rows - self._pending_rows)
                self._pending.append(self.runner.frames(part))
                self._pending_rows += part.num_rows
                offset += part.num_rows
                if self._pending_rows >= self.chunk_rows:
                    self._run()
            self.rows += batch.num_rows
        finally:
            self.seconds += time.perf_counter() - started

    def finish(self) -> Totals:
        """Run what is pending; the totals per rule. Calling it again gives the same totals."""
        if not self._finished:
            started = time.perf_counter()
            try:
                if self._pending_rows:
                    self._run()
            finally:
                self._finished = True
                self.seconds += time.perf_counter() - started
        return dict(self._totals)

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    def flush(self) -> None:
        """Run what is pending now, however little (a worker that has caught up with its input)."""
        if self._pending_rows and not self._finished:
            started = time.perf_counter()
            try:
                self._run()
            finally:
                self.seconds += time.perf_counter() - started

    def end_input(self) -> None:
        """No more batches will come (in this process finish() does the rest: nothing to start early)."""

    def close(self) -> None:
        self._pending, self._pending_rows = [], 0

    def cancel(self) -> None:
        """End without totals (GxWorker's counterpart returns a warm child to the pool): close()."""
        self.close()

    def _run(self) -> None:
        try:
            raw = self.runner.run_frames(self._pending)
        finally:
            self._pending, self._pending_rows = [], 0  # a failed chunk is not retried
        for outcome in outcomes(self.dataset, raw):
            unexpected, success = self._totals[outcome.rule_id]
            self._totals[outcome.rule_id] = (unexpected + outcome.unexpected_count, success and outcome.success)


class _FeedState:
    """What the feeder thread reports back: the type of the error that stopped it, if any."""

    error: str | None = None


class GxWorker:
    """``InlineGx`` in a child process: a warm idle one if this process has one, else one started now.

    A context manager; close() before finish() kills the child. ``warm`` says whether the child had
    imported GX already (``import_seconds`` is then 0).
    """

    def __init__(self, dataset: Dataset, rules: tuple[Rule, ...], today: date, chunk_rows: int = GX_CHUNK_ROWS,
                 *, queue_batches: int = QUEUE_BATCHES) -> None:
        self.dataset = dataset
        self._rule_ids = frozenset(r.id for r in rules)
        self.seconds = 0.0  # the child's own figure, known after finish(): building the suite, GX's runs
        self.import_seconds = 0.0  # the GX import the child paid in this session (0 when warm), after finish()
        self.rows = 0
        self.peak_rss_kib: int | None = None  # the child's peak RSS so far, known after finish()
        self.output = b""  # what the child wrote on stdout for this session: one JSON line of counts
        header = pickle.dumps((dataset, rules, today, chunk_rows), protocol=pickle.HIGHEST_PROTOCOL)
        proc = _take_idle()
        self.warm = proc is not None  # a child of the pool: it imported GX already, or is doing so (prestart)
        if proc is None:
            proc = _spawn()
        self._proc = proc
        self._fed = 0  # batches queued for the child
        self._ended = False  # the end marker is queued
        self._batches: queue.Queue[Any] = queue.Queue(maxsize=queue_batches)
        self._state = _FeedState()
        self._thread = threading.Thread(
            target=_send, args=(proc.stdin, len(header).to_bytes(_LENGTH_BYTES, "big") + header,
                                self._batches, self._state),
            name=f"gx-feeder-{dataset.id}", daemon=True,
        )
        self._shutdown = weakref.finalize(self, _shutdown, proc, self._batches, self._thread)
        self._thread.start()
        self._totals: Totals | None = None
        self._failure: GovshareError | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def feed(self, batch: pa.RecordBatch) -> None:
        """Queue a batch for the child; blocks only while ``queue_batches`` batches are waiting."""
        if self._state.error is not None or not self._shutdown.alive or self._failure is not None:
            self.finish()  # raises: the pipe broke, the child failed or the worker was closed
            raise InternalError(f"GX of dataset {self.dataset.id} was fed a batch after its totals were taken")
        if self._ended:
            raise InternalError(f"GX of dataset {self.dataset.id} was fed a batch after the end of its input")
        self._batches.put(batch)
        self._fed += 1

    def end_input(self) -> None:
        """No more batches: the child runs its last chunk now, while the caller finishes its own work."""
        if not self._ended and self._shutdown.alive and self._thread.is_alive():
            self._batches.put(_END)
        self._ended = True

    def finish(self) -> Totals:
        """End the session, wait for the child's counts, give the child back to the pool.

        Raises GovshareError if the child failed (it is then killed, not reused). Calling it again
        gives the same totals or raises the same error.
        """
        if self._totals is None and self._failure is None and not self._shutdown.alive:
            self._failure = self._error(self._proc.returncode, "closed before its counts were read")
        if self._totals is None and self._failure is None:
            try:
                self.end_input()
                self._thread.join()
                assert self._proc.stdout is not None
                self.output = self._proc.stdout.readline()  # the child writes nothing after it until the next header
                self._totals = self._read_result(self.output)
            except GovshareError as exc:
                self._failure = exc
            finally:
                if self._totals is not None and self._shutdown.detach() is not None:
                    _give_back(self._proc)
                else:
                    self.close()
        if self._failure is not None:
            raise self._failure
        assert self._totals is not None
        return dict(self._totals)

    def cancel(self) -> None:
        """End the session without waiting for GX: a warm child fed nothing answers at once and goes
        back to the pool; any other child is killed (a cold one's import is not waited for)."""
        if self.warm and self._fed == 0 and self._shutdown.alive:
            try:
                self.finish()
            except GovshareError:
                pass  # the child is killed; nobody asked for these totals
        else:
            self.close()

    def close(self) -> None:
        """Kill the child if this session still holds it, end the feeder thread, close the pipes.

        After a successful finish() the child is the pool's and close() leaves it. Safe to call twice.
        """
        self._shutdown()

    def _read_result(self, output: bytes) -> Totals:
        try:
            result = json.loads(output.decode("utf-8", "replace")) if output.strip() else {}
        except ValueError:
            result = {}
        result = result if isinstance(result, dict) else {}
        if result.get("ok") is not True or self._state.error is not None:
            said = result.get("error")
            # The child names an exception type and a stage; anything else is not repeated.
            raise self._error(_stopped(self._proc), said if isinstance(said, str) and _ERROR.fullmatch(said)
                              else "no result")
        totals = _totals(result.get("outcomes"))
        figures = [result.get(k) for k in ("seconds", "import_seconds", "rows")]
        if totals is None or set(totals) != self._rule_ids or not all(type(f) in (int, float) for f in figures):
            self._proc.kill()  # it does not speak this protocol: do not wait for it
            raise self._error(_stopped(self._proc), "unreadable counts")
        self.seconds, self.import_seconds, self.rows = float(figures[0]), float(figures[1]), int(figures[2])
        peak = result.get("peak_rss_kib")
        self.peak_rss_kib = peak if type(peak) is int else None
        return totals

    def _error(self, exit_code: int | None, reason: str) -> InternalError:
        died = ("still running" if exit_code is None else f"killed by signal {-exit_code}" if exit_code < 0
                else f"exit code {exit_code}")
        sending = f"; {self._state.error}" if self._state.error else ""
        return InternalError(
            f"the Great Expectations worker of dataset {self.dataset.id} failed: {reason} ({died}{sending})",
            problems=[
                "the quarantine is not affected, but this run has no GX counts to compare it with",
                "rerun the part; if it fails again, run the validation unit tests against this catalog",
            ],
        )


def _totals(found: Any) -> Totals | None:
    if not isinstance(found, dict):
        return None
    totals: Totals = {}
    for rule_id, pair in found.items():
        if not (isinstance(pair, list) and len(pair) == 2 and type(pair[0]) is int and type(pair[1]) is bool):
            return None
        totals[rule_id] = (pair[0], pair[1])
    return totals


def _child_env() -> dict[str, str]:
    """The parent's environment, GX quiet, and the parent's import path (whatever its cwd was)."""
    env = dict(os.environ)
    env["GX_ANALYTICS_ENABLED"] = "false"
    env.setdefault("TQDM_DISABLE", "1")
    project = str(Path(__file__).resolve().parent.parent)
    paths = [project, *(p or os.getcwd() for p in sys.path)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(os.path.abspath(p) for p in paths))
    return env


def _send(pipe: IO[bytes], header: bytes, batches: queue.Queue[Any], state: _FeedState) -> None:
    """The feeder thread: the header, the schema and each batch as a message, then the end marker.

    The pipe stays open for the child's next session. On any error it records the error's type,
    closes the pipe and goes on taking batches off the queue (dropping them) until the end
    marker, so the main thread never blocks on a dead child.
    """
    schema = None
    batch: Any = None
    try:
        pipe.write(header)
        pipe.flush()
        while (batch := batches.get()) is not _END:
            if schema is None:
                schema = batch.schema
                _write_message(pipe, schema.serialize())
            elif not batch.schema.equals(schema):
                raise TypeError("a batch's schema differs from the first batch's")
            _write_message(pipe, batch.serialize())
            batch = None
        pipe.write(_END_OF_SESSION)
        pipe.flush()
    except Exception as exc:  # noqa: BLE001  recorded: finish() and the next feed() raise it
        state.error = f"{type(exc).__name__} while sending batches"
        _close_broken(pipe)
        while batch is not _END:
            batch = batches.get()


def _write_message(pipe: IO[bytes], message: Any) -> None:
    pipe.write(message.size.to_bytes(_LENGTH_BYTES, "big"))
    pipe.write(message)


def _close_broken(pipe: IO[bytes]) -> None:
    """Close a pipe whose child is gone: flushing what is buffered fails again, the fd is closed anyway."""
    try:
        pipe.close()
    except (OSError, ValueError):
        pass  # the error that broke the pipe is already recorded


def _shutdown(proc: subprocess.Popen[bytes], batches: queue.Queue[Any], thread: threading.Thread) -> None:
    """A session's end without its counts: the child is killed, never reused."""
    if proc.poll() is None:
        proc.kill()
    if thread.is_alive():
        batches.put(_END)  # the feeder drains the queue once its pipe broke: this cannot block for long
    thread.join()
    _reap(proc)


def _stopped(proc: subprocess.Popen[bytes]) -> int:
    """The exit code of a child that failed: it exits by itself after reporting; killed if it does not."""
    try:
        return proc.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Kill the child if it still runs, close its pipes, wait for it: no zombie."""
    if proc.poll() is None:
        proc.kill()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            _close_broken(pipe)
    proc.wait()


# -- the pool of idle children -----------------------------------------------------------------------


class _Pool:
    """This process's idle, warm children. Forgotten (not stopped) in a forked child process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[subprocess.Popen[bytes]] = []
        self.pid = os.getpid()


_pool = _Pool()


def _take_idle() -> subprocess.Popen[bytes] | None:
    """An idle child still alive, taken out of the pool; None if there is none."""
    dead: list[subprocess.Popen[bytes]] = []
    found = None
    with _pool.lock:
        while _pool.idle and found is None:
            proc = _pool.idle.pop()
            if proc.poll() is None:
                found = proc
            else:
                dead.append(proc)
    for proc in dead:
        _reap(proc)
    return found


def _give_back(proc: subprocess.Popen[bytes]) -> None:
    """A child that finished its session well: idle in the pool, or stopped if the pool is full."""
    with _pool.lock:
        if proc.poll() is None and len(_pool.idle) < IDLE_WORKERS and _pool.pid == os.getpid():
            _pool.idle.append(proc)
            return
    _reap(proc)


def prestart() -> bool:
    """Start a child now, idle in the pool, importing GX at once: the next GxWorker takes it, with
    its import done or under way. Does nothing when an idle child is there already or this machine
    has one core. Whether a child is waiting now."""
    if (os.cpu_count() or 1) < 2:
        return False
    with _pool.lock:
        if any(proc.poll() is None for proc in _pool.idle):
            return True
    _give_back(_spawn())
    return warm_worker_available()


def _spawn() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "validation.gx_worker"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_child_env())


def warm_worker_available() -> bool:
    """Whether this process holds an idle child that has imported GX and is still alive."""
    with _pool.lock:
        return any(proc.poll() is None for proc in _pool.idle)


def stop_idle_workers() -> None:
    """Stop this process's idle children: close their stdin so they exit; kill those that do not.

    Runs at interpreter exit; a long-running caller may call it to hand the memory back sooner.
    """
    with _pool.lock:
        idle, _pool.idle = _pool.idle, []
    for proc in idle:  # all of them told first: they exit side by side
        if proc.stdin is not None:
            _close_broken(proc.stdin)
    deadline = time.monotonic() + STOP_SECONDS
    for proc in idle:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _reap(proc)


def _forget_pool() -> None:
    """In a forked child process: the idle children are not its children. Drop its copies of their pipes."""
    global _pool
    for proc in _pool.idle:
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                _close_broken(pipe)
    _pool = _Pool()


atexit.register(stop_idle_workers)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


# -- the child ---------------------------------------------------------------------------------------


def main() -> int:
    """Serve sessions until stdin ends: read a header and batches, run GX, print one JSON line of counts.

    Never a value. GX is imported once, at start, before the first header is read (a prestarted
    child imports while its parent plans); the suite is built in every session. After a failed
    session the child exits (its input is no longer in step with the parent).
    """
    report = _protocol_out()
    stdin = sys.stdin.buffer
    started = time.perf_counter()
    try:
        _import_gx()
        import_seconds = time.perf_counter() - started  # reported by the first session
        failed_import = None
    except Exception as exc:  # noqa: BLE001  reported by type, to the first session's parent
        failed_import = {"ok": False, "error": f"{type(exc).__name__} in import"}
    while True:
        stage = ["header"]
        try:
            header = _read_header(stdin)
            if header is None:
                return 0  # end of file between sessions: the parent has no more work for us
            if failed_import is not None:
                result = failed_import
            else:
                result = _serve(stdin, header, stage, import_seconds=import_seconds)
                import_seconds = 0.0
        except Exception as exc:  # noqa: BLE001  reported by type and stage: its message may quote a value
            result = {"ok": False, "error": f"{type(exc).__name__} in {stage[0]}"}
        header = None  # idle, the child holds nothing of the session
        try:
            report.write(json.dumps(result).encode() + b"\n")
            report.flush()
        except OSError:
            return 1  # the parent is gone: nobody to tell
        if not result["ok"]:
            # At once, without the interpreter's teardown of GX and pandas: on a loaded machine that
            # took longer than STOP_SECONDS, and the parent then reported a kill, not exit code 1.
            os._exit(1)


_last_runner: tuple[bytes, SuiteRunner] | None = None  # the child's: the suite of its last session


def _serve(stdin: IO[bytes], header: tuple[Dataset, tuple[Rule, ...], date, int], stage: list[str], *,
           import_seconds: float) -> dict[str, Any]:
    """One session after its header: the batches up to the end marker, GX's totals as the result line.

    ``stage[0]`` names what it is doing, for the report of a failure.
    """
    global _last_runner
    dataset, rules, today, chunk_rows = header
    stage[0] = "suite"
    started = time.perf_counter()
    key = pickle.dumps((dataset, rules, today))
    if _last_runner is None or _last_runner[0] != key:  # the same suite as the last session: its runner, graph built
        _last_runner = (key, InlineGx(dataset, rules, today, chunk_rows).runner)
    gx = InlineGx(dataset, rules, today, chunk_rows, runner=_last_runner[1])
    built = time.perf_counter() - started
    stage[0] = "stream"
    arrived: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_BATCHES)  # bounded: the pipe, then the parent, wait
    reader = threading.Thread(target=_receive, args=(stdin, arrived), name="gx-receiver", daemon=True)
    reader.start()
    while (batch := arrived.get()) is not _END:  # after a failure the child exits: the reader is not waited for
        if isinstance(batch, BaseException):
            raise batch
        stage[0] = "gx run"
        gx.feed(batch)
        if arrived.empty() and gx.pending_rows >= CATCH_UP_ROWS:
            gx.flush()  # caught up with the parent: run now, so that little is left for the end
        stage[0] = "stream"
    reader.join()  # it ended with the session: the next header is the main loop's to read
    stage[0] = "gx run"
    totals = gx.finish()
    stage[0] = "result"
    return {
        "ok": True,
        "outcomes": {rule_id: [unexpected, success] for rule_id, (unexpected, success) in totals.items()},
        "rows": gx.rows,
        "seconds": round(built + gx.seconds, 6),
        "import_seconds": round(import_seconds, 6),
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def _protocol_out() -> IO[bytes]:
    """The original stdout, for the result lines; fd 1 itself now goes where stderr goes (/dev/null)."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return out


# Optional dependencies GX imports when it finds them, which a pandas-only child never uses:
# SQLAlchemy alone is ~0.25 s of the ~2.5 s import. GX checks for it and does without.
_NOT_FOR_THE_CHILD = ("sqlalchemy",)


def _import_gx() -> None:
    """What SuiteRunner imports, once per child: GX (quietened first) and the custom expectations."""
    from validation.gx_suite import quiet_gx

    for name in _NOT_FOR_THE_CHILD:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # "import sqlalchemy" raises ImportError here
    quiet_gx()
    import great_expectations
    import great_expectations.expectations  # noqa: F401
    from great_expectations.execution_engine import PandasExecutionEngine  # noqa: F401
    from great_expectations.validator.validator import Validator  # noqa: F401

    from validation import gx_expectations  # noqa: F401


def _read_header(stdin: IO[bytes]) -> tuple[Dataset, tuple[Rule, ...], date, int] | None:
    """The next session's header; None at end of file before its first byte."""
    length = stdin.read(_LENGTH_BYTES)
    if not length:
        return None
    if len(length) != _LENGTH_BYTES:
        raise EOFError("stream ended inside a header")
    size = int.from_bytes(length, "big")
    if not 0 < size <= _MAX_HEADER_BYTES:
        raise ValueError("header size out of range")
    dataset, rules, today, chunk_rows = pickle.loads(_read_exactly(stdin, size))  # our parent's own pickle
    if not (isinstance(dataset, Dataset) and isinstance(today, date) and isinstance(chunk_rows, int)):
        raise TypeError("header of the wrong kind")
    return dataset, tuple(rules), today, chunk_rows


def _read_exactly(stdin: IO[bytes], size: int) -> bytes:
    data = stdin.read(size)
    if len(data) != size:
        raise EOFError("stream ended inside a session")
    return data


def _read_message(stdin: IO[bytes]) -> bytes | None:
    """The next message of this session; None at its end marker."""
    size = int.from_bytes(_read_exactly(stdin, _LENGTH_BYTES), "big")
    if size > _MAX_MESSAGE_BYTES:
        raise ValueError("message size out of range")
    return _read_exactly(stdin, size) if size else None


def _receive(stdin: IO[bytes], arrived: queue.Queue[Any]) -> None:
    """The child's reader thread: this session's batches onto ``arrived``, then _END (or the error)."""
    try:
        for batch in _session_batches(stdin):
            arrived.put(batch)
        arrived.put(_END)
    except BaseException as exc:  # noqa: BLE001 - raised by the session's loop
        arrived.put(exc)


def _session_batches(stdin: IO[bytes]) -> Any:
    """This session's batches: a schema message, then one batch per message, up to the end marker."""
    import pyarrow as pa

    schema = None
    while (message := _read_message(stdin)) is not None:
        if schema is None:
            schema = pa.ipc.read_schema(pa.py_buffer(message))
        else:
            yield pa.ipc.read_record_batch(pa.py_buffer(message), schema)


if __name__ == "__main__":
    sys.exit(main())
