"""Audience state of the SQLite graph store, materialized at write time (issue 14).

Tables maintained by triggers on ``facts``, ``consents`` and ``identifiers``, so that every
write path keeps them current in the writing transaction without knowing about them: ingest,
merges and splits (a node changing person), erasure (rows deleted dependants first), retention
(event facts expired or deleted), consent proof retention, a store copy:

* ``event_days``: per event name, person and UTC day, how many **active** events the person's
  nodes hold. A member scan's event rule reads these counters in person-id order instead of
  grouping the events by person on every scan (the per-data-version rebuild it replaces cost
  about a second at a million persons, on every first page after any write).
* ``event_latest`` (state 6): per event name and person, the times of the person's latest
  active events (up to :data:`LATEST_SLOTS`). A rule "at least k events since s" with k up to
  that many is one row and one comparison per person (``t<k> >= s``), where the counters are a
  row per person and day of the person's whole history; a rule of more events reads the
  counters. A row whose times an event taken off may have changed keeps them as upper bounds
  (``exact`` = 0), and its person is counted from the counters (see :func:`_fold_latest`).
* ``consent_current``: per person and purpose, the current plain consent decision derived from
  every record anchored to the person's nodes (the latest ``at`` of grants and denials, whether
  every record at that time grants, whether they disagree) and how many objection /
  compelling-grounds records there are; purpose ``"*"`` rows mark persons holding restriction
  records. A scan with ``MemberScan.consent_filter`` joins it to leave out persons whose consent
  cannot allow (:func:`identity.model.consent_exclusion` is the definition), without loading
  their records. Since state 5 each row also names its deciding record (``record_id``,
  ``signal``, ``recorded_at``: the first, by recorded time and id, of the records at the decided
  time that answer as the row does), so a kept person whose row is a plain grant is handed over
  as that grant (:class:`identity.model.ConsentGrant`, :func:`identity.model.consent_grant` is
  the definition) without reading its records either.
* ``consent_records`` (state version 2; one row per record since state 4): every consent record
  anchored to a person's nodes, keyed by (person, purpose, record id), as the JSON array a member
  page returns (``CONSENT_FIELDS``). A page reads the records of the persons it keeps from here,
  one seek per person in person-id order (the page's order), instead of joining each person's
  nodes to their records: those are clustered by node id, so a page of random person ids cost
  several random page reads per person, most of a cold scan's store time at a million persons.

``event_days``, ``event_latest`` and ``consent_current`` hold person ids, names, days, event
times and counts only (no identifier, hash or value); ``consent_records`` holds copies of
consent rows (record and node ids, times, source, signal, basis and proof digest: what the
``consents`` table holds, no raw value). An erasure deletes the person's facts and consents
first, which empties its rows (deleted with ``secure_delete``, as everything in this file).

Days are ``at // 86_400_000`` (UTC days of the millisecond times the store keeps; times before
1970 are not expected). An event rule's window starts inside a day (the boundary day). Each
``event_days`` row also holds bounds ``lo``/``hi`` of its events' times (state version 3): the
earliest and latest time of the events added to it, widened by every event added and left as
they are when events are taken off (then still bounds of what is left; finding the new span
would need a seek into the events). A boundary-day row with ``lo`` at or after the window's
start counts whole, one with ``hi`` before it not at all; only a person whose boundary-day row
straddles the start, and whose settled counters are not enough, is counted exactly from its
events (one index seek per node). Before the bounds, every person with boundary-day events and
too few later ones was (7,104 persons, a few random seeks each, in the 1M bench audience).

Both are keyed by the public person id, not the internal integer key (schema 7): a member scan
pages in person-id order, and ``(name, person_id, day)`` clustered is that order. The triggers
and the fill resolve a node's person through the integer keys (``facts.node`` →
``identifiers.pk``, ``identifiers.person`` → ``persons.pk``); consents still name their node
by ``node_id``.

The schema is idempotent (``IF NOT EXISTS``) and the tables are filled from the existing rows
once, when a file is first opened by a version that has them: ``meta`` key ``audience_state``
holds the state version filled (:data:`STATE_VERSION`; 1: counters and current consent, 2: also
the records, 3: the counters' time bounds, 4: a row per consent record, 5: the deciding record
of every current consent row, 6: the latest event times), so a file of an older
state gets what it lacks on open, in the opening's write transaction, without a graph schema
version of its own (from 2 to 3: the two columns, the counters filled again with their bounds in
one grouped pass over the events; from 3 to 4: ``consent_records`` made again, one row per
record, in one pass over the consents; from 4 to 5: three columns, every ``consent_current`` row
made again from the records in one grouped pass over the consents, ``_FILL_CURRENT``: person by
person, as up to stop 38, it took 59.6 s wall / 16.2 s CPU at load 9.5 on the 1M audience bench
graph, once; from 5 to 6: ``event_latest`` filled in one grouped pass over the events,
``_FILL_LATEST``: 10.7 s wall / 9.1 s CPU on that graph at load 3, once). An older idgraph's
writes keep ``event_latest`` too: its statements are in the counters' triggers. Every upgrade
replaces all the triggers: their bodies are derived code, and CREATE TRIGGER IF NOT EXISTS
would keep an old body. An older idgraph opening a file of a newer state keeps it current: the
triggers live in the file (under the names it knows, so it does not add its own beside them)
and fire on its writes too, and a
state 4 ``consent_records`` reads as before (the rows of a (person, purpose) joined by commas).
The schema 7 migration rebuilds the graph tables (dropping any triggers on the old ones) and
clears that key (:func:`forget`), so the state is filled again over the rebuilt tables.

**Writes cost what they add (state 4).** A consent record written adds one ``consent_records``
row and updates its ``consent_current`` row from the old row and the new record alone. Up to
state 3 each insert rewrote the (person, purpose) row of all the person's records and recomputed
the current decision from all of them: quadratic in the records of a person (a person with
2,000 records for one purpose: 661 KiB written and 6 ms CPU per insert at the end, against 28
KiB and 1.9 ms without that trigger). A deletion (erasure, proof retention) recomputes its
``consent_current`` row from the records left only when the record deleted could decide it.
"""

# Every SQL text here is assembled from constant fragments of this module (trigger bodies are
# templates over NEW/OLD); values always go in as ? parameters.
# ruff: noqa: S608

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Sequence

from identity.model import RESTRICTION_PURPOSE, EventCountRule

DAY_MS = 86_400_000
_STATE_KEY = "audience_state"
# The state a file holds once filled (meta ``audience_state``): 1 event_days and
# consent_current, 2 consent_records too, 3 time bounds on every event_days row, 4 one
# consent_records row per record, 5 the deciding record of every consent_current row, 6
# event_latest (the latest event times of every (name, person)).
STATE_VERSION = 6
# The bounds of an event_days row no event has set (a row of a state 2 file before the fill):
# every time of the day, so they settle nothing and the exact count decides.
_NO_LO, _NO_HI = 0, 2**63 - 1

