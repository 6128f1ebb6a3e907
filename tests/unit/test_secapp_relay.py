"""AUTH_ELS wrapping of IKE messages, SA_UPDATE building, and the responder-side orchestration."""

from __future__ import annotations

import random
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from edifd.ike import (
    AES_GCM_16_128,
    AES_GCM_16_256,
    GMAC_128,
    GMAC_256,
    ChildSaEstablished,
    Deleted,
    Initiator,
    Send,
)
from edifd.proto import Cipher, PortRef, SaDirection, SaFlags
from edifd.secapp.config import IkePolicy, PeerPolicy, PskCredentials
from edifd.secapp.relay import (
    LS_ACC,
    LS_RJT_NO_AUTH,
    LS_RJT_PROTOCOL,
    RelayError,
    fcp_selector,
    ike_config,
    new_tid,
    proto_cipher,
    sa_delete,
    sa_pair,
    unwrap_ike,
    wrap_ike,
)
from edifd.secapp.responder import (
    AuthResponder,
    ElsAnswer,
    ElsRequest,
    InstallSa,
    PeerAuthenticated,
    PeerAuthFailed,
    PeerRefused,
    RemoveSa,
)

INI, TGT = 0x2000001B32A0B0C1, 0x2100001B32A0B0C2
INI_PID, TGT_PID = 0x010100, 0x020200
PSK = PskCredentials(b"sixteen+ byte shared secret")


def rng(seed: int):
    r = random.Random(seed)
    return lambda n: r.randbytes(n)


def fake_ike(exchange: int, body: bytes = b"") -> bytes:
    head = bytes(8) + bytes(8) + bytes([33, 0x20, exchange, 0x08]) + struct.pack(">II", 0, 28 + len(body))
    return head + body


# --- AUTH_ELS ---------------------------------------------------------------------------------------------


def test_wrap_header_bytes_and_roundtrip():
    for exchange, code in ((34, 0x22), (35, 0x23), (36, 0x24), (37, 0x25)):
        ike = fake_ike(exchange, b"payload")
        els = wrap_ike(ike, 0x01020304)
        assert els[:12] == bytes([0x90, 0x00, code, 0x01]) + struct.pack(">I", len(ike)) + b"\x01\x02\x03\x04"
        assert els[12:] == ike
        assert unwrap_ike(els) == (0x01020304, ike)


def test_unwrap_refuses_what_is_not_one_ike_message():
    ike = fake_ike(34)
    good = wrap_ike(ike, 7)
    cases = [
        b"",
        good[:11],
        b"\x02" + good[1:],  # LS_ACC, not AUTH_ELS
        good[:2] + b"\x23" + good[3:],  # IKE_Auth code on an IKE_SA_INIT message
        good[:2] + b"\x10" + good[3:],  # DH-CHAP
        good[:1] + b"\x80" + good[2:],  # more fragments
        good[:3] + b"\x02" + good[3 + 1 :],  # protocol version 2
        good + b"x",  # length disagrees
        wrap_ike(ike, 7)[:12 + 27],  # shorter than an IKE header
        good[:12 + 18] + b"\x99" + good[12 + 19 :],  # unknown exchange type
    ]
    for bad in cases:
        try:
            unwrap_ike(bad)
        except RelayError:
            continue
        raise AssertionError(f"accepted {bad!r}")
    for bad in (b"short", fake_ike(99)):
        try:
            wrap_ike(bad, 1)
        except RelayError:
            continue
        raise AssertionError("wrapped a non-IKE message")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_unwrap_raises_only_relay_error(data):
    try:
        tid, ike = unwrap_ike(data)
    except RelayError:
        return
    assert wrap_ike(ike, tid) == data


@settings(max_examples=100, deadline=None)
@given(st.integers(34, 37), st.binary(max_size=64), st.integers(0, 2**32 - 1))
def test_wrap_unwrap_property(exchange, body, tid):
    ike = fake_ike(exchange, body)
    assert unwrap_ike(wrap_ike(ike, tid)) == (tid, ike)


