"""The ESP stage: known-answer layout (built independently here with struct + AESGCM), round
trips, tampering, replay, drops by reason, fail-closed sending, the 2112-byte budget."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from edifd.edif import (
    MAX_SEQ,
    EspTransform,
    RekeyNeeded,
    SaDatabase,
    TeardownReason,
    TeardownRequested,
)
from edifd.fc import (
    FC_DATA_FRAME_SIZE,
    FC_MAX_DATA_FIELD,
    Eof,
    FcError,
    FcpCmnd,
    FcType,
    Frame,
    FrameHeader,
    RCtl,
    Sof,
    abts_frame,
    els_request,
    fcp_cmnd_frame,
    fcp_data_frames,
)
from edifd.fc.els import Logo
from edifd.proto import Cipher, SaDirection

KEY32 = bytes.fromhex("6d1f3a8e0b4c2d7f91e5a0c3b8d64f2718293a4b5c6d7e8f90a1b2c3d4e5f607")
SALT = bytes.fromhex("c0ffee42")
SPI = 0x1234_5678
CIPHERS = list(Cipher)
GMAC = (Cipher.AES_GMAC_128, Cipher.AES_GMAC_256)


def key_for(cipher: Cipher) -> bytes:
    return KEY32[: cipher.key_size]


def pair(cipher: Cipher = Cipher.AES_GCM_128, **kw: int) -> tuple[EspTransform, EspTransform]:
    """A sender whose TX SA is the receiver's RX SA (and the reverse, with another SPI)."""
    tx, rx = EspTransform(SaDatabase(), **kw), EspTransform(SaDatabase(), **kw)
    assert tx.sadb.install(SaDirection.TX, SPI, cipher, key_for(cipher), SALT).ok
    assert rx.sadb.install(SaDirection.RX, SPI, cipher, key_for(cipher), SALT).ok
    return tx, rx


def cmnd(ox_id: int = 7) -> Frame:
    return fcp_cmnd_frame(s_id=0x010101, d_id=0x010102, ox_id=ox_id,
                          cmnd=FcpCmnd(lun=bytes(8), cdb=bytes([0x28]) + bytes(15), dl=4096, read=True))


def wire(frame: Frame) -> Frame:
    """Through the FC codec, as the peer sees it."""
    return Frame.unpack_fc(frame.pack_with_crc(), frame.sof, frame.eof)


def data_frame(payload: bytes, *, cs_ctl: int = 0, df_ctl: int = 0) -> Frame:
    h = FrameHeader(r_ctl=RCtl.FCP_DATA, d_id=0x010101, cs_ctl=cs_ctl, s_id=0x010102, type=FcType.FCP,
                    f_ctl=0x800008, seq_id=3, df_ctl=df_ctl, seq_cnt=9, ox_id=0x0042, rx_id=0x0777,
                    parameter=0x800)
    return Frame(h, payload, Sof.N3)


# --- known answer: our layout rebuilt from the spec text, byte by byte ---------------------------


def expected_wire(cipher: Cipher, clear: Frame, seq: int) -> bytes:
    h = clear.header
    def header(cs_ctl: int) -> bytes:
        return struct.pack(">B3sB3sB3sBBHHHI", h.r_ctl, h.d_id.to_bytes(3, "big"), cs_ctl,
                           h.s_id.to_bytes(3, "big"), h.type, h.f_ctl.to_bytes(3, "big"), h.seq_id,
                           h.df_ctl | 0x40, h.seq_cnt, h.ox_id, h.rx_id, h.parameter)
    esp = struct.pack(">II", SPI, seq)
    iv = struct.pack(">Q", seq)  # explicit IV = sequence number, zero-extended
    aad = header(0) + esp  # CS_CTL zeroed in the AAD
    aead = AESGCM(key_for(cipher))
    if cipher in GMAC:
        body = iv + clear.payload + aead.encrypt(SALT + iv, b"", aad + iv + clear.payload)
    else:
        body = iv + aead.encrypt(SALT + iv, clear.payload, aad)
    data = esp + body
    return header(h.cs_ctl) + data + bytes(-len(data) % 4)


