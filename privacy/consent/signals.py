"""Consent signals to consent records: direct decisions, TC strings, GPP strings and GPC.

Every signal idgraph accepts (``POST /v1/consent``, a signed CMP webhook, ``Sec-GPC: 1`` on an
ingest) is turned here into :class:`~identity.model.ConsentInput` values, one per purpose the
signal speaks about, using ``policies/purposes.yaml``. The resolution engine then anchors them to
the event's identifiers in the same transaction (:mod:`identity.resolution`). Pure: no I/O, no
clock of its own (``now`` is passed in), no logging.

How each signal maps (see ``docs/consent-signals.md`` for the table with examples):

* **Direct decisions** ``{purpose: granted}``: one record per purpose. An unknown purpose, or a
  purpose whose lawful basis is contract or legal obligation (consent does not apply to it), is
  refused with an :class:`~identity.errors.InvalidFieldError` (422) naming it.
* **TC string** (IAB TCF v2.2): for every purpose with a non-empty ``tcf.purposes`` mapping, a
  grant iff every mapped TCF purpose is consented (for a legitimate-interest purpose: consented,
  or established as legitimate interest), every mapped special feature is opted in, and, when
  ``tcf.vendor_id`` is set, our vendor has consent (or legitimate interest, paired with the
  purpose's own basis) and no publisher restriction forbids it; otherwise a denial. The decision
  time is the string's ``last_updated``: that is when the person decided, not when we heard.
* **GPP string**: its ``tcfeuv2`` section as a TC string; its ``tcfcav1`` (TCF Canada) section
  by the same ``tcf.purposes`` mapping, express consent granting (implied consent too when
  ``tcf.ca_implied_consent: accept``), both TCF sections together giving one record per purpose
  (both must grant); ``usnat``, every US state section and
  ``uspv1`` together for purposes with ``us_opt_outs``: any listed opt-out ``OPTED_OUT`` in any
  section denies, all listed ``DID_NOT_OPT_OUT`` grants, anything else (not applicable) records
  nothing; a GPC sub-section set to true in any section acts as GPC. One record per purpose,
  however many sections agree. Sections idgraph does not decode are reported, never an error.
* **GPC**: a denial for every purpose with ``gpc: opt_out``.

Proof: every record carries the SHA-256 (hex) of the bytes that carried the decision: the TC or
GPP string itself, or the request body for direct decisions and GPC (the body in which the header
arrived). Webhook records carry the digest of the raw webhook body, which contains the signal
(their ``signal`` is :attr:`ConsentSignal.WEBHOOK`, which says how to read the proof).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from identity.errors import BatchValidationError, InvalidFieldError
from identity.model import ConsentInput, ConsentSignal
from privacy.access.purposes import (
    CaImpliedConsent,
    GpcEffect,
    LawfulBasis,
    PreV22Handling,
    Purpose,
    PurposesPolicy,
    UsOptOut,
    UsRefusalEffect,
)
from privacy.consent.gpp import (
    SECTION_NAMES,
    Consent,
    GppString,
    NotAppliedReason,
    OptOut,
    UspFlag,
    UsSection,
    decode_gpp_string,
)
from privacy.consent.tcf import RestrictionType, TCString, decode_tc_string
from privacy.consent.tcfca import TcfCaV1Section

# TCF Canada publisher restriction types (TCF Canada v1.x, "PubRestrictions"): 0 the vendor
# may not process for the purpose, 1 it needs express consent, 2 implied consent is enough.
_CA_NOT_ALLOWED = 0
_CA_REQUIRE_EXPRESS = 1

# A signal dated further ahead than this is refused: a future-dated grant would outrank every
# real decision made before that date ("latest wins"), so a wrong clock must not get that power.
MAX_FUTURE_SKEW = timedelta(hours=24)
_PURPOSE_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
# uspv1 OptOutSale (Y: opted out of sale, N: did not, -: not applicable) as a US opt-out value.
_USP_SALE = {
    UspFlag.YES: OptOut.OPTED_OUT,
    UspFlag.NO: OptOut.DID_NOT_OPT_OUT,
    UspFlag.NOT_APPLICABLE: OptOut.NOT_APPLICABLE,
}


def signal_digest(data: bytes | str) -> str:
    """The proof of a signal: SHA-256 (hex) of its bytes (UTF-8 for text)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True, slots=True)
class SignalPointers:
    """Where each part of a signal sits in the request, for JSON pointers in errors."""

    decisions: str = "#/decisions"
    tcf: str = "#/tcf"
    gpp: str = "#/gpp"
    timestamp: str = "#/timestamp"


