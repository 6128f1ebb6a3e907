"""What crosses the lab host's loopback on the control LUNs' iSCSI transport, and what a keyless reader of
that LUN gets (issue: "the channel keeps its secrets").

The EDIF scenario's control LUNs travel from VM-H's iSCSI target to VM-S's QEMU initiator through a slirp
port forward on 127.0.0.1: the lab's own traffic on this host's loopback, captured with dumpcap while the
scenario runs. The checks:

* ``channel_headers``: every channel message header in the two TCP byte streams (iSCSI carries the WRITE and
  READ data in order, so a message appears whole), with its type and epoch;
* ``key_search``: for every SA_UPDATE seen, every 16- and 32-byte window of its body taken as an AES-GCM key
  and every 4-byte window as the salt, tried on ESP-protected FCP frames of the FC trace of the same run. With
  protocol version 1 the key and salt were in clear at fixed offsets and decrypted the trace; with version 2
  nothing may (keys found 0, frames decrypted 0). ``tests/lab/test_lab_capture.py`` shows on synthetic
  data that the search does find a key in clear;
* ``RogueReader``: a second, keyless iSCSI session (qemu-io, its own initiator name) reading the control LUN
  at every cursor lane while the agent works: what it receives must be sealed, and the agent must lose
  nothing.

Parsing is pure (bytes in, figures out); ``LoopbackCapture`` and ``RogueReader`` are the thin process edges.
"""

from __future__ import annotations

import re
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edifd.fc import ESP_HEADER_LEN, DfCtl, EspHeader, FcType, FrameHeader
from edifd.fc.frame import FC_HEADER_LEN
from edifd.proto import HEADER_SIZE, MAGIC, VERSION, MessageType
from edifd.proto.lba import CURSOR_LANES, ChannelGeometry

from .errors import LabError

_SOF_LEN, _TRAILER_LEN = 4, 8  # linktype-225 record: SOF | FC header | data field | CRC | EOF
_IV_LEN, _ICV_LEN = 8, 16
_SA_UPDATE = int(MessageType.SA_UPDATE)
_HDR = struct.Struct(">4sBBHHHIQQQQ")  # the channel header without its auth field (docs/protocol.md §1.1)


# -- pcap and TCP (pure) ------------------------------------------------------------------------------------


