"""load_chap_secret: an iSCSI CHAP secret file under the one secret-file policy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edifd.edges.secret_file import SecretFileError, load_chap_secret


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("secret", ["a" * 12, "Z9+/=~!#" * 2, "x" * 15])
def test_twelve_to_sixteen_printable_characters(tmp_path: Path, secret: str) -> None:
    assert load_chap_secret(_write(tmp_path / "s", secret.encode())) == secret


@pytest.mark.parametrize("data, needle", [
    (b"a" * 11, "11 characters; a CHAP secret has 12 to 16"),
    (b"a" * 17, "17 characters"),
    (b"", "0 characters"),
    (b"a" * 14 + b"\n", "ends with a newline"),
    (b"a" * 12 + b"\r", "printable ASCII without spaces"),
    (b"\tabcdefghijklm", "printable ASCII without spaces"),
    (b"abcdefghijkl\xff", "printable ASCII without spaces"),
    (b"NULLabcdefghijk", "must not begin with NULL"),
    (b"a" * 300, "larger than 256 bytes"),
])
def test_refusals_name_the_file_never_the_secret(tmp_path: Path, data: bytes, needle: str) -> None:
    path = _write(tmp_path / "s", data)
    with pytest.raises(SecretFileError) as e:
        load_chap_secret(path)
    assert needle in str(e.value) and str(path) in str(e.value)
    if data.strip():
        assert data.strip().decode("latin-1") not in str(e.value)


def test_the_permission_policy_and_the_chmod_it_names(tmp_path: Path) -> None:
    path = _write(tmp_path / "s", b"a" * 16, 0o640)
    with pytest.raises(SecretFileError, match=rf"by its group \(mode 0640\); run chmod g-r {path}"):
        load_chap_secret(path)


def test_symlinks_and_fifos_are_refused(tmp_path: Path) -> None:
    target = _write(tmp_path / "s", b"a" * 16)
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(SecretFileError, match="is a symbolic link"):
        load_chap_secret(tmp_path / "link")
    os.mkfifo(tmp_path / "fifo", 0o600)
    with pytest.raises(SecretFileError, match="is not a regular file"):
        load_chap_secret(tmp_path / "fifo")
