"""The audit log: append-only and hash-chained, so edits and deletions are detectable.

Every policy decision, consent change and DSR step is recorded as an :class:`AuditEntry`.

How the chain works
-------------------
Each entry's ``digest`` is SHA-256 over a canonical JSON encoding of all its other fields,
*including* its ``seq`` and the previous entry's digest (``prev_digest``; the first entry's is
:data:`GENESIS_DIGEST`, 32 zero bytes in hex). So every digest commits to the entry *and to the
whole history before it*:

* **editing** any field of an entry (without recomputing) breaks that entry's own digest;
* **re-hashing** an edited entry breaks the link to its successor (whose ``prev_digest`` still
  names the original);
* **deleting** an entry leaves a gap in ``seq`` and a successor whose ``prev_digest`` names a
  digest that is no longer there;
* **reordering** (changing ``seq``) breaks the digests, because ``seq`` is hashed.

:meth:`SqliteAuditLog.verify` recomputes the chain in ``seq`` order, in batches (constant memory,
so it runs on millions of entries), and reports the first problem.

What it does not detect
-----------------------
* **Truncation of the tail.** Deleting the newest entries leaves a shorter chain that is valid.
* **A full rewrite.** SHA-256 has no key: whoever can write the file can rewrite every entry from
  the edit onward with fresh digests, and the result verifies.

Both are caught by an **external anchor**: record :meth:`SqliteAuditLog.head` (``seq`` and
``digest`` of the newest entry) somewhere the database's writers cannot change (a ticket, a
WORM bucket, a signed message to another team, a daily log line shipped off-host), and pass it to
``verify(anchor=...)``: the chain must still contain that ``seq`` with that ``digest``. Everything
up to an anchor is then tamper-evident; only entries after the newest anchor are not.

Why plain SHA-256 and not an HMAC: verification must not need a secret (an auditor, or the
access-request export, checks it with the file alone), and a key kept on the same host would not
stop the attacker who can rewrite the file anyway. Anchoring is what makes rewrites evident.

Digest input: ``b"idgraph-audit/1\\x00" + canonical JSON``. The prefix separates this use of
SHA-256 from any other (no audit digest can collide by construction with a digest of the same
JSON made for another purpose) and versions the format. Canonical JSON: keys sorted, no
whitespace, UTF-8, no NaN; details values are restricted to strings, integers, booleans, null
and lists of strings/integers, because floats do not encode identically across languages and an
independent verifier must be able to reproduce every byte.

Privacy
-------
The log outlives most other data (it is the proof of what was done), so it must not hold
personal data: ``person_id`` holds :func:`person_ref` of the person id (never the id itself, so
an erased person's id survives nowhere), ``actor`` is ``key_<API key id>`` or ``cli``, and
``details`` only counts, enums and opaque ids. **Raw identifiers or attribute values must never
be put in ``details`` (or ``reason``).**

Details are typed, so that an identifier cannot enter them by construction:

* **ids and references** are :class:`AuditRef` (key ids, request ids, erasure ids, person refs),
  and a list of them (an audience page's person references) is one :class:`AuditRefs`:
  a token of ``A-Z a-z 0-9 _ . : -`` that contains a letter. That shape excludes every raw
  identifier the backstop below looks for (an email needs ``@``, a phone number is digits,
  spaces and ``+()``), so an id is checked by its shape and never by the phone heuristic, which
  took ids with all-digit parts (``hk-20261202-355274``) for phone numbers and failed reads;
* **enums** (:class:`enum.Enum` members) are stored as their value: they are fixed in code;
* **counts and flags** are integers, booleans and null;
* **free text** is every plain ``str``: only free text, and ``reason``, go through the PII
  backstop, which refuses (:class:`ValueError`) any string the log redaction filter
  (:mod:`privacy.scanning.redaction`, ``EMAIL_LIKE``/``PHONE_LIKE``) would scrub.

The top-level tokens (``actor``, ``action``, ``purpose``, ``person_id``) are checked by shape the
same way: ``actor`` and ``person_id`` must contain a letter, ``action`` and ``purpose`` start with
one. After an erasure the reference in old entries points at nothing.

The table also has triggers that refuse ``UPDATE`` and ``DELETE``: they stop accidents (an
operator's ad-hoc SQL), not an attacker, who can drop them; the chain is what catches that.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from json.encoder import encode_basestring
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal, NamedTuple, Protocol

from identity.bounded import BoundedMap
from identity.errors import ConfigurationError, StoreUnavailableError
from identity.frozen import quick_init
from identity.group_commit import Arrival, GroupCommitter
from privacy.scanning.redaction import redact_text
from storage.sqlite import open_migrated, transaction

GENESIS_DIGEST: Final = "0" * 64  # 32 zero bytes, hex: the prev_digest of entry 1
# 2: no per-person index (audit_log_person): see _SCHEMA. A version-1 file is migrated on open.
SCHEMA_VERSION: Final = 2
_DOMAIN: Final = b"idgraph-audit/1\x00"
_AT_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"
_MIN_SEQ: Final = -(2**63)
DEFAULT_VERIFY_BATCH: Final = 5_000
MAX_ENTRIES_LIMIT: Final = 10_000
# How long a group-commit writer waits at most for appends announced with coming() or
# announce(): about what eight profile reads take to arrive at 16 connections on the 1M graph
# (~1.3 ms apart on a quiet machine). Only while more announced callers are still busy than are
# queued (GroupCommitter's linger_for="half"): never when idle, and never until the last one,
# whose neighbours would then idle.
DEFAULT_GROUP_LINGER_S: Final = 0.010
# How many persons' references a log remembers (SqliteAuditLog.person_refs): a 1M audience has
# about 25k members, re-read page by page; ~300 B an entry, so ~30 MiB at most.
DEFAULT_REF_CACHE_SIZE: Final = 100_000

# Limits that keep "a small JSON dict of counts/ids" small.
MAX_DETAIL_KEYS: Final = 32
MAX_DETAIL_STRING: Final = 200
MAX_DETAIL_LIST: Final = 100
MAX_DETAILS_BYTES: Final = 4_096
MAX_REASON_CHARS: Final = 500
# JavaScript-safe integers: an independent verifier in any language reproduces them exactly.
_MAX_SAFE_INT: Final = 2**53 - 1

# An id token with at least one letter, or a hex digest of 128 bits or more: no email address
# (no "@") and no phone number (no letters, and E.164 caps it at 15 digits) has either shape.
# Or a date-stamped id: a calendar date (yyyy-mm-dd, yyyymmdd or yyyy-mmdd, years 1900-2099),
# then separated digit groups (``2026-1202-355274``, ticket ids of DSR tools): phone numbers are
# written from a country, area or trunk prefix, never from a calendar date and a separator.
_DATE_STAMPED = (
    r"(?:19|20)\d{2}[-.]?(?:0[1-9]|1[0-2])[-.]?(?:0[1-9]|[12]\d|3[01])(?:[-_.:]\d{1,20}){1,4}"
)
_REF = re.compile(
    r"[0-9a-f]{32,128}|(?=[0-9_.:\-]*[A-Za-z])[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}|" + _DATE_STAMPED
)
_ACTOR = _REF
_ACTION = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*){0,7}")
_PURPOSE = re.compile(r"[a-z][a-z0-9_.\-]{0,63}")
_PERSON_ID = re.compile(r"(?=[0-9_\-]*[A-Za-z])[A-Za-z0-9][A-Za-z0-9_\-]{0,127}")
_DETAIL_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")

Decision = Literal["allow", "deny"]
Problem = Literal["edited", "deleted", "reordered"]
DetailScalar = str | int | bool | None | Enum
DetailValue = DetailScalar | Sequence[str | int | Enum]

_COLUMNS: Final = (
    "seq, at, actor, action, purpose, person_id, decision, reason, details, prev_digest, digest"
)
# Entries per INSERT statement of an append (11 values each: far below SQLite's variable limit).
_INSERT_ROWS: Final = 64


@functools.lru_cache(maxsize=_INSERT_ROWS)
def _insert_sql(rows: int) -> str:
    """``INSERT`` of ``rows`` entries in one statement (placeholders only)."""
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    return f"INSERT INTO audit_log ({_COLUMNS}) VALUES {values}"  # noqa: S608 - constant column list


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS audit_log (
    seq         INTEGER PRIMARY KEY,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    purpose     TEXT,
    person_id   TEXT,
    decision    TEXT,
    reason      TEXT NOT NULL,
    details     TEXT NOT NULL,
    prev_digest TEXT NOT NULL,
    digest      TEXT NOT NULL
);
-- Schema 2 dropped the (person_id, seq) index of schema 1. Person references are keyed
-- digests, so every entry landed on a random leaf page of it: with ten reads per group commit,
-- ten index pages were rewritten (WAL, then checkpoint) per commit, about 10 KiB per read and
-- two thirds of the writer's SQLite CPU. Nothing the service runs used it: an access request
-- lists a person's entries with mentioning(), which scans the log anyway (an entry may name the
-- person in details.refs, which no index covers), and entries(person_id=...) scans the same way.
DROP INDEX IF EXISTS audit_log_person;

CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
"""


