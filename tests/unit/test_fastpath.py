"""The bulk FCP_DATA path (edifd/fc/burst.py, EspTransform.outbound_sequence/inbound_data, the sessions'
`bursts`): byte for byte what the general per-frame path puts on the wire, the same data back, and the
same drops, counters and events for corrupted, replayed, unknown and malformed frames."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import edifd.edif.sa as sa_module
from edifd.edif import EspTransform, RekeyNeeded, SaDatabase
from edifd.edif.replay import MAX_SEQ
from edifd.fc import (
    DataRun,
    DataSequence,
    FcipStreamDecoder,
    FcpCmnd,
    Frame,
    LinkError,
    WireBurst,
    encode_frame,
    fcp_cmnd_frame,
    fcp_data_frames,
    lun_to_bytes,
)
from edifd.fc.burst import REC_FC, REC_OVERHEAD, BufferPool
from edifd.hba import Completed, InitiatorSession
from edifd.proto import Cipher, SaDirection
from edifd.scsi import MemoryMedium, ScsiCommand, ScsiDisk, cdb
from edifd.target import Execute, TargetSession

SPI_I, SPI_T = 0x1001, 0x2002  # what the initiator sends on, what the target sends on
HI, LO, NN = 0x21000000000000F0, 0x2100000000000010, 0x2000000000000001


@pytest.fixture(params=[True, False], ids=["aead_into", "aead_bytes"])
def aead_into(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[bool]:
    """Both AEAD call forms: cryptography's encrypt_into/decrypt_into and the bytes-only form of
    Debian 12's cryptography 38 (forced here whatever is installed)."""
    if request.param and not sa_module.HAS_AEAD_INTO:
        pytest.skip("the installed cryptography has no encrypt_into/decrypt_into")
    monkeypatch.setattr(sa_module, "HAS_AEAD_INTO", request.param)
    yield request.param


def cmnd(dl: int = 1 << 20, ox: int = 7) -> Frame:
    return fcp_cmnd_frame(s_id=0x010101, d_id=0x010102, ox_id=ox,
                          cmnd=FcpCmnd(lun=bytes(8), cdb=bytes([0x28]) + bytes(15), dl=dl, read=True))


def esp_pair(cipher: Cipher, key: bytes, salt: bytes, **kw: int) -> tuple[EspTransform, EspTransform]:
    tx, rx = EspTransform(SaDatabase(), **kw), EspTransform(SaDatabase(), **kw)
    assert tx.sadb.install(SaDirection.TX, SPI_I, cipher, key, salt).ok
    assert rx.sadb.install(SaDirection.RX, SPI_I, cipher, key, salt).ok
    return tx, rx


def general_wire(frames: list[Frame], esp: EspTransform | None = None) -> bytes:
    return b"".join(encode_frame(esp.outbound(f) if esp else f) for f in frames)


def decode_all(stream: bytes, *, runs: bool, chunks: list[int] | None = None) -> list[object]:
    """The decoder's events for `stream` fed in `chunks`; DataRuns copied out (they are views)."""
    d = FcipStreamDecoder(data_runs=runs)
    out: list[object] = []
    at = 0
    for n in [*(chunks or []), len(stream)]:
        for ev in d.feed(stream[at : at + n]):
            out.append(DataRun(bytes(ev.data), list(ev.starts)) if isinstance(ev, DataRun) else ev)
        at += n
        if at >= len(stream):
            break
    return out


def open_runs(esp: EspTransform, events: list[object]) -> bytes:
    """The clear data of every record, through inbound_data for runs and inbound for frames."""
    out = bytearray()
    for ev in events:
        if isinstance(ev, DataRun):
            mv = memoryview(ev.data)
            for i, at in enumerate(ev.starts):
                clear = esp.inbound_data(mv, at + REC_FC, len(ev.record(i)) - REC_OVERHEAD)
                if clear is not None:
                    out += clear
        else:
            plain = esp.inbound(ev)  # type: ignore[arg-type]
            if plain is not None:
                out += plain.payload
    return bytes(out)


# --- the clear link -----------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 9000), from_target=st.booleans(), offset=st.integers(0, 1 << 20).map(lambda x: x * 4),
       frame_size=st.sampled_from([2048, 1024, 512, 1000, 4]), seq_id=st.integers(0, 255))
