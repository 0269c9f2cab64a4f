"""The presidio adapter of :class:`privacy.scanning.PiiScanner`, fully offline.

presidio-analyzer runs on idgraph's own spaCy NER model (``privacy/scanning/models/pii_ner``,
trained by ``make pii-model`` on a seeded synthetic corpus, see its MODEL_CARD.md): it finds
PERSON, LOCATION, ORGANIZATION and STREET_ADDRESS in text nobody wrote a pattern for. The
model is loaded from that directory only (a path, never a package name, so spaCy has nothing to
download), and only if its fingerprint matches :data:`PII_NER_MODEL_SHA256`. Everything with
a structure (e-mail, phone, IBAN, card, ids) comes from the pattern recognizers of
:mod:`privacy.scanning.presidio_recognizers`, which also keep finding names and addresses by
their context. Every entity the model proposes is reviewed against the word lists shipped in
the same pinned directory (:mod:`privacy.scanning.name_lexicon`: a ``PERSON`` needs a name
signal) and scored by the strength of its signal. The model runs by default
(``ScannerConfig.ner``); with ``ner=False`` the patterns run alone on a blank pipeline.

Privacy choices in this module:

* Findings carry type, span and score, never text (see :class:`privacy.scanning.PiiFinding`).
* Nothing in our scan path logs. presidio's ``log_decision_process`` stays off (its trace holds
  the tokens of the analysed text), and a filter on presidio's logger withholds the arguments
  of its records: some carry analysed text (the words around a match at DEBUG, an IBAN that
  failed validation at ERROR).
* spaCy interns every token it sees in the pipeline's string store, which lives as long as the
  pipeline. Left alone, a long-running scanner would keep every scanned e-mail address and name
  in memory for the life of the process. The pipeline is replaced with a fresh one every
  ``recycle_after`` texts, which bounds both that retention and the memory it costs.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Generator, Iterable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import regex  # type: ignore[import-untyped]  # presidio's regex engine; no stubs
import spacy
from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerResult
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import (
    EsNieRecognizer,
    EsNifRecognizer,
    FiPersonalIdentityCodeRecognizer,
    IpRecognizer,
    ItFiscalCodeRecognizer,
    SePersonnummerRecognizer,
    SpacyRecognizer,
    UkNinoRecognizer,
    UsSsnRecognizer,
)
from presidio_analyzer.recognizer_registry import RecognizerRegistry
from spacy.language import Language
from spacy.tokens import Doc, Span

from identity.errors import InputLimitError
from privacy.scanning import (
    MODEL_ENTITIES,
    PiiFinding,
    ScannerConfig,
    ScannerConfigurationError,
    ScannerModelError,
)
from privacy.scanning.model_files import model_fingerprint
from privacy.scanning.name_lexicon import NameLexicon
from privacy.scanning.presidio_recognizers import (
    AnyCaseIbanRecognizer,
    CardNumberRecognizer,
    ContextRequiredRecognizer,
    EuPhoneRecognizer,
    EuVatIdRecognizer,
    OfflineEmailRecognizer,
    PersonNameRecognizer,
    StreetAddressRecognizer,
    de_tax_id_recognizer,
    pl_pesel_recognizer,
    uk_nhs_recognizer,
    warm_up_offline_suffix_list,
)

__all__ = [
    "MAX_TEXT_CHARS",
    "NER_ENTITIES",
    "PII_NER_MODEL_DIR",
    "PII_NER_MODEL_SHA256",
    "PresidioPiiScanner",
]

# The NER model shipped in the repository, and the fingerprint of the files that were reviewed
# (see privacy/scanning/models/MODEL_CARD.md). ``make pii-model`` rebuilds the same files.
PII_NER_MODEL_DIR = Path(__file__).resolve().parent / "models" / "pii_ner"
PII_NER_MODEL_SHA256 = "6f54e698f3310c7418b9d21c7903f8307799ed13992bcaafa8250f849fac1490"
# The model's labels are presidio entity types already (no mapping to maintain).
NER_ENTITIES = MODEL_ENTITIES
# spaCy's transition-based NER gives no per-entity confidence; the lexicon's review scores each
# entity by its signal (name_lexicon.SCORE_*). This is presidio's default for an entity without
# a reviewed score, the same as the review's strongest level.
NER_SCORE = 0.85

# spaCy refuses texts over nlp.max_length (1,000,000) with a ValueError; a clear limit of our
# own turns that into an input error the API maps to a 4xx. Attribute values and free text
# fields are far shorter; a caller with a document splits it first.
MAX_TEXT_CHARS = 200_000


PRESIDIO_LOGGER = "presidio-analyzer"


class _WithholdArgumentsFilter(logging.Filter):
    """Keep presidio's log messages, drop their arguments and exception details.

    presidio formats analysed text into some records as ``%s`` arguments; the message templates
    themselves are constant text, so they stay useful for debugging without the values.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = f"{record.msg} [arguments withheld]"
            record.args = None
        # An exception message can quote the input, e.g. int() on an IBAN fragment.
        record.exc_info = None
        record.exc_text = None
        return True


