"""load_channel_key: raw and hex files, refusal of unsafe or wrong files, and no key in any text."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edifd.edges.secret_file import load_channel_key
from edifd.proto import ChannelKey, ChannelKeyError, ProtocolError, parse_channel_key

SECRET = bytes.fromhex("5e" * 8 + "c7" * 8 + "a9" * 8 + "13" * 8)


def write(tmp_path: Path, content: bytes, mode: int = 0o600, name: str = "vm.key") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    os.chmod(path, mode)
    return path


def assert_no_secret(text: str) -> None:
    assert SECRET.hex() not in text.lower()
    assert repr(SECRET)[2:-1] not in text
    assert "5e5e5e5e" not in text.lower()


@pytest.mark.parametrize(
    "content",
    [
        SECRET,
        SECRET.hex().encode(),
        SECRET.hex().encode() + b"\n",
        SECRET.hex().upper().encode() + b"\r\n",
        b"  " + SECRET.hex().encode() + b"\n\n",
    ],
    ids=["raw", "hex", "hex-newline", "HEX-crlf", "hex-spaces"],
)
def test_accepted_forms(tmp_path: Path, content: bytes) -> None:
    key = load_channel_key(write(tmp_path, content))
    assert key.material == SECRET


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_private_modes_accepted(tmp_path: Path, mode: int) -> None:
    assert load_channel_key(write(tmp_path, SECRET, mode)).material == SECRET


@pytest.mark.parametrize("mode", [0o640, 0o660, 0o620, 0o610])
def test_group_accessible_refused(tmp_path: Path, mode: int) -> None:
    # One policy for every secret file: group access is refused too, with the chmod that fixes it.
    path = write(tmp_path, SECRET, mode)
    with pytest.raises(ChannelKeyError, match="its group") as info:
        load_channel_key(path)
    assert "run chmod g-" in str(info.value) and str(path) in str(info.value)
    assert_no_secret(str(info.value))


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o602, 0o601, 0o666])
def test_world_accessible_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path, SECRET.hex().encode(), mode)
    with pytest.raises(ChannelKeyError, match="other users") as info:
        load_channel_key(path)
    assert str(path) in str(info.value)
    assert_no_secret(str(info.value))


@pytest.mark.parametrize(
    "content",
    [
        b"",
        SECRET[:31],
        SECRET + b"\x00",
        SECRET.hex()[:-2].encode(),
        SECRET.hex().encode() + b"00",
        SECRET.hex().replace("5e", "zz", 1).encode(),
        b"0x" + SECRET.hex()[2:].encode(),
        (SECRET.hex()[:32] + " " + SECRET.hex()[32:]).encode(),
        b"\x00" * 5000,
    ],
)
def test_wrong_content_refused_without_echo(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(ChannelKeyError) as info:
        load_channel_key(write(tmp_path, content))
    assert_no_secret(str(info.value))
    assert_no_secret(repr(info.value))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ChannelKeyError, match="cannot open"):
        load_channel_key(tmp_path / "absent.key")


def test_directory_and_fifo_refused(tmp_path: Path) -> None:
    d = tmp_path / "dir"
    d.mkdir(mode=0o700)
    with pytest.raises(ChannelKeyError):
        load_channel_key(d)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ChannelKeyError, match="not a regular file"):
        load_channel_key(fifo)  # must not block waiting for a writer


def test_key_is_a_protocol_error_subclass() -> None:
    assert issubclass(ChannelKeyError, ProtocolError)


def test_channel_key_object_hides_material() -> None:
    key = ChannelKey(SECRET)
    for text in (repr(key), str(key), f"{key}", repr([key])):
        assert_no_secret(text)
        assert key.fingerprint in text
    assert len(key.fingerprint) == 16
    assert key.fingerprint == ChannelKey(SECRET).fingerprint
    assert key.fingerprint != ChannelKey(bytes(32)).fingerprint
    assert key.fingerprint not in SECRET.hex()
    with pytest.raises(ChannelKeyError):
        ChannelKey(SECRET[:16])


def test_parse_channel_key_directly() -> None:
    assert parse_channel_key(SECRET).material == SECRET
    assert parse_channel_key(bytearray(SECRET.hex().encode())).material == SECRET
    with pytest.raises(ChannelKeyError):
        parse_channel_key(b"short")


def test_symlink_refused_and_a_refusal_names_the_chmod(tmp_path: Path) -> None:
    link = tmp_path / "link.key"
    link.symlink_to(write(tmp_path, SECRET))
    with pytest.raises(ChannelKeyError, match="symbolic link"):
        load_channel_key(link)
    loose = write(tmp_path, SECRET, 0o646, name="loose.key")  # group read and other read-write
    with pytest.raises(ChannelKeyError) as info:
        load_channel_key(loose)
    assert str(info.value).endswith(f"(mode 0646); run chmod g-r,o-rw {loose}")
