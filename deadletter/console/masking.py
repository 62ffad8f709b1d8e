"""Mask PHI in a wire message for display: HL7 v2 (ER7) or FHIR JSON.

HL7 rule (simple on purpose): every field of patient segments (PID, NTE, NK1, IN1...) is
masked except the set id; person, contact and reason fields of SCH/PV1/AIx are masked
except their id component; anywhere else a component that looks like an e-mail address,
a phone number, a bare date (a birth date) or a person's name is masked. The message keeps
its shape (separators stay) so a person can still see which fields were filled.
FHIR rule: names, telecoms, birth dates, addresses, free text and
display strings are masked, and every value inside a Patient/RelatedPerson resource.
Anything that is neither is masked whole.
"""

from __future__ import annotations

import json
import re
from typing import Any

MASK = "***"

PATIENT_SEGMENTS = frozenset({
    "PID", "PD1", "NK1", "NTE", "GT1", "IN1", "IN2", "IN3", "ACC", "DG1", "AL1", "OBX",
    "PV2", "MRG", "ROL", "CON", "ZPI",
})
# (segment, field number) -> first component that is masked (1 = the whole field)
FIELD_RULES: dict[tuple[str, int], int] = {
    ("SCH", 7): 2,  # appointment reason: keep the code, mask the text
    **{("SCH", n): 2 for n in (12, 16, 20)},  # contact persons: keep the id
    **{("SCH", n): 1 for n in (13, 14, 17, 18, 21, 22)},  # their phones and addresses
    **{("PV1", n): 2 for n in (7, 8, 9, 17, 52)},  # doctors: keep the id
    ("AIP", 3): 2, ("AIG", 3): 2,
    ("MSA", 3): 1, ("ERR", 7): 1, ("ERR", 8): 1,  # free text from the EHR
}
CONFIGURED_SERVICE = "99CALEHR"  # AIS-3 coding system of a configured event type
# appointment ids (an iCalUID looks like an e-mail address): never masked
ID_FIELDS = frozenset({("SCH", 1), ("SCH", 2), ("SCH", 26), ("SCH", 27)})

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"\+\d[\d\s().-]{6,}\d|\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}")
_BARE_DATE = re.compile(r"(19|20)\d{2}-?(0[1-9]|1[0-2])-?(0[1-9]|[12]\d|3[01])")
_NAME_WORD = re.compile(r"[A-Z][a-z]+(?:[-' ][A-Z][a-z]+)*\.?")
_CODING_SYSTEM = re.compile(r"HL7\d{4}|99[A-Z0-9]+|LN|SCT|SNM\w*|I9C?|I10\w*|ICD\w*|CPT\w*")


def mask_wire(wire: bytes) -> str:
    text = wire.decode("utf-8", "replace")
    stripped = text.lstrip()
    if stripped.startswith("MSH"):
        return mask_hl7(text)
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(stripped)
        except ValueError:
            pass
        else:
            return json.dumps(mask_fhir(data), indent=2)
    return f"{MASK} ({len(wire)} bytes in a format the console cannot mask field by field)"


def show_wire(wire: bytes) -> str:
    """The unmasked message, one segment per line."""
    return wire.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")


# HL7 v2 ---------------------------------------------------------------------------------
def mask_hl7(text: str) -> str:
    lines = [s for s in re.split(r"\r\n|\r|\n", text) if s]
    if not lines or len(lines[0]) < 8:
        return MASK
    field_sep = lines[0][3]
    encoding = lines[0][4:8]
    comp_sep, rep_sep, sub_sep = encoding[0], encoding[1], encoding[3]
    return "\n".join(_mask_segment(line, field_sep, comp_sep, rep_sep, sub_sep) for line in lines)


def _mask_segment(line: str, fs: str, cs: str, rs: str, ss: str) -> str:
    fields = line.split(fs)
    name = fields[0]
    if name in ("MSH", "BHS", "FHS"):
        return line
    for n in range(1, len(fields)):
        if not fields[n] or (name, n) in ID_FIELDS:
            continue
        # patient segments: everything but the set id; elsewhere: the field rules
        first = (2 if n == 1 else 1) if name in PATIENT_SEGMENTS else FIELD_RULES.get((name, n), 0)
        if (name, n) == ("AIS", 3) and fields[n].split(cs)[2:3] != [CONFIGURED_SERVICE]:
            first = 2  # not from [[event_types]]: older messages put the booking title here
        fields[n] = _mask_field(fields[n], first, cs, rs, ss)
    return fs.join(fields)


def _mask_field(value: str, first_masked: int, cs: str, rs: str, ss: str) -> str:
    reps = []
    for rep in value.split(rs):
        comps = rep.split(cs)
        named = _name_run(comps)
        out = []
        for i, comp in enumerate(comps, 1):
            if not comp:
                out.append(comp)
            elif (first_masked and i >= first_masked) or i in named:
                out.append(ss.join(MASK if s else s for s in comp.split(ss)))
            else:
                out.append(ss.join(_mask_if_personal(s) for s in comp.split(ss)))
        reps.append(cs.join(out))
    return rs.join(reps)


def _mask_if_personal(value: str) -> str:
    if _EMAIL.search(value) or _PHONE.fullmatch(value.strip()) or _BARE_DATE.fullmatch(value):
        return MASK
    return value


def _name_run(comps: list[str]) -> set[int]:
    """Positions (1-based) of two or more adjacent capitalised words: Family^Given.

    Not a coded value (code^text^coding system, e.g. Booked^Booked^HL70278).
    """
    hits: set[int] = set()
    if len(comps) >= 3 and _CODING_SYSTEM.fullmatch(comps[2]):
        return hits
    for i in range(len(comps) - 1):
        if comps[i] != comps[i + 1] and _NAME_WORD.fullmatch(comps[i]) \
                and _NAME_WORD.fullmatch(comps[i + 1]):
            hits.update({i + 1, i + 2})
    return hits


# FHIR JSON ------------------------------------------------------------------------------
PERSON_RESOURCES = frozenset({"Patient", "RelatedPerson", "Person"})
MASKED_KEYS = frozenset({
    "name", "telecom", "birthDate", "address", "display", "text", "div", "comment",
    "description", "patientInstruction", "note", "given", "family", "photo", "contact",
    "gender", "deceasedDateTime", "maritalStatus", "diagnostics",
})
KEPT_IN_PERSON = frozenset({"resourceType", "id", "meta", "system", "use", "code"})


def mask_fhir(value: Any, in_person: bool = False, key: str = "") -> Any:
    """Mask strings under person-data keys and inside person resources; keep ids and codes."""
    if isinstance(value, dict):
        person = in_person or value.get("resourceType") in PERSON_RESOURCES
        return {k: mask_fhir(v, person or k in MASKED_KEYS, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_fhir(v, in_person, key) for v in value]
    if isinstance(value, str):
        if in_person and key not in KEPT_IN_PERSON:
            return MASK
        return _mask_if_personal(value)
    return value