def _guard_presidio_logs() -> None:
    logger = logging.getLogger(PRESIDIO_LOGGER)
    if logger.level == logging.NOTSET:
        # presidio logs one INFO line per recognizer it loads (21 at every start-up) and
        # nothing else useful below WARNING; an operator who sets the level keeps theirs.
        logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _WithholdArgumentsFilter) for f in logger.filters):
        logger.addFilter(_WithholdArgumentsFilter())


class _OfflineSpacyNlpEngine(SpacyNlpEngine):
    """presidio's spaCy engine on a pipeline loaded from a directory, or a blank one.

    ``SpacyNlpEngine.load`` resolves model *names* (and downloads missing ones). This engine
    builds its pipeline itself, from ``model_dir`` (a path: spaCy loads it from disk and never
    downloads) or ``spacy.blank(language)`` (tokens only), and overrides ``load`` so that path
    is never taken. ``model_dir`` is checked against ``fingerprint`` on every load.
    """

    def __init__(self, language: str, model_dir: Path | None, fingerprint: str) -> None:
        mapping = {entity: entity for entity in NER_ENTITIES} if model_dir else {}
        super().__init__(
            models=[{"lang_code": language, "model_name": f"blank:{language}"}],
            ner_model_configuration=NerModelConfiguration(
                model_to_presidio_entity_mapping=mapping,
                default_score=NER_SCORE,
                # presidio lowers ORGANIZATION scores by default (its English models confuse
                # organisations with other things); ours is scored like every other label.
                low_score_entity_names=[],
                labels_to_ignore=[],
            ),
        )
        self.language = language
        self._model_dir = model_dir
        self._fingerprint = fingerprint
        self._lexicon: NameLexicon | None = None
        # presidio declares ``nlp`` as None until load(); a dict is what load() would set.
        self.nlp: dict[str, Language] = {language: self._pipeline()}  # type: ignore[assignment]

    def _pipeline(self) -> Language:
        if self._model_dir is None:
            return spacy.blank(self.language)
        if not self._model_dir.is_dir():
            raise ScannerModelError(str(self._model_dir), "the model directory does not exist")
        found = model_fingerprint(self._model_dir)
        if found != self._fingerprint:
            # Names the directory and both fingerprints; a model holds no personal data.
            raise ScannerModelError(
                str(self._model_dir), f"fingerprint {found} is not the pinned {self._fingerprint}"
            )
        try:
            self._lexicon = NameLexicon.load(self._model_dir)
        except ValueError as error:
            raise ScannerModelError(str(self._model_dir), str(error)) from error
        return spacy.load(self._model_dir)

    def load(self) -> None:
        """Rebuild the pipeline from the same directory (never by model name)."""
        self.nlp = {self.language: self._pipeline()}

    def process_text(self, text: str, language: str) -> NlpArtifacts:
        """Tokenize ``text``; run the model only if the text has a word it could label."""
        return self._doc_to_nlp_artifact(self._doc(text), language)

    # The signature of presidio's SpacyNlpEngine.process_batch, which itself differs from its
    # base class NlpEngine's (hence the ignores).
    def process_batch(  # type: ignore[override]
        self,
        texts: list[str] | list[tuple[str, object]],  # type: ignore[override]
        language: str,
        batch_size: int = 1,
        n_process: int = 1,
        as_tuples: bool = False,
    ) -> Generator[tuple[Any, NlpArtifacts, Any] | tuple[Any, NlpArtifacts], Any, None]:
        """Like :meth:`process_text` for many texts: the model runs once over a batch
        (``nlp.pipe``) of those that need it; the others are only tokenized. ``as_tuples``
        (presidio's ``(text, context)`` input) is not used by idgraph and not supported."""
        if as_tuples:
            raise NotImplementedError("process_batch(as_tuples=True)")
        nlp = self.nlp[self.language]
        items = [str(text) for text in texts]
        wanted = [i for i, text in enumerate(items) if self._model_dir and _may_name(text)]
        docs: list[Doc] = [nlp.make_doc(text) for text in items]
        # The model's components run on the Docs just made: each text is tokenized once.
        modelled = nlp.pipe((docs[i] for i in wanted), batch_size=max(batch_size, 1))
        for index, doc in zip(wanted, modelled, strict=True):
            docs[index] = doc
        for text, doc in zip(items, docs, strict=True):
            yield text, self._doc_to_nlp_artifact(doc, language)

    def _doc(self, text: str) -> Doc:
        nlp = self.nlp[self.language]
        if self._model_dir and _may_name(text):
            return nlp(text)
        # Without a model (or a word) the tokens are all presidio needs: skip the pipeline.
        return nlp.make_doc(text)

    def get_supported_entities(self) -> list[str]:
        """The NER labels with a model, none without."""
        return list(NER_ENTITIES) if self._model_dir else []

    def is_stopword(self, word: str, language: str) -> bool:
        """No word is a stop word here: presidio drops stop words from the context it compares,
        and spaCy's English list holds context words such as "call"."""
        return False

    def _doc_to_nlp_artifact(self, doc: Doc, language: str) -> NlpArtifacts:
        # The pipeline has no lemmatizer (every lemma is ""), which would silently disable
        # presidio's context enhancement: it compares context words with lemmas. The lower-case
        # token text stands in; context words are matched as substrings, so inflected forms
        # ("Telefonnummer" for "telefon") still count.
        entities, scores = self._reviewed_entities(doc)
        return NlpArtifacts(
            entities=entities,
            tokens=doc,
            tokens_indices=[token.idx for token in doc],
            lemmas=[token.lower_ for token in doc],
            nlp_engine=self,
            language=language,
            scores=scores,
        )

    def _reviewed_entities(self, doc: Doc) -> tuple[list[Span], list[float]]:
        """The model's entities after the lexicon's review, plus the names it finds alone.

        Each with its own score (:mod:`privacy.scanning.name_lexicon`): a listed name scores
        higher than capitalised unknown words, so per-type thresholds trade recall for precision.
        """
        lexicon = self._lexicon
        if lexicon is None or not doc.has_annotation("ENT_IOB"):
            return [], []
        readings = []
        for found in doc.ents:
            if found.label_ in NER_ENTITIES:
                entity = _relabel(found)
                texts = [token.text for token in entity]
                readings.extend(lexicon.review(entity.label_, texts, entity.start))
        taken = [False] * len(doc)
        for reading in readings:
            taken[reading.start : reading.end] = [True] * (reading.end - reading.start)
        readings.extend(lexicon.find_names([token.text for token in doc], taken))
        entities = [Span(doc, r.start, r.end, label=r.label) for r in readings]
        return entities, [r.score for r in readings]


