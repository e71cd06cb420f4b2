"""Zeroconf (mDNS) advertising for Home Assistant's discovery (``_wyoming._tcp.local.``).

Home Assistant ignores records with 0.0.0.0 or link-local addresses, so the advertised
address is never the bind address: it is ``--zeroconf-host`` or the address of the
interface that would carry mDNS traffic, found by connecting a UDP socket (which sends
nothing) and reading its local address.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from urllib.parse import urlparse

from .options import advertised_address_problem

_LOGGER = logging.getLogger(__name__)
SERVICE_TYPE = "_wyoming._tcp.local."
_PROBE_TARGETS = ("224.0.0.251", "10.255.255.255", "192.0.2.1")  # mDNS group, then unicast fallbacks


class DiscoveryError(RuntimeError):
    pass


def detect_ipv4(targets: tuple[str, ...] = _PROBE_TARGETS) -> list[str]:
    """Local IPv4 addresses the kernel would send from, one per probe target (no traffic is sent)."""
    found = []
    for target in targets:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect((target, 5353))
                address = sock.getsockname()[0]
            except OSError:
                continue
        if address not in found:
            found.append(address)
    return found


def choose_advertised_host(explicit: str | None, detected: list[str]) -> str:
    """The address to put in the zeroconf record (pure: detection is passed in).

    An explicit host wins when usable; otherwise the first detected address that Home Assistant
    can use. Loopback is never chosen automatically (only this machine could reach it).
    """
    if explicit is not None:
        problem = advertised_address_problem(explicit)
        if problem:
            raise DiscoveryError(f"cannot advertise {explicit}: {problem}")
        return explicit
    usable = [a for a in detected if advertised_address_problem(a) is None]
    routable = [a for a in usable if not a.startswith("127.")]
    if routable:
        return routable[0]
    raise DiscoveryError(
        "found no routable IPv4 address to advertise over zeroconf "
        f"(detected: {', '.join(detected) or 'none'}); pass --zeroconf-host with this machine's LAN address"
    )


def listen_address_warning(uri: str, advertised: str) -> str | None:
    """Why Home Assistant could not connect to the address the record advertises, given where
    the server listens (None when it can: the bind-all address, or the advertised one)."""
    host = urlparse(uri).hostname
    if host in (None, "", "0.0.0.0", "::"):
        return None
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return None  # a host name: cannot tell here
    if loopback:
        return (
            f"--zeroconf advertises {advertised} but --uri {uri} listens on loopback, which only this "
            "machine can reach: Home Assistant elsewhere will find the server and fail to connect "
            "(listen on tcp://0.0.0.0:PORT or the LAN address)"
        )
    if host != advertised:
        return f"--zeroconf advertises {advertised} but --uri {uri} listens only on {host}: Home Assistant will fail to connect"
    return None


def port_of(uri: str) -> int:
    port = urlparse(uri).port
    if port is None:
        raise DiscoveryError(f"--uri {uri} has no port to advertise")
    return port


class ZeroconfAdvertiser:
    """Registers one ``_wyoming._tcp`` service; ``close`` withdraws it."""

    def __init__(self, name: str, host: str, port: int):
        self.name = name
        self.host = host
        self.port = port
        self._zeroconf = None
        self._info = None

    async def start(self) -> None:
        from zeroconf import IPVersion
        from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

        self._info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{self.name}.{SERVICE_TYPE}",
            addresses=[socket.inet_aton(self.host)],
            port=self.port,
        )
        self._zeroconf = AsyncZeroconf(ip_version=IPVersion.V4Only)
        await self._zeroconf.async_register_service(self._info, allow_name_change=True)
        _LOGGER.info("zeroconf: advertising %s at %s:%d", self._info.name, self.host, self.port)

    async def close(self) -> None:
        if self._zeroconf is not None:
            try:
                await self._zeroconf.async_unregister_all_services()
            finally:
                await self._zeroconf.async_close()
                self._zeroconf = None
