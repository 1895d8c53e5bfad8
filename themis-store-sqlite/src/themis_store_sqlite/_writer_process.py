"""A run's writes and folds in a process of their own (``SqliteRunStore(writer_process=True)``).

In one process the event loop and the store's thread take turns on the GIL, so a SQLite
run costs the sum of their work (docs/performance.md, sessions 11 and 12). Here the store
hands each batch of a leased run, as the pipeline made it (events and records), to a child
process. The child owns its own ``SqliteRunStore`` on the same file, and for each batch:

1. writes the batch's rows and the due stage-cache rows in one transaction. The lease
   check uses the parent's lease owner, so the lease stays the parent's.
2. answers once the transaction is committed. The parent's writer keeps up to three
   batches in flight, and shows its observers a batch only once it is answered.
3. folds the batch: lets go of finished cases, and writes the texts at rest once the run
   is at rest. It folds in slices, and between slices answers any batch that came in
   meanwhile, so that a commit never waits for the fold of the batch before it.

The parent never folds a run it handed over: it reads the run's result at rest
(``_stored_run_result``), as another process would.

Frames on the pipes are a little-endian 8-byte length and a pickle. A child that loses its
parent (its stdin closes) stops at once; what it has committed is whole batches, so the run
can be resumed. A child that fails stops after saying why, and the parent raises
``UncommittedBatches``: its writer takes the batches back, in order under their seqs, and
the store writes them, and the rest of the run, in process.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import subprocess
import sys
from collections import deque
from typing import IO, Any

from themis.core._fold_speed import ExactFields
from themis.core.errors import StoreConflictError, StoreError
from themis.core.logs import get_logger

__all__ = ["UncommittedBatches", "WriterProcess", "main"]

log = get_logger(__name__)

_HEADER = struct.Struct("<Q")
# Records a slice of the child's fold holds: between slices it answers waiting batches.
_FOLD_SLICE = 256
# How long ``close`` waits for the child to finish before it is killed.
_CLOSE_TIMEOUT_S = 30.0


def _send(stream: IO[bytes], message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _read_exact(fd: int, size: int) -> bytes | None:
    """``size`` bytes from ``fd``; None at end of file before the first byte."""
    chunks: list[bytes] = []
    left = size
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            if chunks:
                raise EOFError("the pipe closed in the middle of a frame")
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _receive(fd: int) -> Any:
    """The next message on ``fd``; raises ``EOFError`` once the pipe is closed."""
    head = _read_exact(fd, _HEADER.size)
    if head is None:
        raise EOFError("the pipe closed")
    data = _read_exact(fd, _HEADER.unpack(head)[0])
    if data is None:
        raise EOFError("the pipe closed in the middle of a frame")
    return pickle.loads(data)


def _exact_marks(items: list[Any]) -> list[int]:
    """Where the records whose fields set is ``ExactFields`` are: a pickle holds a plain
    set (on purpose, see ``ExactFields``), and the fold's fast path needs the mark back."""
    return [
        at for at, item in enumerate(items) if type(item) is tuple and type(item[1]) is ExactFields
    ]


def _remark(items: list[Any], marks: list[int]) -> None:
    for at in marks:
        item = items[at]
        items[at] = (item[0], ExactFields(item[1]), *item[2:])


class UncommittedBatches(StoreError):
    """The writer process failed with batches sent and not committed: every seq from
    ``first_seq`` on is not in the file, and must be written again, in order."""

    def __init__(self, message: str, first_seq: int, cause: StoreError) -> None:
        super().__init__(message)
        self.first_seq = first_seq
        self.cause = cause