def _relabel(entity: Span) -> Span:
    """A PERSON that opens with a number ("18 Snyder Laneway") is the model's misreading of a
    street address: no name starts with digits, and every house-number-first street does."""
    if entity.label_ == "PERSON" and entity[0].like_num:
        return Span(entity.doc, entity.start, entity.end, label="STREET_ADDRESS")
    return entity


class PresidioPiiScanner:
    """:class:`privacy.scanning.PiiScanner` on presidio-analyzer with idgraph's NER model.

    Build one per process (construction takes about a second) and share it: ``scan`` and
    ``scan_many`` may be called from several threads. Calls are serialised by a lock, because
    the spaCy pipeline mutates its vocabulary while tokenizing and the pipeline is replaced
    periodically (see the module docstring); scanning is CPU-bound Python, so the lock costs
    little next to the GIL.

    Raises :class:`privacy.scanning.ScannerConfigurationError` if the configuration sets a
    threshold or context words for an entity type no recognizer detects, and
    :class:`privacy.scanning.ScannerModelError` if the model files are missing or are not the
    pinned ones. ``model_dir`` and ``model_sha256`` exist for tests and for deployments that
    ship a model of their own (built by ``tools/pii_model/train.py`` and pinned there).
    """

    def __init__(
        self,
        config: ScannerConfig,
        recycle_after: int = 20_000,
        model_dir: Path = PII_NER_MODEL_DIR,
        model_sha256: str = PII_NER_MODEL_SHA256,
    ) -> None:
        self._config = config
        self._recycle_after = recycle_after
        self._texts_since_recycle = 0
        self._lock = threading.Lock()
        language = config.language
        _guard_presidio_logs()
        warm_up_offline_suffix_list()

        recognizers = _recognizers(language, ner=config.ner)
        entities = frozenset(e for r in recognizers for e in r.supported_entities)
        for section in ("thresholds", "context_words"):
            unknown = sorted(set(getattr(config, section)) - entities)
            if unknown:
                raise ScannerConfigurationError(
                    section,
                    f"unknown entity type(s) {', '.join(unknown)}; "
                    f"known: {', '.join(sorted(entities))}",
                )
        for recognizer in recognizers:
            for entity in recognizer.supported_entities:
                extra = config.context_words.get(entity, [])
                recognizer.context = [*(recognizer.context or []), *(w.lower() for w in extra)]

        self._entities = entities
        try:
            self._nlp_engine = _OfflineSpacyNlpEngine(
                language, model_dir if config.ner else None, model_sha256
            )
        except OSError as error:  # missing or unreadable model files
            raise ScannerModelError(str(model_dir), type(error).__name__) from error
        self._analyzer = AnalyzerEngine(
            registry=RecognizerRegistry(recognizers=recognizers, supported_languages=[language]),
            nlp_engine=self._nlp_engine,
            supported_languages=[language],
            # Whole-word context matching would miss compounds ("Telefonnummer", "Lieferadresse")
            # that are the normal form of context in German and Dutch.
            context_aware_enhancer=LemmaContextAwareEnhancer(context_matching_mode="substring"),
            log_decision_process=False,
        )
        self._entity_list = sorted(entities)
        self._plan = _AnalysisPlan(self._analyzer, language, self._entity_list)
        self._warm_up()

    def _warm_up(self) -> None:
        """Scan a fixed text once, so the first real scan does not pay for first-use work.

        presidio compiles a recognizer's patterns when it first analyses a text, and the NER
        model allocates its buffers on its first document: together a few hundred ms of CPU
        that would otherwise land on the first request (or bulk chunk) after start-up. The
        text is constant and holds no personal data.
        """
        language = self._config.language
        self._plan.analyze(_WARM_UP_TEXT, self._nlp_engine.process_text(_WARM_UP_TEXT, language))
        list(self._nlp_engine.process_batch([_WARM_UP_TEXT, _WARM_UP_TEXT], language))

    @property
    def entities(self) -> frozenset[str]:
        """The entity types this scanner can detect."""
        return self._entities

    @property
    def config(self) -> ScannerConfig:
        """The configuration the scanner was built with."""
        return self._config

    def scan(self, text: str) -> list[PiiFinding]:
        """Return the findings in ``text`` that reach their entity's threshold, by position.

        Raises :class:`identity.errors.InputLimitError` for a text over ``MAX_TEXT_CHARS``.
        """
        _check_length(text)
        if not text.strip():
            return []
        with self._lock:
            self._recycle_if_due(1)
            artifacts = self._nlp_engine.process_text(text, self._config.language)
            results = self._plan.analyze(text, artifacts)
        return self._to_findings(results)

    def scan_many(self, texts: Sequence[str]) -> list[list[PiiFinding]]:
        """Scan several texts; one list of findings per text, in the order given.

        The texts are tokenized with ``nlp.pipe`` and analysed one by one under a single lock
        acquisition (the same findings as presidio's ``BatchAnalyzerEngine``, without its
        per-value type checks; see :class:`_AnalysisPlan` for the work left out).
        """
        for text in texts:
            _check_length(text)
        out: list[list[PiiFinding]] = []
        language = self._config.language
        with self._lock:
            for chunk in _chunks(texts, self._recycle_after):
                self._recycle_if_due(len(chunk))
                artifacts = self._nlp_engine.process_batch(list(chunk), language, batch_size=256)
                for item in artifacts:
                    out.append(self._to_findings(self._plan.analyze(item[0], item[1])))
        return out

    def _recycle_if_due(self, incoming: int) -> None:
        """Replace the spaCy pipeline when it has interned tokens of enough texts."""
        if self._texts_since_recycle + incoming > self._recycle_after:
            self._nlp_engine.load()
            self._texts_since_recycle = 0
        self._texts_since_recycle += incoming

    def _to_findings(self, results: Iterable[RecognizerResult]) -> list[PiiFinding]:
        kept = [r for r in results if r.score >= self._config.threshold_for(r.entity_type)]
        kept = _drop_ner_over_structured(kept)
        return [
            PiiFinding(r.entity_type, r.start, r.end, round(min(max(r.score, 0.0), 1.0), 4))
            for r in _resolve_overlaps(kept)
        ]


