"""pcap writer: file/record layout for linktype 225 and Ethernet/IPv4/TCP+FCIP, determinism; the reader."""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edifd.fc import FcError, FcType, Frame, FrameHeader, RCtl, decode_record, encode_frame
from edifd.fc.frame import Eof, Sof, crc_bytes
from edifd.fc.pcap import LinkType, PcapError, PcapWriter, TcpFlow, encode_fc2_delimited, read_records

F1 = Frame(FrameHeader(r_ctl=RCtl.ELS_REQ, d_id=0xFFFFFE, s_id=0, type=FcType.ELS, f_ctl=0x290000, ox_id=1),
           b"\x04\x00\x00\x00")
F2 = Frame(F1.header.replace(r_ctl=RCtl.FCP_DATA, type=FcType.FCP, f_ctl=0x800008, parameter=2048),
           b"abc", Sof.N3, Eof.N)


def ones_complement_sum(data: bytes) -> int:
    """RFC 1071 sum, written independently of the writer's own helper; 0 means "verifies"."""
    data += b"\0" * (len(data) % 2)
    total = 0
    for i in range(0, len(data), 2):
        total += data[i] << 8 | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def records(raw: bytes) -> tuple[tuple[int, ...], list[tuple[int, int, bytes]]]:
    header = struct.unpack_from("<IHHiIII", raw)
    out, off = [], 24
    while off < len(raw):
        sec, usec, incl, orig = struct.unpack_from("<IIII", raw, off)
        assert incl == orig
        out.append((sec, usec, raw[off + 16 : off + 16 + incl]))
        off += 16 + incl
    return header, out


def test_linktype_225_record_layout() -> None:
    buf = io.BytesIO()
    w = PcapWriter(buf, clock=lambda: 1700000000.25)
    w.write(F1)
    w.write(F2, timestamp=1700000001.000002)
    header, recs = records(buf.getvalue())
    assert header == (0xA1B2C3D4, 2, 4, 0, 0, 65535, 225)
    assert [(s, u) for s, u, _ in recs] == [(1700000000, 250000), (1700000001, 2)]
    body = F1.pack_fc()
    assert recs[0][2] == bytes.fromhex("bcb55656") + body + crc_bytes(body) + bytes.fromhex("bc957575")
    assert recs[1][2][:4] == bytes.fromhex("bcb53636") and recs[1][2][-4:] == bytes.fromhex("bc95d5d5")
    assert recs[1][2] == encode_fc2_delimited(F2)


def test_ethernet_records_carry_one_fcip_record_each() -> None:
    buf = io.BytesIO()
    w = PcapWriter(buf, LinkType.ETHERNET, flow=TcpFlow(), clock=lambda: 0.0)
    w.write(F1)
    w.write(F2, inbound=True)
    w.write(F1)
    header, recs = records(buf.getvalue())
    assert header[6] == 1
    seqs = []
    for (_, _, pkt), frame, inbound in zip(recs, (F1, F2, F1), (False, True, False), strict=True):
        assert pkt[12:14] == b"\x08\x00"
        ip, tcp = pkt[14:34], pkt[34:54]
        assert ones_complement_sum(ip) == 0  # IPv4 header checksum verifies
        src, dst = ip[12:16], ip[16:20]
        payload = pkt[54:]
        pseudo = src + dst + struct.pack(">BBH", 0, 6, len(tcp) + len(payload))
        assert ones_complement_sum(pseudo + tcp + payload) == 0  # TCP checksum verifies
        sport, dport, seq, ack = struct.unpack(">HHII", tcp[:12])
        assert (sport, dport) == ((3225, 40000) if inbound else (40000, 3225))
        assert payload == encode_frame(frame) and decode_record(payload) == frame
        seqs.append((seq, ack, len(payload)))
    # The outbound direction advances by the bytes it sent; the ACK of each side is the other's seq.
    assert seqs[2][0] == seqs[0][0] + seqs[0][2]
    assert seqs[1][1] == seqs[2][0] and seqs[2][1] == seqs[1][0] + seqs[1][2]


def test_writer_is_deterministic() -> None:
    outs = []
    for _ in range(2):
        buf = io.BytesIO()
        PcapWriter(buf, LinkType.ETHERNET, clock=lambda: 5.0).write_all([F1, F2, F1], start=10.0, step=0.5)
        outs.append(buf.getvalue())
    assert outs[0] == outs[1]
    assert [(s, u) for s, u, _ in records(outs[0])[1]] == [(10, 0), (10, 500000), (11, 0)]


def test_reader_returns_what_the_writer_wrote() -> None:
    cases = ((LinkType.FC_2_WITH_FRAME_DELIMS, encode_fc2_delimited), (LinkType.FC_2, Frame.pack_fc))
    for linktype, body in cases:
        buf = io.BytesIO()
        PcapWriter(buf, linktype).write_all([F1, F2])
        assert read_records(buf.getvalue(), linktype) == [body(F1), body(F2)]


def test_reader_drops_a_cut_final_record_and_checks_the_link_type() -> None:
    buf = io.BytesIO()
    PcapWriter(buf).write_all([F1, F2])
    assert read_records(buf.getvalue()[:-1]) == [encode_fc2_delimited(F1)]
    with pytest.raises(PcapError, match="linktype 225, expected 1"):
        read_records(buf.getvalue(), LinkType.ETHERNET)
    assert issubclass(PcapError, FcError)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_reader_raises_only_pcap_error(data: bytes) -> None:
    try:
        read_records(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 225) + data)
        read_records(data)
    except PcapError:
        pass

