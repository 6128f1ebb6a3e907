"""The FC-2 frame: 24-byte header, data field, CRC-32, SOF/EOF delimiters.

A `Frame` holds the header, the data field bytes *without* fill and the two delimiters. The
fill count (F_CTL bits 1:0) is derived from the payload length when a Frame is built, so a
transform that changes the payload (the ESP stage) never has to patch it by hand:
`frame.header` is exactly what `pack_fc()` and the encoders emit.

An ESP stage works per frame between the exchange layer and the link codec:
    plain Frame --(encrypt: frame.esp_body, frame.with_esp())--> Frame --> encode_frame()
    decode --> Frame (frame.esp is set) --(decrypt: frame.split_esp())--> plain Frame
The ESP_Header sits first after the FC header (FC-SP / SPDK ordering); the other optional
headers, if any, are part of the protected body.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
import zlib
from dataclasses import dataclass

from ._codec import check_bytes, check_uint
from .errors import ErrorReason, FrameError, PayloadError
from .fcsp import ESP_HEADER_LEN, EspHeader

FC_HEADER_LEN = 24
FC_CRC_LEN = 4
FC_MAX_DATA_FIELD = 2112  # FC_MAX_PAYLOAD: optional headers + payload + fill
FC_DATA_FRAME_SIZE = 2048  # FCP_DATA chunk: 512-aligned and leaves room for 32 bytes of ESP overhead
UNASSIGNED_XID = 0xFFFF

# R_CTL|D_ID, CS_CTL|S_ID, TYPE|F_CTL, SEQ_ID, DF_CTL, SEQ_CNT, OX_ID, RX_ID, Parameter
_HDR = ">I I I B B H H H I"


class RCtl(enum.IntEnum):
    """R_CTL values used by this model (routing nibble | information category)."""

    FCP_DATA = 0x01  # device data, solicited data
    FCP_CONF = 0x03
    FCP_XFER_RDY = 0x05  # data descriptor
    FCP_CMND = 0x06  # unsolicited command
    FCP_RSP = 0x07  # command status
    ELS_REQ = 0x22
    ELS_REP = 0x23
    FC4_LS_REQ = 0x32
    FC4_LS_REP = 0x33
    BLS_NOP = 0x80
    BLS_ABTS = 0x81
    BLS_RMC = 0x82
    BLS_BA_ACC = 0x84
    BLS_BA_RJT = 0x85
    BLS_PRMT = 0x86


class FcType(enum.IntEnum):
    BLS = 0x00
    ELS = 0x01
    IP = 0x05
    FCP = 0x08
    CT = 0x20
    SW_ILS = 0x22
    NVME = 0x28


class FCtl(enum.IntFlag):
    """F_CTL bits (24-bit field; bit 23 is the MSB of header byte 9)."""

    NONE = 0
    EX_CTX = 0x800000  # sent by the exchange responder
    SEQ_CTX = 0x400000  # sent by the sequence recipient
    FIRST_SEQ = 0x200000
    LAST_SEQ = 0x100000
    END_SEQ = 0x080000
    END_CONN = 0x040000
    PRIORITY = 0x020000  # CS_CTL byte is Priority
    SEQ_INIT = 0x010000  # transfer sequence initiative
    RETX_SEQ = 0x000200
    REL_OFF = 0x000008  # Parameter is a relative offset
    FILL_MASK = 0x000003


FCTL_REQ = FCtl.FIRST_SEQ | FCtl.END_SEQ | FCtl.SEQ_INIT  # 0x290000, Linux FC_FCTL_REQ
FCTL_RESP = FCtl.EX_CTX | FCtl.LAST_SEQ | FCtl.END_SEQ | FCtl.SEQ_INIT  # 0x990000, FC_FCTL_RESP


class DfCtl(enum.IntFlag):
    """DF_CTL: which optional headers follow the frame header, in this order."""

    NONE = 0
    ESP = 0x40  # 8 bytes
    NETWORK = 0x20  # 16 bytes
    ASSOCIATION = 0x10  # 32 bytes
    DEVICE_MASK = 0x03  # 01 = 16, 10 = 32, 11 = 64 bytes


DF_CTL_RESERVED = 0x8C
# Plain-int masks for the per-frame paths: IntFlag operators cost microseconds each on 3.11.
_DF_ESP, _DF_NETWORK = int(DfCtl.ESP), int(DfCtl.NETWORK)
_DF_ASSOC, _DF_DEVICE = int(DfCtl.ASSOCIATION), int(DfCtl.DEVICE_MASK)
_FILL_MASK, _REL_OFF = int(FCtl.FILL_MASK), int(FCtl.REL_OFF)
_DEVICE_HDR_LEN = (0, 16, 32, 64)


def optional_headers_len(df_ctl: int) -> int:
    """Bytes of optional headers that DF_CTL announces at the start of the data field."""
    n = ESP_HEADER_LEN if df_ctl & _DF_ESP else 0
    n += 16 if df_ctl & _DF_NETWORK else 0
    n += 32 if df_ctl & _DF_ASSOC else 0
    return n + _DEVICE_HDR_LEN[df_ctl & _DF_DEVICE]


class Sof(enum.IntEnum):
    """SOF delimiters as the 1-byte codes FCIP/FCoE carry."""

    F = 0x28
    I4 = 0x29
    I2 = 0x2D
    I3 = 0x2E
    N4 = 0x31
    N2 = 0x35
    N3 = 0x36
    C4 = 0x39

    @property
    def ordered_set(self) -> int:
        """The 32-bit ordered set (pcap linktype 225 carries these big-endian)."""
        return _SOF_ORDERED_SET[self]

    @property
    def initiates_sequence(self) -> bool:
        return self in (Sof.I2, Sof.I3, Sof.I4, Sof.F)


class Eof(enum.IntEnum):
    """EOF delimiters as 1-byte codes. RT/DT/DTI/RTI are class 1/4 only (obsolete)."""

    N = 0x41
    T = 0x42
    RT = 0x44
    DT = 0x46
    NI = 0x49
    DTI = 0x4E
    RTI = 0x4F
    A = 0x50

    @property
    def ordered_set(self) -> int:
        """The 32-bit ordered set, negative running disparity form (what Wireshark matches)."""
        try:
            return _EOF_ORDERED_SET[self]
        except KeyError:
            raise FrameError(f"EOF{self.name} has no ordered set in this model") from None


_SOF_ORDERED_SET = {
    Sof.F: 0xBCB55858,
    Sof.I2: 0xBCB55555,
    Sof.N2: 0xBCB53535,
    Sof.I3: 0xBCB55656,
    Sof.N3: 0xBCB53636,
    Sof.I4: 0xBCB55959,
    Sof.N4: 0xBCB53939,
    Sof.C4: 0xBCB51919,
}
_EOF_ORDERED_SET = {Eof.N: 0xBC95D5D5, Eof.T: 0xBC957575, Eof.NI: 0xBC8AD5D5, Eof.A: 0xBC95F5F5}


def fc_crc(data: bytes) -> int:
    """FC CRC-32 over header + data field: the Ethernet CRC (reflected 0x04C11DB7, pre/post-inverted).

    It goes on the wire little-endian (`crc_bytes`), like an Ethernet FCS.
    """
    return zlib.crc32(data) & 0xFFFFFFFF


def crc_bytes(data: bytes) -> bytes:
    return struct.pack("<I", fc_crc(data))


def fill_for(length: int) -> int:
    """Fill bytes that pad a data field of `length` bytes to a word boundary."""
    return -length % 4


@dataclass(frozen=True, kw_only=True)
class FrameHeader:
    """The 24-byte FC frame header. All fields are plain integers (enum members are ints too)."""

    r_ctl: int
    d_id: int
    cs_ctl: int = 0
    s_id: int
    type: int
    f_ctl: int
    seq_id: int = 0
    df_ctl: int = 0
    seq_cnt: int = 0
    ox_id: int = UNASSIGNED_XID
    rx_id: int = UNASSIGNED_XID
    parameter: int = 0

    def __post_init__(self) -> None:
        for name, bits in (
            ("r_ctl", 8),
            ("d_id", 24),
            ("cs_ctl", 8),
            ("s_id", 24),
            ("type", 8),
            ("f_ctl", 24),
            ("seq_id", 8),
            ("df_ctl", 8),
            ("seq_cnt", 16),
            ("ox_id", 16),
            ("rx_id", 16),
            ("parameter", 32),
        ):
            check_uint(name, getattr(self, name), bits, FrameError)

    @property
    def fill(self) -> int:
        return self.f_ctl & _FILL_MASK

    @property
    def relative_offset(self) -> int | None:
        """The Parameter field when F_CTL says it is a relative offset (FCP_DATA), else None."""
        return self.parameter if self.f_ctl & _REL_OFF else None

    def replace(self, **changes: int) -> FrameHeader:
        return dataclasses.replace(self, **changes)

    def with_df_ctl(self, df_ctl: int) -> FrameHeader:
        """This header with another DF_CTL (masked to 8 bits). The ESP stage calls this once per frame;
        replace() would re-validate all twelve fields (about 10 us, half a frame's ESP cost), and the
        other eleven are valid already, so they are copied."""
        new = object.__new__(FrameHeader)
        new.__dict__.update(self.__dict__)
        object.__setattr__(new, "df_ctl", df_ctl & 0xFF)
        return new

    def pack(self) -> bytes:
        return struct.pack(
            _HDR,
            self.r_ctl << 24 | self.d_id,
            self.cs_ctl << 24 | self.s_id,
            self.type << 24 | self.f_ctl,
            self.seq_id,
            self.df_ctl,
            self.seq_cnt,
            self.ox_id,
            self.rx_id,
            self.parameter,
        )

    @classmethod
    def unpack(cls, data: bytes) -> FrameHeader:
        if len(data) < FC_HEADER_LEN:
            raise FrameError(f"FC header: need 24 bytes, have {len(data)}", ErrorReason.FRAME_TOO_SHORT)
        w0, w1, w2, seq_id, df_ctl, seq_cnt, ox_id, rx_id, param = struct.unpack_from(_HDR, data)
        # Every value decoded from 24 bytes is in range by construction, so skip __post_init__'s
        # checks: this runs once per received frame.
        self = object.__new__(cls)
        for name, value in zip(
            _HEADER_FIELDS,
            (w0 >> 24, w0 & 0xFFFFFF, w1 >> 24, w1 & 0xFFFFFF, w2 >> 24, w2 & 0xFFFFFF,
             seq_id, df_ctl, seq_cnt, ox_id, rx_id, param),
            strict=True,
        ):
            object.__setattr__(self, name, value)
        return self


_HEADER_FIELDS = tuple(f.name for f in dataclasses.fields(FrameHeader))


@dataclass(frozen=True)
class Frame:
    """One FC frame: header, data field without fill, and its delimiters (class 3 defaults)."""

    header: FrameHeader
    payload: bytes = b""
    sof: Sof = Sof.I3
    eof: Eof = Eof.T

    def __post_init__(self) -> None:
        if not isinstance(self.header, FrameHeader):
            raise FrameError("header must be a FrameHeader")
        payload = check_bytes("payload", self.payload, FrameError)
        object.__setattr__(self, "payload", payload)
        try:
            if type(self.sof) is not Sof:
                object.__setattr__(self, "sof", Sof(self.sof))
            if type(self.eof) is not Eof:
                object.__setattr__(self, "eof", Eof(self.eof))
        except ValueError as e:
            raise FrameError(f"unknown delimiter: {e}") from None
        fill = fill_for(len(payload))
        if self.header.fill != fill:
            # The fill count is a property of the payload length; keep the header consistent.
            f_ctl = (self.header.f_ctl & ~_FILL_MASK) | fill
            object.__setattr__(self, "header", self.header.replace(f_ctl=f_ctl))
        padded = len(payload) + fill
        if padded > FC_MAX_DATA_FIELD:
            raise FrameError(
                f"data field of {padded} bytes exceeds {FC_MAX_DATA_FIELD}", ErrorReason.FRAME_TOO_LONG
            )
        df_ctl = self.header.df_ctl
        if df_ctl & DF_CTL_RESERVED:
            raise FrameError(f"DF_CTL 0x{df_ctl:02x} sets reserved bits")
        # With ESP, only the ESP_Header itself is in clear; later optional headers are ciphertext.
        need = ESP_HEADER_LEN if df_ctl & _DF_ESP else optional_headers_len(df_ctl)
        if len(payload) < need:
            raise FrameError(f"DF_CTL 0x{df_ctl:02x} announces {need} bytes of optional headers")

    # --- wire form -----------------------------------------------------------------------

    @property
    def wire_header(self) -> FrameHeader:
        """The header as transmitted (F_CTL fill bits already match the payload length)."""
        return self.header

    @property
    def data_field(self) -> bytes:
        return self.payload + bytes(fill_for(len(self.payload)))

    def pack_fc(self) -> bytes:
        """Header + data field: the bytes the FC CRC covers (and ESP's AAD starts with)."""
        return self.wire_header.pack() + self.data_field

    def pack_with_crc(self) -> bytes:
        body = self.pack_fc()
        return body + crc_bytes(body)

    @classmethod
    def unpack_fc(cls, data: bytes, sof: Sof, eof: Eof, *, check_crc: bool = True) -> Frame:
        """Parse header + data field + CRC (the bytes between the delimiters)."""
        if len(data) < FC_HEADER_LEN + FC_CRC_LEN:
            raise FrameError(f"frame of {len(data)} bytes is too short", ErrorReason.FRAME_TOO_SHORT)
        if len(data) % 4:
            raise FrameError("frame is not a whole number of words", ErrorReason.BAD_FRAME_HEADER)
        if len(data) - FC_HEADER_LEN - FC_CRC_LEN > FC_MAX_DATA_FIELD:
            raise FrameError("data field exceeds 2112 bytes", ErrorReason.FRAME_TOO_LONG)
        body, crc = data[:-FC_CRC_LEN], data[-FC_CRC_LEN:]
        if check_crc and crc != crc_bytes(body):
            raise FrameError("FC CRC mismatch", ErrorReason.BAD_CRC)
        header = FrameHeader.unpack(body)
        data_field = body[FC_HEADER_LEN:]
        if header.fill > len(data_field):
            raise FrameError("fill count larger than the data field")
        if header.fill and any(data_field[len(data_field) - header.fill :]):
            raise FrameError("fill bytes are not zero")
        return cls(header, bytes(data_field[: len(data_field) - header.fill]), sof, eof)

    # --- optional headers and the ESP stage ----------------------------------------------

    @property
    def esp(self) -> EspHeader | None:
        """The ESP_Header when DF_CTL 0x40 is set."""
        if not self.header.df_ctl & _DF_ESP:
            return None
        return EspHeader.unpack(self.payload[:ESP_HEADER_LEN])

    @property
    def esp_body(self) -> bytes:
        """What follows the ESP_Header (IV ‖ ciphertext ‖ ICV); for a clear frame, the whole data field."""
        return self.payload[ESP_HEADER_LEN:] if self.header.df_ctl & _DF_ESP else self.payload

    def split_esp(self) -> tuple[EspHeader, bytes]:
        esp = self.esp
        if esp is None:
            raise FrameError("frame has no ESP_Header (DF_CTL 0x40 clear)")
        return esp, self.esp_body

    def with_esp(self, esp: EspHeader, body: bytes) -> Frame:
        """The protected frame: DF_CTL |= ESP and data field = ESP_Header ‖ body. The one builder of
        ESP frames; what `body` holds (IV, ciphertext, ICV) is the SA layer's business."""
        header = self.header.with_df_ctl(self.header.df_ctl | _DF_ESP)
        return Frame(header, esp.pack() + (body if type(body) is bytes else bytes(body)), self.sof, self.eof)

    def without_esp(self, body: bytes) -> Frame:
        """The clear frame after the ESP stage removed protection: DF_CTL ESP bit cleared."""
        header = self.header.with_df_ctl(self.header.df_ctl & ~_DF_ESP)
        return Frame(header, body if type(body) is bytes else bytes(body), self.sof, self.eof)

    @property
    def fc4_payload(self) -> bytes:
        """The FC-4 payload (after all optional headers). Not available while ESP-protected."""
        if self.header.df_ctl & _DF_ESP:
            raise PayloadError("frame is ESP-protected; remove protection first")
        return self.payload[optional_headers_len(self.header.df_ctl) :]

    def replace(self, **changes: object) -> Frame:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