class _AnalysisPlan:
    """``AnalyzerEngine.analyze`` for the scanner's fixed recognizers, minus work that cannot
    change a result.

    presidio's engine is general: per text it re-selects the recognizers from the registry,
    runs every one of them, hands every result list to every recognizer's own context hook and
    then to the context enhancer (which deep-copies the results first), even when nothing was
    found. On marketing values (a city, a product category) that generality cost more CPU than
    the recognizers' own work. The results here are the engine's, result for result, because
    only steps without an effect on them are left out:

    * the recognizers are selected once, by the registry, in the order it returns them (the
      order breaks ties between equal overlapping results later, so it is kept);
    * a recognizer whose every pattern needs a character the text does not hold is not run:
      the text cannot match (:data:`_NEEDS`, one entry per recognizer class: a digit for the
      checksummed ids, cards, IBANs, phone numbers and house numbers; ``@`` for e-mail; a digit
      or ``:`` for IP addresses);
    * no result, nothing to enhance: the context steps run only when something was found, and
      the context enhancer sees only the results it could change (those of a recognizer with
      context words, not boosted yet; it treats each result on its own and keeps their order);
    * the recognizers' own context hook is presidio's base one, which returns its input (none
      of the scanner's recognizers overrides it); if one ever does, the plan falls back to
      ``AnalyzerEngine.analyze`` for every text.

    The context enhancer, the per-recognizer score thresholds and the removal of duplicates are
    presidio's own, called as the engine calls them.
    """

    def __init__(self, analyzer: AnalyzerEngine, language: str, entities: list[str]) -> None:
        self._analyzer = analyzer
        self._language = language
        self._entities = entities
        recognizers = analyzer.registry.get_recognizers(language=language, entities=entities)
        self._recognizers = recognizers
        self._steps = [(r, _NEEDS.get(type(r))) for r in recognizers]
        self._with_context = {r.id for r in recognizers if r.context}
        self._order = {r.id: index for index, r in enumerate(recognizers)}
        self._thresholds = {r.id: r.score_thresholds for r in recognizers}
        self._engine_threshold = float(analyzer.default_score_threshold)
        self._enhancer = analyzer.context_aware_enhancer
        self._general = any(
            type(r).enhance_using_context is not EntityRecognizer.enhance_using_context
            for r in recognizers
        )

    def analyze(self, text: str, artifacts: NlpArtifacts) -> list[RecognizerResult]:
        """The engine's results for ``text`` (before its decision-process clean-up)."""
        if self._general:
            results: list[RecognizerResult] = self._analyzer.analyze(
                text=text, language=self._language, entities=self._entities, nlp_artifacts=artifacts
            )
            return results
        results = []
        met = _needs_met(text)
        for recognizer, needs in self._steps:
            if needs is not None and needs not in met:
                continue
            found = recognizer.analyze(text=text, entities=self._entities, nlp_artifacts=artifacts)
            if found:
                _identify(found, recognizer)
                results.extend(found)
        if not results:
            return results
        # The engine regroups results by recognizer (its per-recognizer context step) and drops
        # those no selected recognizer claims; a stable sort by recognizer does the same.
        order = self._order
        key = RecognizerResult.RECOGNIZER_IDENTIFIER_KEY
        results = sorted(
            (r for r in results if r.recognition_metadata[key] in order),
            key=lambda r: order[r.recognition_metadata[key]],
        )
        boosted = RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY
        open_to_context = [
            index
            for index, r in enumerate(results)
            if r.recognition_metadata[key] in self._with_context
            and not r.recognition_metadata.get(boosted)
        ]
        if open_to_context:
            enhanced = self._enhancer.enhance_using_context(
                text=text,
                raw_results=[results[index] for index in open_to_context],
                nlp_artifacts=artifacts,
                recognizers=self._recognizers,
                context=None,
            )
            for index, result in zip(open_to_context, enhanced, strict=True):
                results[index] = result
        kept = [r for r in results if r.score >= self._threshold(r)]
        deduplicated: list[RecognizerResult] = EntityRecognizer.remove_duplicates(kept)
        return deduplicated

    def _threshold(self, result: RecognizerResult) -> float:
        """The engine's score floor for ``result``: its recognizer's for the entity, else the
        recognizer's default, else the engine's."""
        metadata = result.recognition_metadata or {}
        thresholds = self._thresholds.get(metadata.get(RecognizerResult.RECOGNIZER_IDENTIFIER_KEY))
        if thresholds is None:
            return self._engine_threshold
        found = thresholds.get(result.entity_type, thresholds.get("default"))
        return self._engine_threshold if found is None else float(found)