# A person's consent records are returned as JSON arrays of these columns (``consents`` rows).
CONSENT_FIELDS = (
    "record_id",
    "node_id",
    "purpose",
    "granted",
    "at",
    "recorded_at",
    "source",
    "signal",
    "lawful_basis",
    "proof",
)

# Which consent records a ``consent_current`` row of ``c.purpose`` is made of (``c`` a consents
# row): restriction records for "*", every other signal for a purpose.
_RELEVANT = (
    "(CASE WHEN {c}.purpose = '*' THEN {c}.signal = 'restriction' "
    "ELSE {c}.signal <> 'restriction' END)"
)
# Plain decisions: the records whose latest one decides (objections and overrides excluded).
_PLAIN = (
    "(CASE WHEN {c}.purpose = '*' THEN {c}.signal = 'restriction' "
    "ELSE {c}.signal NOT IN ('restriction', 'objection', 'compelling_grounds') END)"
)
_SPECIAL = "({c}.purpose <> '*' AND {c}.signal IN ('objection', 'compelling_grounds'))"

# The rows of ``consent_current`` for the (person, purpose) pairs ``{where}`` selects, from the
# records (``p``: persons, ``i``: identifiers, ``c``: consents). The granted/tie columns look at
# the records at the latest plain time only (a tie denies, as in privacy.consent.state). CROSS
# JOIN keeps the person's nodes outer: one seek per node into the consents' primary key
# (without statistics SQLite would otherwise read every record of the purpose through
# consents_by_purpose, on every consent written).
_CONSENT_ROWS = f"""
INSERT INTO consent_current
    (person_id, purpose, decided_at, granted, tie, special, record_id, signal, recorded_at)
SELECT t.pid, t.pur, t.top, t.g, t.tie, t.special, d.record_id, d.signal, d.recorded_at
FROM (SELECT s.pid, s.ppk, s.pur, s.top,
    (SELECT min(c2.granted) FROM identifiers i2 CROSS JOIN consents c2 ON c2.node_id = i2.node_id
     WHERE i2.person = s.ppk AND c2.purpose = s.pur AND c2.at = s.top
     AND {_PLAIN.format(c="c2")}) AS g,
    coalesce((SELECT max(c2.granted) - min(c2.granted) FROM identifiers i2
     CROSS JOIN consents c2 ON c2.node_id = i2.node_id
     WHERE i2.person = s.ppk AND c2.purpose = s.pur AND c2.at = s.top
     AND {_PLAIN.format(c="c2")}), 0) AS tie,
    s.special
FROM (
    SELECT p.person_id AS pid, p.pk AS ppk, c.purpose AS pur,
        max(CASE WHEN {_PLAIN.format(c="c")} THEN c.at END) AS top,
        sum({_SPECIAL.format(c="c")}) AS special
    FROM persons p CROSS JOIN identifiers i ON i.person = p.pk
    CROSS JOIN consents c ON c.node_id = i.node_id
    WHERE {{where}} AND {_RELEVANT.format(c="c")}
    GROUP BY p.pk, c.purpose
) AS s) AS t
LEFT JOIN consents d ON d.record_id = (SELECT c2.record_id FROM identifiers i2
     CROSS JOIN consents c2 ON c2.node_id = i2.node_id
     WHERE i2.person = t.ppk AND c2.purpose = t.pur AND c2.at = t.top AND c2.granted = t.g
     AND {_PLAIN.format(c="c2")} ORDER BY c2.recorded_at, c2.record_id LIMIT 1)
WHERE true
"""


# The fill of ``consent_current`` (a file upgraded or given the state on open): the rows
# _CONSENT_ROWS makes, for every (person, purpose), set-based in one grouped pass. The consents
# drive in their own order, joined to their node and person (one forward-walking seek each, as
# _FILL_RECORDS does), and are grouped by (person, purpose) with one sort. Per group:
#
# * ``_DECIDING``, the least of the plain records' keys ``(latest time first, denial first,
#   recorded time, record id)``, is the row's deciding record: its time is the decided time (the
#   latest), its answer the row's (a tie denies: the minimum at that time) and, of the records
#   at that time answering so, it is the first by recorded time and id. The key is text: the
#   time turned around and the recorded time as fixed-width decimals (offset by 2**62: any time
#   of +-146 million years sorts right), the answer, the record id, then the signal after a
#   unit separator (char 31: below every character of a record id, ``c_`` + hex, so the ids
#   still order as they do alone). Read back with substr/instr.
# * ``2 * at + granted``, the greatest over the plain records, is twice the decided time plus
#   the greatest answer at that time: ``tie`` is that answer minus the row's.
# * ``special`` adds the objections and compelling grounds up.
#
# A group without a plain record has no decided time and no deciding record (NULL key). No
# correlated lookup: _CONSENT_ROWS over every person (three lookups of each person's nodes and
# records per row, at random places of both tables) took 59.6 s wall / 16.2 s CPU on the 1M
# audience bench graph (load 9.5); see bench/upgrade.py for this one.
_TIME_OFFSET = 2**62
_DECIDING = (
    "min(CASE WHEN {plain} THEN printf('%019d%d%019d', "
    f"{_TIME_OFFSET - 1} - c.at, c.granted, c.recorded_at + {_TIME_OFFSET}) "
    "|| c.record_id || char(31) || c.signal END)"
)
_FILL_CURRENT = f"""
INSERT INTO consent_current
    (person_id, purpose, decided_at, granted, tie, special, record_id, signal, recorded_at)
SELECT person_id, purpose, {_TIME_OFFSET - 1} - CAST(substr(k, 1, 19) AS INTEGER),
    CAST(substr(k, 20, 1) AS INTEGER),
    coalesce(most - 2 * ({_TIME_OFFSET - 1} - CAST(substr(k, 1, 19) AS INTEGER))
        - CAST(substr(k, 20, 1) AS INTEGER), 0),
    special, substr(k, 40, instr(substr(k, 40), char(31)) - 1),
    substr(k, 40 + instr(substr(k, 40), char(31))),
    CAST(substr(k, 21, 19) AS INTEGER) - {_TIME_OFFSET}
FROM (
    SELECT p.person_id, c.purpose, {_DECIDING.format(plain=_PLAIN.format(c="c"))} AS k,
        max(CASE WHEN {_PLAIN.format(c="c")} THEN 2 * c.at + c.granted END) AS most,
        sum({_SPECIAL.format(c="c")}) AS special
    FROM consents c CROSS JOIN identifiers i ON i.node_id = c.node_id
    CROSS JOIN persons p ON p.pk = i.person
    WHERE {_RELEVANT.format(c="c")}
    GROUP BY p.person_id, c.purpose
)
"""


def _recompute_consents(person: str, purposes: str) -> str:
    """Trigger statements recomputing the rows of ``person`` (a person id) for the purposes
    ``purposes`` (SQL expressions of the trigger's NEW/OLD row)."""
    return (
        f"DELETE FROM consent_current WHERE person_id = {person} AND purpose IN ({purposes});\n"
        + _CONSENT_ROWS.format(where=f"p.person_id = {person} AND c.purpose IN ({purposes})")
        + ";\n"
    )