class WriterProcess:
    """The parent's end: starts the child, hands it batches, and collects its commits."""

    def __init__(self, path: str, busy_timeout_s: float) -> None:
        self.path = path
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "themis_store_sqlite._writer_process",
                path,
                str(busy_timeout_s),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._to_child = self._process.stdin
        self._from_child = self._process.stdout.fileno()
        self.ready = False
        self.failed = False
        # (first seq, last seq) of each batch sent and not committed yet, in order.
        self.outstanding: deque[tuple[int, int]] = deque()

    @property
    def pid(self) -> int:
        return self._process.pid

    def poll_ready(self, timeout: float = 0.0) -> bool:
        """Whether the child has started (its imports take a few hundred ms); waits up to
        ``timeout`` seconds for it."""
        if not self.ready and not self.failed:
            readable, _, _ = select.select([self._from_child], [], [], timeout)
            if readable:
                try:
                    self._expect("ready")
                except StoreError:
                    return False
                self.ready = True
        return self.ready

    def send(
        self,
        run_id: str,
        owner: Any,
        items: list[Any],
        first_seq: int,
        cache_rows: list[tuple[str, str, str]],
        terminal: bool,
    ) -> None:
        """Hand the child a batch; ``collect`` tells when it is committed."""
        self.outstanding.append((first_seq, first_seq + len(items) - 1))
        try:
            _send(
                self._to_child,
                (
                    "batch",
                    run_id,
                    owner,
                    items,
                    _exact_marks(items),
                    first_seq,
                    cache_rows,
                    terminal,
                ),
            )
        except (BrokenPipeError, OSError) as exc:
            raise self._uncommitted(self._gone(exc)) from exc

    def collect(self, keep: int) -> int | None:
        """Wait until at most ``keep`` batches are not committed; return the last seq
        committed so far (None when none was, here). A failure raises
        ``UncommittedBatches``: the child has stopped, and wrote nothing after it."""
        committed: int | None = None
        while len(self.outstanding) > keep:
            try:
                self._expect("ok")
            except StoreError as exc:
                raise self._uncommitted(exc) from exc
            committed = self.outstanding.popleft()[1]
        return committed

    def _uncommitted(self, cause: StoreError) -> UncommittedBatches:
        self.failed = True
        first = self.outstanding[0][0]
        self.outstanding.clear()
        return UncommittedBatches(str(cause), first, cause)

    def _expect(self, kind: str) -> None:
        try:
            message = _receive(self._from_child)
        except (EOFError, OSError) as exc:
            raise self._gone(exc) from exc
        if message[0] == kind:
            return
        self.failed = True
        if message[0] == "error":
            _, name, text = message
            cls = StoreConflictError if name == "StoreConflictError" else StoreError
            raise cls(text)
        raise StoreError(f"the writer process of {self.path} answered {message[0]!r}, not {kind!r}")

    def _gone(self, exc: BaseException) -> StoreError:
        self.failed = True
        try:
            code = self._process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = self._process.wait()
        return StoreError(
            f"the writer process of SQLite store {self.path} stopped (exit code {code}: {exc}); "
            "every batch it committed is kept: run the experiment again with "
            "existing_run_policy='resume' to continue"
        )

    def close(self) -> None:
        """Let the child finish what it was given and stop; kill it if it does not."""
        process = self._process
        if process.poll() is None:
            try:
                _send(self._to_child, ("stop",))
            except (BrokenPipeError, OSError):
                pass
            try:
                process.wait(timeout=_CLOSE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for stream in (self._to_child, self._process.stdout):
            try:
                stream.close()  # type: ignore[union-attr]
            except OSError:
                pass


# -- the child --------------------------------------------------------------------------------


class _Child:
    def __init__(self, path: str, busy_timeout_s: float) -> None:
        from themis_store_sqlite.store import SqliteRunStore

        self.store = SqliteRunStore(path, busy_timeout_s=busy_timeout_s)
        self.inp = sys.stdin.buffer.fileno()
        # Frames go to a copy of stdout, and stdout itself to stderr: nothing printed in
        # this process can corrupt a frame.
        self.out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        # Batches committed and not folded yet: (run_id, items, seqs), in seq order.
        self.folds: deque[tuple[str, list[Any], range]] = deque()

    def run(self) -> None:
        _send(self.out, ("ready",))
        while True:
            while self.folds and not select.select([self.inp], [], [], 0)[0]:
                self._fold_slice()
            try:
                message = _receive(self.inp)
            except EOFError:
                return  # the parent is gone (or closed the pipe): what is committed stays
            if message[0] == "stop":
                while self.folds:
                    self._fold_slice()
                return
            self._batch(*message[1:])

    def _batch(
        self,
        run_id: str,
        owner: Any,
        items: list[Any],
        marks: list[int],
        first_seq: int,
        cache_rows: list[tuple[str, str, str]],
        terminal: bool,
    ) -> None:
        _remark(items, marks)
        try:
            self.store._child_write(run_id, owner, items, first_seq, cache_rows)
        except Exception as exc:
            # Nothing after a failed batch may be written (its seqs would leave a hole): say
            # why, and stop; the parent writes this batch and those after it again.
            name = (
                "StoreConflictError" if isinstance(exc, StoreConflictError) else type(exc).__name__
            )
            _send(self.out, ("error", name, str(exc)))
            raise _Stop from exc
        self.folds.append((run_id, items, range(first_seq, first_seq + len(items))))
        if terminal:
            # The parent reads the run's result at rest next: fold everything first.
            while self.folds:
                self._fold_slice()
        _send(self.out, ("ok",))

    def _fold_slice(self) -> None:
        run_id, items, seqs = self.folds[0]
        piece, rest = items[:_FOLD_SLICE], items[_FOLD_SLICE:]
        if rest:
            self.folds[0] = (run_id, rest, seqs[_FOLD_SLICE:])
        else:
            self.folds.popleft()
        try:
            self.store._child_fold(run_id, piece, seqs[: len(piece)])
        except Exception as exc:  # the fold is a cache of the log: a read folds it again
            log.warning("store.writer_process_fold_failed", path=self.store.path, error=str(exc))
            self.store._forget_folder(run_id)


class _Stop(Exception):
    """The child stops after a batch failed."""


def main(argv: list[str]) -> None:
    # Ctrl-C reaches the whole process group: the parent decides how the run stops, and
    # this process finishes the batch it holds and ends when the parent closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    path, busy_timeout_s = argv
    child = _Child(path, float(busy_timeout_s))
    try:
        child.run()
    except _Stop:
        sys.exit(1)
    finally:
        child.store.close()


if __name__ == "__main__":
    main(sys.argv[1:])
