from __future__ import annotations

import json

from deadletter.console.masking import MASK, mask_hl7, mask_wire
from tests.deadletter.samples import FHIR_APPOINTMENT, KEPT, PATIENT_PHI, PROVIDER_NAMES, SIU_S12


def test_hl7_patient_values_are_masked_and_ids_codes_times_stay():
    masked = mask_wire(SIU_S12.encode())
    for phi in PATIENT_PHI + PROVIDER_NAMES:
        assert phi not in masked, phi
    for kept in KEPT:
        assert kept in masked, kept
    assert masked.count("\n") == SIU_S12.count("\r") - 1  # one segment per line
    assert "Doe^Jane^L" not in mask_hl7("MSH|^~\\&|A\rZPX|1|Doe^Jane^L")


def test_hl7_keeps_shape_and_set_ids():
    pid = next(line for line in mask_hl7(SIU_S12).split("\n") if line.startswith("PID"))
    assert pid == "PID|1||***^^^***^***||***^***||***||||||***^***^***~^***^***^***"
    nte = next(line for line in mask_hl7(SIU_S12).split("\n") if line.startswith("NTE"))
    assert nte == f"NTE|1||{MASK}"


def test_hl7_personal_looking_components_in_other_segments_are_masked():
    text = ("MSH|^~\\&|A|B|C|D|20260101||SIU^S12|X1|P|2.5.1\r"
            "ZXX|1|someone@example.org|+1 312 555 0147|19840309|Doe^Jane|20261014100000|ABC123\r")
    line = mask_hl7(text).split("\n")[1]
    assert line == "ZXX|1|***|***|***|***^***|20261014100000|ABC123"


def test_hl7_with_other_delimiters_and_lf_line_ends():
    text = "MSH#*~\\&#A#B\nPID#1##ID9*X#\n"
    assert mask_hl7(text).split("\n")[1] == "PID#1##***" + "*" + "***#"  # '*' separates components


def test_fhir_patient_values_are_masked_codes_and_times_stay():
    masked = mask_wire(FHIR_APPOINTMENT)
    for phi in PATIENT_PHI + ("Amina",):
        assert phi not in masked, phi
    data = json.loads(masked)
    assert data["status"] == "booked"
    assert data["start"] == "2026-10-14T15:00:00Z"
    assert data["contained"][0]["resourceType"] == "Patient"
    assert data["participant"][1]["actor"]["reference"] == "Practitioner/OKAFOR01"


def test_unknown_format_is_masked_whole():
    assert mask_wire(b"Jordan Reyes, born 1984-03-09").startswith(MASK)
    assert "Jordan" not in mask_wire(b"{not json Jordan")


def test_hl7_service_text_is_masked_for_viewers_and_its_code_kept():
    # a message built before issue 17 carries the booking title in AIS-3
    text = ("MSH|^~\\&|A|B|C|D|20260101||SIU^S12|X1|P|2.5.1\r"
            "AIS|1|A|walk-in^Consult between Dr. Amina Okafor and Zelda Quartermaine^99CALCOM|"
            "20261014100000\r")
    line = mask_hl7(text).split("\n")[1]
    assert "Quartermaine" not in line and "Okafor" not in line
    assert line.startswith("AIS|1|A|walk-in^***")
