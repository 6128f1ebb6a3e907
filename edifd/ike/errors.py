"""The one exception family of edifd.ike: every parser and state machine raises only these."""

from __future__ import annotations


class IkeError(Exception):
    """Base error. Messages never contain key material or pre-shared keys."""


class ParseError(IkeError):
    """A message or payload is malformed (truncated, bad length, bad version, unknown critical payload...)."""


class CryptoError(IkeError):
    """Decryption/ICV check failed, or a key exchange value was invalid."""


class ConfigError(IkeError):
    """The session configuration is inconsistent."""


class StateError(IkeError):
    """A message or API call does not fit the current state (unexpected message ID, exchange, SPI)."""
