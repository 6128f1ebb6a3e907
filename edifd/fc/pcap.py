"""Traces: FC frames into a classic pcap file that Wireshark/tshark 4.0 decodes, and the records back.

Two encapsulations, one per file (classic pcap has one link type):

* `LinkType.FC_2_WITH_FRAME_DELIMS` (225, the default): SOF ordered set ‖ FC header ‖ data
  field ‖ FC CRC (little-endian) ‖ EOF ordered set. Wireshark's `fcsof` dissector decodes
  FC/FCELS/FCP/FC-SP from it *and verifies the FC CRC* (`fc.crc.status`), and there is no
  TCP/FCIP framing to get wrong.
* `LinkType.ETHERNET` (1): synthetic Ethernet/IPv4/TCP segments to/from port 3225 carrying
  exactly one FCIP record each -- the bytes our link really sends. tshark's FCIP heuristic
  decodes one record per segment correctly but mis-decodes segments holding several records
  and does not check the FC CRC, which is why each record is written as its own segment.

Writing is deterministic: timestamps are passed in or taken from an injectable clock.
`read_records` parses what the writer produced (bytes in, record bodies out, no file I/O).
"""

from __future__ import annotations

import enum
import ipaddress
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

from .errors import FcError
from .fcip import FCIP_TCP_PORT, encode_frame
from .frame import Frame

PCAP_MAGIC = 0xA1B2C3D4  # microsecond timestamps
_PCAP_HEADER = "<IHHiIII"  # magic, version 2.4, thiszone, sigfigs, snaplen, linktype
_RECORD_HEADER = "<IIII"  # ts_sec, ts_usec, incl_len, orig_len
_ETHERTYPE_IPV4 = 0x0800
_TCP_PSH_ACK = 0x18


class LinkType(enum.IntEnum):
    ETHERNET = 1
    FC_2 = 224
    FC_2_WITH_FRAME_DELIMS = 225


class PcapError(FcError):
    """Bytes that are not a classic little-endian microsecond pcap of the expected link type."""


def encode_fc2_delimited(frame: Frame) -> bytes:
    """A linktype-225 record body: ordered sets are big-endian words, the CRC little-endian."""
    return (
        struct.pack(">I", frame.sof.ordered_set)
        + frame.pack_with_crc()
        + struct.pack(">I", frame.eof.ordered_set)
    )


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@dataclass(frozen=True)
class TcpFlow:
    """Endpoints of the synthetic TCP connection in Ethernet traces (local = the writer's side)."""

    local_ip: str = "192.0.2.1"
    local_port: int = 40000
    remote_ip: str = "192.0.2.2"
    remote_port: int = FCIP_TCP_PORT
    local_mac: bytes = bytes.fromhex("020000000001")
    remote_mac: bytes = bytes.fromhex("020000000002")