# A consent record ``NEW`` folded into its person's consent_current row (the insert trigger):
# the row _CONSENT_ROWS would make from all the person's records of the purpose, made from the
# row as it was and the new record alone. A later plain time decides anew; at the same time
# ``granted`` is the minimum (a tie denies) and ``tie`` is max - min (the max being granted +
# tie); objections and compelling grounds add to ``special``. The deciding record (state 5:
# ``record_id``, ``signal``, ``recorded_at``) is the first, by (recorded_at, record id), of the
# records at the decided time that answer as the row does: a later record replaces it, one at
# the same time only when it turns the row to a denial (then the only denial there) or answers
# alike and comes first. The property test compares the rows with a recomputation from all
# records.
_LATER = (
    "(excluded.decided_at IS NOT NULL AND (decided_at IS NULL OR excluded.decided_at > decided_at))"
)
_DECIDES_NEW = (
    f"({_LATER} OR (excluded.decided_at = decided_at AND (excluded.granted < granted OR "
    "(excluded.granted = granted AND (excluded.recorded_at, excluded.record_id) "
    "< (recorded_at, record_id)))))"
)
_PLAIN_NEW = _PLAIN.format(c="NEW")
_ADD_CONSENT = f"""
INSERT INTO consent_current
    (person_id, purpose, decided_at, granted, tie, special, record_id, signal, recorded_at)
SELECT p.person_id, NEW.purpose, CASE WHEN {_PLAIN_NEW} THEN NEW.at END,
    CASE WHEN {_PLAIN_NEW} THEN NEW.granted END, 0, {_SPECIAL.format(c="NEW")},
    CASE WHEN {_PLAIN_NEW} THEN NEW.record_id END, CASE WHEN {_PLAIN_NEW} THEN NEW.signal END,
    CASE WHEN {_PLAIN_NEW} THEN NEW.recorded_at END
FROM identifiers i JOIN persons p ON p.pk = i.person
WHERE i.node_id = NEW.node_id AND {_RELEVANT.format(c="NEW")}
ON CONFLICT (person_id, purpose) DO UPDATE SET
    record_id = CASE WHEN {_DECIDES_NEW} THEN excluded.record_id ELSE record_id END,
    signal = CASE WHEN {_DECIDES_NEW} THEN excluded.signal ELSE signal END,
    recorded_at = CASE WHEN {_DECIDES_NEW} THEN excluded.recorded_at ELSE recorded_at END,
    decided_at = CASE WHEN {_LATER} THEN excluded.decided_at ELSE decided_at END,
    granted = CASE WHEN {_LATER} THEN excluded.granted
        WHEN excluded.decided_at = decided_at THEN min(granted, excluded.granted)
        ELSE granted END,
    tie = CASE WHEN {_LATER} THEN 0
        WHEN excluded.decided_at = decided_at
        THEN max(granted + tie, excluded.granted) - min(granted, excluded.granted)
        ELSE tie END,
    special = special + excluded.special;
"""

# A consent record ``OLD`` taken off its person's consent_current row (the delete trigger: an
# erasure, proof retention). Only a plain record at the decided time with no alike record left
# there (or the person's last record of the row) can change the decision: then the row is
# recomputed from the records left; any other just takes its objection off ``special``. An
# erasure deletes a node's records in key order (oldest first), so most of a long history takes
# the short path.
_RELEVANT_LEFT = (
    "EXISTS (SELECT 1 FROM identifiers i CROSS JOIN consents c ON c.node_id = i.node_id "
    "WHERE i.person = (SELECT pk FROM persons WHERE person_id = {person}) "
    f"AND c.purpose = OLD.purpose AND {_RELEVANT.format(c='c')})"
)

_ALIKE_LEFT = (
    "EXISTS (SELECT 1 FROM identifiers i CROSS JOIN consents c ON c.node_id = i.node_id "
    "WHERE i.person = (SELECT pk FROM persons WHERE person_id = {person}) "
    "AND c.purpose = OLD.purpose AND c.at = OLD.at AND c.granted = OLD.granted "
    f"AND {_PLAIN.format(c='c')})"
)


def _take_consent(person: str) -> str:
    """Trigger statements taking ``OLD`` off the consent_current row of ``person``."""
    row = f"person_id = {person} AND purpose = OLD.purpose AND {_RELEVANT.format(c='OLD')}"
    # coalesce: a row without a decided time (never so with a plain record) is recomputed.
    # A record at the decided time alike to one left there (same answer) decides nothing
    # either: a long history of equal records then costs no recomputation per record.
    decides = (
        f"({_PLAIN.format(c='OLD')} AND coalesce(OLD.at >= decided_at, 1) AND NOT "
        f"{_ALIKE_LEFT.format(person=person)})"
    )
    left = _RELEVANT_LEFT.format(person=person)
    # The deciding record itself (state 5) going while alike records stay at the decided time
    # leaves the row without one (NULL: a member page then reads the person's records, which
    # decide the same). Finding the next would read the records at that time on every such
    # deletion: an erasure deletes in key order, the deciding record of equal ones first, so a
    # long history of equal records would cost quadratic time. Only an erasure deletes a
    # deciding record (proof retention deletes records with a later one of the same node,
    # purpose and signal: never at the decided time), and it takes the whole row away.
    return (
        "UPDATE consent_current SET record_id = NULL, signal = NULL, recorded_at = NULL "
        f"WHERE {row} AND record_id = OLD.record_id;\n"
        f"UPDATE consent_current SET special = special - {_SPECIAL.format(c='OLD')} "
        f"WHERE {row} AND NOT {decides};\n"
        f"DELETE FROM consent_current WHERE {row} AND ({decides} OR NOT {left});\n"
        + _CONSENT_ROWS.format(
            where=f"p.person_id = {person} AND c.purpose = OLD.purpose AND NOT EXISTS (SELECT 1 "
            "FROM consent_current WHERE person_id = p.person_id AND purpose = OLD.purpose)"
        )
        + ";\n"
    )


# A consents row ``{c}`` as the JSON array a page returns (CONSENT_FIELDS).
_RECORD_JSON = "json_array(" + ", ".join(f"{{c}}.{name}" for name in CONSENT_FIELDS) + ")"
# The ``consent_records`` rows (state 4: one per record) of the records ``{where}`` selects, any
# signal (a page returns what person_consents returns for the purpose). A page joins a person's
# rows of its purposes with commas, in key order (purpose, record id): set by the rows alone,
# not by the order they were written in; readers sort them. Nodes outer, one seek per node into
# the consents' primary key, as above.
_RECORD_ROWS = (
    "INSERT INTO consent_records (person_id, purpose, record_id, records) "
    "SELECT p.person_id, c.purpose, c.record_id, "
    + _RECORD_JSON.format(c="c")
    + " FROM persons p CROSS JOIN identifiers i ON i.person = p.pk "
    "CROSS JOIN consents c ON c.node_id = i.node_id WHERE {where}"
)

