"""A bulk file's rows, read, decoded and validated: each an event or why it was rejected.

The reading half of :mod:`services.bulk` (which writes what is read here): it needs the event
validation (:class:`services.event_validation.EventValidation`) and nothing of the graph, so it
runs in the ingesting process or in a process of its own (:mod:`services.bulk_reader`).
See :mod:`services.bulk` for the formats and how a row without a ``message_id`` is named.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from identity.errors import BatchValidationError, IdGraphError, InputLimitError
from identity.model import IdentityEvent
from identity.strict_json import MalformedJsonError, loads_strict
from services.event_validation import EventValidation
from services.inputs import (
    IdentifyInput,
    IdentifyRequest,
    identify_input,
    pointer_from_location,
)

FileFormat = Literal["jsonl", "csv"]

# Rows validated (and PII-scanned) together. The NER model's cost per value falls steeply from
# one value per call to a few hundred (nlp.pipe); beyond that little is gained, and the scanner
# is held (its lock) for the whole chunk's new values.
SCAN_CHUNK_ROWS = 500


class BulkFileError(IdGraphError):
    """The file as a whole cannot be read (unknown CSV column, unreadable file)."""

    code = "bulk-file-invalid"


@dataclass(frozen=True, slots=True)
class RowError:
    """A rejected row: its line number and what is wrong (pointers and messages, no values)."""

    line: int
    problems: tuple[str, ...]


def detect_format(path: Path) -> FileFormat:
    """``csv`` for ``.csv`` files, ``jsonl`` otherwise."""
    return "csv" if path.suffix.lower() == ".csv" else "jsonl"


def _validation_problems(exc: ValidationError) -> tuple[str, ...]:
    # msg and loc only: pydantic's `input` would echo the raw value into the report.
    # The pointer leaves out keys that could be values (see pointer_from_location).
    return tuple(f"{pointer_from_location(e['loc'])}: {e['msg']}" for e in exc.errors()[:10])


def _jsonl_rows(
    lines: Iterable[tuple[int, bytes]],
) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    for line_no, raw in lines:
        if not raw.strip():
            continue
        try:
            row = loads_strict(raw)
        except MalformedJsonError as exc:
            yield (
                line_no,
                RowError(
                    line_no, (f"not valid JSON ({exc.reason} at {exc.pointer}: {exc.message})",)
                ),
            )
            continue
        if not isinstance(row, dict):
            yield line_no, RowError(line_no, ("each line must be a JSON object",))
            continue
        yield line_no, row


def _csv_rows(
    lines: Iterable[tuple[int, bytes]], known_types: Iterable[str]
) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    numbered = iter(lines)
    current = [0]

    def text() -> Iterator[str]:
        for line_no, raw in numbered:
            current[0] = line_no
            yield raw.decode("utf-8", errors="replace")

    reader = csv.reader(text())
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return
    known = set(known_types)
    columns: list[tuple[str, str | None]] = []  # (column kind, identifier type)
    for name in header:
        base = name.split(".", 1)[0]
        if name in {"source", "timestamp", "message_id"}:
            columns.append((name, None))
        elif base in known:
            columns.append(("identifier", base))
        else:
            raise BulkFileError(
                f"unknown CSV column {name[:40]!r}; expected source, timestamp, message_id or an "
                f"identifier "
                f"type ({', '.join(sorted(known))}), optionally suffixed like email.2"
            )
    for cells in reader:
        line_no = current[0]
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(columns):
            yield line_no, RowError(line_no, (f"expected {len(columns)} cells, got {len(cells)}",))
            continue
        row: dict[str, Any] = {"identifiers": []}
        for (kind, identifier_type), cell in zip(columns, cells, strict=True):
            if not cell.strip():
                continue
            if kind == "identifier":
                row["identifiers"].append({"type": identifier_type, "value": cell})
            else:
                row[kind] = cell.strip()
        yield line_no, row


def _lines(path: Path, read: list[int]) -> Iterator[tuple[int, bytes]]:
    """The file's lines, numbered from 1; ``read[0]`` counts the bytes read so far."""
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            read[0] += len(raw)
            yield line_no, raw