def _identify(results: list[RecognizerResult], recognizer: EntityRecognizer) -> None:
    """Name the recognizer in each result's metadata unless it did (as the engine does)."""
    for result in results:
        if not result.recognition_metadata:
            result.recognition_metadata = {}
        metadata = result.recognition_metadata
        metadata.setdefault(RecognizerResult.RECOGNIZER_IDENTIFIER_KEY, recognizer.id)
        # presidio assigns ``name`` in an untyped constructor branch, so mypy cannot see its type.
        name = str(recognizer.name)  # type: ignore[has-type]
        metadata.setdefault(RecognizerResult.RECOGNIZER_NAME_KEY, name)


# What a text must hold for a recognizer's patterns to match at all (see _AnalysisPlan): every
# pattern of these classes needs a decimal digit (checksummed ids, card numbers, IBAN check
# digits, phone numbers, house numbers), an "@" (e-mail) or, for IP addresses, a digit or the
# ":" of an IPv6 address written in hex letters only. "Digit" is a decimal digit of any script
# by both regex engines in play (re for the phone candidates, regex for presidio's patterns), so
# a digit one of them knows and the other does not still runs the recognizer. The Italian fiscal
# code can be written without digits (omocodia replaces them with letters): it always runs, as
# do the name recognizer and the NER model's.
_RE_DIGIT = re.compile(r"\d")
_REGEX_DIGIT = regex.compile(r"\d")