class AuditLogUnavailableError(StoreUnavailableError):
    """The audit-log file cannot be opened or refused an operation."""

    code = "audit-log-unavailable"


class AuditRef(str):
    """An id or reference for audit details: checked by its shape, not by the PII heuristic.

    ``AuditRef(value)`` raises :class:`ValueError` unless ``value`` is 1-128 characters of
    ``A-Z a-z 0-9 _ . : -`` with at least one letter, or a lowercase hex digest of 32-128
    characters (a SHA-256 proof). No email address (it needs ``@``) and no phone number (digits
    and ``+ ( )`` and spaces only, at most 15 digits in E.164) has either shape, so wrapping an
    id in it cannot smuggle a raw identifier in; and an id with digit runs
    (``hk-20261202-355274``) is not refused as a phone number, which free text with the same
    digits would be.
    """

    __slots__ = ()

    def __new__(cls, value: str) -> AuditRef:
        """Validate ``value``'s shape (see the class docstring)."""
        if not isinstance(value, str) or not _REF.fullmatch(value):
            raise ValueError(
                "an audit reference must be 1-128 of A-Z a-z 0-9 _ . : - with at least one "
                "letter, or a hex digest (a bare digit run could be a phone number)"
            )
        return super().__new__(cls, value)


# A list of person references (person_ref: "r_" and 24 hex), joined by NUL: one match checks a
# whole audience page's list (AuditRefs); any other list is checked reference by reference.
_PERSON_REF_LIST = re.compile(r"r_[0-9a-f]{24}(?:\x00r_[0-9a-f]{24})*")


class AuditRefs(tuple[str, ...]):
    """A list of ids or references for audit details, checked by shape once, as a whole.

    ``AuditRefs(values)`` holds ``values`` as plain strings and raises :class:`ValueError` unless
    each has the :class:`AuditRef` shape (a person reference list, ``r_`` and 24 hex each, is
    checked with one match over the whole list). Stored exactly as a list of
    :class:`AuditRef`: a JSON array of strings (the stored format does not change).

    Why a type of its own: an audience page names up to a thousand persons by their references.
    Typed one by one (an :class:`AuditRef` each) they were ~25k objects of a Python class per
    warm 1M audience read, each tracked by the cyclic collector, then checked and copied back to
    ``str`` item by item for the entry; a list typed once is one object per list, and its items
    stay the plain strings :meth:`SqliteAuditLog.person_refs` returns.
    """

    __slots__ = ()

    def __new__(cls, values: Iterable[str] = ()) -> AuditRefs:
        """Check the shape of ``values`` (see the class docstring); keep them as plain str."""
        # str.__str__ raises TypeError for anything but a str, and gives a subclass's plain
        # value (the very object for a plain str: no copy).
        try:
            items = tuple(map(str.__str__, values))
        except TypeError:
            raise ValueError("audit references must be strings") from None
        shaped = not items or _PERSON_REF_LIST.fullmatch("\x00".join(items))
        if not shaped and not all(map(_REF.fullmatch, items)):
            raise ValueError(
                "an audit reference must be 1-128 of A-Z a-z 0-9 _ . : - with at least one "
                "letter, or a hex digest (a bare digit run could be a phone number)"
            )
        return super().__new__(cls, items)


def is_audit_ref(value: str) -> bool:
    """Whether ``value`` has the shape of an :class:`AuditRef` (for checks at intake)."""
    return _REF.fullmatch(value) is not None


def audit_ref_or_text(value: str) -> AuditRef | str:
    """``value`` typed as an :class:`AuditRef` where it has that shape, else as free text.

    For caller-chosen ids admitted before the reference shape existed (a short digit run such as
    ``0042``): free text goes through the PII backstop, which such a short run passes.
    """
    # One match of the shape, not two (a check, then the constructor's own): a profile read
    # types its consent record id this way on every read.
    try:
        return AuditRef(value)
    except ValueError:
        return value


def _refuse_pii(name: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"audit {name} is not valid Unicode (lone surrogate)") from None
    # The same judgement as the log redaction filter: anything it would scrub as an email
    # address or phone number is refused here. The message names the field, never the value.
    if redact_text(text) != text:
        raise ValueError(
            f"audit {name} looks like an email address or phone number; raw identifiers and "
            "values must never be written to the audit log"
        )


def _check_token(name: str, value: str, pattern: re.Pattern[str]) -> None:
    # Tokens are checked by shape only: the patterns admit no "@", no "+", no spaces, and the
    # actor and person id need a letter, so no email address or phone number fits any of them.
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(
            f"audit {name} is not a valid token (pattern {pattern.pattern}; a bare digit run "
            "could be a phone number)"
        )


# Detail keys already checked against _DETAIL_KEY: they are names in code (a few dozen), so the
# set stays small; bounded all the same, a key beyond the bound is simply checked every time.
_DETAIL_KEYS_SEEN: set[str] = set()
_DETAIL_KEYS_REMEMBERED: Final = 1_024


def _check_detail_key(key: object) -> None:
    if not isinstance(key, str) or not _DETAIL_KEY.fullmatch(key):
        raise ValueError("audit details keys must be snake_case tokens")
    if len(_DETAIL_KEYS_SEEN) < _DETAIL_KEYS_REMEMBERED:
        _DETAIL_KEYS_SEEN.add(key)


_JUST_REFS: Final = frozenset({AuditRef})