# The fill of ``consent_records`` (a file upgraded or given the state on open): every record,
# driven by the consents in node-id order (per purpose: the planner reads them through
# consents_by_purpose), then sorted once by the table's key. Node ids
# grow with time (identity.model.new_node_id), as do the identifiers' and persons' integer keys,
# so the seek per record into identifiers (node id) and persons (key) walks forward through
# both tables, and the sorted rows are appended page after page. Driven by the persons (each
# person's nodes, then their records: _RECORD_ROWS over all), every person cost random seeks
# into identifiers_by_person, identifiers and the consents: a state 3 file of 1M persons (905k
# records) took 22 s wall / 15 s CPU for this statement, and 5.7-7 s / 4.5 s so (docs/neo4j.md).
_FILL_RECORDS = (
    "INSERT INTO consent_records (person_id, purpose, record_id, records) "
    "SELECT p.person_id, c.purpose, c.record_id, "
    + _RECORD_JSON.format(c="c")
    + " FROM consents c CROSS JOIN identifiers i ON i.node_id = c.node_id "
    "CROSS JOIN persons p ON p.pk = i.person ORDER BY p.person_id, c.purpose, c.record_id"
)


# The public id of the person holding the node of internal key / node id ``{node}``.
_PERSON_OF_KEY = (
    "(SELECT p.person_id FROM identifiers i JOIN persons p ON p.pk = i.person WHERE i.pk = {node})"
)
_PERSON_OF_NODE_ID = (
    "(SELECT p.person_id FROM identifiers i JOIN persons p ON p.pk = i.person "
    "WHERE i.node_id = {node})"
)
# The public id of the person of internal key ``{person}``.
_PERSON_ID = "(SELECT person_id FROM persons WHERE pk = {person})"


def _node_events(node: str) -> str:
    return f"SELECT name FROM facts WHERE node = {node} AND kind = 'event' AND status = 'active'"


# The node's active events, taken off ``person``'s counters / added to them (a node moving from
# one person to another: merges, splits). The count per (name, day) is a range of facts_events.
def _take_node_events(node: str, person: str) -> str:
    return f"""
UPDATE event_days SET n = n - (
    SELECT count(*) FROM facts f WHERE f.node = {node} AND f.kind = 'event'
    AND f.status = 'active' AND f.name = event_days.name AND f.at >= event_days.day * {DAY_MS}
    AND f.at < (event_days.day + 1) * {DAY_MS})
WHERE name IN ({_node_events(node)}) AND person_id = {person};
DELETE FROM event_days WHERE name IN ({_node_events(node)}) AND person_id = {person} AND n <= 0;
"""


# Adding events widens a row's bounds (``_WIDEN``); taking some off leaves them as they are:
# still bounds of what is left (see the module docstring), and no seek to find the new ones.
_WIDEN = "lo = min(lo, excluded.lo), hi = max(hi, excluded.hi)"


def _add_node_events(node: str, person: str) -> str:
    return f"""
INSERT INTO event_days (name, person_id, day, n, lo, hi)
SELECT name, {person}, at / {DAY_MS}, count(*), min(at), max(at) FROM facts
WHERE node = {node} AND kind = 'event' AND status = 'active'
GROUP BY name, at / {DAY_MS}
ON CONFLICT (name, person_id, day) DO UPDATE SET n = n + excluded.n, {_WIDEN};
"""


_ACTIVE_EVENT = "{r}.kind = 'event' AND {r}.status = 'active'"


# One event fact (the trigger's ``row``) taken off / added to its person's counters; ``when``
# conditions an UPDATE trigger's half on the old / new row being an active event.
def _take_event(row: str, when: str = "true") -> str:
    person = _PERSON_OF_KEY.format(node=f"{row}.node")
    key = f"{when} AND name = {row}.name AND person_id = {person} AND day = {row}.at / {DAY_MS}"
    return (
        f"UPDATE event_days SET n = n - 1 WHERE {key};\n"
        f"DELETE FROM event_days WHERE {key} AND n <= 0;\n"
    )


def _add_event(row: str, when: str = "true") -> str:
    return f"""
INSERT INTO event_days (name, person_id, day, n, lo, hi)
SELECT {row}.name, p.person_id, {row}.at / {DAY_MS}, 1, {row}.at, {row}.at
FROM identifiers i JOIN persons p ON p.pk = i.person
WHERE {when} AND i.pk = {row}.node
ON CONFLICT (name, person_id, day) DO UPDATE SET n = n + 1, {_WIDEN};
"""


# ``event_latest`` (state 6): per event name and person, the times of the person's latest
# active events, ``t1`` the latest, ``t2`` the second latest and so on to ``LATEST_SLOTS``
# (NULL: the person has fewer events). A rule "at least k events since s" with k up to
# LATEST_SLOTS holds exactly when ``t<k> >= s``: one row per person and one comparison, where
# the counters are read a row per person and day, every day of the person's history (in the 1M
# bench audience, 746k counter rows against 301k here; two thirds of them before a 30-day
# window). ``exact`` = 0 marks a row whose times are upper bounds only: an event taken off that
# could be one of them (a deletion, a status change, its node moving to another person) leaves
# the row as it was instead of finding the next latest event (a seek per node and a sort of all
# the person's events of the name, for every such event: quadratic for a long history taken
# off newest first). A bound still rules a person out; a person it lets through is counted from
# the counters (as a further rule is, _FURTHER_RULE). Adding an event folds its time in (an
# exact row stays exact, bounds stay bounds); the row goes with the person's last counter row
# of the name.
LATEST_SLOTS = 4
_LATEST = tuple(f"t{i}" for i in range(1, LATEST_SLOTS + 1))


def _fold_latest(time: str) -> str:
    """The SET clause folding the event time ``time`` into an ``event_latest`` row: ``t<i>``
    becomes the i-th latest of the row's times and ``time`` (every right-hand side reads the
    row as it was; min/max of a NULL is NULL, so a slot stays empty while the one before is)."""
    sets = [f"t1 = max(t1, {time})"]
    for before, slot in itertools.pairwise(_LATEST):
        nth = f"min({before}, {time})"
        sets.append(f"{slot} = coalesce(max({slot}, {nth}), {nth})")
    return ", ".join(sets)


def _add_latest(row: str, when: str = "true") -> str:
    return f"""
INSERT INTO event_latest (name, person_id, t1)
SELECT {row}.name, p.person_id, {row}.at FROM identifiers i JOIN persons p ON p.pk = i.person
WHERE {when} AND i.pk = {row}.node
ON CONFLICT (name, person_id) DO UPDATE SET {_fold_latest("excluded.t1")};
"""


# The row goes with the person's last counter row of the name (the counters are taken off
# first, in the same trigger body).
_NO_COUNTERS_LEFT = (
    "NOT EXISTS (SELECT 1 FROM event_days d WHERE d.name = event_latest.name "
    "AND d.person_id = event_latest.person_id)"
)


