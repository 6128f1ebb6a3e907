"""UDP framing for the strongSwan interop profile (sans-IO helpers; sockets stay in the caller).

When neither UDP port is 500, IKE messages travel on the NAT-T framing of RFC 3948 §2.2: every IKE message is
preceded by the 4-byte non-ESP marker (zero), which separates it from ESP-in-UDP. charon drops unmarked
datagrams silently on such ports. AUTH_ELS (the FC profile) never uses the marker.
"""

from __future__ import annotations

from .errors import ParseError

NON_ESP_MARKER = b"\x00\x00\x00\x00"
IKE_PORT = 500


def needs_marker(local_port: int, remote_port: int) -> bool:
    return local_port != IKE_PORT and remote_port != IKE_PORT


def frame(message: bytes, marker: bool) -> bytes:
    return NON_ESP_MARKER + message if marker else message


def unframe(datagram: bytes, marker: bool) -> bytes:
    """Strip the marker; a marked port carrying a datagram without it holds ESP, which we do not accept."""
    if not marker:
        return bytes(datagram)
    if len(datagram) < 4 or datagram[:4] != NON_ESP_MARKER:
        raise ParseError("datagram lacks the non-ESP marker (ESP-in-UDP is not handled here)")
    return bytes(datagram[4:])