def _simple_details(details: Mapping[str, object]) -> tuple[Mapping[str, DetailValue], str] | None:
    """:func:`_freeze_details` of the usual details (a read's counts and record reference), or
    ``None`` to take the general path.

    Usual means: a plain dict of keys already checked (snake_case, in ``_DETAIL_KEYS_SEEN``)
    whose values are ``None``, counts (``int``, not ``bool``), :class:`AuditRef`, lists of
    :class:`AuditRef` or :class:`AuditRefs` (at most ``MAX_DETAIL_LIST``). Their
    canonical JSON needs no encoder: a key or a reference has only characters JSON writes as
    themselves (the key and reference patterns admit no quote, backslash, control or non-ASCII
    character) and an ``int`` is written as its decimal form, so the text built here is
    byte-for-byte what ``_dumps`` writes (property-tested against it). Every profile read
    audits such details; the encoder's sorted dump cost more than the rest of the draft.
    """
    if type(details) is not dict:
        return None
    frozen: dict[str, DetailValue] = {}  # in the caller's order, as the general path keeps it
    parts: list[tuple[str, str]] = []
    for key, value in details.items():
        if key not in _DETAIL_KEYS_SEEN:
            return None
        kind = type(value)
        if kind is int:
            if abs(value) > _MAX_SAFE_INT:
                return None  # the general path names the problem
            frozen[key] = value
            parts.append((key, f'"{key}":{value}'))
        elif value is None:
            frozen[key] = None
            parts.append((key, f'"{key}":null'))
        elif kind is AuditRef:
            plain = str.__str__(value)
            frozen[key] = plain
            parts.append((key, f'"{key}":"{plain}"'))
        elif kind is AuditRefs and len(value) <= MAX_DETAIL_LIST:
            # Checked as a whole when it was made; its items are plain strings already.
            plains = tuple(value)
            frozen[key] = plains
            listed = '","'.join(plains).join(('["', '"]')) if plains else "[]"
            parts.append((key, f'"{key}":{listed}'))
        elif (kind is list or kind is tuple) and len(value) <= MAX_DETAIL_LIST:
            # A list of references (an audience page's person refs): each was shape-checked
            # when it was made, so it needs neither the PII backstop nor escaping. Checked and
            # copied with C-level maps (an audience page lists ~1,000 references: a Python loop
            # per reference was most of the page's draft work).
            if value and set(map(type, value)) != _JUST_REFS:
                return None
            plains = tuple(map(str.__str__, value))
            frozen[key] = plains
            listed = '","'.join(plains).join(('["', '"]')) if plains else "[]"
            parts.append((key, f'"{key}":{listed}'))
        else:
            return None
    parts.sort()
    text = "{" + ",".join(part for _, part in parts) + "}"
    # ASCII only, so the text's length is its size in bytes; too much: the general path says so.
    too_large = len(parts) > MAX_DETAIL_KEYS or len(text) > MAX_DETAILS_BYTES
    return None if too_large else (MappingProxyType(frozen), text)


def _freeze_details(details: Mapping[str, object]) -> tuple[Mapping[str, DetailValue], str]:
    """The checked details, read-only, and their canonical JSON text (what is stored and hashed)."""
    return _simple_details(details) or _checked_details(details)


def _checked_details(details: Mapping[str, object]) -> tuple[Mapping[str, DetailValue], str]:
    """:func:`_freeze_details` of any details: every value checked, any problem named."""
    if not isinstance(details, Mapping):
        raise ValueError("audit details must be a mapping")  # noqa: TRY004 - one error type per bad draft
    if len(details) > MAX_DETAIL_KEYS:
        raise ValueError(f"audit details may hold at most {MAX_DETAIL_KEYS} keys")
    frozen: dict[str, DetailValue] = {}
    for key, value in details.items():
        if key not in _DETAIL_KEYS_SEEN:
            _check_detail_key(key)
        # The usual detail, a count (not a bool: bool is an int subclass), checked inline.
        if type(value) is int:
            if abs(value) > _MAX_SAFE_INT:
                raise ValueError(
                    f"audit details.{key} is outside the integer range -(2**53-1)..2**53-1"
                )
            frozen[key] = value
            continue
        where = f"details.{key}"
        if isinstance(value, (list, tuple)):
            if len(value) > MAX_DETAIL_LIST:
                raise ValueError(f"audit {where} may hold at most {MAX_DETAIL_LIST} items")
            # AuditRefs: references, checked by shape when the list was made.
            frozen[key] = tuple(value) if type(value) is AuditRefs else _checked_list(where, value)
        else:
            _check_scalar(where, value)
            frozen[key] = _plain(value)  # type: ignore[assignment]  # checked by _check_scalar
    text = _dumps(frozen)
    if len(text.encode("utf-8")) > MAX_DETAILS_BYTES:
        raise ValueError(f"audit details encode to more than {MAX_DETAILS_BYTES} bytes")
    return MappingProxyType(frozen), text


def _checked_list(where: str, value: Sequence[object]) -> tuple[str | int, ...]:
    """The stored items of a list detail: each a string or integer, checked as a scalar."""
    items: list[str | int] = []
    for item in value:
        plain = _plain(item)
        if isinstance(plain, bool) or not isinstance(plain, (str, int)):
            raise ValueError(f"audit {where} items must be strings or integers")  # noqa: TRY004
        _check_scalar(where, item)
        items.append(plain)
    return tuple(items)


def _plain(value: object) -> object:
    """What is stored for a detail value: an enum's value, a reference as a plain string."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, AuditRef):
        return str.__str__(value)
    return value


def _check_scalar(where: str, value: object) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, AuditRef):
        return  # an id: its shape (128 characters at most) was checked on construction
    if isinstance(value, Enum):
        if isinstance(value.value, bool) or not isinstance(value.value, (str, int)):
            raise ValueError(f"audit {where} must be an enum with string or integer values")  # noqa: TRY004 - one error type per bad draft
        return  # an enum: its values are fixed in code
    if isinstance(value, int):
        if abs(value) > _MAX_SAFE_INT:
            raise ValueError(f"audit {where} is outside the integer range -(2**53-1)..2**53-1")
        return
    if isinstance(value, str):
        if len(value) > MAX_DETAIL_STRING:
            raise ValueError(f"audit {where} is longer than {MAX_DETAIL_STRING} characters")
        _refuse_pii(where, value)
        return
    # Floats are refused on purpose (see the module docstring); so is anything nested.
    raise ValueError(f"audit {where} must be a string, integer, boolean, null or list")


# Draft heads (actor, action, purpose, decision, reason) that passed _check_head: a service
# writes the same few over and over (every profile read of one API key for one purpose and
# reason), and the checks are a pure function of them. Bounded: a head beyond the bound is
# simply checked every time. (The person reference varies per entry: checked every time.)
_HEADS_SEEN: set[tuple[object, ...]] = set()
_HEADS_REMEMBERED: Final = 1_024


def _check_head(
    actor: str,
    action: str,
    purpose: str | None,
    person_id: str | None,
    decision: object,
    reason: str,
) -> None:
    _check_token("actor", actor, _ACTOR)
    _check_token("action", action, _ACTION)
    if purpose is not None:
        _check_token("purpose", purpose, _PURPOSE)
    if person_id is not None:
        _check_token("person_id", person_id, _PERSON_ID)
    if decision not in ("allow", "deny", None):
        raise ValueError("audit decision must be 'allow', 'deny' or None")
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        raise ValueError(f"audit reason must be a string of at most {MAX_REASON_CHARS} chars")
    _refuse_pii("reason", reason)
    if len(_HEADS_SEEN) < _HEADS_REMEMBERED:
        _HEADS_SEEN.add((actor, action, purpose, decision, reason))


@dataclass(frozen=True, slots=True)
class AuditDraft:
    """An entry to append; the log assigns ``seq``, ``at`` and the digests.

    Validated on construction (:class:`ValueError`): tokens have a fixed shape, ``reason`` and
    every free-text string in ``details`` are refused if they look like an email address or
    phone number (ids go in as :class:`AuditRef`, enums as enum members; see the module doc),
    ``details`` holds at most a few KiB of strings, integers, booleans, nulls and flat lists.
    **Never put raw identifiers or attribute values in ``details`` or ``reason``.**
    """

    actor: str
    action: str
    purpose: str | None = None
    person_id: str | None = None
    decision: Decision | None = None
    reason: str = ""
    details: Mapping[str, DetailValue] = field(default_factory=dict, hash=False)
    # The canonical JSON of ``details``, made once by the size check and reused by the append.
    _details_json: str = field(default="", init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        head = (self.actor, self.action, self.purpose, self.decision, self.reason)
        try:
            known = head in _HEADS_SEEN
        except TypeError:  # an unhashable value: not a head that passed the checks
            known = False
        if not known:
            _check_head(
                self.actor, self.action, self.purpose, self.person_id, self.decision, self.reason
            )
        elif self.person_id is not None:
            _check_token("person_id", self.person_id, _PERSON_ID)
        details, text = _freeze_details(self.details)
        object.__setattr__(self, "details", details)
        object.__setattr__(self, "_details_json", text)


@quick_init
@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One recorded entry. ``digest`` commits to every other field, ``prev_digest`` included."""

    seq: int
    at: datetime
    actor: str
    action: str
    purpose: str | None
    person_id: str | None
    decision: Decision | None
    reason: str
    details: Mapping[str, DetailValue] = field(hash=False)
    prev_digest: str
    digest: str


