"""http_fetch: GET a URL on an allowlisted public host and return its text.

Defences, in the order a request meets them:

1. scheme http/https only, no credentials in the URL, host on the allowlist, port allowed;
2. the host is resolved here and EVERY address must be public (see ``netguard``); legacy
   numeric IPv4 spellings are refused;
3. the connection is made by aiohttp through :class:`VettingResolver`, which resolves and
   vets again and hands aiohttp only vetted addresses: the socket connects to an address
   that passed the check (no second, unchecked lookup — DNS rebinding gets the same check);
4. redirects are not followed by the client: each Location is joined, then put through
   steps 1-3 again, up to ``max_redirects``;
5. the body is read in chunks up to ``max_body_bytes`` (compressed bodies are inflated with a
   bounded decompressor), then cut to the output limit; the whole call has a deadline.

No proxy from the environment, no cookies, no caller-supplied headers.
"""

from __future__ import annotations

import codecs
import logging
import socket
import zlib
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from lalo_tools.core import ErrorCode, Limits, ToolFailure, ToolResult, truncate_utf8
from lalo_tools.netguard import (
    AddressRefused,
    Resolve,
    check_addresses,
    ip_literal,
    is_legacy_ipv4,
    system_resolve,
)

log = logging.getLogger(__name__)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TEXT_TYPES = (
    "text/",
    "application/json",
    "application/xml",
    "application/xhtml+xml",
    "application/javascript",
    "application/ld+json",
    "application/rss+xml",
    "application/atom+xml",
)


def host_allowed(host: str, patterns: list[str]) -> bool:
    """``example.com`` matches itself, ``*.example.com`` its subdomains, ``*`` any host."""
    host = host.lower().rstrip(".")
    for pattern in patterns:
        if pattern == "*" or pattern == host:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]) and host != pattern[2:]:
            return True
    return False


