"""IANA IKEv2 registry values used by edifd (RFC 7296, RFC 4595, RFC 5282, RFC 4543, RFC 7427, RFC 8031)."""

from __future__ import annotations

from enum import IntEnum


class ExchangeType(IntEnum):
    IKE_SA_INIT = 34
    IKE_AUTH = 35
    CREATE_CHILD_SA = 36
    INFORMATIONAL = 37


class PayloadType(IntEnum):
    NONE = 0
    SA = 33
    KE = 34
    IDI = 35
    IDR = 36
    CERT = 37
    CERTREQ = 38
    AUTH = 39
    NONCE = 40
    NOTIFY = 41
    DELETE = 42
    VENDOR_ID = 43
    TSI = 44
    TSR = 45
    SK = 46
    CP = 47
    EAP = 48


class ProtocolId(IntEnum):
    IKE = 1
    AH = 2
    ESP = 3
    FC_ESP_HEADER = 4  # RFC 4595
    FC_CT_AUTH = 5


class TransformType(IntEnum):
    ENCR = 1
    PRF = 2
    INTEG = 3
    KE = 4
    ESN = 5


class EncrId(IntEnum):
    AES_GCM_8 = 18
    AES_GCM_12 = 19
    AES_GCM_16 = 20
    NULL_AUTH_AES_GMAC = 21  # RFC 4543: integrity only, child SAs only


class PrfId(IntEnum):
    HMAC_SHA1 = 2  # only for the SP 800-135 CAVS vector; never offered by default
    HMAC_SHA2_256 = 5
    HMAC_SHA2_384 = 6
    HMAC_SHA2_512 = 7


class DhGroup(IntEnum):
    NONE = 0
    ECP_256 = 19
    CURVE25519 = 31


class EsnId(IntEnum):
    NO = 0
    YES = 1


class IdType(IntEnum):
    IPV4_ADDR = 1
    FQDN = 2
    RFC822_ADDR = 3
    IPV6_ADDR = 5
    DER_ASN1_DN = 9
    KEY_ID = 11
    FC_NAME = 12  # RFC 4595: an 8-byte WWPN


class AuthMethod(IntEnum):
    RSA_SIG = 1
    PSK = 2
    ECDSA_SHA256_P256 = 9
    DIGITAL_SIGNATURE = 14  # RFC 7427


class CertEncoding(IntEnum):
    X509_SIGNATURE = 4


class HashAlgorithm(IntEnum):
    """RFC 7427 hash algorithm identifiers, sent in N(SIGNATURE_HASH_ALGORITHMS)."""

    SHA2_256 = 2
    SHA2_384 = 3
    SHA2_512 = 4


class NotifyType(IntEnum):
    UNSUPPORTED_CRITICAL_PAYLOAD = 1
    INVALID_IKE_SPI = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_SYNTAX = 7
    INVALID_MESSAGE_ID = 9
    INVALID_SPI = 11
    NO_PROPOSAL_CHOSEN = 14
    INVALID_KE_PAYLOAD = 17
    AUTHENTICATION_FAILED = 24
    SINGLE_PAIR_REQUIRED = 34
    NO_ADDITIONAL_SAS = 35
    INTERNAL_ADDRESS_FAILURE = 36
    FAILED_CP_REQUIRED = 37
    TS_UNACCEPTABLE = 38
    INVALID_SELECTORS = 39
    TEMPORARY_FAILURE = 43
    CHILD_SA_NOT_FOUND = 44
    INITIAL_CONTACT = 16384
    NAT_DETECTION_SOURCE_IP = 16388
    NAT_DETECTION_DESTINATION_IP = 16389
    COOKIE = 16390
    USE_TRANSPORT_MODE = 16391
    REKEY_SA = 16393
    ESP_TFC_PADDING_NOT_SUPPORTED = 16394
    MOBIKE_SUPPORTED = 16396
    IKEV2_FRAGMENTATION_SUPPORTED = 16430
    SIGNATURE_HASH_ALGORITHMS = 16431

    @staticmethod
    def is_error(value: int) -> bool:
        # RFC 7296 §3.10.1: types below 16384 are errors, the rest are status notifications.
        return value < 16384


class TsType(IntEnum):
    IPV4_ADDR_RANGE = 7
    IPV6_ADDR_RANGE = 8
    FC_ADDR_RANGE = 9  # RFC 4595


def name_of(enum: type[IntEnum], value: int) -> str:
    """Readable name of a registry value, or its number when it is not one we know."""
    try:
        return enum(value).name
    except ValueError:
        return str(value)