class AuditHead(NamedTuple):
    """The newest entry's ``seq`` and ``digest`` (``(0, GENESIS_DIGEST)`` for an empty log).

    Record it outside the database to make truncation and rewrites evident; see the module doc.
    """

    seq: int
    digest: str


@dataclass(frozen=True, slots=True)
class AuditVerification:
    """The result of :meth:`SqliteAuditLog.verify`.

    ``entries_checked`` counts the entries verified before the first problem (all, if ``ok``).
    ``problem`` is ``edited`` (an entry's content or digest changed, or a re-hashed entry no
    longer links to its successor), ``deleted`` (an entry is missing from the chain, or the
    anchor's ``seq`` is beyond the end) or ``reordered`` (an intact entry sits at another
    ``seq``); ``first_bad_seq`` is where the chain first breaks.
    """

    ok: bool
    entries_checked: int
    first_bad_seq: int | None
    problem: Problem | None


# One encoder, built once (json.dumps builds a new one per call with these options).
_ENCODER: Final = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def _dumps(value: object) -> str:
    """Canonical JSON: sorted keys, no whitespace, no NaN, non-ASCII kept (UTF-8 when hashed)."""
    return _ENCODER.encode(value)


def _json(value: object) -> str:
    """:func:`_dumps` of one column value, without the encoder's dispatch for the usual ones: a
    string goes through the very function the encoder uses for strings (``ensure_ascii=False``),
    ``None`` is ``null``; anything else through :func:`_dumps` (every entry hashes these)."""
    if type(value) is str:
        return encode_basestring(value)
    if value is None:
        return "null"
    return _dumps(value)


def _format_at(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("the audit clock must return timezone-aware datetimes")
    return at.astimezone(UTC).strftime(_AT_FORMAT)


def _parse_at(text: str) -> datetime:
    return datetime.strptime(text, _AT_FORMAT).replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


# A row as stored: (seq, at, actor, action, purpose, person_id, decision, reason, details,
# prev_digest, digest). Verification hashes what is stored, so nothing is parsed but details.
_Row = tuple[object, ...]


# The canonical encoding of an entry's hashed fields is written in three parts, each by one
# function below, so that the writer of a group commit (SqliteAuditLog._chained), which encodes
# the parts a group's entries share once, and verification (_prefix) cannot drift apart: both
# are made of these functions alone (review finding D7 of stop 36: they were written twice).
# Keys in sorted order, ``seq`` last: _head_text, then _middle_text, then _tail_text, then seq.


def _head_text(action: object, actor: object, at: object, decision: object) -> str:
    """The encoding up to the ``details`` value: ``{"action":…,"actor":…,"at":…,"decision":…,
    "details":`` (what a group's entries with one head and one ``at`` share)."""
    return (
        f'{{"action":{_json(action)},"actor":{_json(actor)},"at":{_json(at)},'
        f'"decision":{_json(decision)},"details":'
    )


def _middle_text(details: object, person_id: object, prev: object) -> str:
    """The ``details`` text (stored canonical JSON, hashed as stored), the person reference and
    the previous digest: what differs from one entry to the next."""
    return f'{details},"person_id":{_json(person_id)},"prev_digest":{_json(prev)}'


def _tail_text(purpose: object, reason: object) -> str:
    """The encoding after ``prev_digest`` up to the ``seq`` value (what entries with one purpose
    and reason share)."""
    return f',"purpose":{_json(purpose)},"reason":{_json(reason)},"seq":'


def _prefix(row: _Row) -> bytes | None:
    """The canonical encoding of ``row``'s hashed fields up to (not including) the seq value.

    Equal to ``_dumps`` of the fields as a dict (keys in sorted order, ``seq`` last) because
    the stored ``details`` text is itself canonical JSON; a row whose ``details`` text was
    changed in any way, even to equivalent JSON, no longer hashes the same (``edited``).
    ``None`` if a column holds something JSON cannot encode (a BLOB written by raw SQL).
    """
    _, at, actor, action, purpose, person_id, decision, reason, details, prev = row[:10]
    try:
        text = (
            _head_text(action, actor, at, decision)
            + _middle_text(details, person_id, prev)
            + _tail_text(purpose, reason)
        )
    except (TypeError, ValueError):
        return None
    return _DOMAIN + _utf8(text)


def _utf8(text: str) -> bytes:
    """``text`` as the digest hashes it: UTF-8, and bytes that are not UTF-8 (written by raw
    SQL) as the bytes they were (surrogateescape)."""
    return text.encode("utf-8", "surrogateescape")


def _digest_at(prefix: bytes, seq: int) -> str:
    return hashlib.sha256(prefix + b"%d}" % seq).hexdigest()


def _row_digest(row: _Row, seq: int) -> str | None:
    """The digest ``row`` should carry if it were at ``seq``; ``None`` if it cannot be hashed."""
    prefix = _prefix(row)
    return None if prefix is None else _digest_at(prefix, seq)


def _entry(row: _Row) -> AuditEntry:
    details = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in json.loads(str(row[8])).items()
    }
    return AuditEntry(
        seq=int(str(row[0])),
        at=_parse_at(str(row[1])),
        actor=str(row[2]),
        action=str(row[3]),
        purpose=None if row[4] is None else str(row[4]),
        person_id=None if row[5] is None else str(row[5]),
        decision=row[6],  # type: ignore[arg-type]  # only ever written from a Decision
        reason=str(row[7]),
        details=MappingProxyType(details),
        prev_digest=str(row[9]),
        digest=str(row[10]),
    )


