"""The SA database: qla2xxx slot rules, idempotent re-add, the rekey sequence with its delayed RX
delete (3-frame rule and 20 s rule, fake clock), zeroization and keeping secrets out of text."""

from __future__ import annotations

import pytest

from edifd.edif import (
    DeleteCause,
    DeleteRx,
    EdifError,
    EspTransform,
    SaDatabase,
    SaUpdateDone,
    SecurityAssociation,
    cipher_from_ike,
)
from edifd.fc import FcpCmnd, Frame, fcp_cmnd_frame
from edifd.proto import Cipher, PortRef, SaDirection, SaFlags, SaStatus, SaUpdate, SaUpdateCompl, Status

RX, TX = SaDirection.RX, SaDirection.TX
GCM = Cipher.AES_GCM_128
K1, K2, K3, K4 = (bytes([0xA0 + i]) * 8 + bytes(range(8)) for i in range(4))
SALT = b"\x5a\x17\xc3\x99"
DELETE = SaFlags.DELETE
FORCE = SaFlags.DELETE | SaFlags.FORCE_DELETE
NONE = SaFlags(0)


def done(direction: SaDirection, spi: int, flags: SaFlags = NONE) -> SaUpdateDone:
    return SaUpdateDone(direction, spi, SaStatus.SUCCESS, flags)


def frame(ox_id: int = 1) -> Frame:
    return fcp_cmnd_frame(s_id=1, d_id=2, ox_id=ox_id, cmnd=FcpCmnd(lun=bytes(8), cdb=bytes(16), dl=0))


# --- install ------------------------------------------------------------------------------------


def test_install_both_directions_confirms() -> None:
    db = SaDatabase()
    assert not db.both_confirmed
    r = db.install(RX, 0x100, GCM, K1, SALT)
    assert r.ok and r.events == (done(RX, 0x100),)
    assert not db.both_confirmed
    assert db.install(TX, 0x200, GCM, K2, SALT).ok
    assert db.both_confirmed
    assert db.tx_sa.spi == 0x200 and db.rx_sa(0x100).spi == 0x100 and db.rx_sa(0x200) is None


def test_completion_converts_to_the_proto_event() -> None:
    port = PortRef(0x2100_0024_ff00_0001, 0x010102, 3)
    ev = SaDatabase().install(TX, 0x300, Cipher.AES_GCM_256, K1 + K2, SALT, flags=SaFlags.REKEY).events[0]
    assert ev.to_proto(port) == SaUpdateCompl(port, 0x300, TX, SaStatus.SUCCESS, 0, SaFlags.REKEY)


def test_re_adding_the_same_spi_is_idempotent() -> None:
    db = SaDatabase()
    db.install(TX, 0x100, GCM, K1, SALT)
    db.tx_sa.seq = 41
    r = db.install(TX, 0x100, GCM, bytearray(K1), SALT)
    assert r.ok and r.events == (done(TX, 0x100),)
    assert len(db.sas(TX)) == 1 and db.tx_sa.seq == 41  # not re-created
    assert db.counters.rekeys == 0


@pytest.mark.parametrize("change", ["key", "salt", "cipher"])
def test_same_spi_other_material_is_refused_and_changes_nothing(change: str) -> None:
    db = SaDatabase()
    db.install(RX, 0x100, GCM, K1, SALT)
    key, salt, cipher = K1, SALT, GCM
    if change == "key":
        key = K2
    elif change == "salt":
        salt = b"\x00\x00\x00\x01"
    else:
        cipher = Cipher.AES_GMAC_128
    r = db.install(RX, 0x100, cipher, key, salt)
    assert r.status is Status.INVALID_PARAM and r.events == ()
    assert "another cipher, key or salt" in r.detail
    assert db.rx_sa(0x100).same_material(GCM, K1, SALT)


def test_a_third_sa_is_refused_with_a_reason() -> None:
    db = SaDatabase()
    db.install(TX, 0x100, GCM, K1, SALT)
    db.install(TX, 0x101, GCM, K2, SALT)
    r = db.install(TX, 0x102, GCM, K3, SALT)
    assert r.status is Status.LIMIT and r.events == ()
    assert "TX already holds 2 SAs (0x00000100, 0x00000101)" in r.detail
    assert [sa.spi for sa in db.sas(TX)] == [0x100, 0x101]


def test_the_same_spi_may_be_used_in_both_directions() -> None:
    db = SaDatabase()
    assert db.install(RX, 0x100, GCM, K1, SALT).ok and db.install(TX, 0x100, GCM, K2, SALT).ok


@pytest.mark.parametrize(
    "args",
    [
        (RX, 0, GCM, K1, SALT),  # SPI 0 reserved
        (RX, 1 << 32, GCM, K1, SALT),
        (RX, 0x100, GCM, K1[:15], SALT),
        (RX, 0x100, Cipher.AES_GCM_256, K1, SALT),  # 16-byte key for a 256-bit cipher
        (RX, 0x100, GCM, K1, SALT[:3]),
        (RX, 0x100, 9, K1, SALT),  # unknown cipher
        (3, 0x100, GCM, K1, SALT),  # unknown direction
        (RX, 0x100, GCM, "not bytes", SALT),
    ],
)
def test_invalid_install_is_refused_and_changes_nothing(args: tuple) -> None:
    db = SaDatabase()
    r = db.install(*args)
    assert r.status is Status.INVALID_PARAM and r.events == () and r.detail
    assert db.sas(RX) == () and db.sas(TX) == ()