class PcapWriter:
    """Writes one FC frame per pcap record. The file header is written on construction."""

    def __init__(
        self,
        out: BinaryIO,
        linktype: LinkType = LinkType.FC_2_WITH_FRAME_DELIMS,
        *,
        flow: TcpFlow | None = None,
        clock: Callable[[], float] = time.time,
        snaplen: int = 65535,
    ) -> None:
        self._out = out
        self.linktype = LinkType(linktype)
        self._flow = flow or TcpFlow()
        self._clock = clock
        self._snaplen = snaplen
        # Deterministic initial sequence numbers; each direction advances by the bytes it sent.
        self._seq = {False: 1000, True: 500000}
        self._ip_id = 0
        out.write(struct.pack(_PCAP_HEADER, PCAP_MAGIC, 2, 4, 0, 0, snaplen, self.linktype))

    def write(self, frame: Frame, *, timestamp: float | None = None, inbound: bool = False) -> None:
        """Append `frame`. `inbound` (Ethernet only) means remote → local."""
        ts = self._clock() if timestamp is None else timestamp
        if ts < 0:
            raise FcError("pcap timestamps cannot be negative")
        if self.linktype == LinkType.FC_2_WITH_FRAME_DELIMS:
            data = encode_fc2_delimited(frame)
        elif self.linktype == LinkType.FC_2:
            data = frame.pack_fc()
        else:
            data = self._tcp_segment(encode_frame(frame), inbound)
        usec = round(ts * 1_000_000)
        incl = data[: self._snaplen]
        sec, usec = divmod(usec, 1_000_000)
        self._out.write(struct.pack(_RECORD_HEADER, sec, usec, len(incl), len(data)))
        self._out.write(incl)

    def write_all(
        self,
        frames: Iterable[Frame],
        *,
        start: float = 0.0,
        step: float = 0.001,
        inbound: Callable[[Frame], bool] | None = None,
    ) -> None:
        """Frames at evenly spaced timestamps; `inbound(frame)` picks the TCP direction."""
        for n, frame in enumerate(frames):
            self.write(frame, timestamp=start + n * step, inbound=bool(inbound and inbound(frame)))

    def _tcp_segment(self, payload: bytes, inbound: bool) -> bytes:
        f = self._flow
        src_ip, dst_ip = (f.remote_ip, f.local_ip) if inbound else (f.local_ip, f.remote_ip)
        sport, dport = (f.remote_port, f.local_port) if inbound else (f.local_port, f.remote_port)
        smac, dmac = (f.remote_mac, f.local_mac) if inbound else (f.local_mac, f.remote_mac)
        src, dst = ipaddress.IPv4Address(src_ip).packed, ipaddress.IPv4Address(dst_ip).packed
        seq, ack = self._seq[inbound], self._seq[not inbound]
        self._seq[inbound] = (seq + len(payload)) & 0xFFFFFFFF
        tcp = struct.pack(">HHIIBBHHH", sport, dport, seq, ack, 5 << 4, _TCP_PSH_ACK, 65535, 0, 0)
        pseudo = src + dst + struct.pack(">BBH", 0, 6, len(tcp) + len(payload))
        tcp = tcp[:16] + struct.pack(">H", _checksum(pseudo + tcp + payload)) + tcp[18:]
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        ip = struct.pack(
            ">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), self._ip_id, 0x4000, 64, 6, 0, src, dst
        )
        ip = ip[:10] + struct.pack(">H", _checksum(ip)) + ip[12:]
        return dmac + smac + struct.pack(">H", _ETHERTYPE_IPV4) + ip + tcp + payload


def write_pcap(
    path: str,
    frames: Iterable[Frame],
    linktype: LinkType = LinkType.FC_2_WITH_FRAME_DELIMS,
    *,
    start: float = 0.0,
    step: float = 0.001,
    flow: TcpFlow | None = None,
    inbound: Callable[[Frame], bool] | None = None,
) -> None:
    """Write `frames` to `path` with deterministic timestamps start, start+step, ..."""
    with open(path, "wb") as out:
        writer = PcapWriter(out, linktype, flow=flow, clock=lambda: start)
        writer.write_all(frames, start=start, step=step, inbound=inbound)


def read_records(data: bytes, linktype: LinkType = LinkType.FC_2_WITH_FRAME_DELIMS) -> list[bytes]:
    """The record bodies of a classic pcap, in file order (for linktype 225: SOF ‖ FC header ‖ data
    field ‖ CRC ‖ EOF, as `encode_fc2_delimited` writes them).

    A record cut short at the end (its writer is still running) is left out. Raises only PcapError."""
    data = bytes(data)
    head = struct.calcsize(_PCAP_HEADER)
    rec = struct.calcsize(_RECORD_HEADER)
    if len(data) < head:
        raise PcapError(f"not a pcap file: {len(data)} bytes")
    magic, *_, found = struct.unpack_from(_PCAP_HEADER, data)
    if magic != PCAP_MAGIC:
        raise PcapError(f"not a little-endian microsecond pcap (magic {magic:#010x})")
    if found != linktype:
        raise PcapError(f"linktype {found}, expected {int(linktype)} ({LinkType(linktype).name})")
    off, out = head, []
    while off + rec <= len(data):
        _sec, _usec, incl, _orig = struct.unpack_from(_RECORD_HEADER, data, off)
        if off + rec + incl > len(data):
            break
        out.append(data[off + rec : off + rec + incl])
        off += rec + incl
    return out
