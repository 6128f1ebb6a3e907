"""What the EDIF engine needs from the HBA and target sessions (sans-IO, the real link codec):
the AUTH_ELS relay both ways, LoggedIn, hold/relogin, a transform that withholds a frame, the
target's AUTH_ELS events and PRLI policy, and the edif-target `auth` configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from edifd.config import ConfigError
from edifd.fc import (
    AuthEls,
    ElsCode,
    Frame,
    LsRjt,
    LsRjtExplanation,
    RawEls,
    RCtl,
    els_request,
    parse_payload,
)
from edifd.hba import (
    ElsReceived,
    ElsReplyReceived,
    LoggedIn,
    RequireAuthWhenSecure,
    SessionState,
)
from edifd.hba.transform import PeerInfo
from edifd.scsi import ScsiCommand, Status, cdb
from edifd.target.config import parse_target_config
from edifd.target.session import AuthElsReceived
from tests.support.hba import HI, LO, Wire, sense_of

NOT_AUTHORIZED = (0x07, 0x74, 0x71)


class Authorised:
    """A target login policy that says what we tell it (what the responder's LinkSecurity does)."""

    def __init__(self) -> None:
        self.ok = False
        self.seen: list[PeerInfo] = []

    def prli_allowed(self, peer: PeerInfo, local_security: bool) -> bool:
        self.seen.append(peer)
        return self.ok


def secure_wire() -> tuple[Wire, Authorised]:
    pol = Authorised()
    w = Wire(HI, LO, security=True, policy=RequireAuthWhenSecure(),
             target_kw={"security": True, "policy": pol})
    w.t.relay_auth_els = True
    return w, pol


def test_logged_in_event_and_auth_els_relay_both_ways() -> None:
    w, _ = secure_wire()
    w.up()
    assert w.i.state is SessionState.AUTH_PENDING
    logged = [e for e in w.other if isinstance(e, LoggedIn)]
    assert len(logged) == 1 and logged[0].peer.security and logged[0].peer.wwpn == LO
    # Initiator -> target: an AUTH_ELS request becomes the target's AuthElsReceived event.
    msg = AuthEls(0x22, 7, b"ike").pack()
    ox, frames = w.i.send_els(msg)
    got = []
    for f in frames:
        assert w.t.receive(f) == []
        got += w.t.take_events()
    assert isinstance(got[0], AuthElsReceived) and got[0].frame.fc4_payload == msg and got[0].wwpn == HI
    # ... answered with a raw LS_ACC: the initiator reports ElsReplyReceived(ox_id, payload).
    w.to_initiator(w.t.reply_els(got[0].frame, b"\x02\x00\x00\x00"))
    rep = [e for e in w.other if isinstance(e, ElsReplyReceived)]
    assert rep == [ElsReplyReceived(ox, b"\x02\x00\x00\x00")]
    # Target -> initiator: its own AUTH_ELS request is an ElsReceived once relaying is on.
    w.i.relay_auth_els = True
    w.to_initiator(w.t.send_els(AuthEls(0x22, 7, b"resp").pack()))
    rcvd = [e for e in w.other if isinstance(e, ElsReceived)]
    assert rcvd and rcvd[0].frame.fc4_payload[:1] == b"\x90"
    acc = w.i.reply_els(rcvd[0].frame, b"\x02\x00\x00\x00")
    assert acc[0].header.r_ctl == RCtl.ELS_REP and acc[0].header.ox_id == rcvd[0].frame.header.ox_id
    with pytest.raises(ValueError):
        w.i.reply_els(rcvd[0].frame, b"\x90\x00")


def test_target_auth_els_refused_without_a_responder_or_before_plogi() -> None:
    w, _ = secure_wire()
    w.t.relay_auth_els = False
    w.up()
    _, frames = w.i.send_els(AuthEls(0x22, 7, b"ike").pack())
    out = w.t.receive(frames[0])
    assert isinstance(parse_payload(out[0], reply_to=0x90), LsRjt) and w.t.take_events() == []
    w2, _ = secure_wire()  # never logged in: LS_RJT "PLOGI required"
    req = els_request(s_id=1, d_id=2, ox_id=3, els=RawEls(0x90, AuthEls(0x22, 7, b"x").pack()[1:]))
    rjt = parse_payload(w2.t.receive(req)[0], reply_to=0x90)
    assert isinstance(rjt, LsRjt) and rjt.explanation == LsRjtExplanation.PLOGI_REQUIRED


def test_target_policy_sees_the_security_bit_and_refuses_prli_until_authorised() -> None:
    w, pol = secure_wire()
    w.up()
    assert w.t.peer_security and not w.t.image_pair
    w.to_target(w.i.auth_complete(w.now))  # the host says AUTH_OK; the target does not agree: 0x48
    assert pol.seen and pol.seen[-1].security and not w.t.image_pair
    assert w.i.state is SessionState.AUTH_PENDING
    pol.ok = True
    w.to_target(w.i.auth_complete(w.now))
    assert w.i.state is SessionState.READY and w.t.image_pair


def test_hold_fails_commands_until_relogin() -> None:
    w, pol = secure_wire()
    pol.ok = True
    w.up()
    w.to_target(w.i.auth_complete(w.now))
    assert w.i.ready
    w.submit(1, ScsiCommand(cdb.tur()))
    assert w.done[1].status == Status.GOOD
    w.stall = True
    w.submit(2, ScsiCommand(cdb.tur()))  # in flight when the hold comes
    w.to_target(w.i.hold(w.now, "AUTH_FAIL"))
    assert w.els_codes("i")[-1] == ElsCode.LOGO and w.i.state is SessionState.GONE
    assert sense_of(w.done[2]) == NOT_AUTHORIZED
    w.submit(3, ScsiCommand(cdb.tur()))
    assert sense_of(w.done[3]) == NOT_AUTHORIZED
    w.stall = False
    w.to_target(w.i.relogin(w.now))  # SECURE_CONNECT: PLOGI again, AUTH_PENDING, new LoggedIn
    assert w.i.state is SessionState.AUTH_PENDING
    assert len([e for e in w.other if isinstance(e, LoggedIn)]) == 2
    w.to_target(w.i.auth_complete(w.now))
    w.submit(4, ScsiCommand(cdb.tur()))
    assert w.done[4].status == Status.GOOD


def test_a_transform_that_withholds_the_command_fails_it() -> None:
    class Withhold:
        def outbound(self, frame: Frame) -> Frame | None:
            return None

        def inbound(self, frame: Frame) -> Frame | None:
            return frame

    w = Wire(HI, LO, transform=Withhold())
    w.up()
    n = len(w.log)
    w.submit(1, ScsiCommand(cdb.tur()))
    assert sense_of(w.done[1]) == NOT_AUTHORIZED and len(w.log) == n  # nothing left the port
    assert w.i.counters.dropped_frames == 1 and w.i.outstanding == 0


PSK = b"a pre-shared key of 32 bytes....."


def _port(auth: object) -> dict:
    return {"name": "t0", "wwpn": "21:00:00:1b:32:00:00:02", "wwnn": "20:00:00:1b:32:00:00:02",
            "listen": "127.0.0.1:3225", "auth": auth}


def test_target_config_auth(tmp_path: Path) -> None:
    psk = tmp_path / "psk"
    psk.write_bytes(PSK)
    psk.chmod(0o600)
    (tmp_path / "auth.toml").write_text('[initiators."20:00:00:1b:32:a0:b0:c1"]\npsk_file = "psk"\n')
    cfg = parse_target_config({"port": [_port("auth.toml")]}, tmp_path)
    p = cfg.ports[0]
    assert p.security and p.auth is not None and 0x2000001B32A0B0C1 in p.auth.peers
    assert PSK.decode() not in repr(cfg)
    # Problems are reported with their key path; nothing secret in them.
    (tmp_path / "bad.toml").write_text('[initiators."20:00:00:1b:32:a0:b0:c1"]\n')
    for auth, needle in (("bad.toml", "port[0].auth"), ("missing.toml", "cannot read"), (3, "port[0].auth")):
        with pytest.raises(ConfigError) as e:
            parse_target_config({"port": [_port(auth)]}, tmp_path)
        assert needle in str(e.value) and PSK.decode() not in str(e.value)
    (tmp_path / "empty.toml").write_text("")
    with pytest.raises(ConfigError, match="no \\[initiators"):
        parse_target_config({"port": [_port("empty.toml")]}, tmp_path)


def test_check_config_names_the_responder_without_secrets(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from edifd.target.cli import main

    psk = tmp_path / "psk"
    psk.write_bytes(PSK)
    psk.chmod(0o600)
    (tmp_path / "auth.toml").write_text('[initiators."20:00:00:1b:32:a0:b0:c1"]\npsk_file = "psk"\n')
    (tmp_path / "t.toml").write_text('[[port]]\nname = "t0"\nwwpn = "21:00:00:1b:32:00:00:02"\n'
                                     'wwnn = "20:00:00:1b:32:00:00:02"\nlisten = "127.0.0.1:3225"\n'
                                     'auth = "auth.toml"\n')
    out = CliRunner().invoke(main, ["check-config", "--config", str(tmp_path / "t.toml")])
    assert out.exit_code == 0, out.output
    assert "security on" in out.output and "EDIF responder for 1 initiator(s) (psk)" in out.output
    assert PSK.decode() not in out.output


def test_target_icv_failures_log_the_initiator_out_and_clear_its_keys() -> None:
    import os

    from edifd.edif import ICV_FAILURE_LIMIT, EspTransform, SaDatabase
    from edifd.fc import FcpCmnd, fcp_cmnd_frame
    from edifd.proto import Cipher, SaDirection
    from edifd.secapp.config import SecConfig
    from edifd.target.responder import PortResponder

    w, pol = secure_wire()
    w.up()
    edif = PortResponder(LO, SecConfig(peers={}))
    link = edif.attach(w.t)
    key, salt = os.urandom(16), os.urandom(4)
    link.sadb.install(SaDirection.RX, 0x77, Cipher.AES_GCM_128, key, salt)
    forger = EspTransform(SaDatabase())
    forger.sadb.install(SaDirection.TX, 0x77, Cipher.AES_GCM_128, os.urandom(16), salt)  # wrong key
    for ox in range(1, ICV_FAILURE_LIMIT + 1):
        f = fcp_cmnd_frame(s_id=w.i.local_id, d_id=w.i.remote_id, ox_id=ox,
                           cmnd=FcpCmnd(lun=bytes(8), cdb=bytes(6), dl=0))
        assert w.t.receive(forger.outbound(f)) == []
    out = edif.after_frames(w.t, link, 0.0)
    assert [f.payload[0] for f in out] == [ElsCode.LOGO] and edif.counters.teardowns == 1
    assert link.sadb.counters.icv_failures == ICV_FAILURE_LIMIT and not w.t.logged_in
    link2 = edif.new_login(w.t, link)  # what the server does on the LoginEvent
    assert not link.sadb.sas(SaDirection.RX) and link2 is not link and w.t.transform is link2.esp
