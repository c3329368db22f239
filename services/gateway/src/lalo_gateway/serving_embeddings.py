"""Embeddings: OpenAI request → one router Embed call → OpenAI's list of vectors.

Built once at start-up and kept on ``app.state`` like the chat serving objects. Vectors go
out as JSON floats or, for ``encoding_format: "base64"`` (what the openai SDK asks for by
default), as base64 of their little-endian float32 bytes, exactly as OpenAI sends them.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence

from fastapi.responses import JSONResponse
from lalo.inference.v1 import inference_pb2 as ipb
from lalo.router.v1 import router_pb2 as rpb
from lalo_common.embedding_inputs import fixed_length_refusal

from lalo_gateway.errors import APIError
from lalo_gateway.protocol import EmbeddingRequest
from lalo_gateway.router_client import RouterClient, stamp_caller
from lalo_gateway.security.edge import check_input_count
from lalo_gateway.security.principal import Principal
from lalo_gateway.serving import UsageHook, input_texts

INPUT_PARAM = "input"


def encode_base64(values: Sequence[float]) -> str:
    """OpenAI's base64 encoding: the vector's float32 values, little-endian."""
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")


def check_dimensions(wanted: int | None, model: str, result: ipb.EmbedResponse) -> None:
    """The vectors must have the length asked for: a model that can shorten its vectors
    (Matryoshka, on inference-large) was asked to, and every other model refuses another
    length itself; this catches a replica that ignored the request."""
    if wanted is None or not result.embeddings:
        return
    length = len(result.embeddings[0].values)
    if wanted != length:
        raise fixed_length_refusal(model, length)


class ServingEmbeddings:
    def __init__(
        self, router: RouterClient, on_usage: UsageHook | None = None, *, max_inputs: int = 2048
    ) -> None:
        self.router = router
        self.on_usage = on_usage
        self.max_inputs = max_inputs

    async def create(
        self, body: EmbeddingRequest, request_id: str, principal: Principal | None = None
    ) -> JSONResponse:
        texts = input_texts(body.input, INPUT_PARAM)
        check_input_count(len(texts), self.max_inputs)
        router_request = rpb.EmbedRequest(request_id=request_id, model=body.model, inputs=texts)
        if body.dimensions is not None:
            router_request.dimensions = body.dimensions
        stamp_caller(router_request, principal)
        reply = await self.router.embed(router_request)
        result = reply.result
        model = result.model or body.model
        if len(result.embeddings) != len(texts):
            raise APIError(
                502,
                f"the router returned {len(result.embeddings)} embeddings for {len(texts)} inputs",
                type_="server_error",
                code="bad_gateway",
            )
        # Checked against what came back when the request named a length (the gateway holds
        # no model catalogue): the work is done, but nothing is charged for a refusal.
        check_dimensions(body.dimensions, model, result)
        if self.on_usage is not None:
            self.on_usage(result.prompt_tokens, 0, model)
        as_base64 = body.encoding_format == "base64"
        payload = {
            "object": "list",
            "data": [
                {
                    "object": "embedding",
                    "index": index,
                    "embedding": (
                        encode_base64(embedding.values) if as_base64 else list(embedding.values)
                    ),
                }
                for index, embedding in enumerate(result.embeddings)
            ],
            "model": model,
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
        }
        headers = {"x-request-id": request_id, "x-lalo-model": model}
        if reply.pool:
            headers["x-lalo-route"] = reply.pool
        return JSONResponse(payload, headers=headers)
