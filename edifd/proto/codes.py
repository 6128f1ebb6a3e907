"""Enumerated field values used inside message bodies. All are wire values."""

from __future__ import annotations

import enum

# The FC-FS maximum frame data field, and qla2xxx's ELS_MAX_PAYLOAD for relayed AUTH_ELS.
ELS_MAX_PAYLOAD = 2112


class Status(enum.IntEnum):
    """RESPONSE.status: the outcome of a request.

    RETRY_LATER is qla2xxx's DID_IMM_RETRY (queue full, both SAs not yet confirmed for AUTH_OK);
    everything else except OK is a hard error the agent must not blindly repeat.
    """

    OK = 0
    RETRY_LATER = 1
    INVALID_PARAM = 2
    NO_SUCH_PORT = 3  # unknown remote port or not logged in (qla DID_NO_CONNECT)
    STALE_GENERATION = 4  # the request names an older login of the remote port
    NOT_STARTED = 5  # no APP_START handshake has completed
    REFUSED = 6  # e.g. AUTH_OK for a port that is not in authentication
    LIMIT = 7  # e.g. a third SA in one direction (qla: no free slots in sadb)
    FAILED = 8  # the HBA failed the operation; RESPONSE.detail carries its status
    TIMEOUT = 9
    UNSUPPORTED = 10  # not supported by this port or in this role


class AppStartPhase(enum.IntEnum):
    HELLO = 1  # carries the agent nonce; answered by APP_START_CHALLENGE
    PROOF = 2  # carries the agent's proof; answered by APP_START_ANSWER


class StopReason(enum.IntEnum):
    SHUTDOWN = 1  # the security application is exiting
    RESTART = 2  # it will APP_START again shortly
    ERROR = 3


class ElsReplyAction(enum.IntEnum):
    """ELS_REPLY.action; values as qla2xxx extra_control_flags (BSG_CTL_FLAG_*)."""

    LS_ACC = 1
    LS_RJT = 2
    TERMINATE = 3  # abort the received exchange; no payload


class ElsResult(enum.IntEnum):
    """ELS_RESPONSE.result: the FC-LS command code of the reply frame."""

    LS_RJT = 0x01
    LS_ACC = 0x02


class SaDirection(enum.IntEnum):
    """Values as qla2xxx key_type (QL_VND_RX_SA_KEY 1, QL_VND_TX_SA_KEY 2)."""

    RX = 1
    TX = 2


class Cipher(enum.IntEnum):
    """ESP transform of an SA: AES-GCM (encrypt + authenticate) or AES-GMAC (authenticate only)."""

    AES_GCM_128 = 1
    AES_GCM_256 = 2
    AES_GMAC_128 = 3
    AES_GMAC_256 = 4

    @property
    def key_size(self) -> int:
        return 16 if self in (Cipher.AES_GCM_128, Cipher.AES_GMAC_128) else 32

    @property
    def mask_bit(self) -> int:
        """This cipher's bit in APP_START_ANSWER.cipher_mask."""
        return 1 << (self.value - 1)


class CipherMask(enum.IntFlag):
    AES_GCM_128 = 0x01
    AES_GCM_256 = 0x02
    AES_GMAC_128 = 0x04
    AES_GMAC_256 = 0x08


class SaFlags(enum.IntFlag):
    """SA_UPDATE.flags (ours, not qla's bit values: direction and cipher have their own fields)."""

    DELETE = 0x0001  # remove the SA named by SPI (qla SAU_FLG_INV)
    FORCE_DELETE = 0x0002  # RX delete now, without the rekey overlap delay (qla SAU_FLG_FORCE_DELETE)
    REKEY = 0x0004  # an additional SA that will replace the current one in this direction


class SaStatus(enum.IntEnum):
    """SA_UPDATE_COMPL.status; values as qla2xxx QL_VND_SA_STAT_*."""

    SUCCESS = 0
    FAILED = 1
    TIMEOUT = 2
    ERROR = 3


class AuthFailReason(enum.IntEnum):
    AUTH_FAILED = 1  # the peer's credentials did not verify
    PEER_REJECTED = 2  # the peer rejected ours
    TIMEOUT = 3
    POLICY = 4  # no acceptable proposal, or the peer is not allowed


class ShutdownReason(enum.IntEnum):
    """SESSION_SHUTDOWN.reason: why the host tore a secure session down (qla2xxx's causes)."""

    PORT_GONE = 1  # RSCN or name-server loss
    LOGO = 2
    LINK_DOWN = 3
    FW_EDIF_UNAVAIL = 4
    FW_LOGOUT = 5
    KEYS_REMOVED = 6
    APP_STOP = 7
    AUTH_FAIL = 8
    HOST_RESET = 9


class LinkState(enum.IntEnum):
    DOWN = 0
    UP = 1


class PortState(enum.IntEnum):
    OFFLINE = 0
    ONLINE = 1  # logged in (PLOGI done)


class AuthState(enum.IntEnum):
    """Where authentication of one remote port stands (qla keeps the last event code instead)."""

    NOT_SECURE = 0  # the peer did not do a secure login; no FC-SP-2 for it
    NEEDED = 1  # logged in, waiting for the application to authenticate it
    IN_PROGRESS = 2  # ELS exchanged or SAs partly installed
    AUTHENTICATED = 3  # AUTH_OK accepted; encrypted I/O flows
    FAILED = 4


class RoleFlags(enum.IntFlag):
    """Remote port roles; bit values as qla2xxx remote_type."""

    TARGET = 0x01
    INITIATOR = 0x02


class PortFlags(enum.IntFlag):
    EDIF_ENABLED = 0x01  # the local port does FC-SP-2 (qla host_support_edif)


class TargetFlags(enum.IntFlag):
    SECURE_LOGIN = 0x01  # the remote port set the FC-SP-2 security bit in its PLOGI