def test_install_refuses_delete_flags() -> None:
    assert SaDatabase().install(RX, 5, GCM, K1, SALT, flags=DELETE).status is Status.INVALID_PARAM


# --- delete ---------------------------------------------------------------------------------------


def test_tx_delete_is_immediate_and_zeroizes() -> None:
    db = SaDatabase()
    db.install(TX, 0x100, GCM, K1, SALT)
    sa = db.tx_sa
    r = db.delete(TX, 0x100, now=0.0)
    assert r.ok and r.events == (done(TX, 0x100, DELETE),)
    assert db.tx_sa is None and not sa.alive
    assert sa._key == bytearray(16) and sa._salt == bytearray(4)
    with pytest.raises(EdifError):
        sa.seal(bytes(8), b"x", b"")


def test_only_rx_sa_is_deleted_at_once() -> None:
    db = SaDatabase()
    db.install(RX, 0x100, GCM, K1, SALT)
    r = db.delete(RX, 0x100, now=0.0)
    assert r.events == (DeleteRx(0x100, DeleteCause.REQUESTED), done(RX, 0x100, DELETE))
    assert db.sas(RX) == ()


def test_deleting_an_unknown_spi_succeeds_like_qla2xxx() -> None:
    r = SaDatabase().delete(RX, 0x999, now=0.0)
    assert r.ok and r.events == (done(RX, 0x999, DELETE),)


def test_force_delete_is_rx_only() -> None:
    db = SaDatabase()
    db.install(TX, 0x100, GCM, K1, SALT)
    assert db.delete(TX, 0x100, now=0.0, force=True).status is Status.INVALID_PARAM
    assert db.tx_sa is not None


def test_apply_takes_sa_update_bodies() -> None:
    db = SaDatabase()
    port = PortRef(0x20, 0x010101)
    assert db.apply(SaUpdate(port, 0x100, RX, GCM, K1, SALT), now=0.0).ok
    assert db.apply(SaUpdate(port, 0x101, RX, GCM, K2, SALT, SaFlags.REKEY), now=0.0).ok
    r = db.apply(SaUpdate(port, 0x100, RX, GCM, flags=FORCE), now=0.0)
    assert r.events == (DeleteRx(0x100, DeleteCause.REQUESTED), done(RX, 0x100, FORCE))
    assert [sa.spi for sa in db.sas(RX)] == [0x101]


# --- the rekey sequence end to end ---------------------------------------------------------------------


class Link:
    """Initiator I and target T, each a SaDatabase + EspTransform, with the initial SA pair."""

    def __init__(self) -> None:
        self.i, self.t = EspTransform(), EspTransform()
        self.add(i_rx=(0x200, K2), i_tx=(0x100, K1))

    def add(self, *, i_rx: tuple[int, bytes] | None = None, i_tx: tuple[int, bytes] | None = None) -> None:
        # I's TX SA is T's RX SA and the other way round (SPIs chosen by the receiver).
        if i_rx:
            assert self.i.sadb.install(RX, i_rx[0], GCM, i_rx[1], SALT).ok
            assert self.t.sadb.install(TX, i_rx[0], GCM, i_rx[1], SALT).ok
        if i_tx:
            assert self.t.sadb.install(RX, i_tx[0], GCM, i_tx[1], SALT).ok
            assert self.i.sadb.install(TX, i_tx[0], GCM, i_tx[1], SALT).ok

    def t_to_i(self, n: int = 1) -> list[Frame | None]:
        return [self.i.inbound(self.t.outbound(frame(k))) for k in range(n)]


def spi_of(f: Frame) -> int:
    return int.from_bytes(f.payload[:4], "big")


def start_rekey(link: Link) -> Frame:
    """New RX (I) then new TX (T), old TX deleted; returns a frame T sent under the old SA."""
    late = link.t.outbound(frame(99))  # in flight while the rekey happens
    assert spi_of(late) == 0x200
    link.i.sadb.install(RX, 0x201, GCM, K4, SALT, flags=SaFlags.REKEY)  # 1. new RX, old kept
    link.t.sadb.install(TX, 0x201, GCM, K4, SALT, flags=SaFlags.REKEY)  # 2. new TX: the switch
    assert spi_of(link.t.outbound(frame(5))) == 0x201
    assert link.t.counters.rekeys == 1
    r = link.t.sadb.delete(TX, 0x200, now=100.0)  # 3. old TX: immediate
    assert r.events == (done(TX, 0x200, DELETE),)
    r = link.i.sadb.delete(RX, 0x200, now=100.0)  # 4. old RX: deferred
    assert r.ok and r.events == () and "deferred" in r.detail
    assert link.i.sadb.pending_rx_delete == 0x200 and link.i.sadb.next_deadline() == 120.0
    return late