class _Need(StrEnum):
    """A character class a recognizer's every pattern needs in the text."""

    DIGIT = "a decimal digit"
    AT_SIGN = "@"
    DIGIT_OR_COLON = "a decimal digit or ':'"


def _needs_met(text: str) -> set[_Need]:
    """The needs ``text`` meets (each looked up once per text, not once per recognizer)."""
    met = set()
    if _RE_DIGIT.search(text) is not None or _REGEX_DIGIT.search(text) is not None:
        met |= {_Need.DIGIT, _Need.DIGIT_OR_COLON}
    elif ":" in text:
        met.add(_Need.DIGIT_OR_COLON)
    if "@" in text:
        met.add(_Need.AT_SIGN)
    return met


_NEEDS: dict[type[EntityRecognizer], _Need] = {
    OfflineEmailRecognizer: _Need.AT_SIGN,
    EuPhoneRecognizer: _Need.DIGIT,
    AnyCaseIbanRecognizer: _Need.DIGIT,
    CardNumberRecognizer: _Need.DIGIT,
    IpRecognizer: _Need.DIGIT_OR_COLON,
    StreetAddressRecognizer: _Need.DIGIT,
    EuVatIdRecognizer: _Need.DIGIT,
    ContextRequiredRecognizer: _Need.DIGIT,
    UkNinoRecognizer: _Need.DIGIT,
    EsNifRecognizer: _Need.DIGIT,
    EsNieRecognizer: _Need.DIGIT,
    SePersonnummerRecognizer: _Need.DIGIT,
    FiPersonalIdentityCodeRecognizer: _Need.DIGIT,
    UsSsnRecognizer: _Need.DIGIT,
}


