"""Reading the EHR's ACK: codes, control-id check, per-target policy, garbage."""

from __future__ import annotations

import pytest

from adapters.hl7v2 import AckError, build_ack, classify, parse_ack
from adapters.hl7v2.ack import judge
from core.config import TargetSettings

SENT = "MSH|^~\\&|CALEHR|CALCOM|EHR|HOSP|20261001120000||SIU^S12^SIU_S12|C0001|P|2.5.1\rSCH|1\r"
TARGET = TargetSettings(name="ehr", kind="mllp")


def ack(code: str, control_id: str = "C0001", err: str = "") -> bytes:
    text = f"MSH|^~\\&|EHR|HOSP|CALEHR|CALCOM|20261001120001||ACK^S12^ACK|A1|P|2.5.1\r" \
           f"MSA|{code}|{control_id}\r"
    return (text + err).encode()


def test_build_ack_swaps_sender_and_echoes_control_id():
    parsed = parse_ack(build_ack(SENT, "AE", text="bad | thing", error_code="207").encode())
    assert (parsed.code, parsed.control_id, parsed.error_codes) == ("AE", "C0001", ("207",))
    assert parsed.segments[0].split("|")[2:6] == ["EHR", "HOSP", "CALEHR", "CALCOM"]
    assert parsed.segments[0].split("|")[8] == "ACK^S12^ACK"


def test_aa_is_ok():
    result = classify(ack("AA"), "C0001", TARGET)
    assert result.ok and result.ack_code == "AA"


def test_ca_in_original_mode_is_a_protocol_error_not_success():
    step = judge(ack("CA"), "C0001", TARGET)
    assert step.final is None and step.note.startswith("protocol_error: CA in original mode")
    assert not classify(ack("CA"), "C0001", TARGET).ok


@pytest.mark.parametrize(("application_ack_type", "final"), [("NE", True), ("AL", False),
                                                             ("ER", True), ("SU", False)])
def test_ca_in_enhanced_mode_counts_only_without_an_application_ack(application_ack_type, final):
    target = TargetSettings(name="ehr", kind="mllp", ack_mode="enhanced",
                            application_ack_type=application_ack_type)
    step = judge(ack("CA"), "C0001", target)
    assert (step.final is not None) is final
    assert step.final is None or step.final.ok


@pytest.mark.parametrize(("code", "transient"), [("AE", False), ("CE", False), ("AR", True),
                                                 ("CR", True)])
def test_default_policy(code, transient):
    result = classify(ack(code, err="ERR|||207^Application internal error^HL70357|E\r"), "C0001",
                      TARGET)
    assert not result.ok and result.transient is transient
    assert result.ack_code == code and result.detail == f"ACK {code} ERR 207"


def test_policy_is_per_target():
    target = TargetSettings(name="ehr", kind="mllp", transient_ack_codes=("AE", "AR"),
                            permanent_ack_codes=("CE",))
    assert classify(ack("AE"), "C0001", target).transient


def test_control_id_mismatch_is_reported_not_accepted():
    result = classify(ack("AA", control_id="C0002"), "C0001", TARGET)
    assert not result.ok and result.transient and result.detail.startswith("ack_mismatch")


def test_err_text_stays_out_of_detail_but_in_the_excerpt():
    result = classify(ack("AE", err="ERR|||103^Patient Jordan Reyes unknown^HL70357|E\r"),
                      "C0001", TARGET)
    assert "Jordan" not in result.detail
    assert "Jordan" in result.response_excerpt  # kept for the dead letter, stored encrypted


@pytest.mark.parametrize("garbage", [b"", b"hello", b"MSH|^~\\&|x\rPID|1\r", b"\xff\xfe\x00",
                                     b"MSH|^~\\&|a|b|c|d|e||ACK|1|P|2.5.1\rMSA|ZZ|C0001\r"])
def test_garbage_reply_is_a_transient_bad_ack(garbage):
    result = classify(garbage, "C0001", TARGET)
    assert not result.ok and result.transient and result.detail.startswith("bad_ack")
    with pytest.raises(AckError):
        parse_ack(garbage)


def test_build_ack_for_garbage_still_produces_a_parseable_nak():
    parsed = parse_ack(build_ack("not hl7 at all", "AR", text="not an HL7 message",
                                 error_code="100").encode())
    assert parsed.code == "AR" and parsed.error_codes == ("100",)
