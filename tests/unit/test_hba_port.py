"""The HBA edge's pure parts: config validation, bounded backoff with jitter, REPORT LUNS parsing,
and a port stopped with commands queued (they complete, never hang)."""

from __future__ import annotations

import asyncio

import pytest

from edifd.hba import SENSE_TARGET_GONE, Hba, HbaError, InitiatorPort, PortConfig, Timers, parse_report_luns
from edifd.scsi import ScsiCommand, cdb, report_luns_data

CFG = PortConfig("p0", 0x2100000000000001, 0x2000000000000001, ("127.0.0.1", 9))


@pytest.mark.parametrize("jitter", [0.0, 0.5, 1.0])
def test_backoff_is_exponential_bounded_and_jittered(jitter: float) -> None:
    t = Timers(backoff_initial=0.1, backoff_max=2.0)
    port = InitiatorPort(CFG, t, jitter=lambda: jitter)
    delays = [port._backoff(n) for n in range(1, 40)]
    scale = 0.5 + 0.5 * jitter
    assert delays[:3] == pytest.approx([0.1 * scale, 0.2 * scale, 0.4 * scale])
    assert max(delays) == pytest.approx(2.0 * scale) and all(d > 0 for d in delays)


@pytest.mark.parametrize("kw", [{"io_timeout": 0}, {"backoff_initial": 3.0, "backoff_max": 1.0},
                                {"login_timeout": -1}])
def test_timers_validation(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Timers(**kw)


@pytest.mark.parametrize("kw", [{"wwpn": 0}, {"wwnn": 1 << 64}, {"target": ("", 1)}, {"target": ("h", 0)}])
def test_port_config_validation(kw: dict[str, object]) -> None:
    base = {"name": "p", "wwpn": 1, "wwnn": 2, "target": ("h", 1)}
    with pytest.raises(ValueError):
        PortConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_hba_refuses_duplicate_ports() -> None:
    with pytest.raises(ValueError):
        Hba([CFG, CFG])


def test_parse_report_luns() -> None:
    assert parse_report_luns(report_luns_data([0, 3, 300], 4096)) == [0, 3, 300]
    assert parse_report_luns(report_luns_data([1, 2], 16)) == [1]  # truncated by the allocation length
    with pytest.raises(HbaError):
        parse_report_luns(b"\0\0")
    with pytest.raises(HbaError):
        parse_report_luns(bytes.fromhex("00000008 00000000 c000000000000000"))


def test_stop_completes_queued_commands() -> None:
    async def body() -> list[object]:
        port = InitiatorPort(CFG, Timers(io_timeout=60, backoff_initial=5.0, backoff_max=5.0))
        port.start()
        got: list[object] = []
        port.submit(0, ScsiCommand(cdb.read(0, 1), data_in_len=512), got.append)
        await port.stop()
        return got

    (resp,) = asyncio.run(asyncio.wait_for(body(), 10))
    assert resp.sense == SENSE_TARGET_GONE and resp.data == bytes(512)  # type: ignore[attr-defined]


def test_stop_while_the_connection_completes_does_not_hang(monkeypatch) -> None:
    """stop() can cancel _run just as its connection completes; Python 3.11's wait_for then returns the
    connection instead of raising. The port must not bring that link up (its read loop would keep stop()
    waiting until the peer hangs up): it closes the connection and ends. Played without timing luck:
    the fake connect marks the port stopping before it returns, as the racing stop() would."""

    async def body() -> tuple[bool, bool, int]:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        host, tcp = server.sockets[0].getsockname()[:2]
        port = InitiatorPort(PortConfig("p0", 0x2100000000000001, 0x2000000000000001, (host, tcp)), Timers())
        real_open = asyncio.open_connection
        opened: list[asyncio.StreamWriter] = []

        async def racing_open(h: str, p: int):
            reader, writer = await real_open(h, p)
            opened.append(writer)
            port._stopping = True  # stop() has begun while the connect completed
            return reader, writer

        monkeypatch.setattr(asyncio, "open_connection", racing_open)
        port.start()
        await asyncio.wait_for(port._task, 5.0)  # ends on its own, without a cancel
        server.close()
        return port._link is None, opened[0].is_closing(), port.counters.connects

    no_link, closed, connects = asyncio.run(body())
    assert no_link and closed and connects == 0