@dataclass(frozen=True, slots=True)
class ConsentSignals:
    """Everything one request or webhook said about consent, before translation.

    ``at`` is when the person decided for the signals that carry no time of their own (direct
    decisions, GPC, GPP usnat); TC strings carry theirs. ``body_digest`` is the proof of direct
    decisions and GPC. ``via_webhook`` makes every record a ``webhook`` record whose proof is
    ``body_digest`` (the signed webhook body, which contains every signal it carried).
    """

    at: datetime
    body_digest: str
    decisions: Mapping[str, bool] = field(default_factory=dict)
    tc_string: str | None = None
    gpp_string: str | None = None
    gpc: bool = False
    via_webhook: bool = False
    pointers: SignalPointers = field(default_factory=SignalPointers)

    @property
    def empty(self) -> bool:
        """Whether no signal at all is present."""
        return not (self.decisions or self.tc_string or self.gpp_string or self.gpc)


@dataclass(frozen=True, slots=True)
class GppReport:
    """What idgraph did with the sections of a GPP string.

    ``applied`` names the sections that produced records (``tcfeuv2``, ``usnat``);
    ``not_applied`` lists the ids of every section kept only raw (``usca`` is 8), and ``unknown``
    the subset of those with no registered name.
    """

    section_ids: tuple[int, ...]
    applied: tuple[str, ...]
    not_applied: tuple[int, ...]
    unknown: tuple[int, ...]
    reasons: Mapping[int, NotAppliedReason] = field(default_factory=dict)

    def section_name(self, section_id: int) -> str | None:
        """The registered name of a section id, if any."""
        return SECTION_NAMES.get(section_id)

    def reason(self, section_id: int) -> NotAppliedReason:
        """Why a section in :attr:`not_applied` was not applied."""
        return self.reasons.get(section_id, NotAppliedReason.UNKNOWN_SECTION)


@dataclass(frozen=True, slots=True)
class Translation:
    """The consent inputs a set of signals produced, and the GPP report if a GPP string came."""

    consents: tuple[ConsentInput, ...]
    gpp: GppReport | None = None


