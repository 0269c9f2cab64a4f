"""GPP string decoder: IAB reference vectors, self-encoded sections, malformed input."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from identity.errors import InvalidFieldError
from privacy.consent.gpp import (
    Consent,
    GppDecodeError,
    MspaMode,
    NotAppliedReason,
    Notice,
    OptOut,
    UspFlag,
    decode_gpp_string,
)
from tests.privacy.consent.test_tcf import ALPHABET, BASE, FULL, BitWriter, encode_tc_string

REAL_TC_CORE = "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA"


def header(section_ids: list[int], *, header_type: int = 3, version: int = 1) -> BitWriter:
    return BitWriter().uint(header_type, 6).uint(version, 6).fibonacci_range(section_ids)


def usnat_writer(
    *,
    version: int = 2,
    notices: tuple[int, ...] = (1, 1, 1, 1, 1, 1),
    opt_outs: tuple[int, int, int] = (1, 2, 0),
    sensitive: tuple[int, ...] | None = None,
    child: tuple[int, ...] | None = None,
    personal: int = 2,
    mspa: tuple[int, int, int] = (1, 1, 2),
) -> BitWriter:
    sensitive_count, child_count = {1: (12, 2), 2: (16, 3)}.get(version, (16, 3))
    w = BitWriter().uint(version, 6)
    for value in (*notices, *opt_outs):
        w.uint(value, 2)
    for value in sensitive if sensitive is not None else (2,) * sensitive_count:
        w.uint(value, 2)
    for value in child if child is not None else (1,) * child_count:
        w.uint(value, 2)
    w.uint(personal, 2)
    for value in mspa:
        w.uint(value, 2)
    return w


def gpc(value: bool) -> str:
    return BitWriter().uint(1, 2).flag(value).encode()


def _raises(s: str, reason: str | None = None) -> GppDecodeError:
    with pytest.raises(GppDecodeError) as info:
        decode_gpp_string(s)
    if reason is not None:
        assert info.value.reason == reason, info.value.message
    assert len(s) < 8 or s not in info.value.message
    return info.value


# --- IAB reference vectors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpp", "ids"),
    [
        # IABTechLab/iabgpp-es modules/cmpapi/test/encoder/section/HeaderV1.test.ts
        ("DBAA", ()),
        (f"DBABMA~{REAL_TC_CORE}", (2,)),
        (f"DBACNYA~{REAL_TC_CORE}~1YNN", (2, 6)),
        # noirotm/iabgpp-rs iab_gpp/tests/data/{tcfeuv2_core_only,usnat_v1_opted_out,
        # tcfcav1_basic,usca_with_gpc,usva_not_applicable,usct_with_gpc}.json
        ("DBABM~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA", (2,)),
        ("DBABLA~BVVVVVVVVWA", (7,)),
        ("DBABDA~BPXuQIAPXuQIAAfKABENB-CgAAAAAAAAAAAAAAAA", (5,)),
        ("DBABBg~BVqqqqpY.YA", (8,)),
        ("DBABRg~BAAAABA", (9,)),
        ("DBABVg~BVVVVVVg.YA", (12,)),
    ],
)
def test_reference_header_decodes_to_documented_section_ids(gpp: str, ids: tuple[int, ...]) -> None:
    decoded = decode_gpp_string(gpp)
    assert decoded.version == 1
    assert decoded.section_ids == ids
    assert tuple(decoded.raw_sections) == ids


def test_reference_usnat_v1_with_gpc_decodes_to_documented_values() -> None:
    # noirotm/iabgpp-rs iab_gpp/tests/data/usnat_v1_with_gpc.json
    usnat = decode_gpp_string("DBABLA~BVVVVVVVVWA.YA").usnat
    assert usnat is not None
    assert usnat.version == 1
    assert usnat.sharing_notice is Notice.PROVIDED
    assert usnat.sensitive_data_limit_use_notice is Notice.PROVIDED
    assert usnat.sale_opt_out is usnat.sharing_opt_out is OptOut.OPTED_OUT
    assert usnat.targeted_advertising_opt_out is OptOut.OPTED_OUT
    assert usnat.sensitive_data_processing == (Consent.NO_CONSENT,) * 12
    assert usnat.known_child_sensitive_data_consents == (Consent.NO_CONSENT,) * 2
    assert usnat.personal_data_consents is Consent.NO_CONSENT
    assert usnat.mspa_covered_transaction is MspaMode.YES
    assert usnat.mspa_opt_out_option_mode is MspaMode.YES
    assert usnat.mspa_service_provider_mode is MspaMode.NO
    assert usnat.gpc is True


def test_reference_usnat_v1_without_gpc_subsection_has_gpc_none() -> None:
    # noirotm/iabgpp-rs iab_gpp/tests/data/usnat_v1_opted_out.json ("gpc": null)
    decoded = decode_gpp_string("DBABLA~BVVVVVVVVWA")
    assert decoded.gpc is None
    assert decoded.usnat_opt_outs() == {"sale": True, "sharing": True, "targeted_advertising": True}


def test_reference_usnat_v2_not_applicable_decodes_to_documented_values() -> None:
    # noirotm/iabgpp-rs iab_gpp/tests/data/usnat_v2_not_applicable.json
    decoded = decode_gpp_string("DBABLA~CAAAAAAAAAWA.Q")
    usnat = decoded.usnat
    assert usnat is not None
    assert usnat.version == 2
    assert usnat.sale_opt_out is OptOut.NOT_APPLICABLE
    assert usnat.sensitive_data_processing == (Consent.NOT_APPLICABLE,) * 16
    assert usnat.known_child_sensitive_data_consents == (
        Consent.NOT_APPLICABLE,
        Consent.NOT_APPLICABLE,
        Consent.NO_CONSENT,
    )
    assert usnat.personal_data_consents is Consent.NO_CONSENT
    assert usnat.mspa_covered_transaction is MspaMode.NO
    assert usnat.mspa_opt_out_option_mode is MspaMode.NOT_APPLICABLE
    assert decoded.gpc is False
    assert decoded.usnat_opt_outs() == {
        "sale": False,
        "sharing": False,
        "targeted_advertising": False,
    }


def test_reference_usnat_encoding_from_iabgpp_es_decodes_to_its_field_values() -> None:
    # IABTechLab/iabgpp-es modules/cmpapi/test/encoder/section/UsNat.test.ts,
    # "should encode to BVVVkkkklWA.YA" (a v1 layout: 12 sensitive, 2 child entries).
    usnat = decode_gpp_string("DBABLA~BVVVkkkklWA.YA").usnat
    assert usnat is not None
    assert [int(v) for v in usnat.sensitive_data_processing] == [2, 1, 0] * 4
    assert [int(v) for v in usnat.known_child_sensitive_data_consents] == [2, 1]
    assert usnat.personal_data_consents is Consent.NO_CONSENT
    assert usnat.mspa_covered_transaction is MspaMode.YES
    assert usnat.mspa_opt_out_option_mode is MspaMode.YES
    assert usnat.mspa_service_provider_mode is MspaMode.NO
    assert usnat.gpc is True


def test_reference_tcfeuv2_section_with_all_segments_decodes_like_a_tc_string() -> None:
    # noirotm/iabgpp-rs iab_gpp/tests/data/tcfeuv2_with_all_segments_disclosed_vendors_first.json
    tc_string = (
        f"{REAL_TC_CORE}.IFoEUQQgAIQwgIwQABAEAAAAOIAACAIAAAAQAIAgEAACEAAAAAgAQBAAAAAAAGBAAgAAAAAAAF"
        "AAECAAAgAAQARAEQAAAAAJAAIAAgAAAYQEAAAQmAgBC3ZAYzUw.ZAAgH9794ulA"
    )
    decoded = decode_gpp_string(f"DBABM~{tc_string}")
    assert decoded.tcfeuv2 is not None
    assert decoded.tcfeuv2.purpose_consents == frozenset({1, 2, 3})
    assert decoded.tcfeuv2.vendor_consents.vendor_ids == frozenset({2, 6, 8})
    assert decoded.tcfeuv2.disclosed_vendors is not None
    assert len(decoded.tcfeuv2.disclosed_vendors.vendor_ids) == 79
    assert decoded.tcfeuv2.publisher_tc is not None
    assert decoded.undecoded_sections == decoded.unknown_sections == ()


def test_reference_tcfcav1_without_pub_restrictions_decodes_like_the_reference() -> None:
    # noirotm/iabgpp-rs tcfcav1_basic: a core from IAB's earlier encoder, with no PubRestrictions.
    decoded = decode_gpp_string("DBABDA~BPXuQIAPXuQIAAfKABENB-CgAAAAAAAAAAAAAAAA")
    assert decoded.undecoded_sections == decoded.unknown_sections == ()
    assert decoded.tcfcav1 is not None
    assert (decoded.tcfcav1.cmp_id, decoded.tcfcav1.cmp_version) == (31, 640)
    assert decoded.tcfcav1.consent_language == "EN"
    assert decoded.tcfcav1.pub_restrictions == ()


def test_deprecated_tcfeuv1_is_kept_raw_with_a_typed_reason() -> None:
    decoded = decode_gpp_string(f"{header([1]).encode()}~BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA")
    assert decoded.undecoded_sections == (1,)
    assert decoded.unknown_sections == ()
    assert decoded.section_name(1) == "tcfeuv1"
    assert decoded.not_applied_reasons[1] is NotAppliedReason.DEPRECATED_SECTION


# --- self-encoded strings ------------------------------------------------------------------------


def test_tcfeuv2_usnat_and_unknown_section_decode_together() -> None:
    usnat = usnat_writer().encode() + "." + gpc(True)
    gpp = "~".join([header([2, 7, 30]).encode(), encode_tc_string(FULL), usnat, "BAAA"])
    decoded = decode_gpp_string(gpp)
    assert decoded.section_ids == (2, 7, 30)
    assert decoded.tcfeuv2 == FULL
    assert decoded.usnat is not None
    assert decoded.usnat.sensitive_data_processing == (Consent.CONSENT,) * 16
    assert decoded.unknown_sections == decoded.undecoded_sections == (30,)
    assert decoded.raw_sections[30] == "BAAA"
    assert decoded.section_name(30) is None
    assert decoded.usnat_opt_outs() == {
        "sale": True,
        "sharing": False,
        "targeted_advertising": False,
    }
    assert decoded.gpc is True


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("value", [True, False])
def test_gpc_subsection_decodes_when_true_or_false(version: int, value: bool) -> None:
    gpp = f"{header([7]).encode()}~{usnat_writer(version=version).encode()}.{gpc(value)}"
    decoded = decode_gpp_string(gpp)
    assert decoded.gpc is value
    assert decoded.usnat is not None
    assert decoded.usnat.version == version


def test_usnat_without_gpc_subsection_reports_gpc_none() -> None:
    assert decode_gpp_string(f"{header([7]).encode()}~{usnat_writer().encode()}").gpc is None


def test_string_without_usnat_has_no_opt_outs_and_no_gpc() -> None:
    decoded = decode_gpp_string(f"{header([2]).encode()}~{encode_tc_string(BASE)}")
    assert decoded.usnat_opt_outs() == {}
    assert decoded.gpc is None


def test_usnat_v1_and_v2_layouts_place_the_last_fields_correctly() -> None:
    for version, sensitive_count, child_count in ((1, 12, 2), (2, 16, 3)):
        sensitive = tuple([0] * (sensitive_count - 1) + [2])
        child = tuple([0] * (child_count - 1) + [2])
        section = usnat_writer(version=version, sensitive=sensitive, child=child, mspa=(2, 0, 1))
        usnat = decode_gpp_string(f"{header([7]).encode()}~{section.encode()}").usnat
        assert usnat is not None
        assert usnat.sensitive_data_processing[-1] is Consent.CONSENT
        assert usnat.known_child_sensitive_data_consents[-1] is Consent.CONSENT
        assert len(usnat.sensitive_data_processing) == sensitive_count
        assert usnat.mspa_covered_transaction is MspaMode.NO
        assert usnat.mspa_service_provider_mode is MspaMode.YES


# --- malformed input -----------------------------------------------------------------------------

USNAT_GPP = f"{header([7]).encode()}~{usnat_writer().encode()}.{gpc(True)}"


def test_empty_string_raises() -> None:
    error = _raises("", "empty")
    assert isinstance(error, InvalidFieldError)
    assert error.at("#/gpp").field == "#/gpp"
    assert isinstance(error.at("#/gpp"), GppDecodeError)


def test_bad_base64_character_in_header_raises() -> None:
    error = _raises("DB+BLA~BVVVVVVVVWA", "bad_character")
    assert "header" in error.message


def test_bad_character_in_a_section_raises() -> None:
    error = _raises("DBABLA~BVVV+VVVVWA", "bad_section")
    assert "section 7 (usnat)" in error.message


def test_tc_string_passed_as_gpp_raises_not_gpp() -> None:
    _raises(encode_tc_string(BASE), "not_gpp")


def test_wrong_gpp_version_raises() -> None:
    _raises(f"{header([7], version=2).encode()}~{usnat_writer().encode()}", "unsupported_version")


@pytest.mark.parametrize("sections", [[], ["BAAA", "BAAA"]])
def test_section_count_different_from_header_raises(sections: list[str]) -> None:
    _raises("~".join([header([30]).encode(), *sections]), "section_count")


def test_empty_section_raises() -> None:
    _raises(f"{header([30]).encode()}~", "bad_section")


def test_malformed_tcfeuv2_section_raises_gpp_error_naming_the_section() -> None:
    core = encode_tc_string(BASE)
    error = _raises(f"{header([2]).encode()}~{core}.{core}", "unknown_segment")
    assert error.message.startswith("section 2 (tcfeuv2): segment 2: bit 3:")


@pytest.mark.parametrize("version", [0, 3])
def test_unsupported_usnat_version_raises(version: int) -> None:
    _raises(
        f"{header([7]).encode()}~{usnat_writer(version=version).encode()}", "unsupported_version"
    )


def test_undefined_usnat_value_raises() -> None:
    section = usnat_writer(opt_outs=(3, 1, 1)).encode()
    error = _raises(f"{header([7]).encode()}~{section}", "undefined_value")
    assert "SaleOptOut is 3" in error.message


def test_mspa_covered_transaction_zero_decodes_as_not_applicable() -> None:
    # Tolerated like the reference (GppModel "decode defaults from all sections": BAAAAAAAAAA).
    section = usnat_writer(mspa=(0, 1, 2)).encode()
    usnat = decode_gpp_string(f"{header([7]).encode()}~{section}").usnat
    assert usnat is not None
    assert usnat.mspa_covered_transaction is MspaMode.NOT_APPLICABLE


def test_mspa_covered_transaction_three_raises() -> None:
    section = usnat_writer(mspa=(3, 1, 2)).encode()
    _raises(f"{header([7]).encode()}~{section}", "undefined_value")


def test_unknown_usnat_subsection_type_raises() -> None:
    subsection = BitWriter().uint(2, 2).flag(True).encode()
    _raises(f"{header([7]).encode()}~{usnat_writer().encode()}.{subsection}", "unknown_subsection")


def test_duplicate_gpc_subsection_raises() -> None:
    _raises(f"{USNAT_GPP}.{gpc(False)}", "duplicate_subsection")


def test_header_listing_section_id_three_raises() -> None:
    _raises(f"{header([3]).encode()}~BAAA", "bad_section_id")


def test_fibonacci_range_without_terminator_raises() -> None:
    w = BitWriter().uint(3, 6).uint(1, 6).uint(1, 12).flag(False).uint(0, 10)
    _raises(w.encode(), "truncated")


def test_fibonacci_integer_longer_than_64_bits_raises() -> None:
    w = BitWriter().uint(3, 6).uint(1, 6).uint(1, 12).flag(False)
    w.bits.append("01" * 40 + "1")
    _raises(w.encode(), "too_large")


def _cut_points() -> list[int]:
    """Cuts inside the header's and the usnat core's field characters, and inside GPC."""
    head_bits = header([7]).length
    core_bits = usnat_writer().length
    head_len = len(header([7]).encode())
    cuts = list(range(1, math.ceil(head_bits / 6)))
    core_start = head_len + 1
    cuts += list(range(core_start, core_start + math.ceil(core_bits / 6)))
    cuts.append(len(USNAT_GPP) - 2)  # "...core." with the GPC sub-section cut away entirely
    return cuts


# Cutting the 12-character v2 core to 10 or 11 characters leaves 60 or 66 bits: the reference
# decoder (and so ours) reads those as the version-1 layout (UsNatCoreSegment.decodeSegment), so
# those cuts decode; tests/privacy/consent/test_consent_diff.py checks such cuts field by field
# against it.
_V1_LENGTH_CUTS = {len(header([7]).encode()) + 1 + n for n in (10, 11)}


@pytest.mark.parametrize("cut", [c for c in _cut_points() if c not in _V1_LENGTH_CUTS])
def test_truncated_gpp_string_raises_at_every_cut_point(cut: int) -> None:
    truncated = USNAT_GPP[:cut]
    with pytest.raises(GppDecodeError) as info:
        decode_gpp_string(truncated)
    assert info.value.reason in {"truncated", "section_count", "bad_section", "empty_segment"}


# --- property test -------------------------------------------------------------------------------

_garbage = (
    st.text(alphabet=ALPHABET + ".~", max_size=120)
    | st.text(max_size=60)
    | st.text(alphabet=ALPHABET + ".~", min_size=10, max_size=160).map(lambda s: "DBA" + s)
    | st.sampled_from(["DBABLA~", "DBABM~C", "DBACNYA~C"]).flatmap(
        lambda prefix: st.text(alphabet=ALPHABET + ".~", max_size=160).map(lambda s: prefix + s)
    )
)


@settings(max_examples=400, deadline=None)
@given(text=_garbage)
def test_random_input_raises_only_gpp_decode_error(text: str) -> None:
    message = ""
    try:
        decode_gpp_string(text)
    except GppDecodeError as error:
        message = error.message
    assert len(text) < 8 or text not in message


# --- public IAB vectors the reference decoders accept --------------------------------------------


def test_reference_short_usnat_strings_decode_like_iabgpp_es() -> None:
    # IABTechLab/iabgpp-es modules/cmpapi/test/encoder/section/UsNat.test.ts: 66-bit v2 cores are
    # read with the version-1 layout and padded (SensitiveDataProcessing 12 is 1, child 2 is 1).
    usnat = decode_gpp_string("DBABLA~CAAAAAABEQA.QA").usnat
    assert usnat is not None
    assert usnat.version == 2
    assert usnat.sensitive_data_processing[11] is Consent.NO_CONSENT
    assert len(usnat.sensitive_data_processing) == 16
    assert usnat.known_child_sensitive_data_consents == (
        Consent.NOT_APPLICABLE,
        Consent.NO_CONSENT,
        Consent.NOT_APPLICABLE,
    )
    assert usnat.mspa_covered_transaction is MspaMode.YES
    assert usnat.gpc is False
    empty = decode_gpp_string("DBABLA~CAAAAAAAAQA.QA").usnat
    assert empty is not None
    assert empty.sale_opt_out is OptOut.NOT_APPLICABLE


def test_reference_defaults_from_all_sections_decode() -> None:
    # IABTechLab/iabgpp-es@c9c38fe027822e1863de7c3cd6b7fbf403ac36eb
    # modules/cmpapi/test/GppModel.test.ts "should decode defaults from all sections" (older copy:
    # v1-tagged usnat BAAAAAAAAAA with MspaCoveredTransaction 0, uspv1 "1---").
    decoded = decode_gpp_string(
        "DBACOaw~CPSG_8APSG_8AAAAAAENAACAAAAAAAAAAAAAAAAAAAAA.QAAA.IAAA~"
        "BPSG_8APSG_8AAAAAAENAABAAAAAAAAAAAAAAAAA.YAAAAAAAAAA~1---~BAAAAAAAAAA.QA~"
        "BAAAAAAA.QA~BAAAAAA~BAAAAAA.QA~BAAAAAAA~BAAAAAAA.QA"
    )
    assert decoded.usnat is not None
    assert decoded.usnat.version == 1
    assert decoded.usnat.mspa_covered_transaction is MspaMode.NOT_APPLICABLE
    assert decoded.uspv1 is not None
    assert set(decoded.us_sections) == {"usnat", "usca", "usva", "usco", "usut", "usct"}
    assert decoded.tcfcav1 is not None
    assert decoded.undecoded_sections == ()


def test_reference_defaults_from_every_current_section_decode() -> None:
    # Same test, current copy: every section 2 and 5-22 at IAB's defaults.
    decoded = decode_gpp_string(
        "DBACOdM~CPSG_8APSG_8AAAAAAENAACAAAAAAAAAAAAAAAAAAAAA.QAAA.IAAA~"
        "BPSG_8APSG_8AAAAAAENAACAAAAAAAAAAAAAAAAAAA.YAAAAAAAAAA~1---~BAAAAAAAAABA.QA~"
        "BAAAAABA.QA~BAAAABA~BAAAAEA.QA~BAAAAAQA~BAAAAAEA.QA~BAAAAABA~BAAAAABA.QA~"
        "BAAAAAABAA.QA~BAAAAAQA.QA~BAAAAAABAA.QA~BAAAAAQA.QA~BAAAAAQA.QA~BAAAAABA.QA~"
        "BAAAAAAAQA.QA~BAAAAAQA.QA"
    )
    assert len(decoded.us_sections) == 16
    assert all(s.mspa_covered_transaction is MspaMode.YES for s in decoded.us_sections.values())


@pytest.mark.parametrize("usp", ["1Y", "1XYZ", "2YNN", "1YNNN", "1" + "Y" * 100_000])
def test_invalid_uspv1_section_raises(usp: str) -> None:
    _raises(f"DBABTA~{usp}")


def test_uspv1_section_decodes_its_three_flags() -> None:
    usp = decode_gpp_string("DBABTA~1YNN").uspv1
    assert usp is not None
    assert (usp.notice, usp.opt_out_sale, usp.lspa_covered) == (
        UspFlag.YES,
        UspFlag.NO,
        UspFlag.NO,
    )
