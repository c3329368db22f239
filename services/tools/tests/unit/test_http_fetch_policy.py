"""http_fetch policy, tested without any network: every refusal happens before connecting.

A resolver stub stands in for DNS; a call that got past the policy would try to connect and
fail differently (UPSTREAM_ERROR), so NOT_ALLOWED proves the refusal came first.
"""

from __future__ import annotations

import ipaddress

import pytest
from lalo_tools.core import ErrorCode, Limits, ToolFailure
from lalo_tools.netguard import IPAddress
from lalo_tools.tools.http_fetch import HttpFetch, host_allowed

LIMITS = Limits(timeout_s=5.0, max_output_bytes=4096, max_rows=0)


class StubResolver:
    """Answers from a table; records every lookup."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.calls.append(host)
        answers = self.table.get(host)
        if answers is None:
            raise OSError(f"no such host {host}")
        return [ipaddress.ip_address(a) for a in answers]


def fetcher(resolver: StubResolver, **kwargs: object) -> HttpFetch:
    options: dict[str, object] = {"allowed_hosts": ["*"], "allowed_ports": []}
    options.update(kwargs)
    return HttpFetch(limits=LIMITS, resolve=resolver, **options)  # type: ignore[arg-type]


async def refused(tool: HttpFetch, url: str) -> ToolFailure:
    with pytest.raises(ToolFailure) as info:
        await tool.run({"url": url}, LIMITS)
    return info.value


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.0.0.1:5432/",
        "http://[::1]/",
        "http://[::1]:8080/x",
        "http://10.0.0.1/",
        "http://172.16.3.4/",
        "http://192.168.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "https://127.0.0.1/",
    ],
)
async def test_private_ip_literals_are_refused(url: str) -> None:
    resolver = StubResolver({})
    failure = await refused(fetcher(resolver), url)
    assert failure.code is ErrorCode.NOT_ALLOWED
    assert resolver.calls == []


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",
        "http://0x7f.1/",
        "http://0x7f000001/",
        "http://017700000001/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://0251.0376.0251.0376/",  # 169.254.169.254 in octal
        "http://2852039166/",  # 169.254.169.254 in decimal
    ],
)
async def test_numeric_ip_spellings_are_refused(url: str) -> None:
    failure = await refused(fetcher(StubResolver({})), url)
    assert failure.code is ErrorCode.NOT_ALLOWED


@pytest.mark.parametrize(
    ("host", "addresses"),
    [
        ("localhost", ["127.0.0.1"]),
        ("loopback.example", ["127.0.0.53"]),
        ("v6.example", ["::1"]),
        ("internal.example", ["10.20.30.40"]),
        ("metadata.example", ["169.254.169.254"]),
        ("mixed.example", ["93.184.216.34", "192.168.1.5"]),
        ("mapped.example", ["::ffff:10.0.0.1"]),
    ],
)
async def test_hostnames_resolving_to_private_addresses_are_refused(
    host: str, addresses: list[str]
) -> None:
    resolver = StubResolver({host: addresses})
    failure = await refused(fetcher(resolver), f"http://{host}/")
    assert failure.code is ErrorCode.NOT_ALLOWED
    assert "resolves to" in failure.message
    assert resolver.calls == [host]


async def test_dns_rebinding_is_caught_at_connect_time() -> None:
    """First answer public, second private: the connection uses the vetted second answer."""

    class Rebinding(StubResolver):
        async def __call__(self, host: str, port: int) -> list[IPAddress]:
            self.calls.append(host)
            first = len(self.calls) == 1
            return [ipaddress.ip_address("93.184.216.34" if first else "127.0.0.1")]

    resolver = Rebinding({})
    failure = await refused(fetcher(resolver), "http://rebind.example/")
    assert failure.code is ErrorCode.NOT_ALLOWED
    assert len(resolver.calls) == 2


async def test_the_real_resolver_refuses_localhost() -> None:
    tool = HttpFetch(limits=LIMITS, allowed_hosts=["*"], allowed_ports=[])
    failure = await refused(tool, "http://localhost:1/")
    assert failure.code is ErrorCode.NOT_ALLOWED


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("ftp://example.com/", ErrorCode.INVALID_ARGUMENTS),
        ("file:///etc/passwd", ErrorCode.INVALID_ARGUMENTS),
        ("http://user:pw@example.com/", ErrorCode.NOT_ALLOWED),
        ("http://example.com:22/", ErrorCode.NOT_ALLOWED),
        ("http://other.org/", ErrorCode.NOT_ALLOWED),
        ("http://example.com.evil.org/", ErrorCode.NOT_ALLOWED),
        ("http://notexample.com/", ErrorCode.NOT_ALLOWED),
    ],
)
async def test_url_policy(url: str, code: ErrorCode) -> None:
    tool = HttpFetch(
        limits=LIMITS,
        allowed_hosts=["example.com", "*.docs.example.com"],
        allowed_ports=[80, 443],
        resolve=StubResolver({}),
    )
    failure = await refused(tool, url)
    assert failure.code is code


async def test_empty_allowlist_refuses_everything() -> None:
    tool = HttpFetch(limits=LIMITS, allowed_hosts=[], resolve=StubResolver({}))
    failure = await refused(tool, "https://example.com/")
    assert failure.code is ErrorCode.NOT_ALLOWED


def test_host_patterns() -> None:
    patterns = ["example.com", "*.docs.example.org"]
    assert host_allowed("example.com", patterns)
    assert host_allowed("EXAMPLE.com.", patterns)
    assert host_allowed("a.docs.example.org", patterns)
    assert host_allowed("a.b.docs.example.org", patterns)
    assert not host_allowed("docs.example.org", patterns)
    assert not host_allowed("www.example.com", patterns)
    assert not host_allowed("evildocs.example.org", patterns)
    assert host_allowed("anything.net", ["*"])


async def test_unresolvable_host_is_an_upstream_error() -> None:
    failure = await refused(fetcher(StubResolver({})), "http://nowhere.example/")
    assert failure.code is ErrorCode.UPSTREAM_ERROR
    assert failure.retryable


@pytest.mark.parametrize(
    "url",
    [
        "http://%31%32%37.0.0.1/",
        "http://127.0.0.1%2f@example.com/",
        "http://example.com\\@127.0.0.1/",
        "http://127.0.0.1#@example.com/",
        "http://[0:0:0:0:0:ffff:7f00:1]/",
        "http://[fe80::1%25eth0]/",
        "http://LOCALHOST/",
        "http://0x7f.0x0.0x0.0x1/",
        "http://\u2460\u2461\u2466.0.0.1/",  # circled digits normalise to 127.0.0.1
        "http://127\u30020\u30020\u30021/",  # ideographic full stops
        "http:/127.0.0.1/",
        "http:127.0.0.1",
        "http://[::]/",
    ],
)
async def test_tricky_spellings_never_reach_a_private_address(url: str) -> None:
    resolver = StubResolver({"localhost": ["127.0.0.1"]})
    failure = await refused(fetcher(resolver), url)
    assert failure.code in (
        ErrorCode.NOT_ALLOWED,
        ErrorCode.INVALID_ARGUMENTS,
        ErrorCode.UPSTREAM_ERROR,  # unresolvable: never connected
    )