def _recognizers(language: str, *, ner: bool) -> list[EntityRecognizer]:
    """presidio's pattern recognizers, idgraph's own, and (with ``ner``) the NER model's.

    Left out on purpose: URL (page URLs are normal marketing values and hold no personal data
    by themselves; an e-mail address inside one is still found), DATE (a date alone is not
    personal data and marketing events are full of them) and presidio's DE_VAT_ID /
    IT_VAT_CODE (``EU_VAT_ID`` covers every EU prefix). With the NER model, names are its job:
    the person recognizer keeps its context rules (titles, greetings, form labels) but drops
    its low-scored runs of capitalised words, which were the only fallback without a model.
    """
    recognizers: list[EntityRecognizer] = [
        OfflineEmailRecognizer(supported_language=language),
        EuPhoneRecognizer(supported_language=language),
        AnyCaseIbanRecognizer(supported_language=language),
        CardNumberRecognizer(supported_language=language),
        IpRecognizer(supported_language=language),
        PersonNameRecognizer(supported_language=language, bare_runs=not ner),
        StreetAddressRecognizer(supported_language=language),
        EuVatIdRecognizer(supported_language=language),
        de_tax_id_recognizer(language),
        uk_nhs_recognizer(language),
        UkNinoRecognizer(supported_language=language),
        EsNifRecognizer(supported_language=language),
        EsNieRecognizer(supported_language=language),
        ItFiscalCodeRecognizer(supported_language=language),
        pl_pesel_recognizer(language),
        SePersonnummerRecognizer(supported_language=language),
        FiPersonalIdentityCodeRecognizer(supported_language=language),
        UsSsnRecognizer(supported_language=language),
    ]
    if ner:
        recognizers.append(
            SpacyRecognizer(supported_language=language, supported_entities=list(NER_ENTITIES))
        )
    return recognizers


# What the scanner analyses once at construction (see PresidioPiiScanner._warm_up): words,
# digits and an @, so that every recognizer's patterns and the model run; no personal data.
_WARM_UP_TEXT = "Warm-up 12 Example Street, order 4711 of 2026-01-05 to no-reply@example.invalid"

# Two letters in a row: the least a name, place, company or street can be written with. A value
# without (a date, an amount, a phone number, a SKU) skips the model, which costs more per value
# than every pattern recognizer together. Case does not matter: the model reads lower-case names.
_WORD = re.compile(r"[^\W\d_]{2}")


def _may_name(text: str) -> bool:
    return _WORD.search(text) is not None


def _drop_ner_over_structured(results: list[RecognizerResult]) -> list[RecognizerResult]:
    """Drop an NER entity that overlaps a pattern finding of a structured type.

    A national insurance number, IBAN or phone number matched by its pattern (and often its
    check digits) is the more specific reading than the model's guess that the same characters
    are part of an address or a name; without this, the NER score (0.85) would outrank a
    validated id scored lower and hide it.
    """
    structured = [r for r in results if r.entity_type not in NER_ENTITIES and not _from_ner(r)]
    if not structured:
        return results
    return [r for r in results if not (_from_ner(r) and any(_overlap(r, s) for s in structured))]


def _from_ner(result: RecognizerResult) -> bool:
    metadata = result.recognition_metadata or {}
    return bool(metadata.get(RecognizerResult.RECOGNIZER_NAME_KEY) == SpacyRecognizer.__name__)


def _resolve_overlaps(results: list[RecognizerResult]) -> list[RecognizerResult]:
    """Drop a result that lies inside another of at least its score; merge same-type overlaps.

    A phone number inside an IBAN or an 11-digit "tax id" inside a card number is one value
    seen twice; reporting the stronger reading is enough, since its span covers the weaker one.
    Overlapping results of one type (two readings of the same name) become one span.
    """
    ordered = sorted(results, key=lambda r: (-r.score, -(r.end - r.start), r.start))
    kept: list[RecognizerResult] = []
    for result in ordered:
        if any(k.start <= result.start and result.end <= k.end for k in kept):
            continue
        same = [k for k in kept if k.entity_type == result.entity_type and _overlap(k, result)]
        if same:
            anchor = same[0]
            anchor.start = min(anchor.start, result.start)
            anchor.end = max(anchor.end, result.end)
            continue
        kept.append(result)
    return sorted(kept, key=lambda r: (r.start, r.end, r.entity_type))


def _overlap(a: RecognizerResult, b: RecognizerResult) -> bool:
    return a.start < b.end and b.start < a.end


def _chunks(texts: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for offset in range(0, len(texts), max(size, 1)):
        yield texts[offset : offset + size]


def _check_length(text: str) -> None:
    if len(text) > MAX_TEXT_CHARS:
        # The message names the length, never the content.
        raise InputLimitError(
            "text", f"{len(text)} characters exceed the scanner limit of {MAX_TEXT_CHARS}"
        )