def _take_latest(row: str, when: str = "true") -> str:
    """Trigger statements taking the event ``row`` off its person's ``event_latest`` row: an
    event at or after the row's last slot (or any, while a slot is empty) may be one of its
    times, so the row becomes bounds (``exact`` = 0)."""
    person = _PERSON_OF_KEY.format(node=f"{row}.node")
    key = f"{when} AND name = {row}.name AND person_id = {person}"
    return (
        f"UPDATE event_latest SET exact = 0 WHERE {key} AND exact "
        f"AND coalesce({row}.at >= {_LATEST[-1]}, 1);\n"
        f"DELETE FROM event_latest WHERE {key} AND {_NO_COUNTERS_LEFT};\n"
    )


# A node moving from one person to another: the old person's rows of its event names become
# bounds (or go with their last counters), the new person's get the node's events folded in.
def _take_node_latest(node: str, person: str) -> str:
    where = f"name IN ({_node_events(node)}) AND person_id = {person}"
    return (
        f"UPDATE event_latest SET exact = 0 WHERE {where};\n"
        f"DELETE FROM event_latest WHERE {where} AND {_NO_COUNTERS_LEFT};\n"
    )


def _add_node_latest(node: str, person: str) -> str:
    return f"""
INSERT INTO event_latest (name, person_id, t1)
SELECT name, {person}, at FROM facts WHERE node = {node} AND kind = 'event' AND status = 'active'
ON CONFLICT (name, person_id) DO UPDATE SET {_fold_latest("excluded.t1")};
"""


# Each statement is executed on its own (a trigger body holds semicolons, so the schema cannot
# go through the store's statement splitter).
SCHEMA: tuple[str, ...] = (
    # Clustered by (name, person_id, day): one event rule is one range of the table read in
    # person-id order, so a page stops after its last person and needs no sort.
    # lo/hi (state 3): bounds of the times of the row's events, see the module docstring.
    f"""CREATE TABLE IF NOT EXISTS event_days (
    name      TEXT NOT NULL,
    person_id TEXT NOT NULL,
    day       INTEGER NOT NULL,
    n         INTEGER NOT NULL,
    lo        INTEGER NOT NULL DEFAULT {_NO_LO},
    hi        INTEGER NOT NULL DEFAULT {_NO_HI},
    PRIMARY KEY (name, person_id, day)
) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS consent_current (
    person_id  TEXT NOT NULL,
    purpose    TEXT NOT NULL,
    decided_at INTEGER,
    granted    INTEGER,
    tie        INTEGER NOT NULL,
    special    INTEGER NOT NULL,
    record_id  TEXT,
    signal     TEXT,
    recorded_at INTEGER,
    PRIMARY KEY (person_id, purpose)
) WITHOUT ROWID""",
    # State 6, see _fold_latest. Clustered as event_days: a range per event name, in person-id
    # order, a row per person.
    f"""CREATE TABLE IF NOT EXISTS event_latest (
    name      TEXT NOT NULL,
    person_id TEXT NOT NULL,
    exact     INTEGER NOT NULL DEFAULT 1,
    {", ".join(f"{slot} INTEGER" + (" NOT NULL" if slot == "t1" else "") for slot in _LATEST)},
    PRIMARY KEY (name, person_id)
) WITHOUT ROWID""",
    # The counters' triggers keep event_latest too (state 6), in the same bodies: the latest
    # row is taken off after the counters, and goes with their last row of its (name, person).
    f"""CREATE TRIGGER IF NOT EXISTS event_days_on_insert AFTER INSERT ON facts
WHEN {_ACTIVE_EVENT.format(r="NEW")}
BEGIN {_add_event("NEW")}{_add_latest("NEW")} END""",
    f"""CREATE TRIGGER IF NOT EXISTS event_days_on_delete AFTER DELETE ON facts
WHEN {_ACTIVE_EVENT.format(r="OLD")}
BEGIN {_take_event("OLD")}{_take_latest("OLD")} END""",
    # The new time is folded in before the old one is taken off: taken off a row that already
    # holds the new one, the old time leaves it exact only if it was below every slot.
    f"""CREATE TRIGGER IF NOT EXISTS event_days_on_update
AFTER UPDATE OF kind, name, at, status, node ON facts
WHEN ({_ACTIVE_EVENT.format(r="OLD")}) OR ({_ACTIVE_EVENT.format(r="NEW")})
BEGIN
{_take_event("OLD", _ACTIVE_EVENT.format(r="OLD"))}
{_add_event("NEW", _ACTIVE_EVENT.format(r="NEW"))}
{_add_latest("NEW", _ACTIVE_EVENT.format(r="NEW"))}
{_take_latest("OLD", _ACTIVE_EVENT.format(r="OLD"))}
END""",
    f"""CREATE TRIGGER IF NOT EXISTS consent_current_on_insert AFTER INSERT ON consents
BEGIN {_ADD_CONSENT} END""",
    f"""CREATE TRIGGER IF NOT EXISTS consent_current_on_delete AFTER DELETE ON consents
BEGIN
{_take_consent(_PERSON_OF_NODE_ID.format(node="OLD.node_id"))}
END""",
    f"""CREATE TRIGGER IF NOT EXISTS audience_state_on_move AFTER UPDATE OF person ON identifiers
WHEN OLD.person IS NOT NEW.person
BEGIN
{_take_node_events("NEW.pk", _PERSON_ID.format(person="OLD.person"))}
{_add_node_events("NEW.pk", _PERSON_ID.format(person="NEW.person"))}
{_take_node_latest("NEW.pk", _PERSON_ID.format(person="OLD.person"))}
{_add_node_latest("NEW.pk", _PERSON_ID.format(person="NEW.person"))}
{
        _recompute_consents(
            _PERSON_ID.format(person="OLD.person"),
            "SELECT purpose FROM consents WHERE node_id = NEW.node_id",
        )
    }
{
        _recompute_consents(
            _PERSON_ID.format(person="NEW.person"),
            "SELECT purpose FROM consents WHERE node_id = NEW.node_id",
        )
    }
END""",
    # State version 2 (one row per record since 4). Clustered by person id, the order of a
    # member page: the records of a page's persons are one forward walk of this table. The
    # column keeps its name and its text (a JSON array per record, joined by commas per
    # (person, purpose) when read): an older idgraph reads a state 4 file as before.
    """CREATE TABLE IF NOT EXISTS consent_records (
    person_id TEXT NOT NULL,
    purpose   TEXT NOT NULL,
    record_id TEXT NOT NULL,
    records   TEXT NOT NULL,
    PRIMARY KEY (person_id, purpose, record_id)
) WITHOUT ROWID""",
    # Their own triggers, under the names of state 2 (an older idgraph creates the triggers it
    # knows by name when they are missing: see the module docstring).
    # The new record's row, its person found from its node (one seek each).
    f"""CREATE TRIGGER IF NOT EXISTS consent_records_on_insert AFTER INSERT ON consents
BEGIN
INSERT INTO consent_records (person_id, purpose, record_id, records)
SELECT p.person_id, NEW.purpose, NEW.record_id, {_RECORD_JSON.format(c="NEW")}
FROM identifiers i JOIN persons p ON p.pk = i.person WHERE i.node_id = NEW.node_id;
END""",
    f"""CREATE TRIGGER IF NOT EXISTS consent_records_on_delete AFTER DELETE ON consents
BEGIN
DELETE FROM consent_records WHERE person_id = {_PERSON_OF_NODE_ID.format(node="OLD.node_id")}
AND purpose = OLD.purpose AND record_id = OLD.record_id;
END""",
    # A node moving to another person takes its records along (nothing else changes).
    f"""CREATE TRIGGER IF NOT EXISTS consent_records_on_move AFTER UPDATE OF person ON identifiers
WHEN OLD.person IS NOT NEW.person
BEGIN
DELETE FROM consent_records WHERE person_id = {_PERSON_ID.format(person="OLD.person")}
AND (purpose, record_id) IN (SELECT purpose, record_id FROM consents WHERE node_id = NEW.node_id);
{_RECORD_ROWS.format(where="p.pk = NEW.person AND i.pk = NEW.pk")};
END""",
)
# Every trigger of the state (by name): an upgrade replaces them all (see install).
TRIGGERS: tuple[str, ...] = tuple(
    statement.split()[5] for statement in SCHEMA if statement.startswith("CREATE TRIGGER")
)

