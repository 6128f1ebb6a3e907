"""What both ends of FC-SP-2 authentication share: IKE messages in AUTH_ELS, IKE configs, SA_UPDATE bodies.

Sans-IO helpers used by the security application (`edifd.secapp.app`, initiator) and by the responder-side
orchestration (`edifd.secapp.responder`, the storage target). Choices (docs/secapp.md §3):

* **One IKE message per AUTH_ELS request**, each in its own exchange (FC-SP-2): the receiver answers
  the ELS with a plain LS_ACC (``02 00 00 00``) and sends its IKE response as a *new* AUTH_ELS request.
  So an initiator sends IKE requests with ELS_SEND and receives IKE responses as ELS_RCVD.
* AUTH_ELS header (docs/fc-wire.md): flags 0, protocol version 1, message code from the IKE exchange type
  (IKE_SA_INIT 34 -> 0x22, IKE_AUTH 35 -> 0x23, CREATE_CHILD_SA 36 -> 0x24, INFORMATIONAL 37 -> 0x25;
  the numbers coincide), message length = the IKE message's length.
* **T_ID**: chosen by the authentication initiator, random and non-zero, one per IKE SA, echoed by the
  responder in every message of that IKE SA (including requests it originates).
* A received AUTH_ELS whose message code disagrees with the IKE exchange type, or that has fragment
  or concatenation flags, is refused (LS_RJT) and not fed to IKE.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from edifd.edif.sa import cipher_from_ike
from edifd.fc import AuthEls, FcError, FcType, LsAcc, LsRjt, LsRjtExplanation, LsRjtReason
from edifd.fc.fcsp import AuthMsgCode
from edifd.ike import ChildSaEstablished, CipherSuite, FcSelector, Identity, IkeConfig
from edifd.proto import Cipher, PortRef, SaDirection, SaFlags, SaUpdate

from .config import CertCredentials, Credentials, IkePolicy, PskCredentials

IKE_HEADER_LEN = 28
_EXCHANGE_OFFSET = 18  # exchange type byte in the IKE header (RFC 7296 §3.1)
IKE_CODES = {
    34: AuthMsgCode.IKE_SA_INIT,
    35: AuthMsgCode.IKE_AUTH,
    36: AuthMsgCode.IKE_CREATE_CHILD_SA,
    37: AuthMsgCode.IKE_INFORMATIONAL,
}

# FCP only: R_CTL 0x00-0x0F (all FCP IUs), TYPE 0x08. ELS and BLS stay in clear (docs/edif.md §2), so a
# broken SA never blocks LOGO or ABTS.
FCP_R_CTL = (0x00, 0x0F)
FCP_TYPE = int(FcType.FCP)

LS_ACC = LsAcc().pack()  # the whole LS_ACC payload: 02 00 00 00
LS_RJT_PROTOCOL = LsRjt(LsRjtReason.PROTOCOL_ERROR, LsRjtExplanation.NONE).pack()
LS_RJT_UNABLE = LsRjt(LsRjtReason.UNABLE, LsRjtExplanation.NONE).pack()
LS_RJT_NO_AUTH = LsRjt(LsRjtReason.UNABLE, LsRjtExplanation.AUTHENTICATION_REQUIRED).pack()


class RelayError(ValueError):
    """An AUTH_ELS payload that does not carry exactly one IKE message. The only error this module raises."""


def new_tid(rng: Callable[[int], bytes] = secrets.token_bytes) -> int:
    while True:
        tid = int.from_bytes(rng(4), "big")
        if tid:
            return tid


def wrap_ike(ike: bytes, tid: int) -> bytes:
    """The AUTH_ELS payload (command code 0x90 first) carrying one IKE message."""
    if len(ike) < IKE_HEADER_LEN:
        raise RelayError(f"IKE message of {len(ike)} bytes is shorter than its header")
    code = IKE_CODES.get(ike[_EXCHANGE_OFFSET])
    if code is None:
        raise RelayError(f"IKE exchange type {ike[_EXCHANGE_OFFSET]} has no AUTH_ELS message code")
    try:
        return AuthEls(code, tid, bytes(ike)).pack()
    except FcError as e:
        raise RelayError(str(e)) from None


def unwrap_ike(payload: bytes) -> tuple[int, bytes]:
    """(T_ID, IKE message) from a received AUTH_ELS payload; RelayError on anything else."""
    try:
        els = AuthEls.unpack(bytes(payload))
    except (FcError, TypeError) as e:
        raise RelayError(f"not an AUTH_ELS: {e}") from None
    if int(els.flags):
        raise RelayError(f"AUTH_ELS flags 0x{int(els.flags):02x}: fragments/concatenation are not supported")
    ike = els.message
    if len(ike) < IKE_HEADER_LEN:
        raise RelayError("AUTH_ELS carries no IKE message")
    want = IKE_CODES.get(ike[_EXCHANGE_OFFSET])
    if want is None or int(els.message_code) != want:
        raise RelayError(
            f"AUTH_ELS message code 0x{int(els.message_code):02x} does not match IKE exchange "
            f"{ike[_EXCHANGE_OFFSET]}"
        )
    return els.tid, ike


def fcp_selector(port_id: int) -> FcSelector:
    return FcSelector(port_id, port_id, FCP_R_CTL[0], FCP_R_CTL[1], FCP_TYPE, FCP_TYPE)


def ike_config(
    *,
    local_wwpn: int,
    remote_wwpn: int,
    local_port_id: int,
    remote_port_id: int,
    credentials: Credentials,
    policy: IkePolicy,
    rng: Callable[[int], bytes] = secrets.token_bytes,
    clock: Callable[[], datetime.datetime] | None = None,
) -> IkeConfig:
    """The IKE SA configuration for one port pair: ID type 12 WWPNs, FC_ESP_HEADER child, TS type 9."""
    extra: dict = {} if clock is None else {"clock": clock}
    if isinstance(credentials, PskCredentials):
        extra["psk"] = credentials.psk
    elif isinstance(credentials, CertCredentials):
        extra.update(
            certificate=credentials.certificate,
            private_key=credentials.private_key,
            intermediates=credentials.intermediates,
            ca_certificates=credentials.ca_certificates,
        )
    else:
        raise TypeError("credentials must be PskCredentials or CertCredentials")
    return IkeConfig(
        local_id=Identity.wwpn(local_wwpn),
        remote_id=Identity.wwpn(remote_wwpn),
        ike_ciphers=policy.ike_ciphers,
        dh_groups=policy.dh_groups,
        child_ciphers=policy.esp_ciphers,
        child_pfs_group=policy.pfs_group,
        local_ts=(fcp_selector(local_port_id),),
        remote_ts=(fcp_selector(remote_port_id),),
        rng=rng,
        **extra,
    )


def proto_cipher(suite: CipherSuite) -> Cipher:
    """The SA_UPDATE cipher of a negotiated child transform: edifd.edif.sa's one table (EdifError, a
    ValueError, for a transform it has no cipher for)."""
    return cipher_from_ike(suite.encr, suite.key_bits)


@dataclass(frozen=True)
class SaPair:
    """The two SA_UPDATE adds of one child SA: RX is installed first (we must be able to receive before
    the peer may send on it), then TX."""

    rx: SaUpdate
    tx: SaUpdate


def sa_pair(port: PortRef, child: ChildSaEstablished, *, rekey: bool) -> SaPair:
    """SA_UPDATE bodies for a negotiated child: RX = (spi_in, key_in, salt_in), TX = (spi_out, ...)."""
    cipher = proto_cipher(child.cipher)
    flags = SaFlags.REKEY if rekey else SaFlags(0)
    rx = SaUpdate(port, child.spi_in, SaDirection.RX, cipher, child.key_in, child.salt_in, flags)
    tx = SaUpdate(port, child.spi_out, SaDirection.TX, cipher, child.key_out, child.salt_out, flags)
    return SaPair(rx, tx)


def sa_delete(port: PortRef, spi: int, direction: SaDirection, cipher: Cipher) -> SaUpdate:
    return SaUpdate(port, spi, direction, cipher, flags=SaFlags.DELETE)