class VettingResolver(AbstractResolver):
    """aiohttp resolver that returns only addresses that passed the public-address check."""

    def __init__(self, resolve: Resolve, *, allow_loopback: bool) -> None:
        self._resolve = resolve
        self._allow_loopback = allow_loopback

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await self._resolve(host, port)
        check_addresses(addresses, host=host, allow_loopback=self._allow_loopback)
        return [
            {
                "hostname": host,
                "host": str(address),
                "port": port,
                "family": socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        return None


class _BoundedInflater:
    """Inflates gzip/deflate bodies without ever producing more than the byte budget."""

    def __init__(self, encoding: str) -> None:
        # 32 + MAX_WBITS: gzip or zlib header, auto-detected; -MAX_WBITS: raw deflate.
        self._raw_fallback = encoding == "deflate"
        self._z = zlib.decompressobj(32 + zlib.MAX_WBITS)

    def feed(self, chunk: bytes, budget: int) -> bytes:
        try:
            return self._z.decompress(chunk, budget)
        except zlib.error:
            if not self._raw_fallback:
                raise
            self._raw_fallback = False
            self._z = zlib.decompressobj(-zlib.MAX_WBITS)
            return self._z.decompress(chunk, budget)


class HttpFetch:
    name = "http_fetch"
    description = (
        "Fetches a web page or API response with HTTP GET and returns it as text. Only hosts "
        "on the operator's allowlist and public addresses are reachable."
    )

    def __init__(
        self,
        *,
        limits: Limits,
        allowed_hosts: list[str],
        allowed_ports: list[int] | None = None,
        max_redirects: int = 5,
        max_body_bytes: int = 1024 * 1024,
        user_agent: str = "lalo-tools",
        allow_loopback: bool = False,
        resolve: Resolve = system_resolve,
    ) -> None:
        self.limits = limits
        self.allowed_hosts = allowed_hosts
        self.allowed_ports = list(allowed_ports or [])
        self.max_redirects = max_redirects
        self.max_body_bytes = max_body_bytes
        self.user_agent = user_agent
        self.allow_loopback = allow_loopback
        self._resolve = resolve
        self.parameters: dict[str, Any] = {
            "type": "object",
            "properties": {
                "url": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 2048,
                    "pattern": "^[hH][tT][tT][pP][sS]?://",
                    "description": "Absolute http(s) URL",
                }
            },
            "required": ["url"],
            "additionalProperties": False,
        }

    # -- policy ---------------------------------------------------------------------------

    def check_url(self, url: URL, *, hop: int) -> None:
        where = "$.url" if hop == 0 else ""
        via = "" if hop == 0 else f" (redirect {hop})"
        if url.scheme not in ("http", "https"):
            raise ToolFailure(
                ErrorCode.NOT_ALLOWED if hop else ErrorCode.INVALID_ARGUMENTS,
                f"only http and https URLs can be fetched{via}",
                path=where,
            )
        if url.raw_user or url.raw_password:
            raise ToolFailure(
                ErrorCode.NOT_ALLOWED, f"URLs with credentials are refused{via}", path=where
            )
        host = (url.raw_host or "").lower()
        if not host:
            raise ToolFailure(ErrorCode.INVALID_ARGUMENTS, f"URL has no host{via}", path=where)
        if is_legacy_ipv4(host):
            raise ToolFailure(
                ErrorCode.NOT_ALLOWED,
                f"non-canonical numeric host {host!r} is refused{via}",
                path=where,
            )
        if not host_allowed(host, self.allowed_hosts):
            raise ToolFailure(
                ErrorCode.NOT_ALLOWED, f"host {host!r} is not on the allowlist{via}", path=where
            )
        port = url.port
        if self.allowed_ports and port not in self.allowed_ports:
            raise ToolFailure(ErrorCode.NOT_ALLOWED, f"port {port} is not allowed{via}", path=where)

    async def vet_destination(self, url: URL) -> None:
        host = (url.raw_host or "").lower()
        literal = ip_literal(host)
        try:
            if literal is not None:
                check_addresses([literal], host=host, allow_loopback=self.allow_loopback)
            else:
                addresses = await self._resolve(host, url.port or 0)
                check_addresses(addresses, host=host, allow_loopback=self.allow_loopback)
        except AddressRefused as refused:
            raise ToolFailure(ErrorCode.NOT_ALLOWED, f"refused: {refused}") from None
        except OSError as exc:
            raise ToolFailure(
                ErrorCode.UPSTREAM_ERROR, f"cannot resolve {host}: {exc}", retryable=True
            ) from None

    # -- fetching -------------------------------------------------------------------------

    async def run(self, arguments: dict[str, Any], limits: Limits) -> ToolResult:
        try:
            url = URL(arguments["url"], encoded=False)
        except (ValueError, TypeError) as exc:
            raise ToolFailure(
                ErrorCode.INVALID_ARGUMENTS, f"not a valid URL: {exc}", path="$.url"
            ) from None
        connector = aiohttp.TCPConnector(
            resolver=VettingResolver(self._resolve, allow_loopback=self.allow_loopback),
            use_dns_cache=False,
            force_close=True,
            limit=1,
        )
        timeout = aiohttp.ClientTimeout(total=limits.timeout_s)
        async with aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            trust_env=False,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"User-Agent": self.user_agent, "Accept-Encoding": "gzip, deflate"},
        ) as session:
            for hop in range(self.max_redirects + 1):
                self.check_url(url, hop=hop)
                await self.vet_destination(url)
                result, location = await self._get(session, url, limits)
                if location is None:
                    assert result is not None
                    return result
                url = location
        raise ToolFailure(
            ErrorCode.LIMIT_EXCEEDED, f"more than {self.max_redirects} redirects", retryable=False
        )

    async def _get(
        self, session: aiohttp.ClientSession, url: URL, limits: Limits
    ) -> tuple[ToolResult | None, URL | None]:
        try:
            async with session.get(url, allow_redirects=False) as response:
                if response.status in _REDIRECTS and "Location" in response.headers:
                    try:
                        target = url.join(URL(response.headers["Location"]))
                    except ValueError:
                        raise ToolFailure(
                            ErrorCode.UPSTREAM_ERROR, "redirect with an invalid Location"
                        ) from None
                    return None, target
                return await self._read(response, url, limits), None
        except AddressRefused as refused:
            raise ToolFailure(ErrorCode.NOT_ALLOWED, f"refused: {refused}") from None
        except ToolFailure:
            raise
        except TimeoutError:
            raise ToolFailure(
                ErrorCode.TIMEOUT,
                f"fetching {url.host} did not finish within {limits.timeout_s:g} s",
                retryable=True,
            ) from None
        except aiohttp.InvalidURL as exc:
            raise ToolFailure(ErrorCode.NOT_ALLOWED, f"invalid URL: {exc}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ToolFailure(
                ErrorCode.UPSTREAM_ERROR,
                f"fetching {url.host} failed: {type(exc).__name__}: {exc}",
                retryable=True,
            ) from None

    async def _read(self, response: aiohttp.ClientResponse, url: URL, limits: Limits) -> ToolResult:
        content_type = response.content_type or "application/octet-stream"
        if not content_type.startswith(_TEXT_TYPES) and not content_type.endswith(
            ("+json", "+xml")
        ):
            raise ToolFailure(
                ErrorCode.EXECUTION_ERROR,
                f"{url.host} returned {content_type}, which is not text",
            )
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        inflater: _BoundedInflater | None = None
        if encoding in ("gzip", "x-gzip", "deflate"):
            inflater = _BoundedInflater(encoding)
        elif encoding not in ("", "identity"):
            raise ToolFailure(
                ErrorCode.UPSTREAM_ERROR, f"unsupported Content-Encoding {encoding!r}"
            )
        budget = self.max_body_bytes
        body = bytearray()
        truncated = False
        async for chunk in response.content.iter_chunked(64 * 1024):
            if inflater is not None:
                try:
                    chunk = inflater.feed(chunk, budget - len(body) + 1)
                except zlib.error as exc:
                    raise ToolFailure(
                        ErrorCode.UPSTREAM_ERROR, f"corrupt {encoding} body: {exc}"
                    ) from None
            body += chunk
            if len(body) > budget:
                del body[budget:]
                truncated = True
                break
        charset = response.charset or "utf-8"
        try:
            codecs.lookup(charset)
        except LookupError:
            charset = "utf-8"
        text = bytes(body).decode(charset, errors="replace")
        text, cut = truncate_utf8(text, limits.max_output_bytes)
        truncated = truncated or cut
        content = {
            "url": str(url),
            "status": response.status,
            "content_type": content_type,
            "text": text,
            "truncated": truncated,
        }
        return ToolResult(content=content, text=text, truncated=truncated)