def test_rekey_old_rx_goes_after_three_frames_on_the_new_sa() -> None:
    link = Link()
    assert all(link.t_to_i(3))
    late = start_rekey(link)
    assert link.i.inbound(late) == frame(99)  # the old RX SA still works meanwhile
    assert link.i.pop_events() == []  # frames on the old SA do not count
    assert all(link.t_to_i(2)) and link.i.pop_events() == []
    assert all(link.t_to_i(1))
    assert link.i.pop_events() == [DeleteRx(0x200, DeleteCause.NEW_SA_IN_USE), done(RX, 0x200, DELETE)]
    assert link.i.sadb.pending_rx_delete is None and [sa.spi for sa in link.i.sadb.sas(RX)] == [0x201]
    assert link.i.inbound(link.t.outbound(frame())) is not None
    assert link.i.tick(1000.0) == []  # the timer went with the delete


def test_rekey_old_rx_goes_after_20_seconds_without_traffic() -> None:
    link = Link()
    late = start_rekey(link)
    assert link.i.tick(119.999) == []
    assert link.i.tick(120.0) == [DeleteRx(0x200, DeleteCause.TIMEOUT), done(RX, 0x200, DELETE)]
    assert link.i.inbound(late) is None
    assert link.i.counters.drops == {"unknown_spi": 1}
    assert link.i.sadb.next_deadline() is None


def test_second_rx_delete_while_one_is_pending() -> None:
    link = Link()
    start_rekey(link)
    db = link.i.sadb
    assert db.delete(RX, 0x200, now=101.0).events == ()  # same SPI: still pending, idempotent
    r = db.delete(RX, 0x201, now=101.0)
    assert r.status is Status.RETRY_LATER and "0x00000200" in r.detail
    assert [sa.spi for sa in db.sas(RX)] == [0x200, 0x201]
    r = db.install(RX, 0x202, GCM, K3, SALT)
    assert r.status is Status.LIMIT and "waiting for its delayed delete" in r.detail
    r = db.delete(RX, 0x200, now=102.0, force=True)
    assert r.events == (DeleteRx(0x200, DeleteCause.REQUESTED), done(RX, 0x200, FORCE))
    assert db.pending_rx_delete is None and db.tick(200.0) == []


def test_clear_zeroizes_everything_and_completes_a_pending_delete() -> None:
    link = Link()
    start_rekey(link)
    db = link.i.sadb
    sas = db.sas(RX) + db.sas(TX)
    events = db.clear()
    assert DeleteRx(0x200, DeleteCause.SESSION_CLEARED) in events
    assert DeleteRx(0x201, DeleteCause.SESSION_CLEARED) in events
    assert done(RX, 0x200, DELETE) in events
    assert all(not sa.alive and not any(sa._key) for sa in sas)
    assert not db.both_confirmed and db.next_deadline() is None


# --- configuration and secrets ----------------------------------------------------------------


@pytest.mark.parametrize("kw", [{"replay_window": 16}, {"rx_delete_delay": -1},
                                {"rx_delete_after_frames": 0}])
def test_bad_configuration(kw: dict) -> None:
    with pytest.raises(EdifError):
        SaDatabase(**kw)


def test_keys_and_salts_never_appear_in_text() -> None:
    key = bytes.fromhex("deadbeef" * 8)
    salt = bytes.fromhex("feedf00d")
    link = Link()
    db = link.i.sadb
    results = [db.install(RX, 0x300, Cipher.AES_GCM_256, key, salt),
               db.install(RX, 0x201, Cipher.AES_GCM_256, key, salt),  # LIMIT
               db.install(TX, 0x100, Cipher.AES_GCM_256, key, salt),  # other material
               db.install(TX, 0x101, Cipher.AES_GCM_256, key[:31], salt)]
    texts = [repr(r) for r in results] + [repr(db), repr(db.sas(RX)), repr(db.sas(TX)), str(db.snapshot()),
                                          repr(link.i.counters), repr(link.i.pop_events())]
    for bad in [(0x300, Cipher.AES_GCM_256, key[:5], salt), (0x300, Cipher.AES_GCM_256, key, salt[:2])]:
        with pytest.raises(EdifError) as e:
            SecurityAssociation(RX, *bad)
        texts.append(str(e.value))
    blob = "\n".join(texts).lower()
    for secret in (key, salt, K1, K2, SALT):
        assert secret.hex() not in blob and repr(secret).lower() not in blob
    assert "0x00000100" in blob  # SPIs are fine to show


def test_cipher_from_ike_matches_the_negotiated_transforms() -> None:
    from edifd.ike import AES_GCM_16_128, AES_GCM_16_256, GMAC_128, GMAC_256

    got = [cipher_from_ike(s.encr, s.key_bits) for s in (AES_GCM_16_128, AES_GCM_16_256, GMAC_128, GMAC_256)]
    assert got == [Cipher.AES_GCM_128, Cipher.AES_GCM_256, Cipher.AES_GMAC_128, Cipher.AES_GMAC_256]
    with pytest.raises(EdifError):
        cipher_from_ike(12, 128)  # AES-CBC: not an FC-SP ESP transform