_BACKFILL_EVENTS = f"""
INSERT INTO event_days (name, person_id, day, n, lo, hi)
SELECT f.name, p.person_id, f.at / {DAY_MS}, count(*), min(f.at), max(f.at)
FROM facts f JOIN identifiers i ON i.pk = f.node JOIN persons p ON p.pk = i.person
WHERE f.kind = 'event' AND f.status = 'active'
GROUP BY f.name, p.person_id, f.at / {DAY_MS}
"""

# The fill of ``event_latest`` (state 6): each (name, person)'s latest active event times, in
# one grouped pass over the events (numbered per person and name, latest first).
_FILL_LATEST = f"""
INSERT INTO event_latest (name, person_id, {", ".join(_LATEST)})
SELECT name, person_id, {
    ", ".join(f"max(CASE WHEN r = {i} THEN at END)" for i in range(1, LATEST_SLOTS + 1))
}
FROM (
    SELECT f.name, p.person_id, f.at,
        row_number() OVER (PARTITION BY f.name, p.pk ORDER BY f.at DESC) AS r
    FROM facts f JOIN identifiers i ON i.pk = f.node JOIN persons p ON p.pk = i.person
    WHERE f.kind = 'event' AND f.status = 'active'
)
WHERE r <= {LATEST_SLOTS}
GROUP BY name, person_id
"""


def install(conn: sqlite3.Connection) -> None:
    """Create the tables and triggers (idempotent) and fill, once, what the file's state lacks.

    Runs inside the store's schema transaction (``open_migrated(after=...)``), so a crash
    half-way leaves the file as it was. A file without state gets all of it; a file of state
    version 1 gets ``consent_records`` (its counters and current consent are kept: their
    triggers have not changed). Filling a store of a million persons reads every event and
    consent record once (seconds, once per file).
    """
    for statement in SCHEMA:
        conn.execute(statement)
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (_STATE_KEY,)).fetchone()
    filled = int(row[0]) if row is not None else 0
    if filled >= STATE_VERSION:
        return
    # Every trigger of the file goes and comes back with this version's body (an old body
    # would keep writing an old shape: counters without bounds, a row of all records).
    for name in TRIGGERS:
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")
    columns = {column[1] for column in conn.execute("PRAGMA table_info(event_days)")}
    if "lo" not in columns:  # counters of state 1 or 2: the table predates the bounds
        conn.execute(f"ALTER TABLE event_days ADD COLUMN lo INTEGER NOT NULL DEFAULT {_NO_LO}")
        conn.execute(f"ALTER TABLE event_days ADD COLUMN hi INTEGER NOT NULL DEFAULT {_NO_HI}")
    columns = {column[1] for column in conn.execute("PRAGMA table_info(consent_records)")}
    if "record_id" not in columns:  # state 2 or 3: a row of all records per (person, purpose)
        conn.execute("DROP TABLE consent_records")
    columns = {column[1] for column in conn.execute("PRAGMA table_info(consent_current)")}
    if "record_id" not in columns:  # state 1 to 4: no deciding record yet
        for column in ("record_id TEXT", "signal TEXT", "recorded_at INTEGER"):
            conn.execute(f"ALTER TABLE consent_current ADD COLUMN {column}")
    for statement in SCHEMA:  # the tables made again where dropped, and every trigger
        conn.execute(statement)
    if filled < 3:  # the counters are filled again with their bounds (one grouped pass)
        conn.execute("DELETE FROM event_days")
        conn.execute(_BACKFILL_EVENTS)
    if filled < 5:  # the current consent made again, with its deciding records
        conn.execute("DELETE FROM consent_current")
        conn.execute(_FILL_CURRENT)
    if filled < 4:  # one row per record (one pass over the consents)
        conn.execute("DELETE FROM consent_records")
        conn.execute(_FILL_RECORDS)
    if filled < 6:  # the latest event times (one grouped pass over the events)
        conn.execute("DELETE FROM event_latest")
        conn.execute(_FILL_LATEST)
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (_STATE_KEY, str(STATE_VERSION)),
    )


def forget(conn: sqlite3.Connection) -> None:
    """Mark the state as not filled, so :func:`install` fills it again from the rows (after a
    migration that rebuilt the graph tables: the triggers went with the old tables, and rows
    written between could be missing from the counters)."""
    conn.execute("DELETE FROM meta WHERE key = ?", (_STATE_KEY,))


# -- member scans ---------------------------------------------------------------------------

