"""The bulk form of FCP_DATA on the link: a whole sequence as one buffer of FCIP records, and the
data records of a received chunk as offsets into one buffer, sans-IO.

The general path builds a `Frame` per 2048-byte chunk (`fcp_data_frames`), hands each to the
session's transform and encodes it (`encode_frame`); on receipt `FcipStreamDecoder` decodes each
record into a `Frame`. That is right for ELS, BLS and anything unusual, and costs several Python
objects and validations per frame. For the bulk case both ends use this module instead:

- `DataSequence` describes one FCP_DATA sequence exactly as `fcp_data_frames` takes it;
  `frames()` is that general form, `encode()` writes the clear records straight into one
  preallocated buffer (`struct.pack_into`, zlib CRC over memoryview slices) and returns a
  `WireBurst`. The ESP stage has its own encoder over the same layout (edifd/edif/esp.py).
- `FcipStreamDecoder(data_runs=True)` (fcip.py) hands consecutive FCP_DATA records that pass every
  check of the general decoder up as one `DataRun` (a view of the bytes and the record offsets)
  instead of one `Frame` each; any other record, or a data record the fast checks do not vouch
  for, takes the general path and ends the run.

The wire bytes are those of the general path, byte for byte (tests/unit/test_fastpath.py).

Record layout (offsets from the record start; docs/fc-wire.md):

    0  28  FCIP encapsulation header        28  4  SOF word
   32  24  FC header                        56  n  data field (fill to a word included)
 56+n   4  FC CRC (little-endian)         60+n  4  EOF word
"""

from __future__ import annotations

import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import FrameError
from .frame import FC_DATA_FRAME_SIZE, FC_HEADER_LEN, Eof, FCtl, FcType, Frame, RCtl, Sof

REC_FC = 32  # the FC header within a record
REC_DATA = REC_FC + FC_HEADER_LEN  # 56: the data field
REC_OVERHEAD = REC_DATA + 8  # 64: encapsulation, SOF, header, CRC, EOF around the data field

FC_HDR = struct.Struct(">I I I B B H H H I")  # the 24-byte FC header (frame.py's _HDR)
U32_BE = struct.Struct(">I")

_PREAMBLE = bytes((1, 1, 0xFE, 0xFE)) * 2  # fcip.py's: protocol 1, version 1, complements, twice
# The 56 bytes before a data field (FCIP header: preamble, pFlags word, flags|length and its
# complement, timestamp 0, CRC 0; the SOF word; the FC header) and the 8 after it (the CRC goes
# little-endian, the EOF word big-endian: its value is given byte-swapped).
_REC_START = struct.Struct(">8s BBBB HH II I I I I I B B H H H I")
_CRC_EOF = struct.Struct("<I I")
_DF_ESP = 0x40
Sealer = Callable[[bytearray, memoryview, int, int, memoryview], None]


def delimiter_word(code: int) -> int:
    """The FCIP SOF/EOF word `c c ~c ~c` as a big-endian u32."""
    return code << 24 | code << 16 | (code ^ 0xFF) << 8 | (code ^ 0xFF)


SOF_I3, SOF_N3 = delimiter_word(Sof.I3), delimiter_word(Sof.N3)
EOF_T, EOF_N = delimiter_word(Eof.T), delimiter_word(Eof.N)
_EOF_T_LE, _EOF_N_LE = (int.from_bytes(w.to_bytes(4, "big"), "little") for w in (EOF_T, EOF_N))
_FCP_DATA = int(RCtl.FCP_DATA)
_FCP = int(FcType.FCP)
_REL_OFF, _EX_CTX = int(FCtl.REL_OFF), int(FCtl.EX_CTX)
_END_SEQ, _SEQ_INIT = int(FCtl.END_SEQ), int(FCtl.SEQ_INIT)


class BufferPool:
    """Burst buffers of one sender (one session: one thread), reused once nothing holds them any more.

    A fresh megabyte costs page faults on every first touch, which on a busy (virtual) host is as
    much as building the records. The transport may keep a burst's buffer (or a view of it) until the
    socket took it all, so a buffer is only handed out again when the pool holds the last reference
    to it (CPython's reference count: a view counts too). Contents are overwritten by the encoder
    (fill bytes included), never read."""

    def __init__(self, keep: int = 4) -> None:
        self._keep = keep
        self._bufs: list[bytearray] = []
        # What getrefcount says of a buffer only the list holds, asked the way take() asks (the
        # interpreter's own count, not a constant: versions differ in what they count).
        probe = [bytearray(1)]
        self._free_refs = sys.getrefcount(probe[0])

    def take(self, size: int) -> bytearray:
        bufs = self._bufs
        for i in range(len(bufs)):
            if len(bufs[i]) == size and sys.getrefcount(bufs[i]) <= self._free_refs:
                return bufs[i]
        buf = bytearray(size)
        self._bufs.append(buf)
        if len(self._bufs) > self._keep:
            del self._bufs[0]
        return buf


@dataclass(frozen=True)
class WireBurst:
    """FCIP records ready for the link (`data`), `count` frames, built in one buffer. `frames()` reads
    them back through the general decoder (pcap traces, tests); the port writes `data` as it is."""

    data: bytearray
    count: int

    def frames(self) -> list[Frame]:
        from .fcip import decode_record

        out, at, mv = [], 0, memoryview(self.data)
        while at < len(mv):
            reclen = (U32_BE.unpack_from(mv, at + 12)[0] >> 16 & 0x3FF) * 4
            out.append(decode_record(bytes(mv[at : at + reclen])))
            at += reclen
        return out


