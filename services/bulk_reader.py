"""A bulk file read, decoded and validated in a process of its own while this process writes.

Why: ``idgraph ingest`` reads and validates the next batch on its main thread while a writer
thread commits the batch before (:class:`services.bulk._CommitPipeline`). The writer's SQLite
calls release the GIL, but they are many and short, and each time it wants the GIL back it
waits for the reader's Python: measured at 1M identifiers (stop 51), the two threads hardly
overlapped (wall = CPU + 2 s; the reader ~38 s, the writer ~71 s of ~111 s CPU). A process has
a GIL of its own: the reading (JSON decoding, row certification, normalization, the PII scan)
moves to the machine's other core.

What stays in the ingesting process: preparing a batch (keyed hashes, message digests, data
keys made ahead in the key file) and committing it. The reader process holds the policies, the
PII scanner and the limits, built from the settings (``validation_builder``, the bootstrap's
:func:`bootstrap.validation.reader_validation`), and no store and no key: it never writes.

How:

* **a fresh interpreter, not a fork** (its imports and policies take ~1 s): forking a process
  that holds open databases and threads is unsafe, and a forked child's memory would be
  counted twice by every RSS figure;
* **one pipe**: the reader sends each chunk (:class:`services.bulk_rows.RowChunk`) as one
  message. An event that carries only identifiers (most bulk rows) travels as a plain tuple and
  is rebuilt here (3x cheaper than unpickling the dataclasses); any other event, and every
  rejected row, is pickled as it is. The pipe is widened to :data:`PIPE_BYTES` where the system
  allows, so the reader runs a few chunks ahead; beyond that its send blocks, which bounds
  memory;
* **errors**: a :class:`~services.bulk_rows.BulkFileError` raised there (an unknown CSV column)
  is raised here with its message, and so is a configuration error (a policy file or the PII
  scanner refusing the settings, when the first row with traits builds it). Any other
  exception is reported by its type only (its message could quote a value of the file); a
  reader that dies (killed, out of memory) raises a :class:`~services.bulk_rows.BulkFileError`
  with its exit code. When this side stops early (a
  failed commit, an interrupt), the reader is terminated, never left running.

Privacy: normalized identifiers cross the pipe in memory, as they crossed between the two
threads before; nothing is written to a file.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from identity.errors import ConfigurationError, PolicyFileError
from identity.identifiers import NormalizedIdentifier
from identity.model import IdentityEvent
from services.bulk_rows import (
    BulkFileError,
    FileFormat,
    RowChunk,
    RowError,
    validated_chunks,
)
from services.event_validation import EventValidation
from services.gc_policy import collected_every

# The pipe's capacity asked for (Linux: F_SETPIPE_SZ; an unprivileged process may get up to
# /proc/sys/fs/pipe-max-size, 1 MiB by default). A chunk of 500 identifier-only rows is
# ~120 KiB, so the reader can be ~8 chunks ahead while this process prepares a batch.
PIPE_BYTES = 1 << 20
# Chunks sent between two young-generation collections in the reader (see _read).
_CHUNKS_PER_COLLECTION = 40
# How long a reader whose pipe closed may take to exit before its exit code is read.
_EXIT_WAIT_S = 5.0

_Message = tuple[Any, ...]


def _widen(connection: Connection) -> None:
    """Ask for a pipe of :data:`PIPE_BYTES` (where the platform allows; the default, 64 KiB,
    works too, with the reader less far ahead)."""
    try:
        import fcntl  # POSIX only: imported where it is used

        fcntl.fcntl(connection.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, AttributeError, OSError):
        pass


def _compact(item: IdentityEvent | RowError) -> object:
    """What crosses the pipe for one row: an identifier-only event as a flat tuple."""
    if type(item) is IdentityEvent and not item.facts and not item.consents:
        flat: list[object] = [item.source, item.occurred_at, item.message_id]
        for identifier in item.identifiers:
            flat += (identifier.type, identifier.value)
        return tuple(flat)
    return item


def _rebuilt(item: Any) -> IdentityEvent | RowError:
    """The row :func:`_compact` sent."""
    if type(item) is not tuple:
        return item  # type: ignore[no-any-return]
    return IdentityEvent(
        tuple(map(NormalizedIdentifier, item[3::2], item[4::2])),
        item[0],
        item[1],
        (),
        (),
        item[2],
    )


def _read(
    connection: Connection,
    builder: Callable[[], EventValidation],
    path: str,
    file_format: FileFormat,
    default_source: str | None,
    chunk_rows: int,
) -> None:
    """The reader process: validate the file's rows and send them, chunk by chunk, then
    ``("done", peak RSS in KiB or None)``; or ``("error", message)`` / ``("failed", type
    name)``."""
    try:
        validation = builder()
        # What was built is alive for the whole file: out of the collector's reach. The rows'
        # objects form no cycles and are freed by reference counting once sent (see
        # services.gc_policy); the young generation is still collected now and then, so a
        # cycle made by accident cannot pile up.
        gc.collect()
        gc.freeze()
        chunks = validated_chunks(validation, Path(path), file_format, default_source, chunk_rows)
        with collected_every(_CHUNKS_PER_COLLECTION) as sent:
            for chunk in chunks:
                connection.send(("chunk", chunk.bytes_read, [_compact(i) for i in chunk.items]))
                sent()
        message: _Message = ("done", _own_peak_rss_kib())
    except (BulkFileError, PolicyFileError, ConfigurationError) as exc:
        # A configuration error (the scanner, built by the first row with traits, refuses the
        # categories' entity names or its model files) names settings and files, never a value.
        message = ("error", str(exc))
    except (BrokenPipeError, KeyboardInterrupt):
        return  # the ingesting process is gone or stopping: nobody to tell
    except Exception as exc:  # noqa: BLE001 - reported by type, without a message that may hold a value
        message = ("failed", type(exc).__name__)
    with contextlib.suppress(BrokenPipeError, OSError):
        connection.send(message)
    connection.close()


def _own_peak_rss_kib() -> int | None:
    """This process's own peak resident set (``VmHWM``), in KiB; None where ``/proc`` has none.

    Not ``getrusage``'s ``ru_maxrss``: at ``exec`` Linux folds the high-water mark of the
    memory it replaces (the parent's, shared until then) into that figure, so a reader started
    by a 400 MiB process would report at least 400 MiB whatever it holds itself."""
    try:
        with Path("/proc/self/status").open(encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class ReaderChunks:
    """The chunks the reader process sends, rebuilt, in order (iterate once); once the reader
    said it is done, :attr:`peak_rss_kib` is its own peak resident set (None until then, or
    where the system does not tell it)."""

    def __init__(self, connection: Connection, process: subprocess.Popen[bytes]) -> None:
        self._connection = connection
        self._process = process
        self.peak_rss_kib: int | None = None

    def __iter__(self) -> Iterator[RowChunk]:
        return self._received()

    def _received(self) -> Iterator[RowChunk]:
        """Until the reader says it is done; raises what it reports, or
        :class:`BulkFileError` when it stops without a word."""
        connection, process = self._connection, self._process
        while True:
            try:
                message = connection.recv()
            except EOFError:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(_EXIT_WAIT_S)
                raise BulkFileError(
                    "the bulk file's reader process stopped before the end of the file "
                    f"(exit code {process.returncode}); the batches committed before it stopped "
                    "are kept, and a rerun of the file applies only the rest"
                ) from None
            kind = message[0]
            if kind == "chunk":
                yield RowChunk([_rebuilt(i) for i in message[2]], message[1])
            elif kind == "done":
                self.peak_rss_kib = message[1]
                return
            elif kind == "error":
                raise BulkFileError(message[1])
            else:
                raise BulkFileError(
                    f"the bulk file's reader process failed ({message[1]}); the batches committed "
                    "before are kept, and a rerun of the file applies only the rest"
                )


# What the reader process runs: the parent's import path first (a pickled list of strings,
# which imports nothing), so that the pickled builder and this module import in the child as
# they do here; then main().
_BOOT = (
    "import pickle, sys; sys.path[:0] = pickle.load(sys.stdin.buffer); "
    "from services.bulk_reader import main; main()"
)


def main() -> None:
    """The reader process's entry (see :data:`_BOOT`): ``argv[1]`` is the pipe's descriptor;
    the rest of what :func:`_read` needs comes pickled on standard input."""
    connection = Connection(int(sys.argv[1]), readable=False)
    # Pickle from standard input: the bytes come from the parent process alone, through a pipe
    # only it holds (the builder is a function, which JSON could not carry).
    builder, path, file_format, default_source, chunk_rows = pickle.load(sys.stdin.buffer)  # noqa: S301
    sys.stdin.close()
    _read(connection, builder, path, file_format, default_source, chunk_rows)


@contextlib.contextmanager
def reader_process(
    builder: Callable[[], EventValidation],
    path: Path,
    file_format: FileFormat,
    default_source: str | None,
    chunk_rows: int,
) -> Iterator[ReaderChunks]:
    """:func:`services.bulk_rows.validated_chunks` of ``path``, computed in a process of its
    own that validates with ``builder()`` (a picklable callable). The process is stopped when
    the block ends, whether or not every chunk was read.

    Started as a fresh interpreter (``sys.executable -c``), not with ``multiprocessing``'s
    spawn, which imports the caller's main module again in the child: a script without an
    ``if __name__ == "__main__"`` guard would then run twice."""
    receiving, sending = multiprocessing.Pipe(duplex=False)
    _widen(sending)
    try:
        process = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
            [sys.executable, "-c", _BOOT, str(sending.fileno())],
            stdin=subprocess.PIPE,
            pass_fds=(sending.fileno(),),
        )
    finally:
        sending.close()  # the reader's end: this process keeps only its own
    try:
        assert process.stdin is not None  # noqa: S101 - stdin=PIPE above
        with contextlib.suppress(BrokenPipeError):  # a reader that died says so by its EOF
            pickle.dump(list(sys.path), process.stdin)
            pickle.dump(
                (builder, str(path), file_format, default_source, chunk_rows), process.stdin
            )
            process.stdin.close()
        yield ReaderChunks(receiving, process)
    finally:
        receiving.close()
        # A reader that is done exits by itself; one that is not (this side stopped early) is
        # told to stop. Either way nothing is left running once the block ends.
        if process.poll() is None:
            process.terminate()
        process.wait()