def test_clear_sequence_is_byte_identical(n: int, from_target: bool, offset: int, frame_size: int,
                                          seq_id: int) -> None:
    data = random.Random(n).randbytes(n)
    frames = fcp_data_frames(cmnd(), data, from_target=from_target, rx_id=0x55, seq_id=seq_id, offset=offset,
                             frame_size=frame_size)
    seq = DataSequence(cmnd(), data, from_target=from_target, rx_id=0x55, seq_id=seq_id, offset=offset,
                       frame_size=frame_size)
    burst = seq.encode()
    assert burst.count == len(frames) and bytes(burst.data) == general_wire(frames)
    assert burst.frames() == frames == seq.frames()


def test_pooled_buffers_are_reused_only_when_free_and_stay_byte_identical() -> None:
    pool = BufferPool()
    a, b = random.Random(1).randbytes(4097), random.Random(2).randbytes(4097)  # a 1-byte last frame: fill
    first = DataSequence(cmnd(), a, from_target=True, rx_id=1, seq_id=1, pool=pool).encode()
    held = DataSequence(cmnd(), b, from_target=True, rx_id=1, seq_id=1, pool=pool).encode()
    assert held.data is not first.data  # the first burst is still referenced
    assert bytes(first.data) == general_wire(fcp_data_frames(cmnd(), a, from_target=True, rx_id=1, seq_id=1))
    buf_id = id(first.data)
    del first
    again = DataSequence(cmnd(), b, from_target=True, rx_id=1, seq_id=1, pool=pool).encode()
    assert id(again.data) == buf_id  # free again: reused, fill bytes zeroed
    assert bytes(again.data) == bytes(held.data) == general_wire(
        fcp_data_frames(cmnd(), b, from_target=True, rx_id=1, seq_id=1))
    view = memoryview(again.data)  # what a transport keeps while the socket has not taken it all
    del again
    assert id(DataSequence(cmnd(), a, from_target=True, rx_id=1, seq_id=1, pool=pool).encode().data) != buf_id
    view.release()


@settings(max_examples=40, deadline=None)
@given(data=st.binary(min_size=1, max_size=7000), cut=st.lists(st.integers(1, 3000), max_size=6),
       others=st.integers(0, 3))
def test_decoder_runs_give_the_general_frames_for_any_segmentation(data: bytes, cut: list[int],
                                                                  others: int) -> None:
    """DataRuns expand to exactly the general decoder's frames, whatever the TCP segmentation; FCP_CMND
    records between data records end a run and come up as frames."""
    c = cmnd()
    stream = general_wire([c] * others + fcp_data_frames(c, data, from_target=True, rx_id=1, seq_id=1) + [c])
    general = decode_all(stream, runs=False, chunks=cut)
    fast = decode_all(stream, runs=True, chunks=cut)
    expanded = [f for ev in fast for f in (ev.frames() if isinstance(ev, DataRun) else [ev])]
    assert expanded == general
    assert all(isinstance(ev, Frame) for ev in fast if not isinstance(ev, DataRun))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2048, 9000), pos=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_decoder_errors_are_the_general_decoders(n: int, pos: int, bit: int) -> None:
    """One flipped bit anywhere: the same frames before it, the same LinkError reason, the same counters."""
    data = random.Random(n).randbytes(n)
    stream = bytearray(general_wire(fcp_data_frames(cmnd(), data, from_target=False, rx_id=2, seq_id=3)))
    stream[pos % len(stream)] ^= 1 << bit
    results = []
    for runs in (False, True):
        d = FcipStreamDecoder(data_runs=runs)
        evs = d.feed(bytes(stream)) + d.feed_eof()
        frames = [f for ev in evs for f in (ev.frames() if isinstance(ev, DataRun) else [ev])]
        results.append((frames, d.stats(), d.buffered))
    assert results[0] == results[1]


def test_a_run_kept_past_the_next_feed_stays_valid() -> None:
    """A DataRun is a view of the decoder's buffer: holding it makes the next feed copy, not overwrite."""
    c = cmnd()
    stream = general_wire(fcp_data_frames(c, os.urandom(8192), from_target=True, rx_id=1, seq_id=1))
    d = FcipStreamDecoder(data_runs=True)
    (first,) = d.feed(stream[:5000])
    kept = bytes(first.data)
    rest = d.feed(stream[5000:])
    assert bytes(first.data) == kept
    assert [type(ev) for ev in rest] == [DataRun]  # the record cut by the segment boundary too
    assert first.frames() + rest[0].frames() == decode_all(stream, runs=False)


