"""Wire messages shaped like the bridge's output, with the fixture patient's PHI in them."""

from __future__ import annotations

import json

SIU_S12 = "\r".join([  # the bridge's S12 for fixture 02 (see `calehr map`), plus an NTE
    "MSH|^~\\&|CALEHR|CALCOM|EHR|HOSPITAL|20261122131111-0600||SIU^S12^SIU_S12|FEEBEC9C3BFE32A0C20D|P|2.5.1||||||UNICODE UTF-8",
    "SCH|7xQm2kVd9RbTn4FgHs1LpA@Cal.com^CALCOM|||||S12^New appointment booking^HL70003|NPC^New patient - recurring migraines|Normal^Normal^HL70277|30|min^minutes^ANS+||||||OKAFOR01^Okafor^Amina^^^Dr.||||CALCOM^Cal.com online booking|||||Booked^Booked^HL70278",
    "TQ1|1||||||20261014100000-0500|20261014103000-0500|||||30^min",
    "NTE|1||New Patient Consult between Dr. Amina Okafor and Jordan Reyes",
    "PID|1||XQJ-448-21907^^^INS^MB||Reyes^Jordan||19840309||||||+13125550147^PRN^PH~^NET^Internet^jordan.reyes@example.com",
    "RGS|1|A",
    "AIS|1|A|NPC^New Patient Consult^99CALEHR|20261014100000-0500|||30|min||Booked",
    "AIL|1|A|LAKESIDE^400^^LSC|||20261014100000-0500|||30|min||Booked",
    "AIP|1|A|OKAFOR01^Okafor^Amina^^^Dr.|D^Doctor^HL70182||20261014100000-0500|||30|min||Booked",
]) + "\r"

PATIENT_PHI = ("Jordan", "Reyes", "jordan.reyes@example.com", "+13125550147", "19840309",
               "XQJ-448-21907", "migraines")
PROVIDER_NAMES = ("Amina", "Okafor^")
KEPT = ("MSH|^~\\&|CALEHR", "SIU^S12^SIU_S12", "FEEBEC9C3BFE32A0C20D",
        "7xQm2kVd9RbTn4FgHs1LpA@Cal.com^CALCOM", "S12^New appointment booking^HL70003",
        "Normal^Normal^HL70277", "Booked^Booked^HL70278", "20261014100000-0500", "OKAFOR01",
        "CALCOM^***", "LAKESIDE^400^^LSC", "NPC^New Patient Consult^99CALEHR",
        "D^Doctor^HL70182", "NPC^***|")

FHIR_APPOINTMENT = json.dumps({
    "resourceType": "Appointment",
    "id": "appt-1",
    "identifier": [{"system": "urn:calcom:uid", "value": "7xQm2kVd9RbTn4FgHs1LpA"}],
    "status": "booked",
    "description": "New Patient Consult between Dr. Amina Okafor and Jordan Reyes",
    "start": "2026-10-14T15:00:00Z",
    "comment": "New patient - recurring migraines",
    "contained": [{"resourceType": "Patient", "id": "p1", "birthDate": "1984-03-09",
                   "name": [{"family": "Reyes", "given": ["Jordan"]}],
                   "telecom": [{"system": "email", "value": "jordan.reyes@example.com"}],
                   "identifier": [{"system": "urn:ins", "value": "XQJ-448-21907"}]}],
    "participant": [{"actor": {"reference": "#p1", "display": "Jordan Reyes"},
                     "status": "accepted"},
                    {"actor": {"reference": "Practitioner/OKAFOR01",
                               "display": "Dr. Amina Okafor"}, "status": "accepted"}],
}).encode()
