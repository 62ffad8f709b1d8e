"""MLLP framing: split reads, junk between frames, size limit."""

from __future__ import annotations

import pytest

from adapters.hl7v2 import FrameError, FrameReader, frame


def test_frames_split_across_reads_and_junk_between():
    stream = b"junk" + frame(b"MSH|one") + b"\r\n" + frame(b"MSH|two")
    reader = FrameReader()
    got = []
    for i in range(len(stream)):
        got += reader.feed(stream[i:i + 1])
    assert got == [b"MSH|one", b"MSH|two"]
    assert reader.discarded == 6 and reader.pending == 0


def test_fs_without_cr_is_not_an_end():
    reader = FrameReader()
    assert reader.feed(b"\x0bMSH|a\x1cb") == []
    assert reader.feed(b"\x1c\x0d") == [b"MSH|a\x1cb"]


def test_oversized_frame_is_refused():
    reader = FrameReader(max_bytes=10)
    with pytest.raises(FrameError):
        reader.feed(b"\x0b" + b"x" * 50)
    with pytest.raises(FrameError):
        FrameReader(max_bytes=10).feed(frame(b"y" * 11))
    assert FrameReader(max_bytes=10).feed(frame(b"y" * 10)) == [b"y" * 10]