# The exact count of one rule for the person ``e.person_id`` of the page query from its events
# (facts_events: one seek per node); only asked for persons whose counters alone do not settle
# the rule.
_EXACT = (
    "(SELECT count(*) FROM persons p0 CROSS JOIN identifiers i ON i.person = p0.pk "
    "CROSS JOIN facts f ON f.node = i.pk WHERE p0.person_id = e.person_id "
    "AND f.kind = 'event' AND f.status = 'active' AND f.name = ? AND f.at >= ?)"
)
# Which events of a rule's ``event_days`` rows certainly count (parameters: the boundary day,
# the rule's since): the rows of the days after the boundary day, and a boundary-day row whose
# events all came at or after ``since`` (its lower bound says so).
_SETTLED = "({e}day > ? OR {e}lo >= ?)"
# A boundary-day row whose bounds straddle ``since`` (parameters: since, since): some of its
# events may count and some not; only the exact count of the person's events can tell.
_STRADDLES = "({e}lo < ? AND {e}hi >= ?)"
# A further rule of a person already selected: the settled counters decide, else (a boundary
# row straddling the window's start) the exact count does.
_FURTHER_RULE = (
    "((SELECT total(n) FROM event_days WHERE name = ? AND person_id = e.person_id AND day >= ? "
    f"AND {_SETTLED.format(e='')}) >= ? OR (EXISTS (SELECT 1 FROM event_days WHERE name = ? "
    f"AND person_id = e.person_id AND day = ? AND {_STRADDLES.format(e='')}) AND "
    + _EXACT
    + " >= ?))"
)
# The driving rule of a page, over one person's ``event_days`` rows of the window (the days from
# the boundary day on, ``e``): ``total(e.n)`` counts every event of those days, so it bounds the
# exact count from above. A person passes when that bound reaches the rule and either no row is
# of the boundary day (``min(e.day)`` after it: every row counts whole), or the boundary-day
# row's events can be settled without it (a row whose events all came at or after ``since``
# counts whole, any other not at all: the rest still reaches the rule), or that row straddles
# ``since`` and the exact count from the events does. Per row of the range two aggregate steps;
# the boundary-day row is sought only for the persons it can decide (stop 42 computed the
# settled total and a straddle flag over every row: 16 more VM instructions per row, ~40 % of
# the rule's pass at a million persons). Parameters: min_count, boundary day, since, name,
# boundary day, min_count, then the straddle's name, day, since, since, then _EXACT's.
_LEAD_RULE = (
    "(total(e.n) >= ? AND (min(e.day) > ? "
    "OR total(e.n) - (SELECT CASE WHEN b.lo >= ? THEN 0 ELSE b.n END FROM event_days b "
    "WHERE b.name = ? AND b.person_id = e.person_id AND b.day = ?) >= ? "
    "OR (EXISTS (SELECT 1 FROM event_days b WHERE b.name = ? AND b.person_id = e.person_id "
    f"AND b.day = ? AND {_STRADDLES.format(e='b.')}) AND " + _EXACT + " >= ?)))"
)
# Why a person is left out by the consent filter (NULL: kept); see consent_exclusion.
_EXCLUDED = (
    "CASE WHEN cr.person_id IS NOT NULL THEN NULL "
    "WHEN cp.person_id IS NULL THEN 'no_consent' "
    "WHEN cp.special > 0 OR cp.granted = 1 THEN NULL "
    "WHEN cp.tie THEN 'consent_tie_denied' ELSE 'consent_denied' END"
)
# ``{who}``: the alias whose ``person_id`` the page's rows are (``p`` or ``e``, see page_query).
_CONSENT_JOINS = (
    " LEFT JOIN consent_current cp ON cp.person_id = {who}.person_id AND cp.purpose = ?"
    " LEFT JOIN consent_current cr ON cr.person_id = {who}.person_id AND cr.purpose = '*'"
)


def _consents_of_person(purposes: int, who: str) -> str:
    """The consent records of a kept person (alias ``who``) for ``purposes`` purposes bound as
    placeholders, as one JSON array of ``CONSENT_FIELDS`` arrays (``NULL`` for an excluded
    person, or one without records for them: nothing of an excluded person is read).

    One seek per person into consent_records, whose rows are in the page's order. Read in the
    page statement itself, so a page is one statement: no second lookup of the page's persons
    by id (a JSON list of a thousand ids joined back to persons, identifiers and consents, then
    sorted, cost as much as the page). Placeholders, not a ``json_each`` array: SQLite
    evaluated the array's list subquery again for every kept person (~10 % of the page
    statement at a million persons).
    """
    return (
        "(SELECT '[' || group_concat(r.records) || ']' FROM consent_records r "
        f"WHERE r.person_id = {who}.person_id AND r.purpose IN ({', '.join('?' * purposes)}))"
    )


# A kept person whose current consent for the filter's purpose is a grant the engine can decide
# from alone (see identity.model.ConsentGrant): no restriction row, no objection or compelling
# grounds, the latest plain decision a grant (``cp`` of _CONSENT_JOINS), whose deciding record
# is known (see _take_consent for when it is not).
_GRANT = "(cr.person_id IS NULL AND cp.special = 0 AND cp.granted = 1 AND cp.record_id IS NOT NULL)"

# (person id, created, last seen, exclusion, consent records as JSON, and the deciding record's
# id, time and signal of a kept person's grant): see page_query. The times are NULL unless asked
# for; the records NULL for a person with a grant.
PageRow = tuple[
    str, int | None, int | None, str | None, str | None, str | None, int | None, str | None
]


def page_persons(
    conn: sqlite3.Connection,
    rules: Sequence[EventCountRule],
    lead: int,
    consent_filter: str | None,
    consent_purposes: Sequence[str],
    after: str,
    limit: int,
    *,
    times: bool = False,
) -> list[PageRow]:
    """Up to ``limit`` (person id, created, last seen, exclusion, consent records) after
    ``after`` in id order that meet every rule, in one statement (rule and consent evaluation
    set-based in SQL): the statement of :func:`page_query`."""
    sql, params = page_query(
        rules, lead, consent_filter, consent_purposes, after, limit, times=times
    )
    return conn.execute(sql, params).fetchall()


