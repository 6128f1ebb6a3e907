"""The capture check of the EDIF lab on synthetic data, without booting anything: the pcap/TCP reader, the
header scan, and the key search — which must find a key that crosses in clear (what protocol version 1
did with SA_UPDATE) and nothing in version 2's sealed SA_UPDATEs."""

from __future__ import annotations

import os
import struct

from edifd.edif.esp import protect
from edifd.edif.sa import SecurityAssociation
from edifd.fc import DfCtl, FcType, Frame, FrameHeader
from edifd.proto import (
    HEADER_SIZE,
    Cipher,
    EpochKeys,
    Message,
    PortRef,
    SaDirection,
    SaUpdate,
    encode,
)
from lab.capture import channel_headers, esp_samples, key_search, parse_qemu_io_dump, tcp_streams

KEY = bytes(range(32))
PORT = 3260


def pcap(packets: list[bytes]) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for p in packets:
        out += struct.pack("<IIII", 0, 0, len(p), len(p)) + p
    return out


def ether_tcp(sport: int, dport: int, seq: int, payload: bytes) -> bytes:
    tcp = struct.pack(">HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x18, 65535, 0, 0)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 0, 0, 64, 6, 0,
                     b"\x7f\0\0\1", b"\x7f\0\0\1")
    return bytes(12) + b"\x08\x00" + ip + tcp + payload


def test_tcp_streams_reassemble_by_sequence_with_retransmissions_once():
    data = b"EDIF-" * 1000
    segs = [(0, data[:1500]), (1500, data[1500:3000]), (1500, data[1500:3000]), (3000, data[3000:])]
    pkts = [ether_tcp(40000, PORT, 1000 + s, p) for s, p in reversed(segs)]
    pkts.append(ether_tcp(PORT, 40000, 7, b"back"))
    got = tcp_streams(pcap(pkts), PORT)
    assert got == {"to_port": data, "from_port": b"back"}


def sa_update(key: bytes, salt: bytes, spi: int) -> SaUpdate:
    return SaUpdate(PortRef(0x2100001B32000E01, 0x010203, 1), spi, SaDirection.TX, Cipher.AES_GCM_256,
                    key=key, salt=salt)


def esp_trace(key: bytes, salt: bytes, spi: int) -> list[bytes]:
    """Linktype-225 records of three ESP-protected FCP frames under (key, salt)."""
    sa = SecurityAssociation(SaDirection.TX, spi, Cipher.AES_GCM_256, key, salt)
    recs = []
    for seq in (1, 2, 3):
        h = FrameHeader(r_ctl=0x01, d_id=0x010203, s_id=0x040506, type=int(FcType.FCP), f_ctl=0x290000,
                        seq_id=seq, df_ctl=0, seq_cnt=0, ox_id=0x1234, rx_id=0xFFFF)
        f = protect(sa, Frame(h, os.urandom(64)), seq)
        assert f.header.df_ctl & int(DfCtl.ESP)
        recs.append(b"SOF!" + f.header.pack() + bytes(f.payload) + b"CRC!" + b"EOF!")
    return recs


def test_the_key_search_finds_a_key_that_crosses_in_clear():
    """The positive control: an SA_UPDATE body in clear (as version 1 sent it) opens the trace."""
    key, salt, spi = os.urandom(32), os.urandom(4), 0x1001
    body = sa_update(key, salt, spi).pack()
    stream = os.urandom(100) + b"EDIF\x02\x08" + bytes(HEADER_SIZE - 6) + body + os.urandom(50)
    struct.pack_into(">I", stream := bytearray(stream), 100 + 12, len(body))
    heads = channel_headers(bytes(stream))
    assert [(h.type, h.body_length) for h in heads] == [(8, len(body))]
    r = key_search(bytes(stream), heads, esp_samples(esp_trace(key, salt, spi)))
    assert r["sa_updates"] == 1 and r["keys_found"] == 1 and r["frames_decrypted"] == 1


def test_a_sealed_sa_update_gives_the_search_nothing():
    key, salt, spi = os.urandom(32), os.urandom(4), 0x1002
    ek = EpochKeys.derive(KEY, 0, os.urandom(32), os.urandom(32), 0xE0)
    wire = encode(Message(sa_update(key, salt, spi), 0, 0xE0, 9, 4, ack=2), KEY, keys=ek)
    stream = os.urandom(77) + wire + os.urandom(33)
    heads = channel_headers(stream)
    assert [(h.type, h.epoch) for h in heads] == [(8, 0xE0)]
    assert key not in stream and salt + key[:8] not in stream
    r = key_search(stream, heads, esp_samples(esp_trace(key, salt, spi)))
    assert r == {"sa_updates": 1, "sa_updates_sealed": 1, "esp_frames_tried": 1, "guesses": r["guesses"],
                 "keys_found": 0, "frames_decrypted": 0}
    assert r["guesses"] > 1000


def test_qemu_io_hex_dump_is_parsed_to_its_bytes():
    text = ("00000000:  45 44 49 46 02 f0 00 00 00 00 00 00 00 00 00 00  EDIF............\n"
            "00000010:  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f  ................\n"
            "read 32/32 bytes at offset 0x100000\n")
    assert parse_qemu_io_dump(text) == b"EDIF\x02\xf0" + bytes(10) + bytes(range(16))
