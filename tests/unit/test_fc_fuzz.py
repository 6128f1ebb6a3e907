"""Every payload parser raises only FcError on any input: random bytes and mutated valid payloads."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edifd.fc import (
    AuthEls,
    AuthMsgCode,
    BaAcc,
    BaRjt,
    CommonFeatures,
    ElsCode,
    EspHeader,
    FcError,
    FcpCmnd,
    FcpRsp,
    FcpServiceParams,
    FcpXferRdy,
    Flogi,
    FrameHeader,
    LoginAcc,
    Logo,
    LsRjt,
    Plogi,
    Prli,
    PrliAcc,
    RCtl,
    Rscn,
    RscnPage,
    ServiceParamPage,
    lun_from_bytes,
    lun_to_bytes,
    parse_bls,
    parse_els,
)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PARSERS: dict[str, Callable[[bytes], object]] = {
    "els": parse_els,
    "els_acc_plogi": lambda b: parse_els(b, reply_to=ElsCode.PLOGI),
    "els_acc_prli": lambda b: parse_els(b, reply_to=ElsCode.PRLI),
    "els_acc_prlo": lambda b: parse_els(b, reply_to=ElsCode.PRLO),
    "ba_acc": lambda b: parse_bls(RCtl.BLS_BA_ACC, b),
    "ba_rjt": lambda b: parse_bls(RCtl.BLS_BA_RJT, b),
    "abts": lambda b: parse_bls(RCtl.BLS_ABTS, b),
    "fcp_cmnd": FcpCmnd.unpack,
    "fcp_rsp": FcpRsp.unpack,
    "xfer_rdy": FcpXferRdy.unpack,
    "auth_els": AuthEls.unpack,
    "esp": EspHeader.unpack,
    "header": FrameHeader.unpack,
    "lun": lun_from_bytes,
}

VALID = [
    Flogi(wwpn=1, wwnn=2).pack(),
    Plogi(wwpn=1, wwnn=2, common_features=CommonFeatures.CIRO | CommonFeatures.SECURITY).pack(),
    LoginAcc(wwpn=3, wwnn=4).pack(),
    Prli((ServiceParamPage(FcpServiceParams.INITIATOR),)).pack(),
    PrliAcc((ServiceParamPage(FcpServiceParams.TARGET), ServiceParamPage())).pack(),
    Logo(0x010101, 5).pack(),
    LsRjt(9, 0x48).pack(),
    Rscn((RscnPage(0x010102),)).pack(),
    AuthEls(AuthMsgCode.IKE_AUTH, 3, bytes(20)).pack(),
    BaAcc(1, 2, 3).pack(),
    BaRjt(9).pack(),
    FcpCmnd(lun=lun_to_bytes(2), cdb=bytes(32), dl=4, read=True, write=True, bidi_read_dl=8).pack(),
    FcpRsp(status=2, resid=1, resid_under=True, sense=bytes(18), rsp_info=bytes(8), bidi_read_resid=4).pack(),
    FcpXferRdy(0, 4).pack(),
]


def only_fc_error(parser: Callable[[bytes], object], data: bytes) -> None:
    try:
        parser(data)
    except FcError:
        pass


@pytest.mark.parametrize("name", sorted(PARSERS))
@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes(name: str, data: bytes) -> None:
    only_fc_error(PARSERS[name], data)


@FUZZ
@given(
    st.sampled_from(VALID),
    st.sampled_from(sorted(PARSERS)),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4),
    st.integers(-8, 8),
)
def test_mutated_valid_payloads(
    valid: bytes, name: str, mutations: list[tuple[int, int]], resize: int
) -> None:
    buf = bytearray(valid)
    for pos, val in mutations:
        buf[pos % len(buf)] = val
    buf = buf[: len(buf) + resize] if resize < 0 else buf + bytes(resize)
    only_fc_error(PARSERS[name], bytes(buf))


@pytest.mark.parametrize("valid", VALID, ids=lambda b: b[:1].hex())
def test_valid_payloads_parse(valid: bytes) -> None:
    # Guards the fuzz corpus: each seed is accepted by at least one parser and re-encodes identically.
    ok = []
    for parser in PARSERS.values():
        try:
            ok.append(parser(valid))
        except FcError:
            continue
    assert any(getattr(o, "pack", lambda: None)() == valid for o in ok)