def test_a_held_run_survives_a_link_error_and_a_reset() -> None:
    c = cmnd()
    stream = general_wire(fcp_data_frames(c, os.urandom(4096), from_target=True, rx_id=1, seq_id=1))
    d = FcipStreamDecoder(data_runs=True)
    (run,) = d.feed(stream)
    kept = bytes(run.data)
    (err,) = d.feed(b"\x00" * 64)
    assert isinstance(err, LinkError) and d.needs_reset and d.buffered == 0
    d.reset()
    (again,) = d.feed(stream)
    assert bytes(run.data) == kept == bytes(again.data) and d.stats()["rx_frames"] == 4


# --- the ESP stage ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cipher", list(Cipher))
@pytest.mark.parametrize("n", [1, 3, 2048, 5001, 65536])
def test_protected_sequence_is_byte_identical_and_round_trips(cipher: Cipher, n: int,
                                                              aead_into: bool) -> None:
    key, salt, data = os.urandom(cipher.key_size), os.urandom(4), os.urandom(n)
    tx_g, rx_g = esp_pair(cipher, key, salt)
    tx_f, rx_f = esp_pair(cipher, key, salt)
    frames = fcp_data_frames(cmnd(), data, from_target=True, rx_id=5, seq_id=3)
    wire = general_wire(frames, tx_g)
    burst = tx_f.outbound_sequence(DataSequence(cmnd(), data, from_target=True, rx_id=5, seq_id=3))
    assert burst is not None and bytes(burst.data) == wire
    assert tx_f.counters == tx_g.counters and tx_f.sadb.snapshot() == tx_g.sadb.snapshot()
    fast = open_runs(rx_f, decode_all(wire, runs=True))
    general = open_runs(rx_g, decode_all(wire, runs=False))
    assert fast == general == data
    assert rx_f.counters == rx_g.counters and rx_f.sadb.snapshot() == rx_g.sadb.snapshot()


def _tamper(wire: bytes) -> Iterator[tuple[str, bytes]]:
    """Streams a receiver must drop frames of: a flipped ciphertext bit (fixed CRC), a replay, an SPI
    nobody installed, and a record whose DF_CTL says ESP but whose data field is too short."""
    from edifd.fc import decode_record

    recs = [encode_frame(f) for f in decode_all(wire, runs=False)]  # type: ignore[arg-type]

    def refit(rec: bytes, at: int, value: int) -> bytes:
        f = decode_record(rec)
        body = bytearray(f.payload)
        body[at] ^= value
        return encode_frame(Frame(f.header, bytes(body), f.sof, f.eof))  # a valid CRC over the change

    yield "icv", refit(recs[0], 40, 0x01) + b"".join(recs[1:])
    yield "replay", recs[0] + recs[1] + recs[0]
    yield "unknown_spi", refit(recs[0], 3, 0x80) + recs[1]
    short = decode_record(recs[0])
    yield "malformed", encode_frame(Frame(short.header, short.payload[:24], short.sof, short.eof)) + recs[1]


@pytest.mark.parametrize("cipher", [Cipher.AES_GCM_128, Cipher.AES_GMAC_256])
def test_bad_frames_are_dropped_with_the_general_counters(cipher: Cipher, aead_into: bool) -> None:
    key, salt = os.urandom(cipher.key_size), os.urandom(4)
    data = os.urandom(3 * 2048)
    tx, _ = esp_pair(cipher, key, salt)
    wire = general_wire(fcp_data_frames(cmnd(), data, from_target=True, rx_id=5, seq_id=3), tx)
    for reason, stream in _tamper(wire):
        _, rx_g = esp_pair(cipher, key, salt, icv_failure_limit=1)
        _, rx_f = esp_pair(cipher, key, salt, icv_failure_limit=1)
        general = open_runs(rx_g, decode_all(stream, runs=False))
        fast_events = decode_all(stream, runs=True)
        fast = open_runs(rx_f, fast_events)
        assert fast == general, reason
        assert rx_f.counters.drops == rx_g.counters.drops and rx_g.counters.drops.get(reason) == 1, reason
        assert rx_f.counters == rx_g.counters, reason
        assert rx_f.pop_events() == rx_g.pop_events(), reason  # e.g. the ICV teardown request
        assert rx_f.sadb.snapshot() == rx_g.sadb.snapshot(), reason