@pytest.mark.parametrize("cipher", CIPHERS)
def test_known_answer_layout(cipher: Cipher) -> None:
    tx, rx = pair(cipher)
    clear = data_frame(bytes(range(256)) * 2 + b"tail", cs_ctl=0x5A)
    for seq in (1, 2, 3):
        prot = tx.outbound(clear)
        assert prot.pack_fc() == expected_wire(cipher, clear, seq)
        assert prot.header.df_ctl == 0x40 and prot.header.cs_ctl == 0x5A
        assert rx.inbound(wire(prot)) == clear


def test_gcm_hides_the_payload_and_gmac_does_not() -> None:
    secret = b"tenant data, never in clear on the wire" * 4
    for cipher in CIPHERS:
        tx, _ = pair(cipher)
        prot = tx.outbound(data_frame(secret))
        assert (secret in prot.pack_fc()) == (cipher in GMAC)


def test_protected_payload_length_is_clear_plus_32() -> None:
    tx, _ = pair()
    for n in (0, 1, 4, 24, 32, 2048):
        assert len(tx.outbound(data_frame(bytes(n))).payload) == n + 32


# --- round trips ----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(cipher=st.sampled_from(CIPHERS),
       r_ctl=st.sampled_from([0x01, 0x03, 0x05, 0x06, 0x07, 0x00, 0x0F]),
       payload=st.binary(max_size=FC_MAX_DATA_FIELD - 32 - 3),
       cs_ctl=st.integers(0, 255), seq_cnt=st.integers(0, 0xFFFF), param=st.integers(0, 0xFFFFFFFF))
def test_round_trip(cipher: Cipher, r_ctl: int, payload: bytes, cs_ctl: int, seq_cnt: int,
                    param: int) -> None:
    tx, rx = pair(cipher)
    h = FrameHeader(r_ctl=r_ctl, d_id=1, cs_ctl=cs_ctl, s_id=2, type=FcType.FCP, f_ctl=0x290000,
                    seq_cnt=seq_cnt, parameter=param)
    clear = Frame(h, payload)
    prot = tx.outbound(clear)
    assert prot.header.df_ctl & 0x40
    assert rx.inbound(wire(prot)) == clear


def test_one_mib_of_fcp_data_in_2048_byte_frames_fits_2112() -> None:
    tx, rx = pair(Cipher.AES_GCM_256)
    data = bytes(range(256)) * 4096
    frames = fcp_data_frames(cmnd(), data, from_target=True, rx_id=0x10, seq_id=1)
    assert len(frames) == 512 and all(len(f.payload) == FC_DATA_FRAME_SIZE for f in frames)
    out = bytearray()
    for f in frames:
        prot = tx.outbound(f)
        assert len(prot.data_field) == 2080 <= FC_MAX_DATA_FIELD
        out += rx.inbound(wire(prot)).fc4_payload
    assert bytes(out) == data
    assert tx.counters.frames_out_protected == rx.counters.frames_in_protected == 512
    assert tx.counters.bytes_out_protected == rx.counters.bytes_in_protected == len(data)
    assert tx.sadb.tx_sa.seq == 512


def test_sequence_numbers_start_at_1_and_count_up() -> None:
    tx, _ = pair()
    seqs = [struct.unpack_from(">II", tx.outbound(cmnd()).payload) for _ in range(5)]
    assert seqs == [(SPI, n) for n in range(1, 6)]


# --- only FCP is protected ------------------------------------------------------------------------


def test_els_and_bls_pass_untouched_both_ways() -> None:
    tx, rx = pair()
    els = els_request(els=Logo(n_port_id=0x010101, wwpn=0x2000_0000_c9ab_cdef), s_id=0x010101,
                      d_id=0x010102, ox_id=3)
    bls = abts_frame(s_id=0x010101, d_id=0x010102, ox_id=3)
    for f in (els, bls):
        assert tx.outbound(f) is f
        assert rx.inbound(f) is f
    assert tx.counters.frames_out_clear == 2 and rx.counters.frames_in_clear == 2
    assert tx.counters.frames_out_protected == 0


def test_esp_on_a_non_fcp_frame_is_dropped() -> None:
    _, rx = pair()
    els = els_request(els=Logo(n_port_id=1, wwpn=2), s_id=1, d_id=2, ox_id=3)
    fake = Frame(els.header.replace(df_ctl=0x40), bytes(8) + els.payload)
    assert rx.inbound(fake) is None
    assert rx.counters.drops == {"unexpected_esp": 1}


def test_clear_fcp_on_a_secure_session_is_dropped() -> None:
    _, rx = pair()
    assert rx.inbound(cmnd()) is None
    assert rx.counters.drops == {"clear_fcp": 1}


