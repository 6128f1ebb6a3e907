"""ELS (FLOGI/PLOGI/PRLI/PRLO/LOGO/LS_ACC/LS_RJT/RSCN), AUTH_ELS header and BLS payloads."""

from __future__ import annotations

import pytest

from edifd.fc import (
    Abts,
    AuthEls,
    AuthFlags,
    AuthMsgCode,
    BaAcc,
    BaRjt,
    BaRjtExplanation,
    BaRjtReason,
    ClassParams,
    CommonFeatures,
    ElsCode,
    FcpServiceParams,
    Flogi,
    LoginAcc,
    Logo,
    LsAcc,
    LsRjt,
    LsRjtExplanation,
    LsRjtReason,
    PayloadError,
    Plogi,
    Prli,
    PrliAcc,
    PrliAccCode,
    PrliFlags,
    Prlo,
    PrloAcc,
    RawEls,
    RCtl,
    Rscn,
    RscnAddressFormat,
    RscnPage,
    ServiceParamPage,
    parse_bls,
    parse_els,
)

WWPN = 0x2100001B32000001
WWNN = 0x2000001B32000001

CLASS3 = bytes.fromhex("8800 0000 0000 0840 00ff 0000 00 01 0000")

def login_bytes(code: int, features: int) -> bytes:
    # libfc's values (fc_lport_flogi_fill, drivers/scsi/libfc/fc_lport.c)
    return (
        bytes((code, 0, 0, 0))
        + bytes.fromhex("2020 000a")
        + features.to_bytes(2, "big")
        + bytes.fromhex("0840")  # BB_SC_N 0, receive data field size 2112
        + bytes.fromhex("00ff 001f")  # total concurrent sequences, relative offset by category
        + bytes.fromhex("000007d0")  # E_D_TOV 2000 ms
        + WWPN.to_bytes(8, "big")
        + WWNN.to_bytes(8, "big")
        + bytes(32)  # classes 1 and 2 not valid
        + CLASS3
        + bytes(16)  # class 4
        + bytes(16)  # vendor version
    )


def test_plogi_with_security_bit_is_byte_exact() -> None:
    p = Plogi(wwpn=WWPN, wwnn=WWNN, common_features=CommonFeatures.CIRO | CommonFeatures.SECURITY)
    raw = p.pack()
    assert raw == login_bytes(0x03, 0x8020) and len(raw) == 116
    assert raw[8:10] == b"\x80\x20"  # security bit 0x0020 in word 1 of the common service parameters
    back = parse_els(raw)
    assert isinstance(back, Plogi) and back == p and back.security
    assert back.class3.valid and not back.class2.valid
    assert not Plogi(wwpn=WWPN, wwnn=WWNN).security


def test_flogi_and_login_acc() -> None:
    f = Flogi(wwpn=WWPN, wwnn=WWNN)
    assert f.pack() == login_bytes(0x04, 0x0000)
    assert parse_els(f.pack()) == f
    acc = LoginAcc(wwpn=WWPN, wwnn=WWNN, common_features=CommonFeatures.SECURITY)
    assert acc.pack() == login_bytes(0x02, 0x0020)
    assert parse_els(acc.pack(), reply_to=ElsCode.PLOGI) == acc
    assert parse_els(acc.pack(), reply_to=ElsCode.FLOGI) == acc
    assert isinstance(parse_els(acc.pack()), LsAcc)  # without context an LS_ACC stays generic
    # In an FLOGI LS_ACC, bytes 12-15 are R_A_TOV.
    assert LoginAcc(wwpn=1, wwnn=2, total_concurrent_seq=0, rel_offset_by_category=10000).r_a_tov == 10000


