"""Properties over arbitrary CDBs: execute() never raises, always answers with exactly data_in_len
bytes, fixed-format sense on every CHECK CONDITION, zero data with it, and no internal failures."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edifd.scsi import MemoryMedium, Pending, ScsiCommand, ScsiDisk, ScsiResponse, SenseData, Status
from edifd.scsi.commands import SPECS

KNOWN = sorted({s.opcode for s in SPECS})
N_BLOCKS = 256


def cdbs() -> st.SearchStrategy[bytes]:
    random_cdb = st.binary(min_size=0, max_size=32)
    # Known opcodes with small, mostly-valid fields reach the deep paths more often.
    known = st.tuples(
        st.sampled_from(KNOWN),
        st.binary(min_size=0, max_size=31),
    ).map(lambda t: bytes([t[0]]) + t[1])
    return st.one_of(random_cdb, known)


def check_response(r: ScsiResponse, data_in_len: int) -> None:
    assert isinstance(r.status, Status)
    assert isinstance(r.data, bytes) and len(r.data) == data_in_len
    # data_len marks where the command's data ends; everything after it is zero padding
    assert r.data_len is not None and 0 <= r.data_len <= data_in_len
    assert r.data[r.valid_len :] == bytes(r.residual)
    if r.status == Status.CHECK_CONDITION:
        assert len(r.sense) == 18
        sd = SenseData.parse(r.sense)
        assert sd.key != 0x04  # no internal target failure: every input is handled on purpose
        assert r.data == bytes(data_in_len) and r.data_len == 0
    else:
        assert r.status == Status.GOOD and r.sense == b""


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(cdbs(), st.integers(0, 4096), st.binary(max_size=2048), st.sampled_from([512, 4096]))
def test_random_cdbs_never_raise_and_fill_exactly(
    cdb: bytes, data_in_len: int, data_out: bytes, bs: int
) -> None:
    disk = ScsiDisk(MemoryMedium(N_BLOCKS, bs), max_transfer_bytes=64 * 1024)
    r = disk.execute(ScsiCommand(cdb, data_out, data_in_len))
    assert not isinstance(r, Pending)  # MemoryMedium is synchronous
    check_response(r, data_in_len)
    assert disk.internal_errors == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(cdbs(), st.integers(0, 1024)), min_size=1, max_size=10))
def test_command_sequences_keep_request_sense_consistent(seq: list[tuple[bytes, int]]) -> None:
    disk = ScsiDisk(MemoryMedium(N_BLOCKS))
    last_check = b""
    for cdb, dil in seq:
        r = disk.execute(ScsiCommand(cdb, bytes(dil), dil))
        assert isinstance(r, ScsiResponse)
        check_response(r, dil)
        if r.status == Status.CHECK_CONDITION:
            last_check = r.sense
        elif cdb[:1] == b"\x03":  # a successful REQUEST SENSE consumed it
            last_check = b""
    assert disk.pending_sense == last_check
