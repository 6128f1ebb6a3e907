"""FC frames over TCP: RFC 3643 encapsulation with the FCIP profile (RFC 3821), sans-IO.

Record layout (all big-endian except the FC CRC, which is little-endian like an Ethernet FCS):

    0  01 01 FE FE           Protocol# 1 (FCIP), Version 1, and their ones' complements
    4  01 01 FE FE           FCIP: protocol-specific word 1 is a copy of word 0
    8  pFlags 00 ~pFlags FF  we send pFlags 0 and do not implement the Special Frame (FSF)
   12  Flags|Len ~(Flags|Len) 6 flag bits (CRCV=0x04 in byte 12, FCIP requires 0) and the
                              10-bit length in words from byte 0 through the EOF word
   16  timestamp sec, frac   NTP format; 0 = not set; not checked on receipt
   24  CRC                   0: with CRCV = 0 the field is unused in FCIP; ignored on receipt
   28  SOF SOF ~SOF ~SOF
   32  FC header, data field, FC CRC (LE)
  end  EOF EOF ~EOF ~EOF

`encode_frame()` produces one record; `FcipStreamDecoder` turns a TCP byte stream back into
frames and never raises: any violation yields a `LinkError` event, bumps a counter and puts
the decoder in a needs-reset state (the link edge drops and reconnects the TCP connection).
With `data_runs=True` consecutive bulk FCP_DATA records come up as one `DataRun` (burst.py).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import TypeVar

from .burst import EOF_N, EOF_T, REC_OVERHEAD, SOF_I3, SOF_N3, DataRun
from .errors import ErrorReason, FcError, FcipError, FrameError
from .frame import FC_CRC_LEN, FC_HEADER_LEN, FC_MAX_DATA_FIELD, Eof, Frame, Sof

D = TypeVar("D", Sof, Eof)

FCIP_TCP_PORT = 3225
FCIP_PROTOCOL = 1
FCIP_VERSION = 1
ENCAP_HEADER_LEN = 28
DELIMITER_LEN = 4
# 28 + SOF 4 + header 24 + CRC 4 + EOF 4 = 64 bytes minimum; + 2112 data bytes = 2176 maximum.
MIN_FRAME_WORDS = (ENCAP_HEADER_LEN + 2 * DELIMITER_LEN + FC_HEADER_LEN + FC_CRC_LEN) // 4  # 16
MAX_FRAME_WORDS = MIN_FRAME_WORDS + FC_MAX_DATA_FIELD // 4  # 544
CRCV_FLAG = 0x04  # in byte 12 (the upper 6 bits of the flags/length field)

_WORD0 = bytes((FCIP_PROTOCOL, FCIP_VERSION, FCIP_PROTOCOL ^ 0xFF, FCIP_VERSION ^ 0xFF))
_PREAMBLE = _WORD0 + _WORD0  # FCIP: word 1 repeats word 0
_ENCAP = ">8s BBBB HH II I"
_HEAD12 = _PREAMBLE + bytes((0, 0, 0xFF, 0xFF))  # the first 12 bytes of every record we accept
_FLAGS_LEN = struct.Struct(">HH")
# The bulk FCP_DATA check (burst.DataRun): header words 0-3 (timestamp and CRC skipped), SOF, FC header.
_FAST = struct.Struct(">Q I HH 12x I I I I B B H H H I")
_PRE_Q = int.from_bytes(_PREAMBLE, "big")
_CRC_EOF = struct.Struct("<I I")  # the FC CRC (little-endian) and the EOF word, read byte-swapped
_DATA_SOFS = (SOF_I3, SOF_N3)
_DATA_EOFS_LE = tuple(int.from_bytes(w.to_bytes(4, "big"), "little") for w in (EOF_T, EOF_N))
_MIN_ESP_RECORD = REC_OVERHEAD + 8  # DF_CTL 0x40 announces an 8-byte ESP_Header


@dataclass(frozen=True)
class LinkError:
    """A decode failure on the link; the stream is unusable until `reset()`."""

    reason: ErrorReason
    detail: str


def _delimiter_word(code: int) -> bytes:
    return bytes((code, code, code ^ 0xFF, code ^ 0xFF))


def encode_frame(frame: Frame, *, timestamp: tuple[int, int] = (0, 0)) -> bytes:
    """One FCIP-encapsulated record for `frame`. timestamp = (NTP seconds, 2^-32 fraction)."""
    sec, frac = timestamp
    if not (0 <= sec < 1 << 32 and 0 <= frac < 1 << 32):
        raise FcipError("timestamp fields must be 32-bit unsigned")
    fc = frame.pack_with_crc()
    words = (ENCAP_HEADER_LEN + 2 * DELIMITER_LEN + len(fc)) // 4
    flags_len = words  # flags all zero: CRCV = 0 as the FCIP profile requires
    header = struct.pack(
        _ENCAP, _PREAMBLE, 0, 0, 0xFF, 0xFF, flags_len, flags_len ^ 0xFFFF, sec, frac, 0
    )
    return header + _delimiter_word(frame.sof) + fc + _delimiter_word(frame.eof)


def _check_preamble(buf: bytes | bytearray) -> None:
    n = min(len(buf), 8)
    if buf[:n] != _PREAMBLE[:n]:
        raise FcipError(
            f"not an FCIP encapsulation header: {bytes(buf[:n]).hex()}", ErrorReason.BAD_ENCAP_HEADER
        )


def _check_header_words(buf: bytes | bytearray) -> int:
    """Validate bytes 0-15 of an encapsulation header and return the record length in bytes."""
    _check_preamble(buf)
    pflags, reserved, pflags_c, reserved_c = buf[8], buf[9], buf[10], buf[11]
    if reserved != 0x00 or reserved_c != 0xFF or pflags_c != pflags ^ 0xFF:
        raise FcipError("pFlags/reserved word and its complement disagree", ErrorReason.BAD_ENCAP_HEADER)
    if pflags:
        raise FcipError(
            f"pFlags 0x{pflags:02x}: Special Frames are not supported", ErrorReason.UNSUPPORTED_FLAGS
        )
    flags_len, flags_len_c = struct.unpack_from(">HH", buf, 12)
    if flags_len_c != flags_len ^ 0xFFFF:
        raise FcipError("frame length and its complement disagree", ErrorReason.BAD_LENGTH)
    flags, words = flags_len >> 10, flags_len & 0x3FF
    if flags:
        raise FcipError(
            f"encapsulation flags 0x{flags:02x} set (FCIP requires CRCV=0)", ErrorReason.UNSUPPORTED_FLAGS
        )
    if words < MIN_FRAME_WORDS:
        raise FcipError(f"frame length {words} words < {MIN_FRAME_WORDS}", ErrorReason.FRAME_TOO_SHORT)
    if words > MAX_FRAME_WORDS:
        raise FcipError(f"frame length {words} words > {MAX_FRAME_WORDS}", ErrorReason.FRAME_TOO_LONG)
    return words * 4


def _record_length(buf: bytearray, mv: memoryview, pos: int) -> int:
    """`_check_header_words` for the record at `pos`, without copying when the header is the usual one."""
    if mv[pos : pos + 12] == _HEAD12:
        flags_len, flags_len_c = _FLAGS_LEN.unpack_from(mv, pos + 12)
        if flags_len_c == flags_len ^ 0xFFFF and MIN_FRAME_WORDS <= flags_len <= MAX_FRAME_WORDS:
            return flags_len * 4  # flags (the upper 6 bits) are zero: flags_len is the length in words
    return _check_header_words(buf[pos : pos + 16])


def _delimiter(word: bytes | bytearray, enum_cls: type[D], reason: ErrorReason) -> D:
    code = word[0]
    if word[1] != code or word[2] != code ^ 0xFF or word[3] != code ^ 0xFF:
        raise FrameError(f"malformed delimiter word {bytes(word).hex()}", reason)
    try:
        return enum_cls(code)
    except ValueError:
        raise FrameError(f"unknown delimiter code 0x{code:02x}", reason) from None


def decode_record(record: bytes) -> Frame:
    """Decode exactly one complete encapsulated record. Raises only `FcError` (with a reason)."""
    record = bytes(record)
    if len(record) < 16:
        _check_preamble(record)
        raise FcipError(f"record of {len(record)} bytes is truncated", ErrorReason.TRUNCATED)
    length = _check_header_words(record)
    if len(record) != length:
        reason = ErrorReason.TRUNCATED if len(record) < length else ErrorReason.BAD_LENGTH
        raise FcipError(f"record is {len(record)} bytes, header says {length}", reason)
    return _decode_body(record)


def _decode_body(record: bytes) -> Frame:
    sof = _delimiter(record[ENCAP_HEADER_LEN : ENCAP_HEADER_LEN + 4], Sof, ErrorReason.BAD_SOF)
    eof = _delimiter(record[-4:], Eof, ErrorReason.BAD_EOF)
    return Frame.unpack_fc(record[ENCAP_HEADER_LEN + 4 : -4], sof, eof)


class FcipStreamDecoder:
    """Reassembles FCIP records from arbitrary TCP segments. Sans-IO; `feed()` never raises.

    After a `LinkError` the decoder discards input until `reset()` (called by the link edge
    once it has reconnected); `counters` keep counting across resets.

    A `DataRun` is a view of the decoder's own buffer, not a copy. While any view of it is alive the
    buffer is not touched: the next `feed()` then continues in a fresh buffer (a copy of the unread
    tail), so a run kept by its consumer stays valid; one dropped in time costs no copy at all.
    """

    def __init__(self, *, data_runs: bool = False) -> None:
        self._runs = data_runs  # bulk FCP_DATA records as DataRun events (the link edges' fast path)
        self._buf = bytearray()
        self._start = 0  # bytes of _buf already consumed (compacted at the next feed)
        self._need: int | None = None  # record length once the header words were validated
        self.needs_reset = False
        self.counters: dict[ErrorReason, int] = {r: 0 for r in ErrorReason}
        self.frames_decoded = 0
        self.bytes_discarded = 0

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._start

    def stats(self) -> dict[str, int]:
        """Counters with string keys, for metrics and status output."""
        out = {f"rx_error_{r.value}": n for r, n in self.counters.items()}
        out.update(rx_frames=self.frames_decoded, rx_bytes_discarded=self.bytes_discarded)
        return out

    def reset(self) -> None:
        """Start over on a new connection (keeps the counters)."""
        self._drop_buffer()
        self._need = None
        self.needs_reset = False

    def _drop_buffer(self) -> None:
        self._buf = bytearray()  # not clear(): a DataRun may still be looking at the old one
        self._start = 0

    def _append(self, data: bytes) -> bytearray:
        """The buffer with the consumed bytes gone and `data` added; a fresh one if views of it live."""
        buf, start = self._buf, self._start
        try:
            if start:
                del buf[:start]
            buf += data
        except BufferError:  # a DataRun of the last feed is still held: leave its bytes alone
            buf = self._buf = bytearray(memoryview(buf)[start:]) + data
        self._start = 0
        return buf

    def feed(self, data: bytes) -> list[Frame | DataRun | LinkError]:
        if self.needs_reset:
            self.bytes_discarded += len(data)
            return []
        buf = self._append(data)
        events: list[Frame | DataRun | LinkError] = []
        pos = 0  # consumed bytes; the buffer is compacted at the next call, not once per frame
        run_at: int | None = None  # where the current DataRun started
        starts: list[int] = []
        mv = memoryview(buf)
        runs, fast, crc_eof, crc32 = self._runs, _FAST.unpack_from, _CRC_EOF.unpack_from, zlib.crc32
        try:
            while True:
                avail = len(buf) - pos
                if runs and avail >= MIN_FRAME_WORDS * 4:
                    # The bulk case in one unpack: the usual header words and a plain FCP_DATA record
                    # (burst.DataRun); anything else goes on below, where the general checks name it.
                    pre, pw, fl, flc, sof, w0, _w1, w2, _s, df, _c, _o, _r, _p = fast(mv, pos)
                    if (pre == _PRE_Q and pw == 0xFFFF and flc == fl ^ 0xFFFF
                            and MIN_FRAME_WORDS <= fl <= MAX_FRAME_WORDS):
                        need = fl * 4
                        if avail < need:
                            self._need = need
                            break
                        end = pos + need
                        if (sof in _DATA_SOFS and w0 >> 24 == 1 and w2 >> 24 == 8 and not w2 & 3
                                and (df == 0 or (df == 0x40 and need >= _MIN_ESP_RECORD))):
                            crc, eof = crc_eof(mv, end - 8)
                            if eof in _DATA_EOFS_LE and crc == crc32(mv[pos + 32 : end - 8]):
                                if run_at is None:
                                    run_at, starts = pos, []
                                starts.append(pos - run_at)
                                pos = end
                                self._need = None
                                self.frames_decoded += 1
                                continue
                        self._need = need
                if self._need is None:
                    if avail < 16:
                        _check_preamble(buf[pos:])  # reject garbage as early as its first byte
                        break
                    self._need = _record_length(buf, mv, pos)
                if avail < self._need:
                    break
                need = self._need
                if run_at is not None:
                    events.append(DataRun(mv[run_at:pos], starts))
                    run_at = None
                frame = _decode_body(bytes(mv[pos : pos + need]))
                # Consume only after a successful decode, so a rejected record counts as discarded.
                pos += need
                self._need = None
                events.append(frame)
                self.frames_decoded += 1
        except FcError as e:
            error: LinkError | None = LinkError(e.reason or ErrorReason.BAD_FRAME_HEADER, str(e))
        except Exception as e:  # noqa: BLE001 - a decoder bug must still not kill the link task
            error = LinkError(ErrorReason.BAD_FRAME_HEADER, f"internal decode error: {e!r}")
        else:
            error = None
        if run_at is not None:  # the records before an error were good: they are delivered
            events.append(DataRun(mv[run_at:pos], starts))
        mv.release()  # the runs' own slices keep what they need
        self._start = pos
        if error is not None:
            events.append(self._fail(error.reason, error.detail))
        return events

    def feed_eof(self) -> list[Frame | LinkError]:
        """The peer closed the stream: leftover bytes are a truncated frame."""
        if self.needs_reset or not self.buffered:
            return []
        detail = f"stream ended with {self.buffered} bytes of a partial frame"
        return [self._fail(ErrorReason.TRUNCATED, detail)]

    def _fail(self, reason: ErrorReason, detail: str) -> LinkError:
        self.counters[reason] += 1
        self.bytes_discarded += self.buffered
        self._drop_buffer()
        self._need = None
        self.needs_reset = True
        return LinkError(reason, detail)
