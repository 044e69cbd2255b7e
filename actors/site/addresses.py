"""The address a Director's worker pools reach its interchange at.

Chosen here, never by Parsl: with ``address=None`` Parsl lists every address
it can find, including one from ``address_by_query`` (an HTTPS request to
api.ipify.org), and the interchange binds every interface. A compute node
that drops outbound traffic then stalls each Director's start by up to 30 s,
and a request leaves the job from inside it. The choice, in order:

1. ``127.0.0.1`` on a simulated job (everything on this machine);
2. the address of the profile's ``interface`` (``ip -br addr`` lists them);
3. the address this host's own name resolves to (``/etc/hosts`` or the
   job's resolver), unless that is loopback;
4. the host's only non-loopback IPv4 address;
5. loopback, if the host has no other (a one-host job).

More than one candidate and no answer from 1-3 is an error that asks for
``interface``: guessing would bind the interchange where pools cannot reach it.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

import psutil
from parsl.addresses import address_by_interface

from actors.common.errors import ConfigurationError
from actors.site.profile import SiteProfile

logger = logging.getLogger(__name__)

LOOPBACK = '127.0.0.1'


def worker_address(profile: SiteProfile) -> str:
    """Address the worker pools use to reach this Director's interchange (which binds it).

    Raises:
        ConfigurationError: If the profile names an interface this host lacks,
            or the host has several addresses and nothing says which.

    """
    if profile.scheduler == 'none' and not profile.interface:
        return LOOPBACK
    if profile.interface:
        try:
            return address_by_interface(profile.interface)
        except OSError:
            raise ConfigurationError(
                f'site {profile.name!r}: network interface {profile.interface!r} does not '
                f'exist on this host; set `interface` in its site.toml to one of: '
                f'{", ".join(sorted(interface_addresses())) or "(none)"}',
            ) from None
    named = hostname_address()
    if named is not None:
        return named
    others = interface_addresses()
    if len(set(others.values())) == 1:
        return next(iter(others.values()))
    if not others:
        logger.warning(
            'site %s: this host has no address but loopback; worker pools on other hosts '
            'cannot reach it',
            profile.name,
        )
        return LOOPBACK
    listed = ', '.join(f'{name} ({address})' for name, address in sorted(others.items()))
    raise ConfigurationError(
        f'site {profile.name!r}: cannot tell which address worker pools reach this host at: '
        f'its name {socket.gethostname()!r} resolves to loopback and it has several '
        f'interfaces: {listed}; set `interface` in configs/{profile.name}/site.toml',
    )


def hostname_address() -> str | None:
    """The non-loopback IPv4 address this host's own name resolves to, if any."""
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        return None
    for info in infos:
        address = str(info[4][0])
        if not ipaddress.ip_address(address).is_loopback:
            return address
    return None


def interface_addresses() -> dict[str, str]:
    """Each network interface with a non-loopback IPv4 address -> that address."""
    found: dict[str, str] = {}
    for name, addresses in psutil.net_if_addrs().items():
        for address in addresses:
            if (
                address.family == socket.AF_INET
                and not ipaddress.ip_address(address.address).is_loopback
            ):
                found.setdefault(name, address.address)
    return found
