"""http_fetch against a real local HTTP server on 127.0.0.1.

Loopback is reachable only through the test-only switch ``allow_loopback``; every other
private range stays refused, which is what the redirect tests check: a server the tool may
reach redirects to 10.x, 169.254.169.254, [::1]-mapped and numeric spellings, and the tool
refuses each hop before connecting.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from lalo_tools.core import ErrorCode, Limits, ToolFailure
from lalo_tools.tools.http_fetch import HttpFetch

pytestmark = pytest.mark.integration

LIMITS = Limits(timeout_s=5.0, max_output_bytes=4096, max_rows=0)
BIG = 200_000


def _routes(hits: list[str]) -> web.Application:
    app = web.Application()

    async def text(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="hello from the test server", content_type="text/plain")

    async def as_json(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "ua": request.headers.get("User-Agent", "")})

    async def big(request: web.Request) -> web.Response:
        return web.Response(text="a" * BIG, content_type="text/plain")

    async def bomb(request: web.Request) -> web.Response:
        body = gzip.compress(b"z" * 50_000_000)
        return web.Response(
            body=body, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"}
        )

    async def binary(request: web.Request) -> web.Response:
        return web.Response(body=b"\x00\x01", content_type="application/octet-stream")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def slow(request: web.Request) -> web.StreamResponse:
        import asyncio

        await asyncio.sleep(2)
        return web.Response(text="late")

    app.router.add_get("/text", text)
    app.router.add_get("/json", as_json)
    app.router.add_get("/big", big)
    app.router.add_get("/bomb", bomb)
    app.router.add_get("/binary", binary)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/loop", loop)
    app.router.add_get("/slow", slow)
    return app


@pytest.fixture(scope="module")
async def site() -> AsyncIterator[tuple[str, list[str]]]:
    hits: list[str] = []
    runner = web.AppRunner(_routes(hits))
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", hits
    await runner.cleanup()


def tool(*, allow_loopback: bool = True, **kwargs: object) -> HttpFetch:
    options: dict[str, object] = {
        "allowed_hosts": ["*"],
        "allowed_ports": [],
        "allow_loopback": allow_loopback,
        "max_body_bytes": 100_000,
    }
    options.update(kwargs)
    return HttpFetch(limits=LIMITS, **options)  # type: ignore[arg-type]


async def fetch(fetcher: HttpFetch, url: str, limits: Limits = LIMITS) -> dict[str, object]:
    result = await fetcher.run({"url": url}, limits)
    assert isinstance(result.content, dict)
    return result.content


async def failure(fetcher: HttpFetch, url: str, limits: Limits = LIMITS) -> ToolFailure:
    with pytest.raises(ToolFailure) as info:
        await fetcher.run({"url": url}, limits)
    return info.value


async def test_fetches_text(site: tuple[str, list[str]]) -> None:
    base, _ = site
    content = await fetch(tool(), f"{base}/text")
    assert content["status"] == 200
    assert content["text"] == "hello from the test server"
    assert content["truncated"] is False
    as_json = await fetch(tool(user_agent="lalo-test-agent"), f"{base}/json")
    assert json.loads(str(as_json["text"])) == {"ok": True, "ua": "lalo-test-agent"}


async def test_loopback_is_refused_without_the_test_switch(site: tuple[str, list[str]]) -> None:
    base, hits = site
    before = len(hits)
    port = base.rsplit(":", 1)[1]
    for url in (f"{base}/text", f"http://localhost:{port}/text", f"http://[::1]:{port}/text"):
        refused = await failure(tool(allow_loopback=False), url)
        assert refused.code is ErrorCode.NOT_ALLOWED, url
    assert len(hits) == before


async def test_relative_redirect_is_followed(site: tuple[str, list[str]]) -> None:
    base, _ = site
    content = await fetch(tool(), f"{base}/redirect?to=/text")
    assert content["text"] == "hello from the test server"
    assert str(content["url"]).endswith("/text")


@pytest.mark.parametrize(
    "target",
    [
        "http://10.0.0.1/",
        "http://10.255.255.254:8080/x",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://192.168.1.1/",
        "http://172.16.0.1/",
        "http://100.64.0.1/",
        "http://[fd00::1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://2852039166/",
        "http://0xa9.0xfe.0xa9.0xfe/",
        "http://0/",
        "//10.0.0.1/",  # scheme-relative
        "//169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_INFO",
    ],
)
async def test_redirect_to_a_private_address_is_refused(
    site: tuple[str, list[str]], target: str
) -> None:
    base, _ = site
    refused = await failure(tool(), f"{base}/redirect?to={target}")
    assert refused.code is ErrorCode.NOT_ALLOWED
    assert "redirect" in refused.message or "refused" in refused.message


async def test_redirect_off_the_allowlist_is_refused(site: tuple[str, list[str]]) -> None:
    base, _ = site
    fetcher = tool(allowed_hosts=["127.0.0.1"])
    refused = await failure(fetcher, f"{base}/redirect?to=http://example.com/")
    assert refused.code is ErrorCode.NOT_ALLOWED
    assert "allowlist" in refused.message


async def test_redirect_loops_stop(site: tuple[str, list[str]]) -> None:
    base, _ = site
    refused = await failure(tool(max_redirects=3), f"{base}/loop")
    assert refused.code is ErrorCode.LIMIT_EXCEEDED


async def test_oversized_body_is_cut(site: tuple[str, list[str]]) -> None:
    base, _ = site
    result = await tool().run({"url": f"{base}/big"}, LIMITS)
    assert result.truncated
    assert len(result.text.encode()) <= LIMITS.max_output_bytes
    small = Limits(timeout_s=5.0, max_output_bytes=100, max_rows=0)
    result = await tool().run({"url": f"{base}/big"}, small)
    assert result.text == "a" * 100


async def test_compression_bomb_is_bounded(site: tuple[str, list[str]]) -> None:
    base, _ = site
    result = await tool(max_body_bytes=10_000).run({"url": f"{base}/bomb"}, LIMITS)
    assert result.truncated
    assert set(result.text) == {"z"}


async def test_binary_content_is_refused(site: tuple[str, list[str]]) -> None:
    base, _ = site
    refused = await failure(tool(), f"{base}/binary")
    assert refused.code is ErrorCode.EXECUTION_ERROR


async def test_slow_server_times_out(site: tuple[str, list[str]]) -> None:
    base, _ = site
    quick = Limits(timeout_s=0.3, max_output_bytes=1000, max_rows=0)
    refused = await failure(tool(), f"{base}/slow", quick)
    assert refused.code is ErrorCode.TIMEOUT
    assert refused.retryable


async def test_closed_port_is_an_upstream_error() -> None:
    refused = await failure(tool(), "http://127.0.0.1:9/")
    assert refused.code is ErrorCode.UPSTREAM_ERROR