# --- tampering ------------------------------------------------------------------------------------


def received(raw: bytes, sof: Sof, rx: EspTransform) -> Frame | None:
    """An attacker who fixes up the FC CRC: the codec may reject the bytes, else the ESP stage."""
    try:
        frame = Frame.unpack_fc(raw + bytes(4), sof, Eof.N, check_crc=False)
    except FcError:
        return None
    return rx.inbound(frame)


@pytest.mark.parametrize("cipher", [Cipher.AES_GCM_128, Cipher.AES_GMAC_256])
def test_tampering_any_protected_byte_drops_the_frame(cipher: Cipher) -> None:
    tx, rx = pair(cipher, icv_failure_limit=10**6)
    clear = data_frame(bytes(range(64)))
    prot = tx.outbound(clear)
    raw = prot.pack_fc()
    assert len(raw) == 24 + 8 + 8 + 64 + 16
    for i in range(len(raw)):
        if i == 4:  # CS_CTL: deliberately outside the AAD (below)
            continue
        for mask in (0x01, 0x80):
            bad = bytearray(raw)
            bad[i] ^= mask
            assert received(bytes(bad), prot.sof, rx) is None, (i, mask)
    assert rx.counters.frames_in_protected == 0
    assert rx.counters.icv_failures > 0 and rx.counters.drops["unknown_spi"] > 0
    # Nothing forged moved the replay window: the genuine frame is still accepted, once.
    assert rx.inbound(wire(prot)) == clear
    assert rx.inbound(wire(prot)) is None


def test_cs_ctl_is_not_authenticated() -> None:
    tx, rx = pair()
    prot = tx.outbound(data_frame(b"abcd", cs_ctl=0x00))
    moved = Frame(prot.header.replace(cs_ctl=0x7F), prot.payload, prot.sof, prot.eof)
    assert rx.inbound(moved) == data_frame(b"abcd", cs_ctl=0x7F)


def test_wrong_key_same_spi_is_an_icv_failure() -> None:
    tx, _ = pair()
    rx = EspTransform()
    rx.sadb.install(SaDirection.RX, SPI, Cipher.AES_GCM_128, bytes(16), SALT)
    assert rx.inbound(tx.outbound(cmnd())) is None
    assert rx.counters.icv_failures == 1 and rx.counters.drops == {"icv": 1}


def test_unknown_spi_and_short_frames() -> None:
    tx, rx = pair()
    other = EspTransform()
    other.sadb.install(SaDirection.TX, SPI + 1, Cipher.AES_GCM_128, key_for(Cipher.AES_GCM_128), SALT)
    assert rx.inbound(other.outbound(cmnd())) is None
    prot = tx.outbound(cmnd())
    short = Frame(prot.header, prot.payload[:31])
    assert rx.inbound(short) is None
    assert rx.counters.drops == {"unknown_spi": 1, "malformed": 1}


def test_authentic_but_inconsistent_frame_is_dropped_not_raised() -> None:
    # Built by hand: the inner DF_CTL announces a 16-byte Network_Header, but only 4 bytes follow.
    _, rx = pair()
    h = data_frame(b"").header.replace(df_ctl=0x60)
    esp, iv = struct.pack(">II", SPI, 1), struct.pack(">Q", 1)
    hdr = bytearray(h.pack())
    hdr[4] = 0
    body = iv + AESGCM(key_for(Cipher.AES_GCM_128)).encrypt(SALT + iv, b"abcd", bytes(hdr) + esp)
    frame = Frame(h, esp + body)
    assert rx.inbound(frame) is None
    assert rx.counters.drops == {"malformed": 1}


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=200), r_ctl=st.integers(0, 0x0F), spi=st.sampled_from([SPI, 0, 7]),
       seq=st.integers(0, 0xFFFFFFFF))
def test_inbound_never_raises_on_garbage(body: bytes, r_ctl: int, spi: int, seq: int) -> None:
    _, rx = pair()
    h = FrameHeader(r_ctl=r_ctl, d_id=1, s_id=2, type=FcType.FCP, f_ctl=0, df_ctl=0x40)
    assert rx.inbound(Frame(h, struct.pack(">II", spi, seq) + body)) is None


# --- replay through the transform -------------------------------------------------------------------