def _canonical_encoder() -> Callable[[Any], str]:
    """``json.dumps(value, sort_keys=True, separators=(",", ":"))`` as a function made once.

    Why: ``json.dumps`` with any non-default argument builds a ``JSONEncoder`` and then a new C
    encoder on every call, about a third of its cost for a bulk row (one call per row without a
    message id: 270,000 at 1M identifiers). The C encoder made here is the one ``dumps`` would
    make (same separators, key order, ASCII escapes, float and NaN handling); it keeps no state
    between calls. A row decoded from JSON cannot be circular, so it needs no circularity check
    (``markers``). Without the C accelerator (never on CPython) ``dumps`` itself is used.
    """
    if c_make_encoder is None:  # pragma: no cover - CPython always has the accelerator
        return lambda value: json.dumps(value, sort_keys=True, separators=(",", ":"))
    template = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
    encode = c_make_encoder(
        None,
        template.default,
        encode_basestring_ascii,
        None,
        template.key_separator,
        template.item_separator,
        template.sort_keys,
        template.skipkeys,
        template.allow_nan,
    )
    return lambda value: "".join(encode(value, 0))


_canonical_json = _canonical_encoder()


def _derived_message_id(row: dict[str, Any], line_no: int) -> str:
    """The message id of a row without one: its line and a digest of its content, so a rerun
    of the same file names every row the same way (and identical rows on two lines differ)."""
    # ASCII escapes: stable, and a lone surrogate in a cell cannot break the encoding.
    canonical = _canonical_json(row)
    return f"bulk:{line_no}:{hashlib.sha256(canonical.encode()).hexdigest()}"


def _request(
    row: dict[str, Any] | RowError, line_no: int, default_source: str | None
) -> IdentifyInput | RowError:
    if isinstance(row, RowError):
        return row
    if default_source and "source" not in row:
        row = {**row, "source": default_source}
    if "message_id" not in row and "messageId" not in row:
        row = {**row, "message_id": _derived_message_id(row, line_no)}
    # Most rows are certified without a model (identify_input); the rest go through it, so a
    # rejected row reads exactly as POST /v1/identify would answer it.
    certified = identify_input(row)
    if certified is not None:
        return certified
    try:
        return IdentifyInput.of(IdentifyRequest.model_validate(row))
    except ValidationError as exc:
        return RowError(line_no, _validation_problems(exc))


@dataclass(slots=True)
class RowChunk:
    """Rows read and validated together: per row, in file order, its event or why it was
    rejected (blank lines are not rows), and the bytes of the file read since the chunk
    before (for a progress bar)."""

    items: list[IdentityEvent | RowError]
    bytes_read: int


def validated_chunks(
    validation: EventValidation,
    path: Path,
    file_format: FileFormat,
    default_source: str | None,
    chunk_rows: int = SCAN_CHUNK_ROWS,
) -> Iterator[RowChunk]:
    """The rows of ``path`` in chunks of ``chunk_rows``, each row validated exactly as
    ``POST /v1/identify`` validates a body. Rows are validated a chunk at a time: the traits
    of a chunk's rows are PII-scanned as one batch (:meth:`EventValidation.events`), so the
    NER model runs once per chunk, not once per row. Raises :class:`BulkFileError` (an
    unknown CSV column) before the first chunk."""
    read = [0]
    lines = _lines(path, read)
    rows = (
        _jsonl_rows(lines)
        if file_format == "jsonl"
        else _csv_rows(lines, validation.identifier_types)
    )
    pending: list[tuple[int, IdentifyInput | RowError]] = []
    reported = 0
    for line_no, row in rows:
        pending.append((line_no, _request(row, line_no, default_source)))
        if len(pending) >= chunk_rows:
            yield RowChunk(_validated(validation, pending), read[0] - reported)
            reported = read[0]
            pending = []
    if pending or read[0] > reported:
        yield RowChunk(_validated(validation, pending), read[0] - reported)


def _validated(
    validation: EventValidation, chunk: list[tuple[int, IdentifyInput | RowError]]
) -> list[IdentityEvent | RowError]:
    """The chunk's rows as events, or as the problems that reject them (in line order)."""
    requests = [item for _, item in chunk if isinstance(item, IdentifyInput)]
    events = iter(validation.events(requests)) if requests else iter(())
    out: list[IdentityEvent | RowError] = []
    for line_no, item in chunk:
        result = next(events) if isinstance(item, IdentifyInput) else item
        if isinstance(result, InputLimitError):
            out.append(RowError(line_no, (f"{result.field}: {result.message}",)))
        elif isinstance(result, BatchValidationError):
            out.append(RowError(line_no, tuple(f"{e.field}: {e.message}" for e in result.errors)))
        else:
            out.append(result)
    return out