class AuditLog(Protocol):
    """The audit log port: append-only and hash-chained (adapter: :class:`SqliteAuditLog`)."""

    def append(self, entries: Sequence[AuditDraft]) -> list[AuditEntry]:
        """Append ``entries`` in order, in one transaction; returns them as recorded."""
        ...

    def append_about(
        self, person_id: str, entries: Sequence[AuditDraft], *, create: bool = True
    ) -> list[AuditEntry]:
        """:meth:`append` of ``entries`` (which name no person) about ``person_id``: each is
        recorded with :meth:`person_ref` of it (``create`` as there), made by the log."""
        ...

    def record_about(
        self,
        person_id: str,
        entries: Sequence[AuditDraft],
        *,
        create: bool = True,
        shred_generation: int | None = None,
        arrival: Arrival | None = None,
    ) -> None:
        """:meth:`append_about` without the entries back (the same durability and errors).
        ``shred_generation``: the vault key file's shred generation the caller read before it
        read the person's data (:meth:`privacy.keys.vault.Vault.decrypt_and_generation`); the
        person's reference is then looked up as of it, without reading it again.
        ``arrival``: the caller's :meth:`announce` handle, ended here."""
        ...

    def announce(self) -> Arrival:
        """Announce an append that will come later, perhaps from another thread (or perhaps
        not): a concurrent group commit may wait a moment for it. Pass the handle to
        :meth:`record_about`, or withdraw it."""
        ...

    def coming(self) -> AbstractContextManager[None]:
        """Announce an :meth:`append` this thread will make within the block (or perhaps not):
        a concurrent group commit may wait a moment for it instead of committing without it."""
        ...

    def head(self) -> AuditHead:
        """The newest entry's ``(seq, digest)``; ``(0, GENESIS_DIGEST)`` when empty."""
        ...

    def entries(
        self, person_id: str | None = None, after_seq: int = 0, limit: int = 1_000
    ) -> list[AuditEntry]:
        """Up to ``limit`` entries with ``seq > after_seq``, oldest first; only ``person_id``'s
        if given. Page by passing the last ``seq`` returned as ``after_seq``.
        """
        ...

    def mentioning(self, ref: str, after_seq: int = 0, limit: int = 1_000) -> list[AuditEntry]:
        """Entries about the person ``ref`` (a :meth:`person_ref`): those whose ``person_id`` is
        ``ref`` and those listing it in ``details.refs`` (audience and feature pages, which name
        many persons per entry), oldest first; page like :meth:`entries`."""
        ...

    def verify(
        self, anchor: AuditHead | None = None, batch_size: int = DEFAULT_VERIFY_BATCH
    ) -> AuditVerification:
        """Recompute the chain in ``seq`` order, ``batch_size`` rows at a time (constant memory)."""
        ...

    def person_ref(self, person_id: str, *, create: bool = True) -> str:
        """The log's keyed reference to a person (never the person id itself). Without
        ``create``, no per-person key is made (for ids not known to exist)."""
        ...

    def person_refs(self, person_ids: Sequence[str], *, create: bool = True) -> dict[str, str]:
        """:meth:`person_ref` of each of ``person_ids`` (one key lookup for all), as plain
        strings (in details: :class:`AuditRefs` for a list of them)."""
        ...

    def person_ref_owners(self, person_ids: Sequence[str]) -> list[str]:
        """The vault owners whose data keys key ``person_ids``' references: an erasure shreds
        them, and the person's old entries can no longer be linked to the person id."""
        ...

    def close(self) -> None:
        """Close the connection."""
        ...


_EMPTY_HEAD: Final = AuditHead(0, GENESIS_DIGEST)


class _Pending(NamedTuple):
    """One append waiting for its group commit: its drafts and, for
    :meth:`SqliteAuditLog.append_about`, the person id they are about (kept in memory only until
    the writer has made its reference, never written) and whether its key may be made."""

    drafts: list[AuditDraft]
    subject: str | None
    create: bool
    # Whether the caller wants its entries back as recorded (record_about does not: a profile
    # read discards them, and building them was a tenth of the writer's work per entry).
    entries: bool = True
    # The vault key file's shred generation the caller read (record_about), or None: the
    # writer reads it for the subject's reference.
    generation: int | None = None


