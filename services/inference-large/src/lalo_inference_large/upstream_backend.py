"""The ``openai-upstream`` backend: forwards the contract to any OpenAI-compatible endpoint.

It serves as the optional cloud fallback (a hosted API) or fronts a vLLM server run
elsewhere. Off by default; chosen with ``LALO_INFERENCE_LARGE_BACKEND=openai-upstream``. The
API key is read from the secrets store (a mounted secret file or an environment variable),
never logged. Streams are read as server-sent events; closing the stream (the caller
cancelled or its deadline passed) closes the upstream connection, which ends the upstream
request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
from lalo_common.errors import (
    FailedPrecondition,
    InvalidArgument,
    LaloError,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from lalo_common.tool_calls import HERMES, new_call_id

from lalo_inference_large.domain import (
    Chunk,
    Complete,
    EmbeddingRequest,
    Embeddings,
    Event,
    FinishReason,
    GenerationRequest,
    Load,
    ModelCard,
    StreamError,
    TokenCount,
    TokenInfo,
    ToolCall,
    TopLogprob,
)
from lalo_inference_large.settings import InferenceLargeSettings

log = logging.getLogger(__name__)

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "stop",
    "content_filter": "stop",
    "abort": "abort",
}


class StreamedCalls:
    """An upstream's tool calls as OpenAI streams them (a call's id and name first, its
    arguments in pieces, all keyed by index), put together whole."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, str]] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, delta: dict[str, Any]) -> None:
        call = self._calls.setdefault(
            int(delta.get("index", 0)), {"id": "", "name": "", "arguments": ""}
        )
        call["id"] = delta.get("id") or call["id"]
        function = delta.get("function") or {}
        call["name"] += function.get("name") or ""
        call["arguments"] += function.get("arguments") or ""

    def take(self) -> tuple[ToolCall, ...]:
        calls = tuple(
            ToolCall(c["id"] or new_call_id(), c["name"], c["arguments"] or "{}")
            for _, c in sorted(self._calls.items())
        )
        self._calls = {}
        return calls


def _token_id(token: str) -> int:
    # vLLM's --return-tokens-as-token-ids spells tokens "token_id:123"; others carry no ids.
    if token.startswith("token_id:"):
        try:
            return int(token.removeprefix("token_id:"))
        except ValueError:
            return -1
    return -1


def request_body(request: GenerationRequest, model: str) -> tuple[str, dict[str, Any]]:
    """The endpoint path and JSON body for a request (chat or plain completion)."""
    options = request.sampling
    body: dict[str, Any] = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.is_chat:
        path = "/chat/completions"
        messages: list[dict[str, Any]] = []
        for message in request.messages:
            item: dict[str, Any] = {"role": message.role, "content": message.content}
            if message.name:
                item["name"] = message.name
            if message.tool_call_id:
                item["tool_call_id"] = message.tool_call_id
            if message.tool_calls:
                item["tool_calls"] = [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments_json},
                    }
                    for call in message.tool_calls
                ]
            messages.append(item)
        body["messages"] = messages
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in request.tools
            ]
        if options.logprobs:
            body["logprobs"] = True
            if options.top_logprobs:
                body["top_logprobs"] = options.top_logprobs
    else:
        path = "/completions"
        body["prompt"] = request.prompt or ""
        if options.logprobs:
            body["logprobs"] = options.top_logprobs
    for name in ("max_tokens", "temperature", "top_p", "seed"):
        value = getattr(options, name)
        if value is not None:
            body[name] = value
    # Not in OpenAI's API; vLLM and most compatible servers accept them.
    for name in ("top_k", "min_p"):
        value = getattr(options, name)
        if value is not None:
            body[name] = value
    if options.stop:
        body["stop"] = list(options.stop)
    if options.presence_penalty:
        body["presence_penalty"] = options.presence_penalty
    if options.frequency_penalty:
        body["frequency_penalty"] = options.frequency_penalty
    if options.logit_bias:
        body["logit_bias"] = {str(k): v for k, v in options.logit_bias.items()}
    fmt = options.response_format
    if fmt.kind == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif fmt.kind == "json_schema":
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": fmt.json_schema, "strict": True},
        }
    elif fmt.kind == "grammar":
        # vLLM's extension; an endpoint without it refuses the request (INVALID_ARGUMENT).
        body["structured_outputs"] = {"grammar": fmt.grammar}
    return path, body


