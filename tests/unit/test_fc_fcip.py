"""FCIP encapsulation (RFC 3643 + RFC 3821 profile) and the sans-IO stream decoder."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edifd.fc import (
    ErrorReason,
    FcError,
    FcipError,
    FcipStreamDecoder,
    FcType,
    Frame,
    FrameHeader,
    LinkError,
    RCtl,
    decode_record,
    encode_frame,
)
from edifd.fc.frame import Eof, Sof, crc_bytes

ABTS = Frame(
    FrameHeader(r_ctl=RCtl.BLS_ABTS, d_id=0x010102, s_id=0x010101, type=FcType.BLS, f_ctl=0x090000, ox_id=5),
    b"",
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    esp = draw(st.booleans())
    payload = draw(st.binary(min_size=8 if esp else 0, max_size=2112))
    header = FrameHeader(
        r_ctl=draw(st.integers(0, 255)),
        d_id=draw(st.integers(0, (1 << 24) - 1)),
        cs_ctl=draw(st.integers(0, 255)),
        s_id=draw(st.integers(0, (1 << 24) - 1)),
        type=draw(st.integers(0, 255)),
        f_ctl=draw(st.integers(0, (1 << 24) - 1)),
        seq_id=draw(st.integers(0, 255)),
        df_ctl=0x40 if esp else 0,
        seq_cnt=draw(st.integers(0, 0xFFFF)),
        ox_id=draw(st.integers(0, 0xFFFF)),
        rx_id=draw(st.integers(0, 0xFFFF)),
        parameter=draw(st.integers(0, (1 << 32) - 1)),
    )
    return Frame(header, payload, draw(st.sampled_from(list(Sof))), draw(st.sampled_from(list(Eof))))


def with_crc_fixed(record: bytearray) -> bytes:
    """Recompute the FC CRC of a patched record so only the intended field is wrong."""
    record[-8:-4] = crc_bytes(bytes(record[32:-8]))
    return bytes(record)


def test_encapsulation_is_byte_exact() -> None:
    rec = encode_frame(ABTS)
    fc = ABTS.pack_fc()
    expected = (
        bytes.fromhex("0101fefe 0101fefe")  # Protocol# 1, Version 1, complements; word 1 = word 0
        + bytes.fromhex("0000ffff")  # pFlags 0, reserved 0, ~pFlags, ~reserved
        + bytes.fromhex("0010ffef")  # flags 0 (CRCV=0), 16 words, ones' complement
        + bytes(8)  # timestamp not set
        + bytes(4)  # encapsulation CRC unused in FCIP
        + bytes.fromhex("2e2ed1d1")  # SOFi3
        + fc
        + crc_bytes(fc)
        + bytes.fromhex("4242bdbd")  # EOFt
    )
    assert rec == expected and len(rec) == 64
    assert decode_record(rec) == ABTS


def test_length_counts_words_through_eof_and_max_is_544() -> None:
    big = Frame(ABTS.header.replace(r_ctl=RCtl.FCP_DATA, type=FcType.FCP), bytes(2112))
    rec = encode_frame(big)
    assert len(rec) == 2176 and struct.unpack(">HH", rec[12:16]) == (544, 544 ^ 0xFFFF)


def test_timestamp_is_carried() -> None:
    rec = encode_frame(ABTS, timestamp=(0xE000_0000, 0x8000_0000))
    assert rec[16:24] == bytes.fromhex("e0000000 80000000")
    assert decode_record(rec) == ABTS
    with pytest.raises(FcipError):
        encode_frame(ABTS, timestamp=(1 << 32, 0))


@FAST
@given(frames())
def test_record_round_trip(frame: Frame) -> None:
    assert decode_record(encode_frame(frame)) == frame


@FAST
@given(st.lists(frames(), min_size=1, max_size=5), st.data())
def test_stream_decoder_under_arbitrary_segmentation(fs: list[Frame], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(f) for f in fs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    dec = FcipStreamDecoder()
    out: list[Frame | LinkError] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        out += dec.feed(stream[prev:cut])
        prev = cut
    assert out == fs
    assert dec.frames_decoded == len(fs) and dec.buffered == 0 and not dec.needs_reset
    assert sum(dec.counters.values()) == 0
    assert dec.feed_eof() == []


def test_many_frames_in_one_chunk_and_byte_by_byte() -> None:
    fs = [ABTS.replace(header=ABTS.header.replace(ox_id=n)) for n in range(10)]
    stream = b"".join(encode_frame(f) for f in fs)
    assert FcipStreamDecoder().feed(stream) == fs
    dec = FcipStreamDecoder()
    got = [ev for i in range(len(stream)) for ev in dec.feed(stream[i : i + 1])]
    assert got == fs


def _patched(offset: int, value: bytes, *, fix_crc: bool = False) -> bytes:
    rec = bytearray(encode_frame(ABTS))
    rec[offset : offset + len(value)] = value
    return with_crc_fixed(rec) if fix_crc else bytes(rec)


BAD_RECORDS = {
    "ifcp_protocol": (_patched(0, bytes.fromhex("0201fdfe0201fdfe")), ErrorReason.BAD_ENCAP_HEADER),
    "bad_complement": (_patched(2, b"\xff"), ErrorReason.BAD_ENCAP_HEADER),
    "word1_differs": (_patched(4, b"\x02"), ErrorReason.BAD_ENCAP_HEADER),
    "reserved_nonzero": (_patched(9, b"\x01"), ErrorReason.BAD_ENCAP_HEADER),
    "pflags_complement": (_patched(10, b"\x00"), ErrorReason.BAD_ENCAP_HEADER),
    "special_frame": (_patched(8, bytes.fromhex("0100feff")), ErrorReason.UNSUPPORTED_FLAGS),
    "crcv_set": (_patched(12, struct.pack(">HH", 0x0410, 0x0410 ^ 0xFFFF)), ErrorReason.UNSUPPORTED_FLAGS),
    "length_complement": (_patched(14, b"\xff\xee"), ErrorReason.BAD_LENGTH),
    "too_short": (_patched(12, struct.pack(">HH", 15, 15 ^ 0xFFFF)), ErrorReason.FRAME_TOO_SHORT),
    "too_long": (_patched(12, struct.pack(">HH", 545, 545 ^ 0xFFFF)), ErrorReason.FRAME_TOO_LONG),
    "sof_not_duplicated": (_patched(28, bytes.fromhex("2e36d1d1")), ErrorReason.BAD_SOF),
    "sof_unknown": (_patched(28, bytes.fromhex("1111eeee")), ErrorReason.BAD_SOF),
    "eof_complement": (_patched(60, bytes.fromhex("4242bdbc")), ErrorReason.BAD_EOF),
    "eof_unknown": (_patched(60, bytes.fromhex("4343bcbc")), ErrorReason.BAD_EOF),
    "bad_crc": (_patched(32 + 17, b"\x77"), ErrorReason.BAD_CRC),
    "reserved_df_ctl": (_patched(32 + 13, b"\x80", fix_crc=True), ErrorReason.BAD_FRAME_HEADER),
    "fill_beyond_data": (_patched(32 + 11, b"\x03", fix_crc=True), ErrorReason.BAD_FRAME_HEADER),
}


@pytest.mark.parametrize("name", sorted(BAD_RECORDS))
def test_bad_record_gives_error_event_counter_and_reset(name: str) -> None:
    record, reason = BAD_RECORDS[name]
    with pytest.raises(FcError) as e:
        decode_record(record)
    assert e.value.reason is reason
    dec = FcipStreamDecoder()
    good = encode_frame(ABTS)
    events = dec.feed(good + record + good)
    assert events[0] == ABTS
    assert len(events) == 2 and isinstance(events[1], LinkError) and events[1].reason is reason
    assert dec.counters[reason] == 1 and sum(dec.counters.values()) == 1
    assert dec.needs_reset and dec.buffered == 0
    # Nothing is decoded until the link edge has reconnected and reset the decoder.
    assert dec.feed(good) == []
    dec.reset()
    assert dec.feed(good) == [ABTS]
    assert dec.counters[reason] == 1  # counters survive the reset
    stats = dec.stats()
    assert stats[f"rx_error_{reason.value}"] == 1 and stats["rx_frames"] == 2
    assert stats["rx_bytes_discarded"] == len(record) + 2 * len(good)


def test_garbage_is_rejected_at_its_first_byte() -> None:
    dec = FcipStreamDecoder()
    [ev] = dec.feed(b"G")
    assert isinstance(ev, LinkError) and ev.reason is ErrorReason.BAD_ENCAP_HEADER
    assert dec.needs_reset


def test_truncated_stream_on_eof() -> None:
    rec = encode_frame(ABTS)
    dec = FcipStreamDecoder()
    assert dec.feed(rec[:40]) == []
    [ev] = dec.feed_eof()
    assert isinstance(ev, LinkError) and ev.reason is ErrorReason.TRUNCATED
    assert dec.counters[ErrorReason.TRUNCATED] == 1
    with pytest.raises(FcipError) as e:
        decode_record(rec[:40])
    assert e.value.reason is ErrorReason.TRUNCATED
    with pytest.raises(FcipError) as e:
        decode_record(rec + b"\0\0\0\0")
    assert e.value.reason is ErrorReason.BAD_LENGTH


@FAST
@given(st.binary(max_size=300))
def test_decode_record_raises_only_fc_error(data: bytes) -> None:
    try:
        decode_record(data)
    except FcError:
        pass


@FAST
@given(st.lists(st.binary(max_size=100), max_size=8))
def test_stream_decoder_never_raises_on_garbage(chunks: list[bytes]) -> None:
    dec = FcipStreamDecoder()
    for c in chunks:
        for ev in dec.feed(c):
            assert isinstance(ev, (Frame, LinkError))
    dec.feed_eof()
    assert sum(dec.counters.values()) <= 1


@FAST
@given(
    frames(),
    st.lists(st.tuples(st.integers(0, 2200), st.integers(0, 255)), min_size=1, max_size=4),
    st.data(),
)
def test_stream_decoder_never_raises_on_mutated_records(
    frame: Frame, mutations: list[tuple[int, int]], data: st.DataObject
) -> None:
    rec = bytearray(encode_frame(frame))
    for pos, val in mutations:
        rec[pos % len(rec)] = val
    if data.draw(st.booleans()):
        rec = rec[: data.draw(st.integers(0, len(rec)))]
    dec = FcipStreamDecoder()
    events = dec.feed(bytes(rec)) + dec.feed_eof()
    errors = [ev for ev in events if isinstance(ev, LinkError)]
    assert len(errors) <= 1 and (not errors or events[-1] is errors[0])
    if errors:
        assert dec.counters[errors[0].reason] == 1 and dec.needs_reset
    for ev in events[: len(events) - len(errors)]:
        # Anything accepted is self-consistent: it re-encodes to bytes present in the input
        # (from the SOF word on; timestamp and encapsulation CRC are not checked on receipt).
        assert isinstance(ev, Frame) and encode_frame(ev)[28:] in bytes(rec)
