"""MLLP framing: split reads, junk between frames, size limit, nothing lost around an oversize frame."""

from __future__ import annotations

from adapters.hl7v2 import FrameSplitter, frame


def frames_of(events: list[tuple[str, bytes | int]]) -> list[bytes | int]:
    return [item for kind, item in events if kind == "frame"]


def test_frames_split_across_reads_and_junk_between():
    stream = b"junk" + frame(b"MSH|one") + b"\r\n" + frame(b"MSH|two")
    splitter = FrameSplitter(1 << 20)
    events: list[tuple[str, bytes | int]] = []
    for i in range(len(stream)):
        events += splitter.feed(stream[i:i + 1])
    assert frames_of(events) == [b"MSH|one", b"MSH|two"]
    # "junk" is reported (bytes by bytes here); the CR LF between frames is not junk
    assert sum(n for kind, n in events if kind == "junk") == 4
    assert splitter.pending == 0


def test_fs_without_cr_is_not_an_end():
    splitter = FrameSplitter(1 << 20)
    assert splitter.feed(b"\x0bMSH|a\x1cb") == []
    assert splitter.feed(b"\x1c\x0d") == [("frame", b"MSH|a\x1cb")]


def test_size_limit_is_inclusive():
    assert FrameSplitter(10).feed(frame(b"y" * 10)) == [("frame", b"y" * 10)]
    assert FrameSplitter(10).feed(frame(b"y" * 11)) == [("oversize", 11)]


def test_unterminated_oversize_frame_is_skipped_up_to_its_end():
    splitter = FrameSplitter(10)
    assert splitter.feed(b"\x0b" + b"x" * 50) == [("oversize", 50)]
    assert splitter.feed(b"x" * 1000) == []  # still inside it: dropped, not buffered
    assert splitter.pending == 0
    assert splitter.feed(b"x\x1c\x0d" + frame(b"MSH|next")) == [("frame", b"MSH|next")]


def test_frames_in_the_same_read_as_an_oversize_one_are_kept():
    """A regression: the old reader raised on the oversize frame and lost the frames before it."""
    data = frame(b"MSH|first") + frame(b"MSH|" + b"z" * 100) + frame(b"MSH|after")
    assert FrameSplitter(50).feed(data) == [
        ("frame", b"MSH|first"), ("oversize", 104), ("frame", b"MSH|after")]


def test_a_frame_that_never_ended_then_a_new_one():
    events = FrameSplitter(1 << 20).feed(b"\x0bMSH|lost" + frame(b"MSH|ok"))
    assert events == [("junk", 9), ("frame", b"MSH|ok")]
