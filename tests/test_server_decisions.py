"""Pure decisions of the server: device, dtype, advertised address, info contents, shutdown tracking."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from wyoming_lina.server.discovery import (
    DiscoveryError,
    choose_advertised_host,
    detect_ipv4,
    listen_address_warning,
    port_of,
)
from wyoming_lina.server.healthcheck import DEFAULT_URI, URI_FILE_ENV, connectable, publish_uri, published_uri
from wyoming_lina.server.info import InfoBuilder
from wyoming_lina.server.options import RuntimeConfigError, advertised_address_problem
from wyoming_lina.server.runtime import choose_device, choose_dtype, max_frames_for
from wyoming_lina.server.tracking import RequestTracker
from wyoming_lina.voices.voice import VoiceInfo


# --- device and dtype ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "requested, available, count, expected",
    [
        ("auto", True, 1, "cuda"),
        ("auto", False, 0, "cpu"),
        ("cpu", True, 1, "cpu"),
        ("cuda", True, 1, "cuda"),
        ("cuda:1", True, 2, "cuda:1"),
    ],
)
def test_choose_device(requested, available, count, expected):
    assert choose_device(requested, cuda_available=available, cuda_count=count) == expected


@pytest.mark.parametrize("requested, count", [("cuda", 0), ("cuda:0", 0), ("cuda:2", 2)])
def test_choose_device_refuses_what_is_not_there(requested, count):
    with pytest.raises(RuntimeConfigError, match="CUDA|cuda"):
        choose_device(requested, cuda_available=count > 0, cuda_count=count)


@pytest.mark.parametrize(
    "requested, device, expected",
    [
        ("auto", "cuda", "bfloat16"),
        ("auto", "cuda:1", "bfloat16"),
        ("auto", "cpu", "float32"),
        ("float32", "cuda", "float32"),
    ],
)
def test_choose_dtype(requested, device, expected):
    assert choose_dtype(requested, device) == expected


def test_bfloat16_needs_cuda():
    with pytest.raises(RuntimeConfigError, match="CUDA"):
        choose_dtype("bfloat16", "cpu")


def test_max_frames_for_seconds():
    assert max_frames_for(60.0) == 4500 and max_frames_for(0.4) == 30 and max_frames_for(0.001) == 1


# --- zeroconf address ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "host, ok",
    [
        ("192.168.1.20", True),
        ("10.0.0.5", True),
        ("127.0.0.1", True),  # explicit loopback is allowed (HA on the same host)
        ("0.0.0.0", False),
        ("169.254.3.4", False),
        ("224.0.0.251", False),
        ("fe80::1", False),
        ("homeassistant.local", False),
    ],
)
def test_advertised_address_problem(host, ok):
    assert (advertised_address_problem(host) is None) == ok


def test_explicit_host_wins_when_usable():
    assert choose_advertised_host("192.168.1.9", ["10.1.1.1"]) == "192.168.1.9"
    with pytest.raises(DiscoveryError, match="0.0.0.0"):
        choose_advertised_host("0.0.0.0", ["10.1.1.1"])


def test_detected_host_skips_unusable_and_loopback():
    assert choose_advertised_host(None, ["169.254.1.1", "127.0.0.1", "192.168.0.7"]) == "192.168.0.7"
    with pytest.raises(DiscoveryError, match="--zeroconf-host"):
        choose_advertised_host(None, ["127.0.0.1", "169.254.1.1"])
    with pytest.raises(DiscoveryError):
        choose_advertised_host(None, [])


def test_detect_ipv4_returns_ipv4_addresses():
    for address in detect_ipv4():  # a UDP "connect" only picks a route: nothing is sent
        assert ipaddress.ip_address(address).version == 4
    assert detect_ipv4(("not-an-address",)) == []


def test_port_of_uri():
    assert port_of("tcp://0.0.0.0:10200") == 10200
    with pytest.raises(DiscoveryError):
        port_of("tcp://0.0.0.0")


@pytest.mark.parametrize(
    "uri, advertised, warned",
    [
        ("tcp://0.0.0.0:10200", "192.168.1.20", None),
        ("tcp://192.168.1.20:10200", "192.168.1.20", None),
        ("tcp://127.0.0.1:10200", "192.168.1.20", "loopback"),
        ("tcp://localhost:10200", "192.168.1.20", "loopback"),
        ("tcp://[::1]:10200", "192.168.1.20", "loopback"),
        ("tcp://10.0.0.5:10200", "192.168.1.20", "listens only on 10.0.0.5"),
    ],
)
def test_zeroconf_warns_when_clients_could_not_connect(uri, advertised, warned):
    warning = listen_address_warning(uri, advertised)
    assert (warning is None) if warned is None else (warned in warning and advertised in warning)


# --- health check -------------------------------------------------------------------------------
def test_health_check_asks_where_the_server_published_it_listens(tmp_path, monkeypatch):
    monkeypatch.delenv(URI_FILE_ENV, raising=False)
    publish_uri("tcp://0.0.0.0:10300")  # not asked to publish: nothing written, the default asked
    assert published_uri() == DEFAULT_URI
    monkeypatch.setenv(URI_FILE_ENV, str(tmp_path / "uri"))
    assert published_uri() == DEFAULT_URI  # not published yet
    publish_uri("tcp://0.0.0.0:10300")
    assert published_uri() == "tcp://127.0.0.1:10300"
    publish_uri("unix:///run/lina.sock")
    assert published_uri() == "unix:///run/lina.sock"
    assert connectable("tcp://[::]:10200") == "tcp://[::1]:10200"
    assert connectable("tcp://192.168.1.20:10200") == "tcp://192.168.1.20:10200"


# --- info -----------------------------------------------------------------------------------------
def test_info_lists_every_voice_with_a_language_each_time():
    voices = [VoiceInfo("alice", "Alice", ("en",)), VoiceInfo("bob", "", (), installed=False)]
    calls = []
    builder = InfoBuilder(lambda: calls.append(1) or list(voices), streaming=True, version="9.9")
    info = builder.build()
    voices.append(VoiceInfo("carol", "Carol", ("en", "fr")))
    info2 = builder.build()
    assert len(calls) == 2  # re-read on every describe
    (program,) = info.tts
    assert program.name == "lina" and program.installed and program.supports_synthesize_streaming
    assert program.version == "9.9" and program.attribution.url.startswith("https://")
    assert "WavTokenizer" in program.attribution.name
    by_name = {v.name: v for v in info2.tts[0].voices}
    assert set(by_name) == {"alice", "bob", "carol"}
    assert by_name["bob"].languages == ["en"] and not by_name["bob"].installed  # never an empty list
    assert by_name["bob"].description == "bob"  # HA shows the description
    assert by_name["carol"].languages == ["en", "fr"]
    # the wire form round-trips through wyoming's own parser (all required fields present)
    from wyoming.info import Info

    assert Info.from_event(info2.event()).tts[0].voices[2].name == "carol"


def test_info_without_streaming():
    assert InfoBuilder(lambda: [], streaming=False).build().tts[0].supports_synthesize_streaming is False


# --- shutdown tracking ----------------------------------------------------------------------------
async def test_request_tracker_waits_for_the_last_request():
    tracker = RequestTracker()
    await asyncio.wait_for(tracker.wait_idle(), 0.1)  # idle at first
    tracker.begin()
    tracker.begin()
    waiter = asyncio.create_task(tracker.wait_idle())
    tracker.end()
    await asyncio.sleep(0.01)
    assert not waiter.done() and tracker.active == 1
    tracker.end()
    await asyncio.wait_for(waiter, 0.1)
