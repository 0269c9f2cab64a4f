"""Outbound HTTP to addresses a caller chose (DSR callback URLs, downstream deletion webhooks,
any future destination), without becoming a proxy into the service's own network (SSRF).

Three checks, in this order, and why each:

1. **At submission / configuration** (:meth:`OutboundPolicy.check_url`): an absolute URL, https
   only unless http is allowed (never in production), no credentials, the host on the
   allowlist when one is set, and a literal IP address that is not internal. That is a 422 for
   a caller and a startup error for configuration: refused before it is stored.
2. **At delivery, after DNS resolution** (:meth:`OutboundPolicy.resolve`): a public name can
   resolve to 127.0.0.1 or to the cloud metadata address; every resolved address must be
   public, otherwise nothing is sent.
3. **Pinned connection** (:class:`PinnedWebhookSender`): the connection goes to the address that
   was checked, not to a second lookup (DNS rebinding answers the check with a public address
   and the connection with an internal one). TLS still verifies the certificate for the host
   name, and redirects are never followed (a 3xx is a failed attempt: following it would send
   the signed body to a host nobody registered, possibly an internal one).

Refused: loopback, private (RFC 1918, ULA), link-local, shared (CGNAT), multicast, unspecified,
reserved and documentation ranges, IPv4-mapped forms of these, and the cloud metadata
addresses. ``allow_private`` (for receivers inside the same private network, and for tests with
a local listener) lets loopback, private and link-local through, **never** the metadata
addresses, multicast or the unspecified address.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance metadata services (AWS/GCP/Azure/OpenStack, AWS IPv6, Alibaba, Oracle): credentials
# live there; refused even when private networks are allowed.
METADATA_ADDRESSES: Final = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)
MAX_URL_LENGTH: Final = 2048


class DestinationRefusedError(OSError):
    """The destination resolves to an address outbound requests may not reach.

    An :class:`OSError` so that every sender failure is handled alike; its message names no
    address (the delivery record must not tell a caller what a host resolves to).
    """


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """Where outbound requests may go; built from settings by the wiring code."""

    allow_http: bool = False
    allowed_hosts: tuple[str, ...] = ()  # host names, or ``*.example.com``; empty: any public
    allow_private: bool = False

    def address_allowed(self, address: IpAddress) -> bool:
        """Whether a connection to ``address`` is allowed (see the module docstring)."""
        mapped = getattr(address, "ipv4_mapped", None)
        ip: IpAddress = mapped if mapped is not None else address
        if ip in METADATA_ADDRESSES or ip.is_multicast or ip.is_unspecified:
            return False
        if ip.is_global:
            return True
        return self.allow_private and (ip.is_private or ip.is_loopback or ip.is_link_local)

    def host_allowed(self, host: str) -> bool:
        """Whether ``host`` (lower case) is on the allowlist (always, without one)."""
        if not self.allowed_hosts:
            return True
        for pattern in self.allowed_hosts:
            if pattern.startswith("*."):
                if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                    return True
            elif host == pattern:
                return True
        return False

    def check_url(self, url: str, what: str) -> str:
        """``url`` if it may be stored as a destination; :class:`ValueError` saying why not.

        The message names the rule, never the resolved address.
        """
        parts = urlsplit(url)
        schemes = ("https", "http") if self.allow_http else ("https",)
        if parts.scheme not in schemes or not parts.hostname or len(url) > MAX_URL_LENGTH:
            shown = " or ".join(schemes)
            raise ValueError(
                f"{what} must be an absolute {shown} URL of at most {MAX_URL_LENGTH} characters"
            )
        if parts.username or parts.password:
            raise ValueError(f"{what} must not carry credentials")
        try:
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError:
            raise ValueError(f"{what} has an invalid port") from None
        host = parts.hostname.lower()
        if not self.host_allowed(host):
            raise ValueError(f"{what} is not on the allowed hosts (IDGRAPH_OUTBOUND_ALLOWED_HOSTS)")
        literal = _literal_address(host)
        if literal is not None and not self.address_allowed(literal):
            raise ValueError(
                f"{what} must not point to a loopback, private, link-local, multicast or "
                "metadata address"
            )
        return url

    def resolve(self, host: str, port: int) -> IpAddress:
        """The first address of ``host`` after checking **every** address it resolves to.

        Raises :class:`DestinationRefusedError` when any is refused (a name with one public and
        one internal address is refused: the client would pick either) and :class:`OSError`
        when the name does not resolve.
        """
        if not self.host_allowed(host.lower()):
            raise DestinationRefusedError("destination host not allowed")
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        if not addresses:
            raise OSError("destination did not resolve")
        if not all(self.address_allowed(a) for a in addresses):
            raise DestinationRefusedError("destination address not allowed")
        return addresses[0]


def _literal_address(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class _PinnedHttpConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: IpAddress, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        # To the checked address, not to a fresh lookup of self.host (no rebinding window).
        self.sock = socket.create_connection((str(self._address), self.port), self.timeout)


class _PinnedHttpsConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: IpAddress, timeout: float) -> None:
        self._tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self._tls)
        self._address = address

    def connect(self) -> None:
        raw = socket.create_connection((str(self._address), self.port), self.timeout)
        # The certificate is verified for the host name, as if we had connected by name.
        self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)


class PinnedWebhookSender:
    """POSTs to a checked, pinned address; never follows redirects; any status is returned.

    Implements :class:`privacy.dsr.delivery.WebhookSender`.
    """

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy

    def __call__(self, url: str, headers: Mapping[str, str], body: bytes, timeout: float) -> int:
        """POST ``body``; :class:`DestinationRefusedError` before connecting to a refused
        address, :class:`OSError` without an HTTP answer."""
        try:
            self.policy.check_url(url, "destination")
        except ValueError:
            raise DestinationRefusedError("destination URL not allowed") from None
        parts = urlsplit(url)
        host = parts.hostname or ""
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        address = self.policy.resolve(host, port)
        factory = _PinnedHttpsConnection if https else _PinnedHttpConnection
        connection = factory(host, port, address, timeout)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        try:
            connection.request("POST", target, body=body, headers=dict(headers))
            response = connection.getresponse()
            response.read(65_536)  # the body is not used; read a bounded part to reuse nothing
            return int(response.status)
        except http.client.HTTPException as exc:
            raise OSError("no valid HTTP answer") from exc
        finally:
            connection.close()


def allowed_hosts(patterns: Sequence[str]) -> tuple[str, ...]:
    """Normalized allowlist entries (lower case); :class:`ValueError` for a malformed one."""
    out = []
    for pattern in patterns:
        entry = pattern.strip().lower()
        bare = entry[2:] if entry.startswith("*.") else entry
        if not bare or "*" in bare or "/" in bare or ":" in bare:
            raise ValueError(f"allowed host {pattern!r} must be a host name or *.domain")
        out.append(entry)
    return tuple(out)