def test_no_tx_sa_or_too_few_sequence_numbers_leave_it_to_the_general_path() -> None:
    """Fail closed: the bulk path refuses (None) and changes nothing; frame by frame the general path
    then blocks what it must (no payload byte in clear)."""
    seq = DataSequence(cmnd(), os.urandom(4096), from_target=True, rx_id=5, seq_id=3)
    bare = EspTransform(SaDatabase())
    assert bare.outbound_sequence(seq) is None and bare.counters.frames_out_protected == 0
    tx, _ = esp_pair(Cipher.AES_GCM_128, os.urandom(16), os.urandom(4))
    (sa,) = tx.sadb.sas(SaDirection.TX)
    sa.seq = MAX_SEQ - 1  # one number left, two frames
    before = tx.counters.snapshot()
    assert tx.outbound_sequence(seq) is None
    assert tx.counters.snapshot() == before and sa.seq == MAX_SEQ - 1


def test_rekey_hint_inside_a_burst_is_the_general_one() -> None:
    key, salt, data = os.urandom(16), os.urandom(4), os.urandom(8 * 2048)
    tx_g, _ = esp_pair(Cipher.AES_GCM_128, key, salt, rekey_margin=MAX_SEQ - 5)  # hint at seq 5
    tx_f, _ = esp_pair(Cipher.AES_GCM_128, key, salt, rekey_margin=MAX_SEQ - 5)
    wire = general_wire(fcp_data_frames(cmnd(), data, from_target=True, rx_id=5, seq_id=3), tx_g)
    burst = tx_f.outbound_sequence(DataSequence(cmnd(), data, from_target=True, rx_id=5, seq_id=3))
    assert isinstance(burst, WireBurst) and bytes(burst.data) == wire
    events = tx_f.pop_events()
    assert events == tx_g.pop_events() == [RekeyNeeded(SPI_I, 5)]


# --- both sessions, bulk and general -------------------------------------------------------------------


class ByteWire:
    """An InitiatorSession and a TargetSession joined by bytes: what each sends is encoded (WireBursts as
    they are), recorded, cut into random segments and fed to the other side's decoder."""

    def __init__(self, bursts: bool, esp: tuple[bytes, bytes] | None, seed: int = 1) -> None:
        ti = tt = None
        if esp is not None:
            key, salt = esp
            ti, tt = EspTransform(SaDatabase()), EspTransform(SaDatabase())
            for t, tx, rx in ((ti, SPI_I, SPI_T), (tt, SPI_T, SPI_I)):
                assert t.sadb.install(SaDirection.TX, tx, Cipher.AES_GCM_128, key, salt).ok
                assert t.sadb.install(SaDirection.RX, rx, Cipher.AES_GCM_128, key, salt).ok
        self.esp = (ti, tt)
        self.i = InitiatorSession(HI, NN, bursts=bursts, transform=ti)
        self.t = TargetSession(LO, NN + 1, [0], bursts=bursts, transform=tt)
        self.di, self.dt = FcipStreamDecoder(data_runs=bursts), FcipStreamDecoder(data_runs=bursts)
        self.disk = ScsiDisk(MemoryMedium(1 << 21, 512))
        self.rng = random.Random(seed)
        self.to_t, self.to_i = bytearray(), bytearray()
        self.done: dict[int, object] = {}
        self.send_i(self.i.connected(0.0))

    @staticmethod
    def encode(items: list[Frame | WireBurst]) -> bytes:
        return b"".join(bytes(x.data) if isinstance(x, WireBurst) else encode_frame(x) for x in items)

    def segments(self, data: bytes) -> Iterator[bytes]:
        at = 0
        while at < len(data):
            n = self.rng.choice([1, 7, 100, 3000, 65536])
            yield data[at : at + n]
            at += n

    def send_i(self, items: list[Frame | WireBurst]) -> None:
        data = self.encode(items)
        self.to_t += data
        for seg in self.segments(data):
            for ev in self.dt.feed(seg):
                assert not isinstance(ev, LinkError)
                out = self.t.receive_data(ev) if isinstance(ev, DataRun) else self.t.receive(ev)
                for x in self.t.take_events():
                    if isinstance(x, Execute):
                        out += self.t.complete(x.rx_id, self.disk.execute(x.command))  # type: ignore[arg-type]
                self.send_t(out)

    def send_t(self, items: list[Frame | WireBurst]) -> None:
        data = self.encode(items)
        self.to_i += data
        for seg in self.segments(data):
            for ev in self.di.feed(seg):
                assert not isinstance(ev, LinkError)
                out = self.i.receive_data(ev, 0.0) if isinstance(ev, DataRun) else self.i.receive(ev, 0.0)
                self.send_i(out)
        for x in self.i.take_events():
            if isinstance(x, Completed):
                self.done[x.tag] = x.response