def test_replay_drops() -> None:
    tx, rx = pair()
    prots = [tx.outbound(cmnd(ox_id=i)) for i in range(1, 71)]
    assert rx.inbound(prots[1]) is not None  # seq 2
    assert rx.inbound(prots[1]) is None  # duplicate
    assert rx.inbound(prots[0]) is not None  # seq 1: out of order, inside the window
    assert rx.inbound(prots[69]) is not None  # seq 70: far ahead
    assert rx.inbound(prots[4]) is None  # seq 5 <= 70 - 64: too old
    assert rx.inbound(prots[6]) is not None  # seq 7: the oldest inside the window
    assert rx.counters.replays == 2 and rx.counters.drops == {"replay": 2}


# --- ICV failures tear the session down --------------------------------------------------------------


def forged(tx: EspTransform) -> Frame:
    prot = tx.outbound(cmnd())
    p = bytearray(prot.payload)
    p[-1] ^= 1
    return Frame(prot.header, bytes(p))


def test_consecutive_icv_failures_request_teardown_once() -> None:
    tx, rx = pair(icv_failure_limit=10)
    for _ in range(9):
        assert rx.inbound(forged(tx)) is None
    assert rx.pop_events() == []
    assert rx.inbound(forged(tx)) is None
    events = rx.pop_events()
    assert [type(e) for e in events] == [TeardownRequested]
    assert events[0].reason is TeardownReason.ICV_FAILURES
    rx.inbound(forged(tx))
    assert rx.pop_events() == []  # asked once
    assert rx.counters.icv_failures == 11


def test_a_good_frame_resets_the_icv_count() -> None:
    tx, rx = pair(icv_failure_limit=3)
    for _ in range(2):
        rx.inbound(forged(tx))
    assert rx.inbound(tx.outbound(cmnd())) is not None
    for _ in range(2):
        rx.inbound(forged(tx))
    assert rx.pop_events() == [] and rx.consecutive_icv_failures == 2


# --- fail closed when sending ---------------------------------------------------------------------------


def assert_no_payload(blocked: Frame, clear: Frame) -> None:
    assert blocked.header.df_ctl == 0x40
    assert blocked.payload == bytes(8)  # SPI 0, seq 0, nothing else
    assert blocked.header.ox_id == clear.header.ox_id


def test_no_tx_sa_blocks_and_requests_teardown_once() -> None:
    t = EspTransform()
    clear = data_frame(b"secret!!")
    assert_no_payload(t.outbound(clear), clear)
    t.outbound(clear)
    assert t.pop_events() == [TeardownRequested(TeardownReason.NO_TX_SA,
                                                "an FCP frame is ready and no TX SA is installed")]
    assert t.counters.blocked == {"no_tx_sa": 2}


def test_sequence_space_never_wraps() -> None:
    tx, rx = pair(rekey_margin=3)
    sa = tx.sadb.tx_sa
    sa.seq = MAX_SEQ - 5
    for _ in range(5):
        assert tx.outbound(cmnd()).payload != bytes(8)
    assert sa.seq == MAX_SEQ
    assert tx.pop_events() == [RekeyNeeded(SPI, MAX_SEQ - 3)]
    clear = cmnd()
    assert_no_payload(tx.outbound(clear), clear)
    events = tx.pop_events()
    assert len(events) == 1 and events[0].reason is TeardownReason.SEQ_EXHAUSTED
    # A rekey cures it: the new TX SA starts again at 1.
    tx.sadb.install(SaDirection.TX, SPI + 1, Cipher.AES_GCM_128, bytes(16), SALT)
    assert struct.unpack_from(">II", tx.outbound(clear).payload) == (SPI + 1, 1)


def test_the_last_sequence_number_is_accepted_by_the_receiver() -> None:
    tx, rx = pair()
    tx.sadb.tx_sa.seq = MAX_SEQ - 1
    assert rx.inbound(tx.outbound(cmnd())) == cmnd()


def test_too_long_and_already_protected_are_blocked() -> None:
    tx, _ = pair()
    big = data_frame(bytes(2084))
    assert_no_payload(tx.outbound(big), big)
    pre = data_frame(bytes(40), df_ctl=0x40)
    assert_no_payload(tx.outbound(pre), pre)
    assert tx.counters.blocked == {"too_long": 1, "already_protected": 1}
    assert tx.sadb.tx_sa.seq == 0  # no sequence number was spent
