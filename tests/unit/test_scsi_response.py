"""ScsiResponse.data_len: the residual-reporting addition to the transport contract, and what
ScsiDisk puts in it (libiscsi's Inquiry suite needs VPD pages to arrive with their own length)."""

import pytest

from edifd.scsi import MemoryMedium, ScsiCommand, ScsiDisk, ScsiResponse, Status, cdb, respond_report_luns


def test_data_len_defaults_and_does_not_change_equality() -> None:
    plain = ScsiResponse(Status.GOOD, b"abc")
    assert plain.data_len is None and plain.valid_len == 3 and plain.residual == 0
    marked = ScsiResponse(Status.GOOD, b"abc", data_len=1)
    assert marked == plain  # transports and tests comparing responses are unaffected
    assert marked.valid_len == 1 and marked.residual == 2


@pytest.mark.parametrize("data_len,valid", [(-5, 0), (0, 0), (2, 2), (99, 3)])
def test_valid_len_is_bounded(data_len: int, valid: int) -> None:
    r = ScsiResponse(Status.GOOD, b"abc", data_len=data_len)
    assert r.valid_len == valid and r.residual == 3 - valid


@pytest.fixture
def disk() -> ScsiDisk:
    return ScsiDisk(MemoryMedium(64))


@pytest.mark.parametrize(
    "c,dil,expected",
    [
        (cdb.inquiry(260), 260, 96),  # standard INQUIRY: 96 bytes of 260
        (cdb.inquiry(36), 36, 36),  # allocation length cuts it
        (cdb.inquiry(255, evpd=True, page=0xB0), 255, 64),  # Block Limits: 4 + 0x3C
        (cdb.inquiry(255, evpd=True, page=0xB2), 255, 8),
        (cdb.read_capacity16(32), 32, 32),
        (cdb.read_capacity16(12), 32, 12),
        (cdb.mode_sense6(0x3F, 255), 255, 44),  # header 4 + descriptor 8 + caching 20 + control 12
        (cdb.request_sense(252), 252, 18),
        (cdb.read(0, 2), 1024, 1024),
        (cdb.read(0, 2), 600, 600),  # truncated to the buffer
        (cdb.read(0, 1), 2048, 512),  # buffer larger than the transfer
        (cdb.write(0, 0), 0, 0),
    ],
)
def test_disk_reports_the_real_data_length(disk: ScsiDisk, c: bytes, dil: int, expected: int) -> None:
    r = disk.execute(ScsiCommand(c, b"", dil))
    assert isinstance(r, ScsiResponse) and r.status == Status.GOOD
    assert len(r.data) == dil and r.data_len == expected
    assert r.data[expected:] == bytes(dil - expected)


def test_errors_have_no_data(disk: ScsiDisk) -> None:
    r = disk.execute(ScsiCommand(cdb.read(64, 1), b"", 512))
    assert isinstance(r, ScsiResponse) and r.status == Status.CHECK_CONDITION
    assert r.data_len == 0 and r.residual == 512


def test_report_luns_response_has_data_len() -> None:
    r = respond_report_luns(ScsiCommand(cdb.report_luns(4096), b"", 64), [0, 1])
    assert r.data_len == 24 and r.residual == 40
