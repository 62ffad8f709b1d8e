"""ACK messages: read the EHR's answer, decide what it means, and build our own."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from adapters.hl7v2.charset import decode_message
from adapters.hl7v2.escape import escape
from core import clock
from core.config import TargetSettings
from core.models import DeliveryResult

COMMIT_CODES = ("CA", "CE", "CR")
KNOWN_CODES = ("AA", "AE", "AR", "CA", "CE", "CR")


class AckError(ValueError):
    """The reply is not a usable ACK."""


@dataclass(frozen=True)
class Ack:
    code: str
    control_id: str
    text: str = ""
    error_codes: tuple[str, ...] = ()  # ERR-3 identifiers (HL7 table 0357): codes, no PHI
    segments: tuple[str, ...] = field(default=(), repr=False)
    raw: str = field(default="", repr=False)


def split_segments(text: str) -> list[str]:
    return [s for s in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if s.strip()]


def parse_ack(raw: bytes) -> Ack:
    text = decode_message(raw)
    segments = split_segments(text)
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 8:
        raise AckError("reply does not start with an MSH segment")
    sep = segments[0][3]
    comp = segments[0][4]
    msa = next((s.split(sep) for s in segments if s.startswith("MSA" + sep)), None)
    if msa is None or len(msa) < 3:
        raise AckError("reply has no MSA segment with a code and a control id")
    code = msa[1].strip().upper()
    if code not in KNOWN_CODES:
        raise AckError(f"MSA-1 {code[:8]!r} is not an acknowledgment code")
    errors = []
    for seg in segments:
        if seg.startswith("ERR" + sep):
            parts = seg.split(sep)
            if len(parts) > 3 and parts[3]:
                errors.append(parts[3].split(comp)[0][:10])
    return Ack(code=code, control_id=msa[2].strip(), text=msa[3] if len(msa) > 3 else "",
               error_codes=tuple(errors), segments=tuple(segments), raw=text)


@dataclass(frozen=True)
class AckStep:
    """What one reply frame means for the message in flight."""

    final: DeliveryResult | None  # None: keep reading for the answer
    note: str = ""  # a protocol note for the log and the attempt record (ids and codes only)


def wants_application_ack(target: TargetSettings) -> bool:
    """Original mode always answers AA/AE/AR; enhanced mode only when MSH-16 asks for it."""
    return target.ack_mode == "original" or target.application_ack_type in ("AL", "SU")


def judge(raw: bytes, sent_control_id: str, target: TargetSettings) -> AckStep:
    """Read one reply frame. Which codes are transient is the target's policy."""
    excerpt = decode_message(raw)[:2000]
    try:
        ack = parse_ack(raw)
    except AckError as exc:
        return AckStep(DeliveryResult(ok=False, transient=True, detail=f"bad_ack: {exc}",
                                      response_excerpt=excerpt))
    if ack.control_id != sent_control_id:
        return AckStep(None, f"ack_mismatch: discarded {ack.code} for MSA-2 "
                             f"{ack.control_id[:20]!r}, sent {sent_control_id!r}")
    original = target.ack_mode == "original"
    note = ""
    if ack.code in COMMIT_CODES and original:
        note = f"protocol_error: {ack.code} in original mode (MSH-15/16 empty)"
    if ack.code == "CA":
        if wants_application_ack(target):
            return AckStep(None, note + "; waiting for the application ACK" if note
                           else "commit CA; waiting for the application ACK")
        return AckStep(DeliveryResult(ok=True, ack_code="CA", detail="ACK CA",
                                      response_excerpt=excerpt), note)
    if ack.code == "AA":
        return AckStep(DeliveryResult(ok=True, ack_code="AA", detail="ACK AA",
                                      response_excerpt=excerpt), note)
    errs = f" ERR {','.join(ack.error_codes)}" if ack.error_codes else ""
    transient = ack.code in target.transient_ack_codes  # a code the policy does not name: a person
    return AckStep(DeliveryResult(ok=False, transient=transient, ack_code=ack.code,
                                  detail=f"ACK {ack.code}{errs}", response_excerpt=excerpt), note)


def classify(raw: bytes, sent_control_id: str, target: TargetSettings) -> DeliveryResult:
    """One reply read as the whole answer (no further frames will come)."""
    step = judge(raw, sent_control_id, target)
    if step.final is not None:
        return replace(step.final, notes=(step.note,) if step.note else ())
    return DeliveryResult(ok=False, transient=True, detail=step.note, notes=(step.note,),
                          response_excerpt=decode_message(raw)[:2000])


def build_ack(message: str, code: str, *, text: str = "", error_code: str = "",
              control_id: str = "", now: datetime | None = None) -> str:
    """An original-mode ACK for `message` (already decoded). Works on broken input too."""
    segments = split_segments(message)
    msh = segments[0] if segments and segments[0].startswith("MSH") and len(segments[0]) > 8 else ""
    sep = msh[3] if msh else "|"
    fields = msh.split(sep) if msh else []

    def f(i: int) -> str:
        return fields[i] if len(fields) > i else ""

    event = f(8).split("^")[1] if "^" in f(8) else ""
    when = (now or clock.now_utc()).strftime("%Y%m%d%H%M%S")
    out = ["|".join(["MSH", "^~\\&", f(4), f(5), f(2), f(3), when, "",
                     f"ACK^{event}^ACK" if event else "ACK", control_id or f"ACK{when}",
                     f(10) or "P", f(11) or "2.5.1"]),
           f"MSA|{code}|{f(9)}" + (f"|{escape(text)}" if text else "")]
    if error_code:
        severity = "E"
        out.append(f"ERR|||{error_code}^{escape(text)}^HL70357|{severity}")
    return "\r".join(out) + "\r"