def test_login_rejects_bad_lengths_and_codes() -> None:
    raw = Plogi(wwpn=WWPN, wwnn=WWNN).pack()
    for bad in (raw[:115], raw + b"\0"):
        with pytest.raises(PayloadError):
            parse_els(bad)
    with pytest.raises(PayloadError):
        Flogi.unpack(raw)  # a PLOGI is not an FLOGI
    with pytest.raises(PayloadError):
        Plogi(wwpn=1 << 64, wwnn=0)
    with pytest.raises(PayloadError):
        Plogi(wwpn=1, wwnn=2, rx_size=4096)


def test_prli_and_acc_fcp_page_byte_exact() -> None:
    # FCP_SPPF_* of include/scsi/fc/fc_fcp.h: initiator params 0x0022 flags 0x20; target 0x0012 flags 0x21
    prli = Prli((ServiceParamPage(FcpServiceParams(0x22), PrliFlags.ESTABLISH_IMAGE_PAIR),))
    assert prli.pack() == bytes.fromhex("20 10 0014" "08 00 20 00" "00000000" "00000000" "00000022")
    acc = PrliAcc(
        (
            ServiceParamPage(
                FcpServiceParams.TARGET | FcpServiceParams.READ_XFER_RDY_DISABLED,
                PrliFlags.ESTABLISH_IMAGE_PAIR,
                PrliAccCode.EXECUTED,
            ),
        )
    )
    assert acc.pack() == bytes.fromhex("02 10 0014" "08 00 21 00" "00000000" "00000000" "00000012")
    assert parse_els(prli.pack()) == prli
    back = parse_els(acc.pack(), reply_to=ElsCode.PRLI)
    assert back == acc and back.pages[0].response_code is PrliAccCode.EXECUTED


def test_prlo_and_acc() -> None:
    prlo = Prlo((ServiceParamPage(),))
    assert prlo.pack() == bytes.fromhex("21 10 0014 08000000") + bytes(12)
    assert parse_els(prlo.pack()) == prlo
    acc = PrloAcc((ServiceParamPage(response_code=PrliAccCode.EXECUTED),))
    assert parse_els(acc.pack(), reply_to=ElsCode.PRLO) == acc


@pytest.mark.parametrize(
    "raw",
    [
        bytes.fromhex("20 10 0018") + bytes(16),  # length field disagrees with the bytes present
        bytes.fromhex("20 0c 0010") + bytes(12),  # 12-byte pages are not FCP pages
        bytes.fromhex("20 10 0004"),  # no page
    ],
)
def test_prli_rejects_malformed(raw: bytes) -> None:
    with pytest.raises(PayloadError):
        parse_els(raw)


def test_prli_reserved_bits_are_ignored_on_receipt() -> None:
    page = parse_els(bytes.fromhex("20 10 0014 08 00 30 ff") + bytes(12)).pages[0]
    assert page.flags == PrliFlags.ESTABLISH_IMAGE_PAIR and page.response_code == 0


def test_logo_byte_exact() -> None:
    logo = Logo(n_port_id=0x010101, wwpn=WWPN)
    assert logo.pack() == bytes.fromhex("05000000 00010101") + WWPN.to_bytes(8, "big")
    assert parse_els(logo.pack()) == logo
    with pytest.raises(PayloadError):
        parse_els(logo.pack()[:15])


def test_ls_acc_and_ls_rjt() -> None:
    assert LsAcc().pack() == bytes.fromhex("02000000")
    assert parse_els(bytes.fromhex("02000000"), reply_to=ElsCode.LOGO) == LsAcc()
    rjt = LsRjt(LsRjtReason.UNABLE, LsRjtExplanation.AUTHENTICATION_REQUIRED)
    assert rjt.pack() == bytes.fromhex("01000000 00 09 48 00")
    back = parse_els(rjt.pack())
    assert back == rjt and back.reason is LsRjtReason.UNABLE
    # Unknown codes are kept as numbers, not rejected: the peer may know more than we do.
    odd = parse_els(bytes.fromhex("01000000 00 42 77 05"))
    assert odd == LsRjt(0x42, 0x77, 5)
    with pytest.raises(PayloadError):
        parse_els(bytes.fromhex("01000000 00 09"))


