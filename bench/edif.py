"""ESP frame-protection throughput, measured in-process at the frame-transform level.

For 1 MiB of I/O (512 FCP_DATA frames of 2048 bytes) it times, in the same run:
- plaintext: the frames through an identity transform (outbound + inbound), the baseline;
- encrypted: the frames through EspTransform.outbound on one session and .inbound on its peer;
- both again with the FC wire codec in the loop (pack_with_crc + unpack_fc), which is what a
  link does per frame anyway and makes the plaintext baseline less of a no-op;
- the AES-GCM ceiling of this CPU: AESGCM encrypt + decrypt of 2048-byte buffers, nothing else
  (for GMAC ciphers: tag + verify over the same bytes as AAD).
Each figure is the best of --repeat runs (MB = 10^6 bytes). The final line is JSON.

`hba_target_loopback()` is the hook for the HBA <-> target figure over a TCP loopback link; it
returns None until edifd/hba and edifd/target can be driven from here.

    python3 bench/edif.py [--repeat 7] [--cipher AES_GCM_128 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import struct
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cryptography  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from edifd.edif import EspTransform, SaDatabase  # noqa: E402
from edifd.fc import FcpCmnd, Frame, fcp_cmnd_frame, fcp_data_frames  # noqa: E402
from edifd.proto import Cipher, SaDirection  # noqa: E402

MIB = 1 << 20
FRAME = 2048
SPI = 0x0001_0001


class _Identity:
    """The plaintext data path (the HBA's IdentityTransform has the same two methods)."""

    def outbound(self, frame: Frame) -> Frame:
        return frame

    def inbound(self, frame: Frame) -> Frame | None:
        return frame


def one_mib_of_frames() -> list[Frame]:
    cmnd = fcp_cmnd_frame(s_id=0x010101, d_id=0x010102, ox_id=1,
                          cmnd=FcpCmnd(lun=bytes(8), cdb=bytes([0x28]) + bytes(15), dl=MIB, read=True))
    return fcp_data_frames(cmnd, os.urandom(MIB), from_target=True, rx_id=0x100, seq_id=1)


def esp_pair(cipher: Cipher) -> tuple[EspTransform, EspTransform]:
    key, salt = os.urandom(cipher.key_size), os.urandom(4)
    tx, rx = EspTransform(SaDatabase()), EspTransform(SaDatabase())
    tx.sadb.install(SaDirection.TX, SPI, cipher, key, salt)
    rx.sadb.install(SaDirection.RX, SPI, cipher, key, salt)
    return tx, rx


def best_seconds(run: Callable[[], None], repeat: int) -> float:
    run()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


def transform_run(tx: object, rx: object, frames: list[Frame], codec: bool) -> Callable[[], None]:
    out, inn = tx.outbound, rx.inbound  # type: ignore[attr-defined]

    def run() -> None:
        for f in frames:
            p = out(f)
            if codec:
                p = Frame.unpack_fc(p.pack_with_crc(), p.sof, p.eof)
            if inn(p) is None:
                raise RuntimeError("a frame was dropped during the benchmark")

    return run


def aesgcm_run(key_size: int, n: int, gmac: bool) -> Callable[[], None]:
    """The ceiling: seal + open of n 2048-byte buffers with a 32-byte AAD, unique nonces, nothing
    else. GMAC: the same bytes as AAD with an empty plaintext (what a GMAC SA asks of AES-GCM)."""
    aead = AESGCM(os.urandom(key_size))
    salt, buf, aad = os.urandom(4), os.urandom(FRAME), os.urandom(32)
    counter = [0]

    def run() -> None:
        c = counter[0]
        for i in range(c, c + n):
            nonce = salt + struct.pack(">Q", i)
            if gmac:
                aead.decrypt(nonce, aead.encrypt(nonce, b"", aad + buf), aad + buf)
            else:
                aead.decrypt(nonce, aead.encrypt(nonce, buf, aad), aad)
        counter[0] = c + n

    return run


def hba_target_loopback(mib: int = 1) -> dict[str, float] | None:
    """MB/s of `mib` MiB reads/writes HBA <-> target over TCP loopback, encrypted and plaintext.

    For the lead to fill in once the HBA link and the target model are runnable in-process;
    until then it reports nothing and the JSON carries null.
    """
    return None


def mb_s(seconds: float, nbytes: int = MIB) -> float:
    return round(nbytes / seconds / 1e6, 1)


def measure(cipher: Cipher, frames: list[Frame], repeat: int) -> dict[str, float]:
    """All figures for one cipher; t_* are best-of-repeat seconds per MiB."""
    t_plain = best_seconds(transform_run(_Identity(), _Identity(), frames, False), repeat)
    t_plain_codec = best_seconds(transform_run(_Identity(), _Identity(), frames, True), repeat)
    t_enc = best_seconds(transform_run(*esp_pair(cipher), frames, False), repeat)
    t_enc_codec = best_seconds(transform_run(*esp_pair(cipher), frames, True), repeat)
    gmac = cipher in (Cipher.AES_GMAC_128, Cipher.AES_GMAC_256)
    t_ceiling = best_seconds(aesgcm_run(cipher.key_size, len(frames), gmac), repeat)
    return {
        "plaintext_mb_s": mb_s(t_plain),
        "encrypted_mb_s": mb_s(t_enc),
        "ratio_encrypted_to_plaintext": round(t_plain / t_enc, 5),  # encrypted MB/s / plaintext MB/s
        "plaintext_with_codec_mb_s": mb_s(t_plain_codec),
        "encrypted_with_codec_mb_s": mb_s(t_enc_codec),
        "ratio_with_codec": round(t_plain_codec / t_enc_codec, 4),  # the same, codec in both loops
        "aesgcm_ceiling_mb_s": mb_s(t_ceiling),
        "encrypted_share_of_ceiling": round(t_ceiling / t_enc, 4),  # encrypted MB/s / AES-GCM ceiling
        "esp_us_per_frame_round_trip": round(t_enc / len(frames) * 1e6, 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--cipher", action="append", choices=[c.name for c in Cipher])
    args = ap.parse_args(argv)
    ciphers = [Cipher[c] for c in args.cipher] if args.cipher else list(Cipher)
    frames = one_mib_of_frames()
    assert len(frames) == MIB // FRAME and all(len(f.payload) == FRAME for f in frames)
    results: dict[str, dict[str, float]] = {}
    for cipher in ciphers:
        r = results[cipher.name] = measure(cipher, frames, args.repeat)
        print(f"{cipher.name:13} encrypted {r['encrypted_mb_s']:6.1f} MB/s"
              f" = {r['ratio_encrypted_to_plaintext']:.4f} x plaintext ({r['plaintext_mb_s']:.0f});"
              f" with codec {r['encrypted_with_codec_mb_s']:.1f} = {r['ratio_with_codec']:.3f}"
              f" x {r['plaintext_with_codec_mb_s']:.1f}; AES-GCM ceiling {r['aesgcm_ceiling_mb_s']:.0f} MB/s;"
              f" {r['esp_us_per_frame_round_trip']:.1f} us/frame")
    summary = {
        "bench": "edif",
        "io_bytes": MIB,
        "frame_bytes": FRAME,
        "frames": len(frames),
        "repeat": args.repeat,
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "cpu_count": os.cpu_count(),
        "results": results,
        "hba_target_loopback": hba_target_loopback(),
    }
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