class ConsentSignalTranslator:
    """Turns consent signals into :class:`ConsentInput` values by the purposes policy."""

    def __init__(self, purposes: PurposesPolicy) -> None:
        self._policy = purposes

    @property
    def policy(self) -> PurposesPolicy:
        """The purposes policy signals are read with."""
        return self._policy

    # -- the whole request ---------------------------------------------------------------------

    def translate(self, signals: ConsentSignals, now: datetime) -> Translation:
        """Every consent input ``signals`` produce; all problems in one ``BatchValidationError``.

        Raises ``InvalidFieldError`` (reason ``no_signal``) when nothing was sent at all.
        """
        if signals.empty:
            raise InvalidFieldError(
                "no_signal",
                "send at least one of decisions, tcf, gpp (or the Sec-GPC: 1 header)",
                "#",
            )
        errors: list[InvalidFieldError] = []
        consents: list[ConsentInput] = []
        report: GppReport | None = None
        if signals.at > now + MAX_FUTURE_SKEW:
            errors.append(_future(signals.pointers.timestamp))
        webhook = ConsentSignal.WEBHOOK if signals.via_webhook else None
        try:
            consents += self.decisions(
                signals.decisions,
                signals.at,
                signals.body_digest,
                signal=webhook or ConsentSignal.DIRECT,
                pointer=signals.pointers.decisions,
            )
        except BatchValidationError as exc:
            errors += exc.errors
        if signals.tc_string is not None:
            try:
                consents += self.tc_string(
                    signals.tc_string,
                    now,
                    proof=signals.body_digest if webhook else None,
                    signal=webhook or ConsentSignal.TCF,
                    pointer=signals.pointers.tcf,
                )
            except InvalidFieldError as exc:
                errors.append(exc)
        if signals.gpp_string is not None:
            try:
                gpp = self.gpp_string(
                    signals.gpp_string,
                    signals.at,
                    now,
                    proof=signals.body_digest if webhook else None,
                    signal=webhook or ConsentSignal.GPP,
                    pointer=signals.pointers.gpp,
                )
            except InvalidFieldError as exc:
                errors.append(exc)
            else:
                consents += gpp.consents
                report = gpp.gpp
        if signals.gpc:
            consents += self.gpc(
                signals.at, signals.body_digest, signal=webhook or ConsentSignal.GPC
            )
        if errors:
            raise BatchValidationError(errors)
        return Translation(tuple(consents), report)

    # -- one signal each -----------------------------------------------------------------------

    def decisions(
        self,
        decisions: Mapping[str, bool],
        at: datetime,
        proof: str,
        *,
        signal: ConsentSignal = ConsentSignal.DIRECT,
        pointer: str = "#/decisions",
    ) -> tuple[ConsentInput, ...]:
        """One input per ``{purpose: granted}``; unknown or non-consent purposes are refused."""
        errors: list[InvalidFieldError] = []
        inputs: list[ConsentInput] = []
        for purpose_id, granted in decisions.items():
            # The key joins the pointer only when it has the shape of a purpose name, so that a
            # value pasted into the wrong place never travels into an error body or a log line.
            named = _PURPOSE_NAME.fullmatch(purpose_id) is not None
            where = f"{pointer}/{purpose_id}" if named else pointer
            purpose = self._policy.get(purpose_id)
            if purpose is None:
                errors.append(self._unknown(purpose_id, where))
                continue
            if not purpose.consent_applies:
                errors.append(
                    InvalidFieldError(
                        "consent_not_applicable",
                        f"purpose {purpose_id!r} has lawful basis {purpose.lawful_basis.value}; "
                        "consent signals do not apply to it",
                        where,
                    )
                )
                continue
            inputs.append(_input(purpose_id, purpose, bool(granted), at, signal, proof))
        if errors:
            raise BatchValidationError(errors)
        return tuple(inputs)

    def tc_string(
        self,
        tc_string: str,
        now: datetime,
        *,
        proof: str | None = None,
        signal: ConsentSignal = ConsentSignal.TCF,
        pointer: str = "#/tcf",
    ) -> tuple[ConsentInput, ...]:
        """Decode a TC string and map it (see :meth:`tcf`); decode errors located at ``pointer``.

        ``proof`` defaults to the digest of the string itself.
        """
        try:
            tc = decode_tc_string(tc_string)
        except InvalidFieldError as exc:
            raise exc.at(pointer) from None
        if tc.last_updated > now + MAX_FUTURE_SKEW:
            raise _future(pointer, "the TC string's LastUpdated")
        self._check_policy_version(tc, pointer)
        return self.tcf(tc, proof or signal_digest(tc_string), signal=signal)

    def tcf(
        self, tc: TCString, proof: str, *, signal: ConsentSignal = ConsentSignal.TCF
    ) -> tuple[ConsentInput, ...]:
        """One input per purpose with a TCF mapping, decided at ``tc.last_updated``."""
        return tuple(
            _input(
                purpose_id, purpose, self._tcf_grants(purpose, tc), tc.last_updated, signal, proof
            )
            for purpose_id, purpose in sorted(self._policy.purposes.items())
            if purpose.tcf.purposes and purpose.consent_applies
        )

    def gpp_string(
        self,
        gpp_string: str,
        at: datetime,
        now: datetime,
        *,
        proof: str | None = None,
        signal: ConsentSignal = ConsentSignal.GPP,
        pointer: str = "#/gpp",
    ) -> Translation:
        """Decode a GPP string and map it (see :meth:`gpp`); errors located at ``pointer``."""
        try:
            gpp = decode_gpp_string(gpp_string)
        except InvalidFieldError as exc:
            raise exc.at(pointer) from None
        if gpp.tcfeuv2 is not None and gpp.tcfeuv2.last_updated > now + MAX_FUTURE_SKEW:
            raise _future(pointer, "the tcfeuv2 section's LastUpdated")
        if gpp.tcfeuv2 is not None:
            self._check_policy_version(gpp.tcfeuv2, pointer)
        if gpp.tcfcav1 is not None and gpp.tcfcav1.last_updated > now + MAX_FUTURE_SKEW:
            raise _future(pointer, "the tcfcav1 section's LastUpdated")
        return self.gpp(gpp, at, proof or signal_digest(gpp_string), signal=signal)

    def gpp(
        self,
        gpp: GppString,
        at: datetime,
        proof: str,
        *,
        signal: ConsentSignal = ConsentSignal.GPP,
    ) -> Translation:
        """Inputs from ``tcfeuv2``, ``uspv1``, ``usnat`` and every US state section.

        Sections not decoded (``tcfcav1``, unknown ids) are reported. US sections carry no time
        of their own, so their records are decided at ``at``.
        """
        inputs: list[ConsentInput] = []
        applied: list[str] = []
        if gpp.tcfeuv2 is not None:
            inputs += self.tcf(gpp.tcfeuv2, proof, signal=signal)
            applied.append("tcfeuv2")
        if gpp.tcfcav1 is not None:
            inputs = self._with_tcfca(inputs, gpp.tcfcav1, proof, signal)
            applied.append("tcfcav1")
        if gpp.uspv1 is not None:
            applied.append("uspv1")
        applied += list(gpp.us_sections)
        for purpose_id, granted in sorted(self._us_decisions(gpp).items()):
            purpose = self._policy.purposes[purpose_id]
            inputs.append(_input(purpose_id, purpose, granted, at, signal, proof))
        report = GppReport(
            section_ids=gpp.section_ids,
            applied=tuple(applied),
            not_applied=gpp.undecoded_sections,
            unknown=gpp.unknown_sections,
            reasons=gpp.not_applied_reasons,
        )
        return Translation(tuple(inputs), report)

    def _us_decisions(self, gpp: GppString) -> dict[str, bool]:
        """One decision per purpose from every US section of ``gpp`` (usnat, states, uspv1).

        For a purpose with ``us_opt_outs``, each listed kind is read from every section that has
        the field (``usva`` has no sharing opt-out; uspv1's OptOutSale is the sale opt-out).
        Any ``OPTED_OUT`` denies; every listed kind present and ``DID_NOT_OPT_OUT`` everywhere
        grants; otherwise (not applicable, or no section carries the kind) nothing is recorded.
        A GPC bit set in any section's GPC sub-section denies every ``gpc: opt_out`` purpose.
        Several sections, or an opt-out and its GPC bit, saying the same thing give one record.
        """
        sections = list(gpp.us_sections.values())
        decisions: dict[str, bool] = {}
        for purpose_id, purpose in self._policy.purposes.items():
            if not purpose.us_opt_outs or not purpose.consent_applies:
                continue
            per_kind: list[list[OptOut]] = []
            for kind in purpose.us_opt_outs:
                values = [v for s in sections if (v := s.opt_out(kind.value)) is not None]
                if kind is UsOptOut.SALE and gpp.uspv1 is not None:
                    values.append(_USP_SALE[gpp.uspv1.opt_out_sale])
                per_kind.append(values)
            flat = [value for values in per_kind for value in values]
            if OptOut.OPTED_OUT in flat:
                decisions[purpose_id] = False
            elif all(values for values in per_kind) and all(
                value is OptOut.DID_NOT_OPT_OUT for value in flat
            ):
                decisions[purpose_id] = True
            # Otherwise some listed kind is "not applicable" or absent: the string says nothing
            # about this purpose for this person, so nothing is recorded (the default applies).
        self._us_refusals(sections, decisions)
        if any(section.gpc for section in sections):
            for purpose_id, purpose in self._policy.purposes.items():
                if purpose.gpc is GpcEffect.OPT_OUT and purpose.consent_applies:
                    decisions[purpose_id] = False
        return decisions

    def _us_refusals(self, sections: list[UsSection], decisions: dict[str, bool]) -> None:
        """Deny purposes bound (``us_sensitive_data``/``us_known_child: deny``) to a refused
        sensitive-data or known-child entry; a denial replaces any opt-out grant, so the string
        still gives one decision per purpose."""
        refused = {
            field_name: any(
                Consent.NO_CONSENT in section.consents(field_name) for section in sections
            )
            for field_name in ("SensitiveDataProcessing", "KnownChildSensitiveDataConsents")
        }
        for purpose_id, purpose in self._policy.purposes.items():
            if not purpose.consent_applies:
                continue
            if (
                purpose.us_sensitive_data is UsRefusalEffect.DENY
                and refused["SensitiveDataProcessing"]
            ) or (
                purpose.us_known_child is UsRefusalEffect.DENY
                and refused["KnownChildSensitiveDataConsents"]
            ):
                decisions[purpose_id] = False

    def gpc(
        self, at: datetime, proof: str, *, signal: ConsentSignal = ConsentSignal.GPC
    ) -> tuple[ConsentInput, ...]:
        """A denial for every purpose the policy binds to GPC (``gpc: opt_out``)."""
        return tuple(
            _input(purpose_id, purpose, False, at, signal, proof)
            for purpose_id, purpose in sorted(self._policy.purposes.items())
            if purpose.gpc is GpcEffect.OPT_OUT and purpose.consent_applies
        )

    # -- helpers -------------------------------------------------------------------------------

    def _tcf_grants(self, purpose: Purpose, tc: TCString) -> bool:
        """Whether ``tc`` grants ``purpose`` (see the module docstring)."""
        li_allowed = purpose.lawful_basis is LawfulBasis.LEGITIMATE_INTEREST
        vendor = self._policy.tcf.vendor_id
        for tcf_purpose in purpose.tcf.purposes:
            restrictions = tc.restrictions_for(vendor, tcf_purpose) if vendor else ()
            if RestrictionType.NOT_ALLOWED in restrictions:
                return False
            by_consent = tc.purpose_consent(tcf_purpose) and (
                vendor is None or tc.vendor_consent(vendor)
            )
            by_li = (
                li_allowed
                and tc.purpose_legitimate_interest(tcf_purpose)
                and (vendor is None or tc.vendor_legitimate_interest(vendor))
            )
            # A publisher restriction fixes the basis our vendor may use for this purpose; the
            # other basis then counts for nothing (TCF policy, "publisher restrictions").
            if RestrictionType.REQUIRE_CONSENT in restrictions:
                by_li = False
            if RestrictionType.REQUIRE_LEGITIMATE_INTEREST in restrictions:
                by_consent = False
            if not (by_consent or by_li):
                return False
        return all(tc.special_feature_optin(feature) for feature in purpose.tcf.special_features)

    def _tcfca_grants(self, purpose: Purpose, ca: TcfCaV1Section) -> bool:
        """Whether a TCF Canada section grants ``purpose``: every mapped TCF purpose has express
        consent (or implied consent, when ``tcf.ca_implied_consent: accept`` and no publisher
        restriction requires express consent), our vendor likewise when ``tcf.vendor_id`` is
        set, no restriction forbids it, and every mapped special feature has express consent."""
        implied_ok = self._policy.tcf.ca_implied_consent is CaImpliedConsent.ACCEPT
        vendor = self._policy.tcf.vendor_id
        for tcf_purpose in purpose.tcf.purposes:
            restrictions = ca.restriction_types(vendor, tcf_purpose) if vendor else ()
            if _CA_NOT_ALLOWED in restrictions:
                return False
            implied = implied_ok and _CA_REQUIRE_EXPRESS not in restrictions
            if not ca.purpose_consent(tcf_purpose, implied=implied):
                return False
            if vendor is not None and not ca.vendor_consent(vendor, implied=implied):
                return False
        return all(f in ca.special_feature_express_consent for f in purpose.tcf.special_features)

    def _with_tcfca(
        self,
        inputs: list[ConsentInput],
        ca: TcfCaV1Section,
        proof: str,
        signal: ConsentSignal,
    ) -> list[ConsentInput]:
        """Add the ``tcfcav1`` decisions, one per purpose: where a ``tcfeuv2`` section already
        decided a purpose, both must grant (a disagreement denies), at the later of the two
        decision times."""
        by_purpose = {i.purpose: i for i in inputs}
        for purpose_id, purpose in sorted(self._policy.purposes.items()):
            if not (purpose.tcf.purposes and purpose.consent_applies):
                continue
            granted = self._tcfca_grants(purpose, ca)
            earlier = by_purpose.get(purpose_id)
            if earlier is not None:
                granted = granted and earlier.granted
            at = ca.last_updated if earlier is None else max(ca.last_updated, earlier.at)
            by_purpose[purpose_id] = _input(purpose_id, purpose, granted, at, signal, proof)
        return list(by_purpose.values())

    def _check_policy_version(self, tc: TCString, pointer: str) -> None:
        """Refuse a pre-v2.2 TC string when the policy says ``tcf.pre_v22: refuse``."""
        if tc.pre_v22_policy and self._policy.tcf.pre_v22 is PreV22Handling.REFUSE:
            raise InvalidFieldError(
                "tcf_policy_version",
                f"TcfPolicyVersion {tc.tcf_policy_version} predates TCF v2.2 (4); this service "
                "is configured to refuse consent collected under the older policy",
                pointer,
            )

    def _unknown(self, purpose_id: str, where: str) -> InvalidFieldError:
        # Echoed only when it has the shape of a purpose name (see ``decisions``).
        shown = repr(purpose_id) if _PURPOSE_NAME.fullmatch(purpose_id) else "(not a purpose name)"
        return InvalidFieldError(
            "unknown_purpose",
            f"unknown purpose {shown}; purposes: {', '.join(self._policy.ids)}",
            where,
        )


def _input(
    purpose_id: str,
    purpose: Purpose,
    granted: bool,
    at: datetime,
    signal: ConsentSignal,
    proof: str,
) -> ConsentInput:
    return ConsentInput(purpose_id, granted, at, signal, purpose.lawful_basis.value, proof)


def _future(pointer: str, what: str = "timestamp") -> InvalidFieldError:
    hours = int(MAX_FUTURE_SKEW.total_seconds() // 3600)
    return InvalidFieldError(
        "future_timestamp", f"{what} is more than {hours} hours in the future", pointer
    )
