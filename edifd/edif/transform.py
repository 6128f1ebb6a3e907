"""The ESP stage of one secure session: the HBA's frame-transform hook (`outbound`/`inbound`).

Never raises on any frame. Inbound trouble is a drop (None) counted by reason; outbound trouble
fails closed (see `EspTransform.outbound`). The bulk FCP_DATA path (`outbound_sequence`,
`inbound_data`; edifd/fc/burst.py) gives the same bytes, counters and events as the per-frame one
and hands anything it does not cover back to it (None = "use the general path"). Events
(SA_UPDATE_COMPL for delayed RX deletes, teardown requests, rekey hints) queue up until the HBA
calls `pop_events()` or `tick(now)`.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag

from edifd.fc import FC_MAX_DATA_FIELD, DataSequence, DfCtl, EspHeader, FcError, Frame, WireBurst
from edifd.fc.burst import (
    REC_DATA,
    REC_FC,
)

from .counters import BlockReason, DropReason, EspCounters
from .errors import EdifError
from .esp import ESP_OVERHEAD, is_protected_traffic, open_in_place, protect, sealer, split, unprotect
from .events import Event, RekeyNeeded, TeardownReason, TeardownRequested
from .replay import MAX_SEQ, ReplayVerdict
from .sadb import SaDatabase

ICV_FAILURE_LIMIT = 10
REKEY_MARGIN = 1 << 24  # ask for a rekey this many frames before the sequence space ends
_BLOCKED_ESP = EspHeader(0, 0)  # SPI 0 is reserved (RFC 4303 §2.1): never installed, so the peer drops it
_MAX_CLEAR = FC_MAX_DATA_FIELD - ESP_OVERHEAD  # data field bytes that still fit after protection
_SPI_SEQ = struct.Struct(">II")
_ESP_AT = REC_DATA - REC_FC  # the ESP_Header: right after the 24-byte FC header
_DF_ESP = int(DfCtl.ESP)  # a plain int: IntFlag operators cost microseconds per frame


class EspTransform:
    """Per-session ESP protection of FCP frames on top of a `SaDatabase`."""

    def __init__(
        self,
        sadb: SaDatabase | None = None,
        *,
        icv_failure_limit: int = ICV_FAILURE_LIMIT,
        rekey_margin: int = REKEY_MARGIN,
    ) -> None:
        if icv_failure_limit < 1 or not 0 <= rekey_margin < MAX_SEQ:
            raise EdifError("icv_failure_limit must be >= 1 and rekey_margin in 0..2^32-2")
        self.sadb = sadb if sadb is not None else SaDatabase()
        self.icv_failure_limit = icv_failure_limit
        self.rekey_seq = MAX_SEQ - rekey_margin
        self.consecutive_icv_failures = 0
        self._events: list[Event] = []
        self._raised: set[TeardownReason] = set()  # one teardown request per cause until it clears
        self._scratch = memoryview(bytearray(FC_MAX_DATA_FIELD))  # clear data of the frame being opened

    @property
    def counters(self) -> EspCounters:
        return self.sadb.counters

    def pop_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def tick(self, now: float) -> list[Event]:
        """Timers of the SA database plus everything queued by the frame paths."""
        self._events.extend(self.sadb.tick(now))
        return self.pop_events()

    # --- send ----------------------------------------------------------------------------------

    def outbound(self, frame: Frame) -> Frame:
        """FCP frames get an ESP_Header; everything else passes untouched.

        Fails closed: if an FCP frame cannot be protected (no TX SA, sequence space used up, too
        long), the hook cannot drop it, so it returns an empty ESP frame with SPI 0 and
        sequence 0 instead of the data (no payload leaves in clear; the peer drops SPI 0, a
        reserved value never installed), counts it and asks for a teardown where that is the cure.
        """
        h = frame.header
        c = self.counters
        if not is_protected_traffic(h):
            c.frames_out_clear += 1
            c.bytes_out_clear += len(frame.payload)
            return frame
        if h.df_ctl & _DF_ESP:
            return self._blocked(frame, BlockReason.ALREADY_PROTECTED)
        if len(frame.payload) > _MAX_CLEAR:
            return self._blocked(frame, BlockReason.TOO_LONG)
        sa = self.sadb.tx_sa
        if sa is None:
            self._teardown(TeardownReason.NO_TX_SA, "an FCP frame is ready and no TX SA is installed")
            return self._blocked(frame, BlockReason.NO_TX_SA)
        seq = sa.next_seq()
        if seq is None:
            self._teardown(TeardownReason.SEQ_EXHAUSTED,
                           f"TX SA 0x{sa.spi:08x} used all 2^32-1 sequence numbers")
            return self._blocked(frame, BlockReason.SEQ_EXHAUSTED)
        if self._raised:  # a cause has cleared: a TX SA exists again and has sequence numbers left
            self._raised -= {TeardownReason.NO_TX_SA, TeardownReason.SEQ_EXHAUSTED}
        if seq >= self.rekey_seq and not sa.rekey_warned:
            sa.rekey_warned = True
            self._events.append(RekeyNeeded(sa.spi, seq))
        try:
            out = protect(sa, frame, seq)
        except (FcError, EdifError):  # not expected after the checks above; never leak the frame
            return self._blocked(frame, BlockReason.TOO_LONG)
        n = len(frame.payload)
        sa.frames += 1
        sa.bytes += n
        c.frames_out_protected += 1
        c.bytes_out_protected += n
        return out

    def outbound_sequence(self, seq: DataSequence) -> WireBurst | None:
        """The protected FCIP records of a whole FCP_DATA sequence in one buffer, or None when the
        sequence is not the plain case (no TX SA, not enough sequence numbers left, frames too long):
        then the caller sends `seq.frames()` through `outbound`, which fails closed frame by frame."""
        sa = self.sadb.tx_sa
        n = seq.count
        if sa is None or not sa.alive or seq.frame_size > _MAX_CLEAR or sa.seq + n > MAX_SEQ:
            return None
        first = sa.seq + 1
        sa.seq += n
        if self._raised:
            self._raised -= {TeardownReason.NO_TX_SA, TeardownReason.SEQ_EXHAUSTED}
        if sa.seq >= self.rekey_seq and not sa.rekey_warned:
            sa.rekey_warned = True
            self._events.append(RekeyNeeded(sa.spi, max(first, self.rekey_seq)))
        burst = seq.encode(ESP_OVERHEAD, sealer(sa, first))
        total = len(seq)
        sa.frames += n
        sa.bytes += total
        c = self.counters
        c.frames_out_protected += n
        c.bytes_out_protected += total
        return burst

    def _blocked(self, frame: Frame, reason: BlockReason) -> Frame:
        self.counters.block(reason)
        h = frame.header
        # The header (already clear on the wire when protected) is kept so the exchange is
        # recognisable in traces; no byte of the payload goes out, and DF_CTL announces nothing
        # but the all-zero ESP_Header.
        bare = Frame(h.with_df_ctl(0), b"", frame.sof, frame.eof)
        return bare.with_esp(_BLOCKED_ESP, b"")

    def _teardown(self, reason: TeardownReason, detail: str) -> None:
        if reason not in self._raised:
            self._raised.add(reason)
            self._events.append(TeardownRequested(reason, detail))

    # --- receive -------------------------------------------------------------------------------

    def inbound(self, frame: Frame) -> Frame | None:
        """Verified clear FCP frame, an untouched non-FCP frame, or None (dropped and counted)."""
        h = frame.header
        c = self.counters
        if not is_protected_traffic(h):
            if h.df_ctl & _DF_ESP:
                return self._drop(DropReason.UNEXPECTED_ESP)
            c.frames_in_clear += 1
            c.bytes_in_clear += len(frame.payload)
            return frame
        if not h.df_ctl & _DF_ESP:
            return self._drop(DropReason.CLEAR_FCP)
        parts = split(frame)
        if parts is None:
            return self._drop(DropReason.MALFORMED)
        esp, iv, rest = parts
        spi, seq = esp.spi, esp.seq
        sa = self.sadb.rx_sa(spi)
        if sa is None or sa.window is None:
            return self._drop(DropReason.UNKNOWN_SPI)
        if sa.window.check(seq) is not ReplayVerdict.OK:
            c.replays += 1
            return self._drop(DropReason.REPLAY)
        try:
            clear = unprotect(sa, frame, esp, iv, rest)
        except InvalidTag:
            return self._icv_failed()
        # Authentic from here on: only now may the window move (RFC 4303 §3.4.3).
        sa.window.accept(seq)
        self.consecutive_icv_failures = 0
        if self._raised:
            self._raised.discard(TeardownReason.ICV_FAILURES)
        try:
            plain = frame.without_esp(clear)
        except FcError:  # authentic but inconsistent (e.g. DF_CTL announces missing headers)
            return self._drop(DropReason.MALFORMED)
        n = len(clear)
        sa.frames += 1
        sa.bytes += n
        c.frames_in_protected += 1
        c.bytes_in_protected += n
        self._events.extend(self.sadb.on_frame_received(spi))
        return plain

    def inbound_data(self, mv: memoryview, fc: int, dflen: int) -> bytes | memoryview | None:
        """`inbound` for a received FCP_DATA frame in a wire buffer (a `DataRun` record: its header at
        `fc`, DF_CTL 0x40, CS_CTL 0, no fill, a `dflen`-byte data field): its clear data field, valid
        until the next call, or None (dropped and counted exactly as `inbound` would)."""
        if dflen < ESP_OVERHEAD:
            return self._drop(DropReason.MALFORMED)
        sadb = self.sadb
        spi, seq = _SPI_SEQ.unpack_from(mv, fc + _ESP_AT)  # the ESP_Header after the FC header
        sa = sadb.rx_sa(spi)
        window = sa.window if sa is not None else None
        if window is None:
            return self._drop(DropReason.UNKNOWN_SPI)
        c = sadb.counters
        if not window.fresh(seq):
            c.replays += 1
            return self._drop(DropReason.REPLAY)
        try:
            clear = open_in_place(sa, mv, fc, dflen, self._scratch)  # type: ignore[arg-type]
        except InvalidTag:
            return self._icv_failed()
        window.accept_fresh(seq)  # authentic: only now may the window move (RFC 4303 §3.4.3)
        self.consecutive_icv_failures = 0
        if self._raised:
            self._raised.discard(TeardownReason.ICV_FAILURES)
        n = dflen - ESP_OVERHEAD
        sa.frames += 1  # type: ignore[union-attr]
        sa.bytes += n  # type: ignore[union-attr]
        c.frames_in_protected += 1
        c.bytes_in_protected += n
        if sadb.pending_rx_delete is not None:
            self._events.extend(sadb.on_frame_received(spi))
        return clear

    def _icv_failed(self) -> None:
        self.counters.icv_failures += 1
        self.consecutive_icv_failures += 1
        if self.consecutive_icv_failures >= self.icv_failure_limit:
            self._teardown(TeardownReason.ICV_FAILURES,
                           f"{self.consecutive_icv_failures} consecutive ICV failures")
        return self._drop(DropReason.ICV)

    def _drop(self, reason: DropReason) -> None:
        self.counters.drop(reason)
        return None
