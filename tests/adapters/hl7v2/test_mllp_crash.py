"""The MLLP listener dies between storing a message and answering it (crash point
mllp_after_store): the EHR gets no ACK and sends again; the restarted listener applies it once."""

from __future__ import annotations

import re
import sys

from core.blocks import BusyBlockStore, block_uid
from core.faults import EXIT_CODE
from tests.adapters.hl7v2.inbound_samples import siu
from tests.adapters.hl7v2.listener import exchange, msa, start_listener
from tests.support import Proc, config_text, wait_for


def test_crash_between_store_and_ack_then_the_resend_is_applied_once(stack, outbox, rclient):
    stack.write_config(config_text(outbox))
    env = {**stack.env, "CALEHR_FAULTS": "mllp_after_store:1"}
    doomed = Proc("mllp-doomed", [sys.executable, "-m", "calehr.cli", "mllp", "--port", "0"], env,
                  stack.log_dir)
    stack.procs.append(doomed)
    line = wait_for(lambda: re.search(r"mllp listening on [\d.]+:(\d+)", doomed.output()), 30,
                    message="the listener to listen")
    message = siu("S12", "CRASH-1")
    try:
        answers = exchange(int(line.group(1)), message)
    except OSError:  # reset by the dying peer
        answers = [b""]
    assert answers == [b""]  # no ACK: the sender must send it again
    assert doomed.proc.wait(10) == EXIT_CODE
    assert rclient.zcard("calehr:inbound:log") == 1  # it was stored before the crash

    _, port = start_listener(stack)
    (ack,) = exchange(port, message)
    assert msa(ack)[1:3] == ["AA", "CRASH-1"]
    blocks = BusyBlockStore(rclient).list("OKAFOR01")
    assert [b.uid for b in blocks] == [block_uid("HOSPITAL", "EHR-APPT-1")]
    (again,) = exchange(port, message)
    assert again == ack  # the stored answer from now on
