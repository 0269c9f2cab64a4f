"""The PII-scanning port: what the rest of idgraph knows about finding personal data in text.

Incoming free text and attribute values are scanned before anything is stored (privacy
invariant 6). This module holds only the contract and pure helpers; the adapter that does the
work (:class:`privacy.scanning.presidio_scanner.PresidioPiiScanner`) is the one place that
imports presidio and spaCy, so the core stays importable without them.

A :class:`PiiFinding` records *where* and *what kind* of personal data was found, never the
matched text itself: findings travel into policy decisions, audit records, error bodies and
logs, and each of those would otherwise become a copy of the personal data they describe.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from identity.errors import ConfigurationError

__all__ = [
    "DEFAULT_REDACTION_TEMPLATE",
    "MODEL_ENTITIES",
    "PiiFinding",
    "PiiScanner",
    "ScannerConfig",
    "ScannerConfigurationError",
    "ScannerModelError",
    "redact",
]

DEFAULT_REDACTION_TEMPLATE = "<{entity_type}>"
# What the optional NER model reports. A policy may allow these even when the model is off
# (``ner: false``): allowing a type the scanner cannot find is harmless, and switching the
# model off should not force an edit of every category's ``allowed_pii``.
MODEL_ENTITIES = ("PERSON", "LOCATION", "ORGANIZATION", "STREET_ADDRESS")

EntityType = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{1,63}$")]
Score = Annotated[float, Field(ge=0.0, le=1.0)]
ContextWord = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class ScannerConfigurationError(ConfigurationError):
    """The scanner configuration names something the scanner cannot honour.

    For example a threshold or context words for an entity type no recognizer detects: such a
    setting would silently do nothing, and a threshold that silently does nothing is a privacy
    control that is not there.
    """

    code = "scanner-configuration-invalid"

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"scanner.{field}: {message}")


class ScannerModelError(ConfigurationError):
    """The scanner's NER model is missing, unreadable, or not the model that was pinned.

    The scanner refuses to start rather than scan with another model or none: which words count
    as a name is a privacy control, and a control that silently changed is worse than a startup
    error that names the model directory.
    """

    code = "scanner-model-invalid"

    def __init__(self, model_dir: str, message: str) -> None:
        self.model_dir = model_dir
        super().__init__(f"PII model {model_dir}: {message}")


@dataclass(frozen=True, slots=True)
class PiiFinding:
    """One span of personal data found in a text: its entity type, position and confidence.

    The matched text is deliberately not part of the finding (see the module docstring); a
    caller that needs the value slices the text it already holds, ``text[start:end]``.
    """

    entity_type: str
    start: int
    end: int
    score: float

    def __post_init__(self) -> None:
        if self.start < 0 or self.end <= self.start:
            raise ValueError(f"invalid finding span [{self.start}, {self.end})")
        if not 0.0 <= self.score <= 1.0 or math.isnan(self.score):
            raise ValueError(f"finding score {self.score} is outside [0, 1]")


@runtime_checkable
class PiiScanner(Protocol):
    """Finds personal data in text. Implementations are safe to call from several threads."""

    def scan(self, text: str) -> list[PiiFinding]:
        """Return the findings in ``text`` that reach their entity's threshold, by position."""
        ...

    def scan_many(self, texts: Sequence[str]) -> list[list[PiiFinding]]:
        """Scan several texts; the result has one list of findings per text, in order."""
        ...

    @property
    def entities(self) -> frozenset[str]:
        """The entity types this scanner can detect."""
        ...


class ScannerConfig(BaseModel):
    """How the scanner decides: thresholds per entity type, extra context words, language.

    Loaded from the ``scanner:`` mapping of ``policies/categories.yaml``, e.g.::

        scanner:
          default_threshold: 0.4
          thresholds: {PERSON: 0.6, PHONE_NUMBER: 0.5}
          context_words: {STREET_ADDRESS: [lieferadresse, shipping]}
          ner: true

    A finding is reported when its score is at least the threshold of its entity type
    (``thresholds``), or ``default_threshold`` for types not listed. Context words near a match
    raise its score (presidio's context enhancement), so they are how a deployment teaches the
    scanner the vocabulary of its own forms.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    default_threshold: Score = 0.4
    thresholds: dict[EntityType, Score] = Field(default_factory=dict)
    context_words: dict[EntityType, list[ContextWord]] = Field(default_factory=dict)
    # The spaCy language of the blank tokenizer pipeline; recognizers are registered for it.
    # EU texts in other languages still match: the recognizers are patterns, and their context
    # word lists are multilingual.
    language: Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}$")] = "en"
    # idgraph's NER model (PERSON, LOCATION, ORGANIZATION, STREET_ADDRESS in text without a
    # pattern), its entities reviewed against the word lists shipped with it (a PERSON needs a
    # name signal: privacy/scanning/name_lexicon.py). On by default since model 2.1: held-out
    # PERSON recall 0.71 at precision 0.92, and a PERSON/STREET_ADDRESS/structured finding on
    # 1.5 % of clean marketing values (80.5 % before the review; see the model card). False:
    # the patterns alone, names and addresses found by their context only (titles, labels,
    # street types).
    ner: bool = True

    def threshold_for(self, entity_type: str) -> float:
        """The minimum score a finding of ``entity_type`` needs to be reported."""
        return self.thresholds.get(entity_type, self.default_threshold)


def redact(
    text: str,
    findings: Sequence[PiiFinding],
    template: str = DEFAULT_REDACTION_TEMPLATE,
) -> str:
    """Return ``text`` with every finding's span replaced by ``template``.

    ``{entity_type}`` in the template is replaced by the entity type. Overlapping or adjacent
    findings are merged into one replacement (two labels side by side would tell a reader where
    one value ends, and overlapping replacements would garble the text); the merged span is
    labelled with the entity type of its highest-scoring finding. Text outside the findings is
    kept as it is.

    Raises ``ValueError`` if a finding lies outside ``text`` (it was found in another text).
    """
    if not findings:
        return text
    for finding in findings:
        if finding.end > len(text):
            raise ValueError(f"finding span [{finding.start}, {finding.end}) is outside the text")

    merged: list[tuple[int, int, PiiFinding]] = []
    for finding in sorted(findings, key=lambda f: (f.start, f.end)):
        if merged and finding.start <= merged[-1][1]:
            start, end, best = merged[-1]
            merged[-1] = (start, max(end, finding.end), _stronger(best, finding))
        else:
            merged.append((finding.start, finding.end, finding))

    parts: list[str] = []
    cursor = 0
    for start, end, best in merged:
        parts.append(text[cursor:start])
        # str.replace, not str.format: a template is configuration, and format() would let a
        # careless template reach attributes ("{entity_type.__class__}").
        parts.append(template.replace("{entity_type}", best.entity_type))
        cursor = end
    parts.append(text[cursor:])
    return "".join(parts)


def _stronger(a: PiiFinding, b: PiiFinding) -> PiiFinding:
    """The finding whose label a merged span gets: higher score, then longer span, then name."""
    key_a = (a.score, a.end - a.start, a.entity_type)
    key_b = (b.score, b.end - b.start, b.entity_type)
    return a if key_a >= key_b else b
