"""Inbound SIU messages as an EHR sends them (the EHR booked first), with a synthetic patient."""

from __future__ import annotations

from tests.support import FUTURE_YEAR as YEAR

PATIENT_NAME = ("Wexford", "Hannelore")
PATIENT_DOB = "19620415"
PATIENT_ID = "MRN-77881-Q"
PATIENT_STRINGS = (*PATIENT_NAME, PATIENT_DOB, PATIENT_ID, "1962-04-15")


def siu(event: str = "S12", control_id: str = "EHR0001", *, appt_id: str = "EHR-APPT-1",
        start: str = f"{YEAR}0114090000", end: str = f"{YEAR}0114093000",
        provider: str = "OKAFOR01", facility: str = "HOSPITAL", app: str = "ORBIS",
        status: str = "Booked", enhanced: bool = False, patient: bool = True,
        tq1: bool = True) -> bytes:
    """An SIU^Sxx (v2.5.1) from the EHR; times as given (with or without an offset)."""
    ack_modes = "AL|NE" if enhanced else "|"
    segments = [
        f"MSH|^~\\&|{app}|{facility}|CALEHR|CALCOM|{YEAR}0101120000||SIU^{event}^SIU_S12|{control_id}|P|2.5.1|||{ack_modes}||UNICODE UTF-8",
        f"SCH||{appt_id}^ORBIS|||||ROUTINE^Routine^HL70276|Normal^Normal^HL70277|30|min^minutes^ANS+|"
        f"^^30^{start}^{end}|||||DRX^Front^Desk||||FRONTDESK^Desk|||||{status}^{status}^HL70278",
    ]
    if tq1:
        segments.append(f"TQ1|1||||||{start}|{end}|||||30^min")
    if patient:
        segments.append(f"PID|1||{PATIENT_ID}^^^ORBIS^MR||{PATIENT_NAME[0]}^{PATIENT_NAME[1]}||{PATIENT_DOB}|F")
    segments += [
        "RGS|1|A",
        "AIS|1|A|CONSULT^Consultation^99ORBIS|" + start + "|||30|min",
        f"AIP|1|A|{provider}^Okafor^Amina^^^Dr.|D^Doctor^HL70182||{start}|||30|min||{status}",
    ]
    return ("\r".join(segments) + "\r").encode()