class SqliteAuditLog:
    """The audit log in its own SQLite file (mode 0600, WAL, ``synchronous=FULL``).

    Like the vault key store: one connection serialized by a lock, ``isolation_level=None``.
    ``synchronous=FULL`` because an audit entry for an action that happened must not be lost in a
    crash. Several instances (threads or processes) may append to one file: an append chains onto
    the tail of its own last commit, and one that another appender overtook collides on ``seq``
    and chains again onto the tail read under the write lock (see :meth:`_append_groups`).
    """

    def __init__(
        self,
        path: Path,
        clock: Callable[[], datetime] = _now,
        busy_timeout_ms: int = 10_000,
        person_ref_key: bytes | None = None,
        person_keys: PersonRefKeys | None = None,
        group_linger_s: float = DEFAULT_GROUP_LINGER_S,
        ref_cache_size: int = DEFAULT_REF_CACHE_SIZE,
    ) -> None:
        self.path = path
        self._clock = clock
        # None: this instance only verifies or lists (CLI, checks); writers pass the key.
        self._person_ref_key = person_ref_key
        # Per-person reference keys (shredded by erasure); without them, the shared key only.
        self._person_keys = person_keys
        # person id -> its reference under the shared key (a person with no reference of its
        # own: erased, or unknown and not to be made), a fixed function of the id. The persons'
        # own references are remembered by their source (VaultPersonRefKeys, valid per shred
        # generation). Kept as a plain str and typed as an AuditRef when handed out: an instance
        # of a class defined in Python is always tracked by the cyclic garbage collector (~25k
        # remembered AuditRefs set off full collections: 0.3-0.5 s CPU in a cold 1M audience).
        # Bounded, least recently used first (identity.bounded).
        self._refs: BoundedMap[str, str] = BoundedMap(ref_cache_size)
        # Owner-only, WAL, synchronous=FULL: an audit entry is on disk before it is reported.
        self._conn = open_migrated(
            path, busy_timeout_ms, AuditLogUnavailableError, "audit log", _SCHEMA, SCHEMA_VERSION
        )
        # A text column holding bytes that are not UTF-8 (raw SQL) must reach verify() as an
        # "edited" row, not fail the read: decode them losslessly instead of raising.
        self._conn.text_factory = _decode_text
        self._lock = threading.Lock()
        self._closed = False
        # The chain's tail as of this log's last commit (None: not known, read it under the
        # write lock). Only a guess another writer may have overtaken; see _append_groups.
        self._tail: AuditHead | None = None
        # A writer waits up to group_linger_s for appends announced with coming() (reads that
        # are still deciding or decrypting): with fast commits, 16 concurrent reads otherwise
        # made groups of 1.4 entries, one ~95 µs transaction and ~12 KiB written per read.
        # Half (stop 44): a writer waits only while more announced reads are still busy than
        # are queued. Waiting for every announced read (up to 2 ms) made groups of 3.5 reads on
        # a quiet machine at 16 connections (the reads behind it were always still coming), so
        # each read paid a third of a commit; waiting until half are queued lets the other half
        # keep the CPU busy meanwhile, and the groups grow to about half the reads in flight.
        self._group: GroupCommitter[_Pending, list[AuditEntry]] = GroupCommitter(
            self._append_groups, linger_s=group_linger_s, linger_for="half"
        )

    def coming(self) -> AbstractContextManager[None]:
        """Announce an :meth:`append` this thread will make within the block (see
        :meth:`identity.group_commit.GroupCommitter.coming`): a concurrent writer waits up to
        ``group_linger_s`` for it, so concurrent reads share a commit."""
        return self._group.coming()

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise AuditLogUnavailableError("the audit log is closed")
            try:
                with transaction(self._conn, begin, AuditLogUnavailableError, "audit log") as conn:
                    yield conn
            except sqlite3.Error as exc:  # an error inside the body: rolled back above
                raise AuditLogUnavailableError(f"audit log error: {exc}") from exc

    def append(self, entries: Sequence[AuditDraft]) -> list[AuditEntry]:
        """Append ``entries`` in order, in one transaction; returns them as recorded, once they
        are on disk.

        Group commit (:class:`~identity.group_commit.GroupCommitter`): the appends of concurrent
        callers (the reads of 16 connections, each auditing its decision) are written by one
        writer in one transaction with one fsync, chained in arrival order, instead of one
        fsync'd transaction each in a row. Each call still returns only after the commit that
        holds its entries (``synchronous=FULL``), so an acknowledged read's audit entry survives
        a crash as before. The entries of one call are contiguous and all or nothing.

        Two appenders (threads or processes) never chain onto the same tail: an append whose
        remembered tail was overtaken fails on ``seq`` (nothing written) and is chained again
        onto the tail read under the write lock. All entries of one transaction get the same
        ``at``.
        """
        drafts = list(entries)
        for draft in drafts:
            if not isinstance(draft, AuditDraft):
                raise TypeError("append takes AuditDraft instances")
        if not drafts:
            return []
        return self._group.submit(_Pending(drafts, None, create=False))

    def append_about(
        self, person_id: str, entries: Sequence[AuditDraft], *, create: bool = True
    ) -> list[AuditEntry]:
        """:meth:`append` of ``entries`` about ``person_id``: each is recorded with
        ``person_ref(person_id)`` (the drafts name no person themselves), computed by the writer
        of the group commit for all the group's persons at once.

        The same reference :meth:`person_ref` gives (``create`` as there), the same durability
        and ordering as :meth:`append`. Why: a profile read audits one entry about one person,
        and its reference needs the person's key from the vault, whose validity (no shred since
        the key was cached) is one key-file query; per group, 16 concurrent reads make one
        such query instead of sixteen. The person id itself is held in memory only until the
        writer has made its reference: it is never written.
        """
        return self._about(person_id, entries, create=create, recorded=True)

    def record_about(
        self,
        person_id: str,
        entries: Sequence[AuditDraft],
        *,
        create: bool = True,
        shred_generation: int | None = None,
        arrival: Arrival | None = None,
    ) -> None:
        """:meth:`append_about` for a caller that does not need the entries back: the same
        entries, references, durability (it returns once they are committed) and errors, but
        the writer does not build an :class:`AuditEntry` per entry (a profile read audits its
        decision and discards what the append returned).

        ``arrival``: the caller's :meth:`announce` handle, if it has one (ended here).

        ``shred_generation``: the vault key file's shred generation the caller read before it
        read the person's data (a profile read: :meth:`Vault.decrypt_and_generation
        <privacy.keys.vault.Vault.decrypt_and_generation>`). The person's reference is then
        looked up as of that generation instead of the key file being asked again: one key-file
        query per read, not two (since stop 37). The same reference the read would have had at the
        moment its data was decrypted; a person shredded before that generation has no
        reference of its own any more (its entries use the shared-key one, as after any
        erasure), and a shred after it does not undo a read that already happened.
        """
        self._about(
            person_id,
            entries,
            create=create,
            recorded=False,
            generation=shred_generation,
            arrival=arrival,
        )

    def announce(self) -> Arrival:
        """Announce an append that will come later (:meth:`GroupCommitter.announce
        <identity.group_commit.GroupCommitter.announce>`): a profile read announced where its
        request arrives, on the event loop, before the hand-over to a worker thread, so that a
        writer taking its group meanwhile waits for it (at most ``group_linger_s``)."""
        return self._group.announce()

    def _about(
        self,
        person_id: str,
        entries: Sequence[AuditDraft],
        *,
        create: bool,
        recorded: bool,
        generation: int | None = None,
        arrival: Arrival | None = None,
    ) -> list[AuditEntry]:
        """:meth:`append_about` (``recorded``: the entries are built and returned) or
        :meth:`record_about` (an empty list)."""
        if self._person_ref_key is None:
            raise ConfigurationError("this audit log was opened without the person-ref key")
        if not isinstance(person_id, str):
            raise TypeError("append_about takes a person id (str)")
        drafts = list(entries)
        for draft in drafts:
            if not isinstance(draft, AuditDraft):
                raise TypeError("append_about takes AuditDraft instances")
            if draft.person_id is not None:
                raise ValueError("the drafts of append_about name no person: the log adds it")
        if not drafts:
            return []
        return self._group.submit(
            _Pending(drafts, person_id, bool(create), recorded, generation), arrival
        )

    def _subject_refs(self, groups: Sequence[_Pending]) -> dict[tuple[str, bool], str]:
        """The references of the persons the group's entries are about (:meth:`append_about`),
        keyed by (person id, create): at most two key lookups for the whole group."""
        refs: dict[tuple[str, bool], str] = {}
        for create in (True, False):
            about = [p for p in groups if p.subject is not None and p.create is create]
            if about:
                # The newest generation the callers read, if every caller read one (a newer one
                # is as fresh for the older callers' reads): no key-file query for it then.
                seen = [p.generation for p in about]
                generation = None if None in seen else max(g for g in seen if g is not None)
                wanted = [p.subject for p in about if p.subject is not None]
                made = self._person_refs(wanted, create=create, generation=generation)
                # Plain strings (as _person_refs gives them): an entry's person column is a str.
                refs.update({(person, create): ref for person, ref in made.items()})
        return refs

    def _append_groups(self, groups: Sequence[_Pending]) -> list[list[AuditEntry]]:
        """Append each group of drafts, in order, in one transaction (the group commit's write).

        The chain's tail is known from this log's own last commit (``self._tail``), so the usual
        write is one statement: a multi-row ``INSERT`` in autocommit mode, which is its own
        transaction (write lock, insert, fsync'd commit: the same durability as
        ``BEGIN IMMEDIATE … COMMIT``), where it was four (``BEGIN IMMEDIATE``, the tail
        ``SELECT``, ``INSERT``, ``COMMIT``), each a GIL hand-over under concurrent reads. The
        remembered tail is only a guess: if another writer (another process or instance on the
        file) appended since, the first new ``seq`` is taken and the ``INSERT`` fails on the
        primary key, writing nothing; the tail is then read again under the write lock and the
        group chained onto it, as every append did before. Sequence numbers have no gaps and
        rows cannot be deleted (triggers), so an appender that is behind always collides. After
        any failure the tail is forgotten and read again on the next append.
        """
        # Outside the transaction: a person's first reference may make its key (a key-file
        # commit), which must not hold this file's write lock meanwhile.
        subjects = self._subject_refs(groups) if any(p.subject is not None for p in groups) else {}
        with self._lock:
            if self._closed:
                raise AuditLogUnavailableError("the audit log is closed")
            tail, self._tail = self._tail, None  # known again once this append has committed
            try:
                if tail is not None:
                    try:
                        results, rows, head = self._chained(tail, groups, subjects)
                        self._insert(rows)
                    except sqlite3.IntegrityError:
                        tail = None  # another writer appended since this log's last commit
                if tail is None:
                    with transaction(
                        self._conn, "BEGIN IMMEDIATE", AuditLogUnavailableError, "audit log"
                    ) as conn:
                        # Read inside BEGIN IMMEDIATE, which takes the write lock first: no other
                        # appender (thread or process) can chain onto the same tail meanwhile.
                        last = conn.execute(
                            "SELECT seq, digest FROM audit_log ORDER BY seq DESC LIMIT 1"
                        ).fetchone()
                        tail = AuditHead(int(last[0]), str(last[1])) if last else _EMPTY_HEAD
                        results, rows, head = self._chained(tail, groups, subjects)
                        self._insert(rows)
            except sqlite3.Error as exc:  # rolled back (the statement's, or the transaction's)
                raise AuditLogUnavailableError(f"audit log error: {exc}") from exc
            self._tail = head
        return results

    def _insert(self, rows: list[_Row]) -> None:
        """Write ``rows`` (``self._lock`` held): one multi-row ``INSERT`` per up to
        ``_INSERT_ROWS`` entries, all or nothing; in autocommit mode one statement is a
        transaction of its own, more than one get an explicit one."""
        conn = self._conn
        # One multi-row INSERT per up to _INSERT_ROWS entries rather than executemany, which
        # steps once per row: every step releases and retakes the GIL, a hand-over to another
        # thread whenever reads are waiting for it (16 concurrent profile reads always are).
        if len(rows) <= _INSERT_ROWS or conn.in_transaction:
            for start in range(0, len(rows), _INSERT_ROWS):
                chunk = rows[start : start + _INSERT_ROWS]
                conn.execute(_insert_sql(len(chunk)), [value for row in chunk for value in row])
            return
        with transaction(conn, "BEGIN IMMEDIATE", AuditLogUnavailableError, "audit log"):
            self._insert(rows)

    def _chained(
        self,
        tail: AuditHead,
        groups: Sequence[_Pending],
        subjects: Mapping[tuple[str, bool], str],
    ) -> tuple[list[list[AuditEntry]], list[_Row], AuditHead]:
        """The groups' entries chained onto ``tail``: as recorded, as rows to insert, and the
        new tail."""
        clock = self._clock()
        at = _format_at(clock)
        seq, prev = tail
        # The instant the stored text names (UTC, microseconds: what _parse_at(at) returns),
        # without parsing the text back (strptime cost a tenth of a lone append's CPU).
        at_time = clock.astimezone(UTC)
        results: list[list[AuditEntry]] = []
        rows: list[_Row] = []
        # The digest input of an entry is _prefix(row) + seq (see _row_digest), built here from
        # the same three parts _prefix joins (_head_text, _middle_text, _tail_text): what all
        # entries of a group with the same head share (the fields before ``details`` and those
        # after ``prev_digest``, ``at`` included) is encoded once per group, not eight _json
        # calls per entry. The same bytes, property-tested against _row_digest
        # (tests/privacy/auditing/test_audit_digest_parts.py).
        heads: dict[tuple[str, str, str | None], bytes] = {}
        tails: dict[tuple[str | None, str], bytes] = {}
        sha256 = hashlib.sha256
        for pending in groups:
            recorded: list[AuditEntry] = []
            subject = pending.subject
            ref = None if subject is None else subjects[(subject, pending.create)]
            for draft in pending.drafts:
                seq += 1
                actor, action, purpose = draft.actor, draft.action, draft.purpose
                decision, reason = draft.decision, draft.reason
                person = draft.person_id if ref is None else ref
                # Canonical text (tuples encode as arrays); stored as is, hashed as is.
                details = draft._details_json
                head = heads.get((action, actor, decision))
                if head is None:
                    head = heads[(action, actor, decision)] = _DOMAIN + _utf8(
                        _head_text(action, actor, at, decision)
                    )
                tail_part = tails.get((purpose, reason))
                if tail_part is None:
                    tail_part = tails[(purpose, reason)] = _utf8(_tail_text(purpose, reason))
                middle = _utf8(_middle_text(details, person, prev))
                digest = sha256(b"".join((head, middle, tail_part, b"%d}" % seq))).hexdigest()
                rows.append(
                    (
                        seq,
                        at,
                        actor,
                        action,
                        purpose,
                        person,
                        decision,
                        reason,
                        details,
                        prev,
                        digest,
                    )
                )
                if pending.entries:
                    recorded.append(
                        AuditEntry(
                            seq,
                            at_time,
                            actor,
                            action,
                            purpose,
                            person,
                            decision,
                            reason,
                            draft.details,
                            prev,
                            digest,
                        )
                    )
                prev = digest
            results.append(recorded)
        return results, rows, AuditHead(seq, prev)

    # -- reading -----------------------------------------------------------------------------

    def head(self) -> AuditHead:
        """The newest entry's ``(seq, digest)``; ``(0, GENESIS_DIGEST)`` when empty.

        Record it outside this database (see the module docstring) and pass it to
        :meth:`verify` later as ``anchor``.
        """
        with self._transaction("BEGIN") as conn:
            row = conn.execute("SELECT seq, digest FROM audit_log ORDER BY seq DESC LIMIT 1")
            tail = row.fetchone()
        return AuditHead(int(tail[0]), str(tail[1])) if tail else AuditHead(0, GENESIS_DIGEST)

    def entries(
        self, person_id: str | None = None, after_seq: int = 0, limit: int = 1_000
    ) -> list[AuditEntry]:
        """Up to ``limit`` entries with ``seq > after_seq``, oldest first; only ``person_id``'s
        if given (a scan of the log from ``after_seq``, like :meth:`mentioning`: no index on the
        person, which every append would pay for). Page by passing the last ``seq`` returned as
        ``after_seq``."""
        if not 1 <= limit <= MAX_ENTRIES_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_ENTRIES_LIMIT}")
        with self._transaction("BEGIN") as conn:
            if person_id is None:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608 - constant column list
                    (after_seq, limit),
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM audit_log "  # noqa: S608 - constant column list
                    "WHERE person_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                    (person_id, after_seq, limit),
                ).fetchall()
        return [_entry(tuple(row)) for row in rows]

    def mentioning(self, ref: str, after_seq: int = 0, limit: int = 1_000) -> list[AuditEntry]:
        """Entries whose ``person_id`` is ``ref`` or whose ``details.refs`` lists it (a scan of
        the log: an access request is rare, and an index on a JSON list would cost every append)."""
        if not 1 <= limit <= MAX_ENTRIES_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_ENTRIES_LIMIT}")
        with self._transaction("BEGIN") as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM audit_log WHERE seq > ? AND (person_id = ? OR ("  # noqa: S608 - constant column list
                "json_valid(details) AND json_type(details, '$.refs') = 'array' AND EXISTS "
                "(SELECT 1 FROM json_each(details, '$.refs') WHERE value = ?))) "
                "ORDER BY seq LIMIT ?",
                (after_seq, ref, ref, limit),
            ).fetchall()
        return [_entry(tuple(row)) for row in rows]

    def _batch(self, after: int, size: int) -> list[_Row]:
        # One short read transaction per batch: appends are not held up by a long verify, and
        # since the log only grows at the tail, the batches still form one consistent chain.
        with self._transaction("BEGIN") as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608 - constant column list
                (after, size),
            ).fetchall()
        return [tuple(row) for row in rows]

    # -- verification ------------------------------------------------------------------------

    def verify(
        self, anchor: AuditHead | None = None, batch_size: int = DEFAULT_VERIFY_BATCH
    ) -> AuditVerification:
        """Recompute the chain in ``seq`` order, ``batch_size`` rows at a time (constant memory).

        Stops at the first problem. With ``anchor`` (a :meth:`head` recorded earlier, outside
        this database), also checks that the chain still reaches ``anchor.seq`` with
        ``anchor.digest``: that is what detects truncation of the tail and a consistent rewrite.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        expected, prev, checked = 1, GENESIS_DIGEST, 0
        after = _MIN_SEQ  # not 0: rows moved to seq <= 0 must be seen too
        while batch := self._batch(after, batch_size):
            for row in batch:
                seq = int(str(row[0]))
                if seq != expected or row[9] != prev or _row_digest(row, seq) != row[10]:
                    first_bad, problem = self._classify(row, expected, prev)
                    return AuditVerification(False, checked, first_bad, problem)
                if anchor is not None and seq == anchor.seq and row[10] != anchor.digest:
                    # The chain is self-consistent up to here but differs from what was anchored:
                    # it was rewritten (with fresh digests) at or before this seq.
                    return AuditVerification(False, checked, seq, "edited")
                prev = str(row[10])
                expected += 1
                checked += 1
            after = int(str(batch[-1][0]))
        if anchor is not None and anchor.seq >= expected:
            # Entries up to the anchor existed once and are gone: the tail was truncated.
            return AuditVerification(False, checked, expected, "deleted")
        return AuditVerification(True, checked, None, None)

    def _classify(self, row: _Row, expected: int, prev: str) -> tuple[int, Problem]:
        """Name the problem found at ``row`` while expecting ``expected`` linked to ``prev``.

        Runs once, on failure only, so it may scan the table (a few seconds at 1M entries).
        """
        seq = int(str(row[0]))
        if seq < expected:
            # Only possible for the first row streamed: a row moved to seq <= 0.
            return seq, "reordered" if self._original_seq(row) is not None else "edited"
        if seq == expected:
            if _row_digest(row, seq) != row[10]:
                if self._original_seq(row) is None:
                    return seq, "edited"  # the content (or its digest) was changed
                # An intact row from elsewhere sits here: moved (reordered) or shifted down after
                # a deletion; the true successor of ``prev`` below tells which.
            else:
                # Self-consistent but linked to something else: the previous row was replaced and
                # re-hashed (or this row's link was): the chain breaks between the two.
                return max(expected - 1, 1), "edited"
        # Where is the entry that should be at ``expected`` (the one linking to ``prev``)?
        with self._transaction("BEGIN") as conn:
            successors = conn.execute(
                f"SELECT {_COLUMNS} FROM audit_log WHERE prev_digest = ?",  # noqa: S608 - constant column list
                (prev,),
            ).fetchall()
        for candidate in successors:
            if _row_digest(tuple(candidate), expected) == candidate[10]:
                return expected, "reordered"  # it exists, intact, at another seq
        return expected, "deleted"

    def _original_seq(self, row: _Row) -> int | None:
        """The ``seq`` at which ``row``'s stored digest verifies, if any other than its own.

        The canonical encoding ends with ``"seq":N}`` (``seq`` sorts last), so the prefix is
        hashed once and each candidate costs one SHA-256 finalisation (about a second per
        million entries).
        """
        prefix = _prefix(row)
        if prefix is None:
            return None
        base = hashlib.sha256(prefix)
        with self._transaction("BEGIN") as conn:
            top, count = conn.execute("SELECT max(seq), count(*) FROM audit_log").fetchone()
        own = int(str(row[0]))
        # Original seqs were 1..N with N <= current max + rows (a row can move down, not vanish).
        for candidate in range(1, int(top) + int(count) + 2):
            if candidate == own:
                continue
            attempt = base.copy()
            attempt.update(b"%d}" % candidate)
            if attempt.hexdigest() == row[10]:
                return candidate
        return None

    def person_ref(self, person_id: str, *, create: bool = True) -> str:
        """This log's keyed reference to ``person_id`` (see :func:`person_ref`)."""
        return self.person_refs([person_id], create=create)[person_id]

    def person_refs(self, person_ids: Sequence[str], *, create: bool = True) -> dict[str, str]:
        """Each person's own reference (:class:`PersonRefKeys`: stored in the vault key file).

        A person without one (erased: its reference was shredded, and a shredded one is never
        made again) gets :func:`person_ref` under the log's shared key instead: entries written
        about that id after the erasure do not link to the ones written before it. Without
        ``create`` a person that has none yet gets the shared-key reference too, and none is
        made: for ids a caller sent that are not known to exist (an unknown id must not grow the
        key file).

        The references are plain strings: a list of them goes into details as one
        :class:`AuditRefs` (checked as a whole), one alone as an :class:`AuditRef`.
        """
        return self._person_refs(person_ids, create=create)

    def _person_refs(
        self, person_ids: Sequence[str], *, create: bool, generation: int | None = None
    ) -> dict[str, str]:
        """:meth:`person_refs`; ``generation``: the key file's shred generation a caller read
        (see :meth:`record_about`), else the source reads it."""
        if self._person_ref_key is None:
            raise ConfigurationError("this audit log was opened without the person-ref key")
        wanted = list(set(person_ids))
        # Per-person references (stored in the vault key file; the source remembers them for
        # the key file's shred generation, so an erased person's is never handed out again).
        own = (
            self._person_keys.refs(wanted, create=create, generation=generation)
            if self._person_keys and wanted
            else {}
        )
        # Plain strings, not an AuditRef each (stop 45): an audience page puts its list of them
        # in details as one AuditRefs, checked by shape once for the whole list (an AuditRef
        # per member was ~25k objects the cyclic collector tracked per warm 1M audience read).
        refs: dict[str, str] = dict(own)
        if len(refs) == len(wanted):
            return refs
        shared = self._person_ref_key
        rest = [p for p in wanted if p not in refs]
        remembered = self._refs.get_many(rest)
        refs.update(remembered)
        if len(remembered) < len(rest):
            made = [(p, person_ref(p, shared)) for p in rest if p not in remembered]
            refs.update(made)
            self._refs.put_many(made)
        return refs

    def person_ref_owners(self, person_ids: Sequence[str]) -> list[str]:
        """The vault owners of ``person_ids``' reference keys (empty without per-person keys).

        Asked by an erasure before it shreds those owners: the persons' remembered references
        are dropped here too, so this process holds no link from an erased id to its old
        reference (one made elsewhere could never be handed out anyway, see ``__init__``).
        """
        self._refs.drop(person_ids)
        return self._person_keys.owners(person_ids) if self._person_keys else []

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()