def page_query(
    rules: Sequence[EventCountRule],
    lead: int,
    consent_filter: str | None,
    consent_purposes: Sequence[str] | None,
    after: str,
    limit: int,
    *,
    times: bool = False,
) -> tuple[str, list[object]]:
    """The statement and parameters of :func:`page_persons` (also for query plans: bench).

    ``rules[lead]`` drives: one range of ``event_days`` for its name from the cursor, grouped
    by person in index order (no sort; the ``LIMIT`` stops the range), in a subquery that
    returns person ids only. The other rules are one ``event_days`` seek per candidate. Only
    the (at most ``limit``) persons it selects are then joined to ``persons``, to the consent
    filter (two ``consent_current`` seeks per person; an excluded person is returned with its
    reason and counts as scanned) and to their consent records for the purposes
    ``consent_purposes`` (kept persons only; ``None``: no records, a ``NULL`` column: the
    selection alone, for benchmarks). When those are the filter's purpose, a kept person whose
    ``consent_current`` row is a grant the engine can decide from alone (``_GRANT``) gets the
    row's deciding record (id, time, signal) instead of its records: no seek into
    ``consent_records``, no JSON (a third of a cold 1M audience read went to those). Joining
    each ``event_days`` row before grouping (the earlier form) cost four seeks per row, for
    every person with such an event ever, not per page member.

    With rules, ``persons`` is joined only when ``times`` asks for the persons' created and last
    seen times: the counters, the consent state and the records are all keyed by the public
    person id the rule's range already holds, and a person's counters exist only while it holds
    active events (the triggers delete them with its facts, erasure included), so the lookup
    would add two random seeks per selected person and nothing else.
    """
    who = "p" if times or not rules else "e"
    excluded = "NULL"
    joins = ""
    if consent_filter is not None:
        excluded, joins = _EXCLUDED, _CONSENT_JOINS.format(who=who)
    records = "NULL"
    grant = "NULL, NULL, NULL"
    loaded: list[object] = []
    if consent_purposes is not None:
        kept_records = _consents_of_person(len(consent_purposes), who)
        kept = f"{excluded} IS NULL"
        # The purposes asked are the filter's (and the restriction purpose, whose records a
        # person with a grant does not hold).
        if consent_filter is not None and set(consent_purposes) - {RESTRICTION_PURPOSE} == {
            consent_filter
        }:
            # The grant instead of the records: the one fact the engine needs of most kept
            # persons, already in the consent_current row the filter joined.
            grant = (
                f"CASE WHEN {_GRANT} THEN cp.record_id END, "
                f"CASE WHEN {_GRANT} THEN cp.decided_at END, "
                f"CASE WHEN {_GRANT} THEN cp.signal END"
            )
            kept += f" AND NOT coalesce({_GRANT}, 0)"
        records = f"CASE WHEN {kept} THEN {kept_records} END"
        loaded = list(consent_purposes)
    person_times = "p.created_at, p.last_seen" if times else "NULL, NULL"
    columns = f"{person_times}, {excluded}, {records}, {grant}"
    filtered = [] if consent_filter is None else [consent_filter]
    if not rules:
        sql = (
            f"SELECT p.person_id, {columns} FROM persons p{joins} "
            "WHERE p.person_id > ? ORDER BY p.person_id LIMIT ?"
        )
        return sql, [*loaded, *filtered, after, limit]
    sinces = [int(rule.since.timestamp() * 1000) for rule in rules]
    driving, since = rules[lead], sinces[lead]
    further = [(r, s) for i, (r, s) in enumerate(zip(rules, sinces, strict=True)) if i != lead]
    # The driving rule's range is read in index order (person id), so SQLite neither sorts nor
    # reads past the page (grouping a subquery without the LIMIT and joining after made it
    # sort the whole rest of the range on every page: quadratic over a scan). The subquery
    # keeps its LIMIT, so it runs as a co-routine that stops after the page; the outer ORDER BY
    # sorts the page's rows only.
    if driving.min_count <= LATEST_SLOTS:
        # One event_latest row per person of the range: the rule is one comparison (a bound
        # row's person counted from the counters), no grouping.
        inner = (
            f"SELECT e.person_id FROM event_latest e WHERE e.name = ? AND e.person_id > ? "
            f"AND e.{_LATEST[driving.min_count - 1]} >= ? AND (e.exact OR {_FURTHER_RULE})"
        )
        params: list[object] = [*loaded, driving.name, after, since]
        params += _further_params(driving, since)
    else:
        inner = (
            "SELECT e.person_id FROM event_days e "
            "WHERE e.name = ? AND e.person_id > ? AND e.day >= ? GROUP BY e.person_id "
            f"HAVING {_LEAD_RULE}"
        )
        day = since // DAY_MS
        params = [*loaded, driving.name, after, day, driving.min_count, day]
        params += [since, driving.name, day, driving.min_count]
        params += [driving.name, day, since, since, driving.name, since, driving.min_count]
    for rule, rule_since in further:
        sql_rule, rule_params = _further(rule, rule_since)
        inner += " AND " + sql_rule
        params += rule_params
    sql = (
        f"SELECT e.person_id, {columns} FROM ("
        + inner
        + " ORDER BY e.person_id LIMIT ?"
        + ") AS e"
        + (" CROSS JOIN persons p ON p.person_id = e.person_id" if times else "")
        + f"{joins} ORDER BY e.person_id"
    )
    params.append(limit)
    params += filtered
    return sql, params


def _further_params(rule: EventCountRule, since: int) -> list[object]:
    """The parameters of _FURTHER_RULE for ``rule`` from ``since`` (its start in ms)."""
    day = since // DAY_MS
    return [
        *(rule.name, day, day, since, rule.min_count),
        *(rule.name, day, since, since),
        *(rule.name, since, rule.min_count),
    ]


def _further(rule: EventCountRule, since: int) -> tuple[str, list[object]]:
    """A rule other than the driving one, checked per selected person (``e.person_id``): its
    ``event_latest`` row (one seek; a bound row's person counted from the counters) when the
    rule asks for at most LATEST_SLOTS events, else the counters (_FURTHER_RULE)."""
    if rule.min_count <= LATEST_SLOTS:
        sql = (
            "EXISTS (SELECT 1 FROM event_latest l WHERE l.name = ? AND l.person_id = e.person_id "
            f"AND l.{_LATEST[rule.min_count - 1]} >= ? AND (l.exact OR {_FURTHER_RULE}))"
        )
        return sql, [rule.name, since, *_further_params(rule, since)]
    return _FURTHER_RULE, _further_params(rule, since)


def counters_of(conn: sqlite3.Connection) -> dict[tuple[str, str, int], int]:
    """Every ``event_days`` row as ``{(name, person id, day): n}`` (tests, diagnostics)."""
    rows = conn.execute("SELECT name, person_id, day, n FROM event_days")
    return {(n, p, d): c for n, p, d, c in rows}


def bounds_of(conn: sqlite3.Connection) -> dict[tuple[str, str, int], tuple[int, int]]:
    """Every ``event_days`` row's time bounds as ``{(name, person id, day): (lo, hi)}``
    (tests, diagnostics)."""
    rows = conn.execute("SELECT name, person_id, day, lo, hi FROM event_days")
    return {(n, p, d): (lo, hi) for n, p, d, lo, hi in rows}


def latest_of(conn: sqlite3.Connection) -> dict[tuple[str, str], tuple[bool, tuple[int, ...]]]:
    """Every ``event_latest`` row as ``{(name, person id): (exact, times)}``, the times latest
    first, empty slots left out (tests, diagnostics)."""
    rows = conn.execute(f"SELECT name, person_id, exact, {', '.join(_LATEST)} FROM event_latest")
    return {
        (name, person): (bool(exact), tuple(t for t in times if t is not None))
        for name, person, exact, *times in rows
    }


def consent_state_of(conn: sqlite3.Connection) -> dict[tuple[str, str], tuple[object, ...]]:
    """Every ``consent_current`` row as ``{(person id, purpose): (decided_at, granted, tie,
    special)}`` (tests, diagnostics)."""
    return {
        (row[0], row[1]): tuple(row[2:])
        for row in conn.execute("SELECT * FROM consent_current ORDER BY person_id, purpose")
    }


def consent_records_of(conn: sqlite3.Connection) -> dict[tuple[str, str], list[list[object]]]:
    """Every ``consent_records`` row as ``{(person id, purpose): records}``, each record a list
    of ``CONSENT_FIELDS`` values, sorted (tests, diagnostics)."""
    rows = conn.execute(
        "SELECT person_id, purpose, '[' || group_concat(records) || ']' FROM consent_records "
        "GROUP BY person_id, purpose"
    )
    return {
        (person, purpose): sorted(json.loads(records), key=repr)
        for person, purpose, records in rows
    }