def test_tid_is_never_zero():
    zeros = iter([bytes(4), bytes(4), b"\x00\x00\x00\x05"])
    assert new_tid(lambda n: next(zeros)) == 5


def test_sa_bodies_from_a_child():
    assert [proto_cipher(c) for c in (AES_GCM_16_128, AES_GCM_16_256, GMAC_128, GMAC_256)] == [
        Cipher.AES_GCM_128, Cipher.AES_GCM_256, Cipher.AES_GMAC_128, Cipher.AES_GMAC_256,
    ]
    _, child = handshake()
    port = PortRef(TGT, TGT_PID, 3)
    pair = sa_pair(port, child, rekey=True)
    assert (pair.rx.spi, pair.rx.key, pair.rx.salt) == (child.spi_in, child.key_in, child.salt_in)
    assert (pair.tx.spi, pair.tx.key, pair.tx.salt) == (child.spi_out, child.key_out, child.salt_out)
    assert pair.rx.direction is SaDirection.RX and pair.tx.direction is SaDirection.TX
    assert pair.rx.flags == pair.tx.flags == SaFlags.REKEY and pair.rx.port == port
    assert sa_pair(port, child, rekey=False).rx.flags == SaFlags(0)
    d = sa_delete(port, child.spi_out, SaDirection.TX, Cipher.AES_GCM_128)
    assert d.flags == SaFlags.DELETE and d.key == b"" and d.salt == bytes(4)
    for secret in (child.key_in, child.key_out, child.salt_in, child.salt_out):
        assert secret.hex() not in repr(pair) and repr(secret) not in repr(pair)


def test_fcp_selector_covers_fcp_only():
    s = fcp_selector(0x020200)
    assert (s.start_addr, s.end_addr, s.start_r_ctl, s.end_r_ctl, s.start_type, s.end_type) == (
        0x020200, 0x020200, 0x00, 0x0F, 0x08, 0x08,
    )


# --- the responder orchestration --------------------------------------------------------------------------


def initiator(seed: int = 1, creds=PSK) -> Initiator:
    cfg = ike_config(local_wwpn=INI, remote_wwpn=TGT, local_port_id=INI_PID, remote_port_id=TGT_PID,
                     credentials=creds, policy=IkePolicy(), rng=rng(seed))
    return Initiator(cfg)


def responder(peers=None, seed: int = 2) -> AuthResponder:
    peers = {INI: PeerPolicy(INI, PSK)} if peers is None else peers
    return AuthResponder(TGT, peers, IkePolicy(), rng=rng(seed))


def exchange(r: AuthResponder, ike: Initiator, data: bytes, tid: int = 9) -> list:
    """Relay one request from the initiator; feed the responder's answers back. Returns all outputs."""
    outs = r.on_auth_els(INI, wrap_ike(data, tid), local_port_id=TGT_PID, remote_port_id=INI_PID)
    assert outs[0] == ElsAnswer(LS_ACC)
    events = []
    for o in outs:
        if isinstance(o, ElsRequest):
            t, answer = unwrap_ike(o.payload)
            assert t == tid and o.remote_wwpn == INI
            events += ike.receive(answer)
    return outs + events


def handshake(r: AuthResponder | None = None, seed: int = 1):
    r = r or responder()
    ike = initiator(seed)
    outs = exchange(r, ike, ike.start())
    request = next(e.data for e in outs if isinstance(e, Send))
    outs = exchange(r, ike, request)
    child = next(e for e in outs if isinstance(e, ChildSaEstablished))
    install = next(o for o in outs if isinstance(o, InstallSa))
    assert any(isinstance(o, PeerAuthenticated) for o in outs)
    # Crosswise: what they receive on, we send on, with the same key and salt.
    theirs = install.child
    assert (theirs.spi_in, theirs.key_in, theirs.salt_in) == (child.spi_out, child.key_out, child.salt_out)
    assert (theirs.spi_out, theirs.key_out, theirs.salt_out) == (child.spi_in, child.key_in, child.salt_in)
    return r, child