def test_rscn_pages() -> None:
    rscn = Rscn((RscnPage(0x010102), RscnPage(0x020000, RscnAddressFormat.DOMAIN, event_qualifier=3)))
    assert rscn.pack() == bytes.fromhex("61 04 000c" "00 010102" "0e 020000")
    assert parse_els(rscn.pack()) == rscn
    with pytest.raises(PayloadError):
        parse_els(bytes.fromhex("61 04 0010 00010102"))


def test_auth_els_header_byte_exact() -> None:
    a = AuthEls(AuthMsgCode.IKE_SA_INIT, tid=7, message=bytes.fromhex("deadbeef"))
    assert a.pack() == bytes.fromhex("90 00 22 01" "00000004" "00000007" "deadbeef")
    back = parse_els(a.pack())
    assert back == a and back.message_code is AuthMsgCode.IKE_SA_INIT
    flagged = AuthEls(AuthMsgCode.AUTH_NEGOTIATE, tid=2, flags=AuthFlags.MORE_FRAGMENTS)
    assert flagged.pack() == bytes.fromhex("90 80 0b 01 00000000 00000002")
    assert parse_els(flagged.pack()) == flagged


@pytest.mark.parametrize(
    "raw",
    [
        bytes.fromhex("90 00 22 01 00000005 00000007 deadbeef"),  # length counts one byte too many
        bytes.fromhex("90 00 22 02 00000000 00000007"),  # protocol version 2
        bytes.fromhex("90 00 22 01 00000000 000000"),  # short header
    ],
)
def test_auth_els_rejects_malformed(raw: bytes) -> None:
    with pytest.raises(PayloadError):
        parse_els(raw)


def test_unknown_els_is_raw() -> None:
    assert parse_els(bytes.fromhex("52 000000 1234")) == RawEls(0x52, bytes.fromhex("000000 1234"))
    with pytest.raises(PayloadError):
        parse_els(b"")


def test_class_params_round_trip() -> None:
    c = ClassParams.class3()
    assert c.pack() == CLASS3 and ClassParams.unpack(CLASS3) == c


def test_bls_payloads_byte_exact() -> None:
    acc = BaAcc(ox_id=5, rx_id=0x20, seq_id=3, low_seq_cnt=0, high_seq_cnt=0xFFFF)
    assert acc.pack() == bytes.fromhex("80 03 0000 0005 0020 0000 ffff")
    assert parse_bls(RCtl.BLS_BA_ACC, acc.pack()) == acc
    no_seq = BaAcc(ox_id=5, rx_id=0x20)
    assert no_seq.pack() == bytes.fromhex("00 00 0000 0005 0020 0000 ffff")
    assert parse_bls(RCtl.BLS_BA_ACC, no_seq.pack()) == no_seq
    rjt = BaRjt(BaRjtReason.UNABLE, BaRjtExplanation.INVALID_OX_RX_ID)
    assert rjt.pack() == bytes.fromhex("00 09 03 00")
    assert parse_bls(RCtl.BLS_BA_RJT, rjt.pack()) == rjt
    assert parse_bls(RCtl.BLS_ABTS, b"") == Abts()


@pytest.mark.parametrize(
    ("r_ctl", "raw"),
    [
        (RCtl.BLS_ABTS, b"\0\0\0\0"),
        (RCtl.BLS_BA_ACC, bytes.fromhex("40 03 0000 0005 0020 0000 ffff")),  # validity neither 0x80 nor 0
        (RCtl.BLS_BA_ACC, bytes(11)),
        (RCtl.BLS_BA_RJT, bytes(5)),
        (RCtl.ELS_REQ, b""),
    ],
)
def test_bls_rejects_malformed(r_ctl: int, raw: bytes) -> None:
    with pytest.raises(PayloadError):
        parse_bls(r_ctl, raw)
