"""The ESP stage in the real hook: InitiatorSession <-> TargetSession over the FC codec, each with
an EspTransform. FCP is protected on the wire, ELS/BLS are not, I/O survives a rekey."""

from __future__ import annotations

import hashlib

from edifd.edif import DeleteCause, DeleteRx, EspTransform, SaDatabase
from edifd.fc import FcType
from edifd.hba import RequireAuthWhenSecure, SessionState
from edifd.proto import Cipher, SaDirection
from edifd.scsi import ScsiCommand, Status, cdb
from tests.support.hba import HI, LO, Wire

RX, TX = SaDirection.RX, SaDirection.TX
SALT = bytes.fromhex("0badcafe")


def key(n: int) -> bytes:
    return hashlib.sha256(bytes([n])).digest()


class SecureWire(Wire):
    """The shared session rig (tests/support/hba.py) with an ESP stage on each end."""

    def __init__(self, cipher: Cipher = Cipher.AES_GCM_256) -> None:
        self.cipher = cipher
        self.ie, self.te = EspTransform(SaDatabase()), EspTransform(SaDatabase())
        super().__init__(HI, LO, security=True, policy=RequireAuthWhenSecure(), transform=self.ie,
                         target_kw={"security": True, "transform": self.te})

    def sa_pair(self, i_rx_spi: int, i_tx_spi: int, n: int) -> None:
        """What the two agents install after a CREATE_CHILD_SA: RX first, then TX."""
        c = self.cipher
        assert self.ie.sadb.install(RX, i_rx_spi, c, key(n)[: c.key_size], SALT).ok
        assert self.te.sadb.install(RX, i_tx_spi, c, key(n + 1)[: c.key_size], SALT).ok
        assert self.ie.sadb.install(TX, i_tx_spi, c, key(n + 1)[: c.key_size], SALT).ok
        assert self.te.sadb.install(TX, i_rx_spi, c, key(n)[: c.key_size], SALT).ok

    def up(self) -> None:
        super().up()
        assert self.i.state is SessionState.AUTH_PENDING
        self.sa_pair(0x1000, 0x2000, 1)
        assert self.ie.sadb.both_confirmed and self.te.sadb.both_confirmed  # AUTH_OK may answer OK
        self.to_target(self.i.auth_complete(self.now))
        assert self.i.state is SessionState.READY


def test_io_is_protected_on_the_wire_and_login_is_not() -> None:
    w = SecureWire()
    w.up()
    data = hashlib.sha256(b"tenant").digest() * 256  # 8 KiB
    w.submit(1, ScsiCommand(cdb.write(8, 16), data_out=data))
    w.submit(2, ScsiCommand(cdb.read(8, 16), data_in_len=len(data)))
    assert w.done[1].status == Status.GOOD and w.done[2].data == data  # type: ignore[attr-defined]
    fcp = [f for _, f in w.log if f.header.type == FcType.FCP]
    other = [f for _, f in w.log if f.header.type != FcType.FCP]
    assert fcp and all(f.header.df_ctl & 0x40 for f in fcp)
    assert other and not any(f.header.df_ctl & 0x40 for f in other)
    wire = b"".join(f.payload for f in fcp)
    assert data[:32] not in wire
    assert max(len(f.payload) for f in fcp) == 2080
    assert w.ie.counters.drops == {} and w.te.counters.drops == {}
    assert w.ie.counters.bytes_in_protected >= len(data) and w.te.counters.bytes_in_protected >= len(data)


def test_io_continues_across_a_rekey() -> None:
    w = SecureWire(Cipher.AES_GCM_128)
    w.up()
    data = bytes(range(256)) * 16
    w.submit(1, ScsiCommand(cdb.write(0, 8), data_out=data))
    # Rekey: both new RX SAs, then both new TX SAs (the switch), then old TX, then old RX.
    c = w.cipher
    assert w.ie.sadb.install(RX, 0x1001, c, key(7)[:16], SALT).ok
    assert w.te.sadb.install(RX, 0x2001, c, key(8)[:16], SALT).ok
    assert w.ie.sadb.install(TX, 0x2001, c, key(8)[:16], SALT).ok
    assert w.te.sadb.install(TX, 0x1001, c, key(7)[:16], SALT).ok
    assert w.ie.sadb.delete(TX, 0x2000, now=w.now).ok and w.te.sadb.delete(TX, 0x1000, now=w.now).ok
    assert w.ie.sadb.delete(RX, 0x1000, now=w.now).events == ()
    w.submit(2, ScsiCommand(cdb.read(0, 8), data_in_len=len(data)))
    assert w.done[2].data == data  # type: ignore[attr-defined]
    assert DeleteRx(0x1000, DeleteCause.NEW_SA_IN_USE) in w.ie.pop_events()
    assert [sa.spi for sa in w.ie.sadb.sas(RX)] == [0x1001]
    assert w.ie.counters.rekeys == 1 and w.ie.counters.drops == {}
