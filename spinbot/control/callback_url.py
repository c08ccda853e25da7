"""Which URLs a job may name as its webhook (callback_url), checked at submission and again before each delivery.

The URL comes from an API client, and the control plane calls it from inside the deployment: a server-side request
forgery if it may name an internal service (a database, the cloud's metadata at 169.254.169.254). So:
- http and https only, printable ASCII (an international name in its xn-- form), at most
  SPINBOT_CALLBACK_MAX_URL_CHARS, no user:password@ (credentials would be stored and shown), no port past 65535;
- a host whose last label is a number is an IPv4 address and must be written in the usual dotted form: 2130706433,
  0x7f.1, 0177.0.0.1 and 127.1 (which C's inet_aton, so getaddrinfo, reads as 127.0.0.1) are refused as written;
  `localhost` and names under `.localhost` are loopback by name; one trailing dot is dropped (`example.com.`);
- every address the name resolves to must be public (`refusal` below: not loopback, private, shared, link-local,
  multicast, reserved or unspecified, and an IPv6 address carrying an IPv4 one, IPv4-mapped, 6to4, Teredo or NAT64's
  64:ff9b::/96, is judged by the IPv4 address it carries; local-use NAT64, 64:ff9b:1::/48, is private), unless
  SPINBOT_CALLBACK_ALLOW_PRIVATE (loopback and private networks) or SPINBOT_CALLBACK_ALLOW_HOSTS (names, addresses,
  networks) lets it through;
- the name is resolved once per attempt, and the request goes to the address that was checked (`Target.address`),
  with the name in the Host header and TLS's SNI and certificate check: no second lookup that a short-lived DNS
  answer could point at another address (DNS rebinding).
A refusal never says which address a name resolved to, nor tells a name that does not resolve from one that resolves
to an address not allowed: the answer is no oracle of the internal network.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from spinbot.errors import InputError, echo, shorten

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]

DEFAULT_PORTS = {"http": 80, "https": 443}
PRINTABLE = re.compile(r"[\x21-\x7e]+")
LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")  # the WHATWG URL standard's IPv4 number forms
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # the well-known prefix: the IPv4 address is the last 32 bits
# RFC 8215's local-use NAT64 prefix: not global, and the IPv4 address sits where the network's own prefix length puts
# it (RFC 6052: bits 48-87, less the u octet, for a /48), so no one place to judge it by; private, as IANA lists it
LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
# The kinds SPINBOT_CALLBACK_ALLOW_PRIVATE lets through; link-local (cloud metadata) only an allow-list entry does.
PRIVATE_KINDS = ("loopback", "private")
# A lookup runs in its own thread, which a name whose DNS never answers holds past the lookup's time limit (glibc: 5 s
# per try, two tries per server): a shared pool of 4 threads that 4 such names of one client held refused every other
# client's names for as long. So each API key (job owner) has at most this many lookups running, its slow ones too.
MAX_LOOKUPS_PER_OWNER = 4
_lookups_lock = threading.Lock()
_lookups_running: dict[str | None, int] = {}


class CallbackRefused(InputError):
    """A callback URL that no job may name (400 at submission; a delivery's permanent failure later)."""

    transient = False  # whether a later attempt may see it otherwise


class Unresolved(CallbackRefused):
    """A name that did not resolve (in time): refused at submission, tried again at delivery."""

    transient = True


@dataclass(frozen=True)
class ParsedUrl:
    scheme: str  # http or https
    host: str  # lower case, no trailing dot; an IPv6 address without its brackets
    port: int
    target: str  # the path and query, as given ("/" for none); the fragment is not sent

    @property
    def authority(self) -> str:
        """The Host header, and what logs and the job show: the host, and the port where it is not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


@dataclass(frozen=True)
class Target:
    url: ParsedUrl
    address: str  # the checked address the request goes to

    @property
    def request_url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.url.scheme}://{host}:{self.url.port}{self.url.target}"


def parse_callback_url(url: str, max_chars: int) -> ParsedUrl:
    """The URL's parts, or CallbackRefused for a URL no job may name (before any lookup)."""
    if len(url) > max_chars:
        raise CallbackRefused(f"callback_url: longer than {max_chars} characters (SPINBOT_CALLBACK_MAX_URL_CHARS)")
    if not PRINTABLE.fullmatch(url) or "\\" in url:
        raise CallbackRefused(
            "callback_url: printable ASCII only, no spaces or backslashes (an international name in its xn-- form, "
            "other characters percent-encoded)"
        )
    try:
        parts = urlsplit(url)
    except ValueError:  # a bracketed host that is no IP address (http://[x]/): urlsplit checks it itself
        raise CallbackRefused("callback_url: the host in [ ] is no IPv6 address") from None
    # These two name the part that is wrong, not the URL: the API takes URLs and paths out of the errors it sends
    # (spinbot.api.public_errors), which made them 'not <internal address>' and 'not /hook'.
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        given = f"{echo(scheme)} ones" if scheme else "one without a scheme"
        raise CallbackRefused(f"callback_url: only http and https URLs can be called, not {given}")
    if "@" in parts.netloc:
        raise CallbackRefused("callback_url: credentials in the URL (user:password@) are refused; verify the signature")
    host, port = _host_and_port(parts.netloc, DEFAULT_PORTS[scheme])
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return ParsedUrl(scheme, host, port, target)


def url_host(url: str) -> str:
    """The host (and port) of a URL already accepted, as logs and the job show it: never its path or query, where a
    token may be."""
    return urlsplit(url).netloc.rpartition("@")[2].lower()


def _host_and_port(netloc: str, default_port: int) -> tuple[str, int]:
    if netloc.startswith("["):
        literal, _, rest = netloc[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise CallbackRefused(f"callback_url: {shorten(netloc)} is no host[:port]")
        return _ipv6_literal(literal), _port(rest[1:] if rest else "", default_port)
    host, _, port = netloc.partition(":")
    if ":" in port:
        raise CallbackRefused(f"callback_url: {shorten(netloc)} is no host[:port] (an IPv6 address goes in [ ])")
    return _host_name(host.lower()), _port(port, default_port)


def _ipv6_literal(literal: str) -> str:
    try:
        if "%" in literal:  # a zone (fe80::1%eth0) names an interface of this machine
            raise ValueError(literal)
        return str(ipaddress.IPv6Address(literal))
    except ValueError:
        raise CallbackRefused(f"callback_url: [{shorten(literal)}] is no IPv6 address") from None


def _port(text: str, default: int) -> int:
    if not text:
        return default
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise CallbackRefused(f"callback_url: port {shorten(text)} is not a number from 1 to 65535")
    return int(text)


def _host_name(host: str) -> str:
    host = host[:-1] if host.endswith(".") else host
    labels = host.split(".")
    if not host or len(host) > 253 or not all(LABEL.fullmatch(label) for label in labels):
        raise CallbackRefused(f"callback_url: {shorten(host or '(no host)')} is no host name")
    if NUMERIC_LABEL.fullmatch(labels[-1]):  # an IPv4 address, which must be written as one
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise CallbackRefused(
                f"callback_url: {shorten(host)}: write an IPv4 address in its dotted form (a.b.c.d)"
            ) from None
    if host == "localhost" or host.endswith(".localhost"):
        raise CallbackRefused(f"callback_url: {host} is not a public address")
    return host


def refusal(address: IPAddress) -> str | None:
    """Why an address is not public (its kind: loopback, private, link-local, multicast, reserved, unspecified), or
    None for a public one. An IPv6 address that carries an IPv4 one is judged by the IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in LOCAL_NAT64:
            return "private"
        carried = _carried_ipv4(address)
        if carried is not None:
            return refusal(carried)
    checks = (
        ("unspecified", address.is_unspecified),
        ("multicast", address.is_multicast),
        ("link-local", address.is_link_local),
        ("loopback", address.is_loopback),
        ("reserved", address.is_reserved),
        ("private", address.is_private or getattr(address, "is_site_local", False)),
    )
    kind = next((name for name, hit in checks if hit), None)
    return kind or (None if address.is_global else "private")  # not global: 100.64.0.0/10 and the like


def _carried_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def parse_allow_list(text: str) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    """SPINBOT_CALLBACK_ALLOW_HOSTS: host names, and addresses or networks; a ValueError names a bad entry."""
    names, networks = set(), []
    for entry in (e.strip().lower() for e in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        name = entry.removesuffix(".")
        if not all(LABEL.fullmatch(label) for label in name.split(".")):
            raise ValueError(f"{entry!r} is neither a host name nor an IP address or network")
        names.add(name)
    return frozenset(names), tuple(networks)


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system's resolver gives for the name (no scope ids)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]).partition("%")[0] for info in infos))


def _reserve_lookup(owner: str | None) -> None:
    """Count a lookup of this owner's, or Unresolved where MAX_LOOKUPS_PER_OWNER of its own are still running."""
    with _lookups_lock:
        if _lookups_running.get(owner, 0) >= MAX_LOOKUPS_PER_OWNER:
            raise Unresolved(
                f"callback_url: {MAX_LOOKUPS_PER_OWNER} of this key's callback names are still being looked up; "
                "try again shortly"
            )
        _lookups_running[owner] = _lookups_running.get(owner, 0) + 1


def _release_lookup(owner: str | None) -> None:
    with _lookups_lock:
        _lookups_running[owner] -= 1
        if not _lookups_running[owner]:
            del _lookups_running[owner]


class CallbackPolicy:
    """The settings' rules for callback URLs; `resolver` is the name lookup (the system's by default)."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        allow_hosts: str = "",
        max_chars: int = 2048,
        lookup_timeout: float = 5.0,
        resolver: Resolver | None = None,
    ):
        self.allow_private, self.max_chars, self.lookup_timeout = allow_private, max_chars, lookup_timeout
        self.allowed_names, self.allowed_networks = parse_allow_list(allow_hosts)
        self.resolver = resolver  # None: system_resolver, looked up at each call

    @classmethod
    def from_settings(cls, settings, resolver: Resolver | None = None) -> CallbackPolicy:
        return cls(
            allow_private=settings.callback_allow_private,
            allow_hosts=settings.callback_allow_hosts,
            max_chars=settings.callback_max_url_chars,
            lookup_timeout=settings.callback_connect_timeout,
            resolver=resolver,
        )

    def check(self, url: str, owner: str | None = None) -> Target:
        """The URL parsed, resolved once and every address checked: the target to connect to, or CallbackRefused.
        `owner`: the API key whose lookup it is (MAX_LOOKUPS_PER_OWNER)."""
        parsed = parse_callback_url(url, self.max_chars)
        addresses = self._addresses(parsed, owner)
        for address in addresses:
            kind = refusal(address)
            if kind is not None and not self._allowed(parsed.host, address, kind):
                raise CallbackRefused(f"callback_url: {parsed.authority} is not a public address")
        return Target(parsed, str(addresses[0]))

    def _addresses(self, parsed: ParsedUrl, owner: str | None) -> list[IPAddress]:
        try:
            return [ipaddress.ip_address(parsed.host)]
        except ValueError:
            pass
        try:
            found = [ipaddress.ip_address(a) for a in self._lookup(parsed, owner)]
        except ValueError:
            found = []
        if not found:
            raise Unresolved(f"callback_url: {parsed.authority} is not a public address")
        return found

    def _lookup(self, parsed: ParsedUrl, owner: str | None) -> list[str]:
        """The name's addresses, [] where it did not resolve within the time limit."""
        _reserve_lookup(owner)
        resolve, done = self.resolver or system_resolver, threading.Event()
        found: list[str] = []

        def run() -> None:
            try:
                found.extend(resolve(parsed.host, parsed.port))
            except (OSError, ValueError):  # no such name, or one the resolver cannot encode
                pass
            finally:
                _release_lookup(owner)
                done.set()

        try:
            threading.Thread(target=run, name="spinbot-callback-dns", daemon=True).start()
        except BaseException:  # no thread to release its count (RuntimeError: can't start new thread)
            _release_lookup(owner)
            raise
        return list(found) if done.wait(self.lookup_timeout) else []

    def _allowed(self, host: str, address: IPAddress, kind: str) -> bool:
        if kind in ("unspecified", "multicast"):
            return False  # never a web server's address, whatever the settings
        if host in self.allowed_names or any(address in net for net in self.allowed_networks):
            return True
        return self.allow_private and kind in PRIVATE_KINDS