def _decode_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


PERSON_REF_INFO = b"idgraph-audit-person-ref/1"


class PersonRefKeys(Protocol):
    """Per-person references (adapter: :class:`privacy.audit_refs.VaultPersonRefKeys`)."""

    def refs(
        self, person_ids: Sequence[str], *, create: bool = True, generation: int | None = None
    ) -> dict[str, str]:
        """Each person's own reference, made on first use (with ``create``) and durable before
        it is returned; erased persons (and, without ``create``, persons that have none yet)
        are absent. ``generation``: the vault key file's shred generation as a caller read it
        (remembered references are valid for it), or ``None`` to read it."""
        ...

    def owners(self, person_ids: Sequence[str]) -> list[str]:
        """The vault owners holding those references (what an erasure shreds)."""
        ...


def person_ref(person_id: str, key: bytes) -> str:
    """The audit log's reference to a person: ``r_`` + 24 hex of HMAC-SHA256(key, person id).

    Why not the person id itself: after an erasure nothing anywhere may contain the erased
    person's id (the hidden-state check greps every file for it), yet the audit log is
    append-only and must keep that reads and consent changes happened. Why keyed: person ids
    travel to downstream tools (audience pages), so with an unkeyed digest anyone who kept an
    erased person's id could find that person's audit history. ``key`` is the vault's reference
    subkey for ``PERSON_REF_INFO`` (:meth:`privacy.keys.vault.Vault.reference_key`): only a holder
    of
    the vault key file and the KEK computes it, and it does not change when the hash key or the
    KEK rotates, so an access request still finds old entries. Verification needs no key.
    """
    # One-shot HMAC (no HMAC object per reference): the same bytes as hmac.new(...).digest().
    digest = hmac.digest(key, person_id.encode(), "sha256").hex()
    return "r_" + digest[:24]


def api_key_actor(key_id: str) -> str:
    """The audit actor for an API key: ``key_<id>``.

    Why the prefix: key ids are 12 hex digits, and about one in 300 is all decimal digits, which
    the audit log's personal-data guard (the log redaction filter's phone pattern) would refuse
    as a phone number. A word character right before the digits keeps the pattern from matching.
    """
    return f"key_{key_id}"