def test_responder_refuses_unknown_skipped_and_malformed():
    for peers, want in (({}, "not configured"), ({INI: PeerPolicy(INI, None)}, "configured as skip")):
        r = responder(peers)
        first = wrap_ike(initiator().start(), 1)
        outs = r.on_auth_els(INI, first, local_port_id=TGT_PID, remote_port_id=INI_PID)
        assert outs[0] == ElsAnswer(LS_RJT_NO_AUTH) and not outs[0].accepted
        assert isinstance(outs[1], PeerRefused) and want in outs[1].reason
        assert r.state(INI) is None
    r = responder()
    outs = r.on_auth_els(INI, b"\x90garbage", local_port_id=TGT_PID, remote_port_id=INI_PID)
    assert outs[0] == ElsAnswer(LS_RJT_PROTOCOL) and r.refused == 1
    # An IKE_AUTH out of the blue (no IKE SA yet) is refused by IKE, not crashed on.
    outs = r.on_auth_els(INI, wrap_ike(fake_ike(35), 1), local_port_id=TGT_PID, remote_port_id=INI_PID)
    assert outs[0] == ElsAnswer(LS_RJT_PROTOCOL) and r.state(INI) is None


def test_responder_wrong_psk_reports_failure_and_installs_nothing():
    r = responder({INI: PeerPolicy(INI, PskCredentials(b"a different sixteen+ secret"))})
    ike = initiator()
    outs = exchange(r, ike, ike.start())
    outs = exchange(r, ike, next(e.data for e in outs if isinstance(e, Send)))
    assert any(isinstance(o, PeerAuthFailed) for o in outs)
    assert not any(isinstance(o, InstallSa) for o in outs) and r.installed(INI) == {}


def test_responder_restart_of_initiator_replaces_sas_only_after_authentication():
    r, first = handshake()
    assert r.installed(INI) == {first.spi_out: first.spi_in}
    # The initiator lost its state (agent restart) and starts over with a new IKE_SA_INIT.
    ike = initiator(seed=7)
    outs = exchange(r, ike, ike.start(), tid=10)
    assert not any(isinstance(o, RemoveSa) for o in outs)  # unauthenticated so far: nothing removed
    assert r.installed(INI) == {}  # the new IKE SA has no child yet; the old pairs are held aside
    outs = exchange(r, ike, next(e.data for e in outs if isinstance(e, Send)), tid=10)
    removed = [o for o in outs if isinstance(o, RemoveSa)]
    assert [(o.spi_in, o.spi_out) for o in removed] == [(first.spi_out, first.spi_in)]
    assert len(r.installed(INI)) == 1
    assert r.reset(INI) and r.installed(INI) == {} and r.reset(INI) == []


def test_responder_rekey_and_delete():
    r = responder()
    ike = initiator()
    outs = exchange(r, ike, ike.start())
    outs = exchange(r, ike, next(e.data for e in outs if isinstance(e, Send)))
    child = next(e for e in outs if isinstance(e, ChildSaEstablished))
    outs = exchange(r, ike, ike.rekey_child(child.spi_in))
    new = next(e for e in outs if isinstance(e, ChildSaEstablished))
    inst = [o for o in outs if isinstance(o, InstallSa)]
    assert len(inst) == 1 and inst[0].child.rekeyed_spi_in == child.spi_out
    assert len(r.installed(INI)) == 2  # make-before-break: both pairs for the overlap
    outs = exchange(r, ike, ike.delete_child(child.spi_in))
    assert [(o.spi_in, o.spi_out) for o in outs if isinstance(o, RemoveSa)] == [(child.spi_out, child.spi_in)]
    assert any(isinstance(e, Deleted) for e in outs)
    assert r.installed(INI) == {new.spi_out: new.spi_in}
    assert "sixteen" not in repr(r) and "sixteen" not in repr(inst)
