"""HL7 v2.5.1: SIU building, ACKs, MLLP framing and client, file drop, EHR simulator."""

from adapters.hl7v2.ack import Ack, AckError, build_ack, classify, parse_ack
from adapters.hl7v2.escape import escape, unescape
from adapters.hl7v2.filedrop import FileDropTransport
from adapters.hl7v2.framing import FrameError, FrameSplitter, frame
from adapters.hl7v2.mllp_client import MLLPClient
from adapters.hl7v2.profile import SiuProfile
from adapters.hl7v2.siu import build_siu, hl7_time

__all__ = [
    "Ack", "AckError", "FileDropTransport", "FrameError", "FrameSplitter", "MLLPClient",
    "SiuProfile", "build_ack", "build_siu", "classify", "escape", "frame", "hl7_time",
    "parse_ack", "unescape",
]
