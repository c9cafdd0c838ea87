"""http.request against a local capture server: what it sends, and how each answer is classified."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from realparts import CaptureServer, free_port

from remediator.actions.http import HttpRequest, HttpRequestParams
from remediator.errors import PermanentActionError, TemporaryActionError


@pytest_asyncio.fixture
async def silent_server() -> AsyncIterator[str]:
    """A server on 127.0.0.1 that accepts connections and never answers: a hung admin hook."""
    release = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        release.set()
        server.close()
        await server.wait_closed()


async def test_sends_the_policys_request_whatever_the_target(capture_server: CaptureServer) -> None:
    params = HttpRequestParams(
        url=f"{capture_server.url}/admin/reload?token=s3cret",
        headers={"X-Admin": "yes"},
        body={"reason": "remediator", "drain": True},
    )
    action = HttpRequest()
    detail = await action.run("web-1", params)
    await action.run("db/../../x?y=1", params)

    first, second = await capture_server.wait_for(2)
    for request in (first, second):
        assert request.method == "POST" and request.path == "/admin/reload"
        assert request.query == {"token": "s3cret"}
        assert request.headers["X-Admin"] == "yes"
        assert request.json == {"reason": "remediator", "drain": True}
    # The query may carry a secret: the incident timeline shows the URL without it.
    assert detail == f'POST {capture_server.url}/admin/reload answered 200: {{"ok": true}}'


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (503, TemporaryActionError),
        (429, TemporaryActionError),
        (404, PermanentActionError),
        (400, PermanentActionError),
    ],
)
async def test_answers_are_temporary_or_permanent(
    capture_server: CaptureServer, status: int, error: type[Exception]
) -> None:
    capture_server.fail_first(1, status)
    with pytest.raises(error, match=f"POST {capture_server.url}/hook answered {status}"):
        await HttpRequest().run("web", HttpRequestParams(url=f"{capture_server.url}/hook"))


async def test_an_unexpected_success_status_is_permanent(capture_server: CaptureServer) -> None:
    params = HttpRequestParams(url=f"{capture_server.url}/hook", method="PUT", expect_status=(202, 204))
    with pytest.raises(PermanentActionError, match=r"answered 200.*expected 202, 204"):
        await HttpRequest().run("web", params)


async def test_unreachable_and_hung_endpoints_are_temporary(silent_server: str) -> None:
    with pytest.raises(TemporaryActionError, match="failed: ClientConnectorError"):
        await HttpRequest().run("web", HttpRequestParams(url=f"http://127.0.0.1:{free_port()}/hook"))
    with pytest.raises(TemporaryActionError, match=r"took over 0\.3s"):
        await HttpRequest().run("web", HttpRequestParams(url=f"{silent_server}/hook", timeout_s=0.3))


def test_params_take_only_http_urls_and_known_methods() -> None:
    for url in ("file:///etc/passwd", "gopher://127.0.0.1/", "http://", "127.0.0.1:8080/x"):
        with pytest.raises(ValueError, match="url"):
            HttpRequestParams(url=url)
    with pytest.raises(ValueError, match="method"):
        HttpRequestParams.model_validate({"url": "http://127.0.0.1/x", "method": "TRACE"})
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        HttpRequestParams.model_validate({"url": "http://127.0.0.1/x", "url_from_label": "instance"})