def _workload(w: ByteWire) -> None:
    payload = random.Random(5).randbytes(256 << 10)
    w.send_i(w.i.submit(1, 0, ScsiCommand(cdb.write(0, 512, size=16), data_out=payload), 0.0, 30.0))
    w.send_i(w.i.submit(2, 0, ScsiCommand(cdb.read(0, 512, size=16), data_in_len=256 << 10), 0.0, 30.0))
    w.send_i(w.i.submit(3, 0, ScsiCommand(cdb.write(7, 3), data_out=payload[:1536]), 0.0, 30.0))
    w.send_i(w.i.submit(4, 0, ScsiCommand(cdb.read(5, 5), data_in_len=2560), 0.0, 30.0))
    w.send_i(w.i.submit(5, 0, ScsiCommand(cdb.inquiry(37), data_in_len=37), 0.0, 30.0))  # fill: general path


@pytest.mark.parametrize("secure", [False, True], ids=["clear", "esp"])
def test_sessions_put_the_same_bytes_on_the_wire_with_and_without_bursts(secure: bool) -> None:
    esp = (os.urandom(16), os.urandom(4)) if secure else None
    general, fast = ByteWire(False, esp), ByteWire(True, esp)
    for w in (general, fast):
        _workload(w)
    assert sorted(fast.done) == [1, 2, 3, 4, 5]
    assert bytes(fast.to_t) == bytes(general.to_t) and bytes(fast.to_i) == bytes(general.to_i)
    assert fast.done == general.done
    assert fast.done[2].data == random.Random(5).randbytes(256 << 10)  # type: ignore[attr-defined]
    assert fast.i.counters == general.i.counters and fast.t.counters == general.t.counters
    if secure:
        for f, g in zip(fast.esp, general.esp, strict=True):
            assert f is not None and g is not None and f.counters == g.counters
            assert f.counters.drops == {} and f.counters.frames_in_protected > 128


def test_initiator_drops_a_replayed_read_burst_like_the_general_path() -> None:
    """A replayed data run: every frame dropped by ESP (replay) and by the session, the command
    untouched, the counters exact."""
    esp = (os.urandom(16), os.urandom(4))
    results = []
    for bursts in (False, True):
        w = ByteWire(bursts, esp)
        w.send_i(w.i.submit(1, 0, ScsiCommand(cdb.write(0, 8), data_out=bytes(range(256)) * 16), 0.0, 30.0))
        mark = len(w.to_i)
        w.send_i(w.i.submit(2, 0, ScsiCommand(cdb.read(0, 8), data_in_len=4096), 0.0, 30.0))
        read_bytes = bytes(w.to_i[mark:])
        w.send_t([])
        out = []
        for ev in w.di.feed(read_bytes):  # the whole read answer again: data frames and the RSP
            out += w.i.receive_data(ev, 0.0) if isinstance(ev, DataRun) else w.i.receive(ev, 0.0)
        ti = w.esp[0]
        assert ti is not None
        results.append((out, w.i.counters.dropped_frames, ti.counters.snapshot(), sorted(w.done)))
    assert results[0] == results[1]
    out, dropped, counters, done = results[1]
    assert out == [] and dropped == 3 and counters["drops"] == {"replay": 3} and done == [1, 2]


def test_data_for_an_unknown_exchange_takes_the_general_path() -> None:
    """Authentic data for no open exchange: verified (window moved, counted) then dropped by the
    session, the same way with and without bursts."""
    esp = (os.urandom(16), os.urandom(4))
    results = []
    for bursts in (False, True):
        w = ByteWire(bursts, esp)
        _, tt = w.esp
        assert tt is not None
        c = fcp_cmnd_frame(s_id=w.i.remote_id, d_id=w.i.local_id, ox_id=0x4444,
                           cmnd=FcpCmnd(lun=lun_to_bytes(0), cdb=cdb.read(0, 8), dl=4096, read=True))
        seq = DataSequence(c, bytes(4096), from_target=True, rx_id=9, seq_id=1)
        burst = tt.outbound_sequence(seq)
        assert burst is not None
        w.send_t([burst])
        ti = w.esp[0]
        assert ti is not None
        results.append((w.i.counters.dropped_frames, ti.counters.snapshot()))
    assert results[0] == results[1] and results[1][0] == 2