def _error_for_status(status: int, text: str) -> LaloError:
    try:
        detail = json.loads(text)
        message = detail.get("error", {}).get("message") or detail.get("message") or text
    except (ValueError, AttributeError):
        message = text
    message = str(message)[:2000]
    if status in (400, 413, 422):
        return InvalidArgument(f"upstream refused the request: {message}")
    if status == 404:
        return NotFound(f"upstream: {message}")
    if status in (401, 403):
        return FailedPrecondition(
            "upstream refused this service's credential (check the upstream API key secret)"
        )
    if status == 429:
        return ResourceExhausted(f"upstream rate limit: {message}")
    return Unavailable(f"upstream error {status}: {message}")


class OpenAIUpstreamBackend:
    # The upstream server reads its model's calls itself and sends them structured; text
    # that still holds Hermes blocks (a server without a tool parser) is read here.
    call_format = HERMES

    def __init__(self, settings: InferenceLargeSettings, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.client = client
        self._models: list[str] = list(settings.upstream_models)
        self._in_flight = 0

    @classmethod
    async def create(cls, settings: InferenceLargeSettings) -> OpenAIUpstreamBackend:
        headers = {"accept": "application/json"}
        key = settings.upstream_key()
        if key:
            headers["authorization"] = f"Bearer {key}"
        client = httpx.AsyncClient(
            base_url=settings.upstream_base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(
                settings.upstream_timeout_s, connect=settings.upstream_connect_timeout_s
            ),
        )
        backend = cls(settings, client)
        if not backend._models:
            backend._models = await backend._fetch_models()
        if not backend._models:
            raise RuntimeError(
                "the upstream lists no models; set LALO_INFERENCE_LARGE_UPSTREAM_MODELS"
            )
        return backend

    async def _fetch_models(self) -> list[str]:
        try:
            response = await self.client.get("/models")
        except httpx.HTTPError as exc:
            raise Unavailable(f"upstream unreachable: {exc}") from exc
        if response.status_code != 200:
            raise _error_for_status(response.status_code, response.text)
        return [str(item["id"]) for item in response.json().get("data", [])]

    def _model(self, requested: str) -> str:
        if not requested:
            return self._models[0]
        if requested not in self._models:
            raise NotFound(
                f"model {requested!r} is not served here; this server serves {self._models}"
            )
        return requested

    async def start(self, request: GenerationRequest) -> AsyncIterator[Event]:
        model = self._model(request.model)
        if request.is_chat and not request.messages:
            raise InvalidArgument("a chat request needs at least one message")
        if request.prompt_token_ids is not None:
            # Ids of which tokenizer? The upstream's may not be the one the caller used.
            raise InvalidArgument(
                "token-id prompts are not supported by the openai-upstream backend: send the text",
                param="prompt",
            )
        if request.sampling.echo:
            # Upstreams differ (OpenAI's chat-era models dropped it): not promised here.
            raise InvalidArgument(
                "echo is not supported by the openai-upstream backend", param="echo"
            )
        path, body = request_body(request, model)
        http_request = self.client.build_request("POST", path, json=body)
        try:
            response = await self.client.send(http_request, stream=True)
        except httpx.HTTPError as exc:
            raise Unavailable(f"upstream unreachable: {exc}") from exc
        if response.status_code != 200:
            text = (await response.aread()).decode("utf-8", errors="replace")
            await response.aclose()
            raise _error_for_status(response.status_code, text)
        return self._events(response, model, request.is_chat)

    async def _events(
        self, response: httpx.Response, model: str, chat: bool
    ) -> AsyncIterator[Event]:
        self._in_flight += 1
        calls = StreamedCalls()
        finish: FinishReason | None = None
        usage: dict[str, Any] = {}
        completion_tokens = 0
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                payload = json.loads(data)
                if "error" in payload:
                    message = str(payload["error"].get("message", payload["error"]))
                    yield StreamError(grpc.StatusCode.UNAVAILABLE, f"upstream error: {message}")
                    return
                if payload.get("usage"):
                    usage = payload["usage"]
                for choice in payload.get("choices") or []:
                    text, tokens = self._choice_content(choice, chat)
                    completion_tokens += len(tokens)
                    if text or tokens:
                        yield Chunk(text=text, tokens=tokens)
                    for delta in (choice.get("delta") or {}).get("tool_calls") or []:
                        calls.add(delta)
                    if choice.get("finish_reason"):
                        finish = _FINISH.get(choice["finish_reason"], "stop")
                        if calls:
                            yield Chunk("", tool_calls=calls.take())
        except httpx.HTTPError as exc:
            yield StreamError(grpc.StatusCode.UNAVAILABLE, f"upstream stream broke: {exc}")
            return
        except (ValueError, KeyError, TypeError) as exc:
            yield StreamError(grpc.StatusCode.INTERNAL, f"upstream sent an unreadable event: {exc}")
            return
        finally:
            self._in_flight -= 1
            await response.aclose()
        if finish is None:
            yield StreamError(grpc.StatusCode.UNAVAILABLE, "upstream stream ended without a finish")
            return
        yield Complete(
            finish,
            int(usage.get("prompt_tokens", 0)),
            int(usage.get("completion_tokens", completion_tokens)),
            model,
        )

    @staticmethod
    def _choice_content(choice: dict[str, Any], chat: bool) -> tuple[str, tuple[TokenInfo, ...]]:
        if chat:
            text = (choice.get("delta") or {}).get("content") or ""
            entries = (choice.get("logprobs") or {}).get("content") or []
            tokens = tuple(
                TokenInfo(
                    token_id=_token_id(entry["token"]),
                    token=entry["token"],
                    logprob=float(entry["logprob"]),
                    token_bytes=bytes(entry.get("bytes") or entry["token"].encode()),
                    top_logprobs=tuple(
                        TopLogprob(
                            token_id=_token_id(alt["token"]),
                            token=alt["token"],
                            logprob=float(alt["logprob"]),
                            token_bytes=bytes(alt.get("bytes") or alt["token"].encode()),
                        )
                        for alt in entry.get("top_logprobs") or []
                    ),
                )
                for entry in entries
            )
            return text, tokens
        text = choice.get("text") or ""
        logprobs = choice.get("logprobs") or {}
        names = logprobs.get("tokens") or []
        values = logprobs.get("token_logprobs") or []
        tops = logprobs.get("top_logprobs") or [None] * len(names)
        tokens = tuple(
            TokenInfo(
                token_id=_token_id(name),
                token=name,
                logprob=float(value or 0.0),
                token_bytes=name.encode(),
                top_logprobs=tuple(
                    TopLogprob(_token_id(k), k, float(v), k.encode())
                    for k, v in sorted((top or {}).items(), key=lambda kv: -kv[1])
                ),
            )
            for name, value, top in zip(names, values, tops, strict=False)
        )
        return text, tokens

    async def list_models(self) -> list[ModelCard]:
        return [
            ModelCard(
                id=name,
                backend="openai-upstream",
                context_length=self.settings.upstream_context_length,
                owned_by="upstream",
                supports_json_schema=True,
                supports_grammar=False,
                supports_logprobs=True,
                supports_tools=True,
            )
            for name in self._models
        ]

    async def tokenize(self, request: GenerationRequest) -> TokenCount:
        """Uses vLLM's /tokenize extension; endpoints without one cannot count tokens."""
        model = self._model(request.model)
        root = str(self.client.base_url).rstrip("/").removesuffix("/v1")
        body: dict[str, Any] = {"model": model}
        if request.is_chat:
            body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
        else:
            body["prompt"] = request.prompt or ""
        try:
            response = await self.client.post(f"{root}/tokenize", json=body)
        except httpx.HTTPError as exc:
            raise Unavailable(f"upstream unreachable: {exc}") from exc
        if response.status_code in (404, 405):
            raise FailedPrecondition("the upstream endpoint cannot count tokens (no /tokenize)")
        if response.status_code != 200:
            raise _error_for_status(response.status_code, response.text)
        data = response.json()
        ids = tuple(int(i) for i in data.get("tokens", []))
        return TokenCount(
            ids, int(data.get("max_model_len", self.settings.upstream_context_length))
        )

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        # ListModels marks none of the upstream's models as an embedding model, so the router
        # never sends Embed here; a direct caller is told why.
        model = self._model(request.model)
        raise InvalidArgument(
            f"{model!r} generates text, it does not make embeddings (the openai-upstream "
            "backend serves no embedding models)",
            param="model",
        )

    async def load(self) -> Load:
        return Load(self._in_flight, 0, 0.0, self.settings.max_num_seqs)

    async def close(self) -> None:
        await self.client.aclose()