def pcap_packets(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(linktype, packet) of a classic pcap file (dumpcap -P), either byte order."""
    if len(data) < 24:
        raise LabError("capture: not a pcap file (too short)")
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        raise LabError("capture: not a classic pcap file")
    linktype = struct.unpack_from(e + "I", data, 20)[0]
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack_from(e + "I", data, off + 8)[0]
        yield linktype, data[off + 16: off + 16 + incl]
        off += 16 + incl


def _ip_payload(linktype: int, pkt: bytes) -> bytes | None:
    if linktype == 1:  # Ethernet: Linux's lo
        if len(pkt) < 14 or pkt[12:14] != b"\x08\x00":
            return None
        return pkt[14:]
    if linktype == 113:  # Linux cooked capture v1
        return pkt[16:] if len(pkt) >= 16 and pkt[14:16] == b"\x08\x00" else None
    if linktype == 276:  # Linux cooked capture v2
        return pkt[20:] if len(pkt) >= 20 and pkt[0:2] == b"\x08\x00" else None
    if linktype in (0, 228):  # BSD loopback / raw IPv4
        return pkt[4:] if linktype == 0 else pkt
    return None


def tcp_streams(data: bytes, port: int) -> dict[str, bytes]:
    """The two byte streams of the TCP connections to `port` (IPv4), reassembled by sequence number:
    ``to_port`` (initiator -> target: WRITE data, the agent's messages) and ``from_port`` (READ data)."""
    segs: dict[str, dict[tuple[int, int, int], dict[int, bytes]]] = {"to_port": {}, "from_port": {}}
    for linktype, pkt in pcap_packets(data):
        ip = _ip_payload(linktype, pkt)
        if ip is None or len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
            continue
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack_from(">H", ip, 2)[0]
        tcp = ip[ihl:total]
        if len(tcp) < 20:
            continue
        sport, dport, seq = struct.unpack_from(">HHI", tcp, 0)
        doff = (tcp[12] >> 4) * 4
        payload = tcp[doff:]
        if dport == port:
            way, conn = "to_port", (sport, dport, struct.unpack_from(">I", ip, 12)[0])
        elif sport == port:
            way, conn = "from_port", (dport, sport, struct.unpack_from(">I", ip, 16)[0])
        else:
            continue
        if payload:
            segs[way].setdefault(conn, {})[seq] = payload
    out = {}
    for way, conns in segs.items():
        parts = []
        for byseq in conns.values():
            parts.append(_reassemble(byseq))
        out[way] = b"".join(parts)
    return out


def _reassemble(byseq: dict[int, bytes]) -> bytes:
    """Segments by sequence number -> the stream; retransmitted or overlapping bytes once."""
    base = min(byseq)  # loopback captures start at the connection's first data segment
    buf = bytearray()
    for seq in sorted(byseq, key=lambda s: (s - base) % (1 << 32)):
        rel = (seq - base) % (1 << 32)
        seg = byseq[seq]
        if rel + len(seg) <= len(buf):
            continue
        buf += seg[max(0, len(buf) - rel):]
    return bytes(buf)


@dataclass(frozen=True)
class SeenHeader:
    offset: int
    type: int
    epoch: int
    body_length: int


def channel_headers(stream: bytes) -> list[SeenHeader]:
    """Every version-2 channel header in a stream (the magic, the version and a plausible length)."""
    out = []
    for m in re.finditer(re.escape(MAGIC + bytes([VERSION])), stream):
        off = m.start()
        if off + HEADER_SIZE > len(stream):
            continue
        f = _HDR.unpack_from(stream, off)
        if f[6] <= 4096 - HEADER_SIZE:
            out.append(SeenHeader(off, f[2], f[7], f[6]))
    return out


# -- the key search (pure) ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EspSample:
    """What an AES-GCM guess needs to test itself against one ESP-protected FCP frame of the trace."""

    spi: int
    aad: bytes
    iv: bytes
    sealed: bytes  # ciphertext || ICV


def esp_samples(records: Iterable[bytes], per_spi: int = 1) -> list[EspSample]:
    """Up to `per_spi` of the smallest ESP-protected FCP frames of each SPI in a linktype-225 trace."""
    by_spi: dict[int, list[EspSample]] = {}
    for rec in records:
        if len(rec) < _SOF_LEN + FC_HEADER_LEN + ESP_HEADER_LEN + _IV_LEN + _ICV_LEN + _TRAILER_LEN:
            continue
        hdr = rec[_SOF_LEN: _SOF_LEN + FC_HEADER_LEN]
        h = FrameHeader.unpack(hdr)
        if h.type != int(FcType.FCP) or not h.df_ctl & int(DfCtl.ESP):
            continue
        data = rec[_SOF_LEN + FC_HEADER_LEN: len(rec) - _TRAILER_LEN]
        fill = h.f_ctl & 0x3
        data = data[: len(data) - fill]
        esp = EspHeader.unpack(data)
        aad = bytearray(hdr)
        aad[4] = 0  # CS_CTL is outside the AAD (docs/edif.md)
        by_spi.setdefault(esp.spi, []).append(EspSample(
            esp.spi, bytes(aad) + data[:ESP_HEADER_LEN], data[ESP_HEADER_LEN: ESP_HEADER_LEN + _IV_LEN],
            data[ESP_HEADER_LEN + _IV_LEN:]))
    out = []
    for spi in sorted(by_spi):
        out += sorted(by_spi[spi], key=lambda s: len(s.sealed))[:per_spi]
    return out


def _windows(region: bytes, n: int) -> set[bytes]:
    return {region[i: i + n] for i in range(len(region) - n + 1)}


def key_search(stream: bytes, headers: Iterable[SeenHeader], samples: list[EspSample]) -> dict[str, Any]:
    """Try every key/salt window of every SA_UPDATE seen against the trace's ESP frames (module docstring)."""
    sa = [h for h in headers if h.type == _SA_UPDATE]
    tried = found = 0
    decrypted: set[int] = set()
    for h in sa:
        region = stream[h.offset + HEADER_SIZE: h.offset + HEADER_SIZE + h.body_length]
        salts = _windows(region, 4)
        for key in _windows(region, 16) | _windows(region, 32):
            if key.count(0) == len(key):
                continue  # a DELETE's zero key, or zero fill
            aead = AESGCM(key)
            hit = False
            for salt in salts:
                for i, s in enumerate(samples):
                    tried += 1
                    try:
                        aead.decrypt(salt + s.iv, s.sealed, s.aad)
                    except InvalidTag:
                        continue
                    decrypted.add(i)
                    hit = True
            found += hit
    return {"sa_updates": len(sa), "sa_updates_sealed": sum(1 for h in sa if h.epoch != 0),
            "esp_frames_tried": len(samples), "guesses": tried, "keys_found": found,
            "frames_decrypted": len(decrypted)}


# -- the process edges -------------------------------------------------------------------------------------


class LoopbackCapture:
    """dumpcap on lo for one TCP port, into a classic pcap file (root; the lab runs as root)."""

    def __init__(self, port: int, path: Path) -> None:
        self.path = path
        self._proc = subprocess.Popen(
            ["dumpcap", "-q", "-P", "-i", "lo", "-f", f"tcp port {port}", "-w", str(path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while not path.exists() or path.stat().st_size < 24:  # the pcap header: capturing
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace").strip() if self._proc.stderr else ""
                raise LabError(f"dumpcap exited with {self._proc.returncode}: {err[-300:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise LabError("dumpcap did not start capturing within 20 s")
            time.sleep(0.1)

    def stop(self) -> bytes:
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)  # dumpcap flushes and closes the file
            try:
                self._proc.wait(20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        return self.path.read_bytes() if self.path.exists() else b""


_HEXLINE = re.compile(r"^[0-9a-f]{8}:\s+((?:[0-9a-f]{2}\s)+)", re.MULTILINE)


def parse_qemu_io_dump(text: str) -> bytes:
    """The bytes of `qemu-io -c 'read -v ...'` output (hex dump lines ``OFFSET:  xx xx ...  ascii``)."""
    out = bytearray()
    for m in _HEXLINE.finditer(text):
        out += bytes.fromhex(m.group(1).replace(" ", ""))
    return bytes(out)


def qemu_io_read(portal: str, iqn: str, offset: int, size: int, *, initiator: str,
                 chap: tuple[str, Path] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """`qemu-io -c 'read -v OFFSET SIZE'` on an iSCSI LUN as `initiator`, with one-way CHAP if given (the
    secret from its file, never on the command line)."""
    host, port = portal.rsplit(":", 1)
    opts = f"driver=iscsi,transport=tcp,portal={host}:{port},target={iqn},lun=0,initiator-name={initiator}"
    argv = ["qemu-io", "-r"]
    if chap is not None:
        argv += ["--object", f"secret,id=chap,file={chap[1]},format=raw"]
        opts += f",user={chap[0]},password-secret=chap"
    return subprocess.run(argv + ["--image-opts", opts, "-c", f"read -v {offset} {size}"],
                          capture_output=True, text=True, timeout=timeout)


def login_refused(portal: str, iqn: str, *, initiator: str, chap: tuple[str, Path] | None) -> dict[str, Any]:
    """Whether the export refuses this initiator (no ACL for its name, or the wrong CHAP secret)."""
    try:
        r = qemu_io_read(portal, iqn, 0, 512, initiator=initiator, chap=chap, timeout=60)
    except subprocess.TimeoutExpired:
        return {"refused": None, "detail": "qemu-io timed out"}
    ok = r.returncode == 0 and "read " in r.stdout
    return {"refused": not ok, "detail": (r.stderr or r.stdout).strip().splitlines()[-1:] if not ok else []}


@dataclass
class RogueReader:
    """A second initiator on a control LUN without the channel key, reading its READ window while the
    scenario runs: with the EDIF VM's iSCSI name and CHAP secret, as a second process in that VM would."""

    portal: str
    iqn: str
    num_blocks: int
    initiator: str = "iqn.2026-12.io.edifd.lab:rogue"
    chap: tuple[str, Path] | None = None
    block_size: int = 512
    reads: int = 0
    errors: list[str] = field(default_factory=list)
    got: list[bytes] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def lbas(self) -> list[int]:
        """Every cursor lane at a spread of cursors: where the agent's own READs go."""
        g = ChannelGeometry(self.block_size, self.num_blocks)
        return [g.read_lba(c, lane) for lane in range(CURSOR_LANES) for c in (0, 1, 2, 3, 5, 8, 13, 21)]

    def _read(self, lba: int) -> None:
        size = ChannelGeometry(self.block_size, self.num_blocks).slot_blocks * self.block_size
        try:
            r = qemu_io_read(self.portal, self.iqn, lba * self.block_size, size, initiator=self.initiator,
                             chap=self.chap)
        except subprocess.TimeoutExpired:
            self.errors.append(f"LBA {lba}: qemu-io timed out")
            return
        self.reads += 1
        if r.returncode != 0 or "read " not in r.stdout:
            self.errors.append(f"LBA {lba}: rc {r.returncode}: {(r.stderr or r.stdout).strip()[-200:]}")
            return
        self.got.append(parse_qemu_io_dump(r.stdout))

    def _loop(self, lbas: list[int]) -> None:
        while not self._stop.is_set():
            for lba in lbas:
                if self._stop.is_set():
                    return
                self._read(lba)

    def start(self, workers: int = 4) -> None:
        lbas = self.lbas()
        for k in range(workers):
            t = threading.Thread(target=self._loop, args=(lbas[k::workers],), name=f"rogue-{k}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(90)

    def summary(self, key: bytes) -> dict[str, Any]:
        """What it received: channel messages, how many were sealed, and whether any opened without
        epoch keys (the harness holds the channel key: a keyless reader does not)."""
        from edifd.proto import ProtocolError, UnknownEpochError, decode

        msgs = sealed = opened = 0
        for data in self.got:
            if data[:5] != MAGIC + bytes([VERSION]):
                continue
            msgs += 1
            try:
                m = decode(data, key)
            except UnknownEpochError:
                sealed += 1
                continue
            except ProtocolError:
                continue
            opened += m.type not in (MessageType.HEARTBEAT,) and m.epoch != 0
        return {"reads": self.reads, "errors": len(self.errors), "first_error": self.errors[:1],
                "messages": msgs, "sealed": sealed, "opened_without_epoch_keys": opened}