class DataSequence:
    """One FCP_DATA sequence answering `cmnd`: the arguments of `fcp_data_frames`, checked the same
    way. `data` may be any bytes-like object; it is sliced through a memoryview, never copied."""

    __slots__ = ("cmnd", "data", "from_target", "rx_id", "seq_id", "offset", "frame_size", "count", "pool")

    def __init__(self, cmnd: Frame, data: bytes | bytearray | memoryview, *, from_target: bool, rx_id: int,
                 seq_id: int, offset: int = 0, frame_size: int = FC_DATA_FRAME_SIZE,
                 pool: BufferPool | None = None) -> None:
        if not len(data):
            raise FrameError("an FCP_DATA sequence needs at least one byte")
        if frame_size <= 0 or frame_size % 4:
            raise FrameError("frame_size must be a positive multiple of 4")
        self.cmnd, self.data = cmnd, memoryview(data).cast("B")
        self.from_target, self.rx_id, self.seq_id = from_target, rx_id, seq_id
        self.offset, self.frame_size = offset, frame_size
        self.count = -(-len(self.data) // frame_size)
        self.pool = pool  # where encode() takes its buffer (the sender's; None: a new one)

    def __len__(self) -> int:
        return len(self.data)

    def frames(self) -> list[Frame]:
        """The general form: exactly what `fcp_data_frames` builds."""
        from .exchange import fcp_data_frames

        return fcp_data_frames(self.cmnd, self.data, from_target=self.from_target, rx_id=self.rx_id,
                               seq_id=self.seq_id, offset=self.offset, frame_size=self.frame_size)

    def header_fields(self) -> tuple[int, int, int, int]:
        """(word 0 = R_CTL|D_ID, word 1 = CS_CTL 0|S_ID, F_CTL of a middle frame, of the last frame);
        the fill bits are added per frame."""
        c = self.cmnd.header
        s_id, d_id = (c.d_id, c.s_id) if self.from_target else (c.s_id, c.d_id)
        base = _REL_OFF | (_EX_CTX if self.from_target else 0)
        last = base | _END_SEQ | (0 if self.from_target else _SEQ_INIT)
        return _FCP_DATA << 24 | d_id, s_id, base, last

    def encode(self, overhead: int = 0, seal: Sealer | None = None) -> WireBurst:
        """The records of the whole sequence in one buffer. In clear by default; with `seal` (the ESP
        stage's), each data field is `overhead` bytes longer, DF_CTL is 0x40 and `seal(buf, mv, fc, i,
        clear)` fills it for frame `i` (its header at `fc`) before the CRC is taken."""
        w0, w1, mid, last_fctl = self.header_fields()
        data, fs, n_all = self.data, self.frame_size, len(self.data)
        count, last = self.count, self.count - 1
        tail = n_all - fs * last
        full_rec = REC_OVERHEAD + overhead + fs  # fs is a word multiple: no fill
        size = full_rec * last + REC_OVERHEAD + overhead + tail + (-tail % 4)
        buf = self.pool.take(size) if self.pool is not None else bytearray(size)
        mv = memoryview(buf)
        ox, rx, sid, off = self.cmnd.header.ox_id, self.rx_id, self.seq_id, self.offset
        df_ctl = _DF_ESP if seal is not None else 0
        head, crc_eof, crc32 = _REC_START.pack_into, _CRC_EOF.pack_into, zlib.crc32
        w2_mid = _FCP << 24 | mid
        at = 0
        for i in range(count):
            if i == last:
                n = tail
                fill = -n % 4
                reclen = REC_OVERHEAD + overhead + n + fill
                w2, eof = _FCP << 24 | last_fctl | fill, _EOF_T_LE
            else:
                n, reclen, w2, eof = fs, full_rec, w2_mid, _EOF_N_LE
            words = reclen >> 2
            head(buf, at, _PREAMBLE, 0, 0, 0xFF, 0xFF, words, words ^ 0xFFFF, 0, 0, 0,
                 SOF_N3 if i else SOF_I3, w0, w1, w2, sid, df_ctl, i, ox, rx, off + i * fs)
            clear = data[i * fs : i * fs + n]
            if seal is None:
                mv[at + REC_DATA : at + REC_DATA + n] = clear
            else:
                seal(buf, mv, at + REC_FC, i, clear)
            end = at + reclen
            if i == last and fill:  # a reused buffer holds old bytes where the fill goes
                mv[end - 8 - fill : end - 8] = bytes(fill)
            crc_eof(buf, end - 8, crc32(mv[at + REC_FC : end - 8]), eof)
            at = end
        return WireBurst(buf, count)


@dataclass
class DataRun:
    """Consecutive FCP_DATA records of one received chunk, every one already checked as the general
    decoder would (delimiters, CRC, header, fill): `data` holds them (a view of the decoder's buffer;
    drop the run when done with it), `starts` their offsets. Each has R_CTL 0x01, TYPE 0x08, no fill
    and DF_CTL 0x00 or 0x40 (then at least 8 data-field bytes)."""

    data: memoryview | bytes
    starts: list[int] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.starts)

    def record(self, i: int) -> bytes:
        at = self.starts[i]
        end = self.starts[i + 1] if i + 1 < len(self.starts) else len(self.data)
        return bytes(self.data[at:end])

    def frame(self, i: int) -> Frame:
        """Record `i` as the general decoder makes it (the fallback for anything unusual)."""
        from .fcip import decode_record

        return decode_record(self.record(i))

    def frames(self) -> list[Frame]:
        return [self.frame(i) for i in range(len(self.starts))]
