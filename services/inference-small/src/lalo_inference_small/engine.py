"""Continuous batching over llama.cpp: one context, many sequences, one decode loop.

A dedicated thread owns the llama.cpp context. Each step it admits waiting requests into
free sequence slots, drops cancelled sequences (freeing their KV cells), and decodes one
``llama_batch`` that carries the next token of every generating sequence plus chunks of
new prompts (chunked prefill, so a long prompt never stalls the others for long). Results
go back to asyncio consumers through ``loop.call_soon_threadsafe``; nothing blocking runs
on the event loop.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import contextlib
import heapq
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
import numpy as np
from lalo_common.errors import InvalidArgument, LaloError, ResourceExhausted, Unavailable
from lalo_common.prompt_inputs import checked_prompt_ids

from lalo_inference_small.llama_model import ChatTurn, LlamaModel
from lalo_inference_small.sampling import SamplerChain, SamplingConfig, check_grammar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopToken:
    token_id: int
    text: str
    logprob: float
    token_bytes: bytes


@dataclass(frozen=True)
class TokenOut:
    token_id: int
    text: str
    logprob: float | None  # None only for an echoed prompt's first token
    token_bytes: bytes
    top: tuple[TopToken, ...] = ()


@dataclass(frozen=True)
class TextDelta:
    text: str
    tokens: tuple[TokenOut, ...]


@dataclass(frozen=True)
class Echo:
    """The prompt sent back before any output (SamplingConfig.echo): its text as given and,
    with logprobs, its tokens each scored given the ones before."""

    text: str
    tokens: tuple[TokenOut, ...]


@dataclass(frozen=True)
class Finished:
    reason: str  # "stop" | "length" | "abort"
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    message: str


Event = TextDelta | Echo | Finished | Failed


def send_now(now: float, gap: float, oldest: float, hold: float, *, first: bool) -> bool:
    """Whether released output goes out now or waits for the next token.

    It waits only while the next token is expected soon enough that the oldest waiting one
    still leaves within ``hold`` of being made: the gap since the previous token predicts the
    next, so a step slower than predicted delays output by the difference only. The first
    output always goes at once (time to first token is not traded for anything).
    """
    return first or hold <= 0 or now + gap - oldest > hold


@dataclass(frozen=True)
class PreparedRequest:
    request_id: str
    prompt_ids: list[int]
    config: SamplingConfig
    max_new_tokens: int
    prompt_text: str = ""  # what an echo sends back


@dataclass(frozen=True)
class EngineConfig:
    n_ctx: int = 2048  # context per sequence
    parallel: int = 4  # sequences decoded together
    n_batch: int = 512  # tokens per decode step (prefill chunk budget)
    threads: int = 2
    max_waiting: int = 256
    # The longest a generated token may wait to go out together with the next ones. Every
    # message costs each hop (this server's send, the router, the gateway) CPU that llama.cpp
    # would otherwise use; when tokens come faster than this, sending two or three per message
    # keeps that cost from slowing generation. The first token and the last always go at once;
    # tokens slower than this go one by one. 0 sends every token as soon as it is made.
    stream_hold_s: float = 0.0


class RequestHandle:
    """The consumer's side of one request; lives on the event loop.

    The engine thread appends events to a deque and wakes the loop only when no wake-up is
    already on its way: a consumer that falls behind takes several events per wake-up (and
    sends them as one message) instead of costing the loop one wake-up per token.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._events: collections.deque[Event] = collections.deque()
        self._ready = asyncio.Event()
        self._wake_scheduled = False
        self.cancelled = False

    def push(self, event: Event) -> None:
        # Called from the engine thread. deque.append is atomic; the flag may be read stale
        # only as True while the scheduled _wake has not cleared it yet, and that _wake runs
        # after this append, so the consumer always sees the event.
        self._events.append(event)
        if self._wake_scheduled:
            return
        self._wake_scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # loop closed: nobody is listening any more
            self.cancelled = True

    def _wake(self) -> None:
        self._wake_scheduled = False
        self._ready.set()

    async def take(self) -> list[Event]:
        """Waits for events, then returns all that have arrived, consecutive deltas merged."""
        while not self._events:
            self._ready.clear()
            await self._ready.wait()
        events: list[Event] = []
        while self._events:
            event = self._events.popleft()
            last = events[-1] if events else None
            if isinstance(event, TextDelta) and isinstance(last, TextDelta):
                events[-1] = TextDelta(last.text + event.text, last.tokens + event.tokens)
            else:
                events.append(event)
        return events


@dataclass
class _Sequence:
    request: PreparedRequest
    handle: RequestHandle
    seq_id: int
    sampler: SamplerChain
    n_past: int = 0
    prefill_done: int = 0
    last_token: int = -1
    generated: int = 0
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    held_text: str = ""
    held_tokens: list[TokenOut] = field(default_factory=list)
    max_stop: int = 0
    freed: bool = False
    # Released text waiting to be sent (see EngineConfig.stream_hold_s).
    out_text: str = ""
    out_tokens: list[TokenOut] = field(default_factory=list)
    out_since: float = 0.0  # when the oldest unsent token was made
    last_release_at: float = 0.0  # released text comes once per token, bar stop hold-back
    sent_any: bool = False
    # An echo with logprobs: the prompt's tokens scored so far (in BatchEngine._step).
    echo_tokens: list[TokenOut] = field(default_factory=list)

    @property
    def prefilling(self) -> bool:
        return self.prefill_done < len(self.request.prompt_ids)


class BatchEngine:
    """Serves one model; thread-safe submit/cancel, asyncio-friendly generate."""

    def __init__(self, model: LlamaModel, config: EngineConfig, model_id: str) -> None:
        self.model = model
        self.config = config
        self.model_id = model_id
        self.n_ctx = min(config.n_ctx, model.n_ctx_train) if model.n_ctx_train > 0 else config.n_ctx
        self.n_batch = max(config.n_batch, config.parallel)
        # A KV stream per sequence: each gets its own n_ctx cells, and a sequence's numbers do
        # not depend on what else is in the batch (a shared stream changes float sums, so
        # greedy output in a batch would differ from the same request alone).
        ctx = model.new_context(
            model_id,
            n_ctx=self.n_ctx * config.parallel,
            n_batch=self.n_batch,
            n_seq_max=config.parallel,
            threads=config.threads,
            kv_unified=False,
        )
        self.ctx = ctx
        self.memory = llama_cpp.llama_get_memory(ctx)
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._pending: collections.deque[tuple[PreparedRequest, RequestHandle]] = (
            collections.deque()
        )
        self._cond = threading.Condition()
        self._active: list[_Sequence] = []
        # A heap: new sequences take the lowest free id (see _step for why).
        self._free_ids = list(range(config.parallel))
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"engine-{model_id}", daemon=True)
        self._thread.start()

    # ---- public API (any thread / event loop) ----

    @property
    def running(self) -> int:
        return len(self._active)

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def kv_usage(self) -> float:
        used = sum(seq.n_past for seq in list(self._active))
        return used / float(self.n_ctx * self.config.parallel)

    def prepare(
        self,
        request_id: str,
        config: SamplingConfig,
        *,
        prompt: str | None = None,
        chat: list[ChatTurn] | None = None,
        tools: list[dict[str, Any]] | None = None,
        prompt_ids: list[int] | None = None,
    ) -> PreparedRequest:
        """Tokenises and validates; blocking (run it in a worker thread). ``prompt_ids``:
        a prompt already tokenized by the caller, decoded as given (no BOS added)."""
        config.validate(self.model.n_vocab)
        if config.grammar:
            check_grammar(self.model.vocab, config.grammar)
        if config.echo and prompt is None and prompt_ids is None:
            raise InvalidArgument("echo is for raw prompts, not chat messages", param="echo")
        if prompt_ids is not None:
            ids = checked_prompt_ids(prompt_ids, self.model.n_vocab, self.model_id)
            prompt = b"".join(self.model.token_bytes(t) for t in ids).decode("utf-8", "replace")
        else:
            ids = self.tokenize(prompt=prompt, chat=chat, tools=tools)
        if not ids:
            raise InvalidArgument("the prompt is empty")
        limit = self.n_ctx
        if len(ids) >= limit:
            raise InvalidArgument(
                f"This model's maximum context length is {limit} tokens, "
                f"but the prompt has {len(ids)} tokens. Shorten the prompt."
            )
        if config.max_tokens is not None:
            if len(ids) + config.max_tokens > limit:
                raise InvalidArgument(
                    f"This model's maximum context length is {limit} tokens. However, you "
                    f"requested {len(ids) + config.max_tokens} tokens ({len(ids)} in the "
                    f"prompt, {config.max_tokens} for the completion). Reduce the prompt "
                    f"or max_tokens."
                )
            max_new = config.max_tokens
        else:
            max_new = limit - len(ids)
        return PreparedRequest(request_id, ids, config, max_new, prompt or "")

    def tokenize(
        self,
        *,
        prompt: str | None = None,
        chat: list[ChatTurn] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> list[int]:
        if chat is not None:
            if not chat:
                raise InvalidArgument("messages must not be empty")
            text = self.model.render_chat(chat, tools)
            # A template that writes the BOS token itself must not get a second one.
            bos = self.model.bos_text
            add_special = not (bos and self.model.add_bos and text.startswith(bos))
            return self.model.tokenize(text, add_special=add_special, parse_special=True)
        if prompt is None:
            raise InvalidArgument("either a prompt or chat messages are required")
        ids = self.model.tokenize(prompt, add_special=True, parse_special=False)
        if not ids and self.model.bos_id >= 0:
            ids = [self.model.bos_id]
        return ids

    async def generate(self, request: PreparedRequest) -> AsyncIterator[Event]:
        """Yields deltas then one Finished (or Failed); cancelling the consumer frees the slot."""
        handle = RequestHandle(asyncio.get_running_loop())
        with self._cond:
            if self._stopping:
                raise Unavailable("the engine is shutting down")
            if len(self._pending) >= self.config.max_waiting:
                raise ResourceExhausted(
                    f"{self.model_id} has {len(self._pending)} requests waiting; try again later"
                )
            self._pending.append((request, handle))
            self._cond.notify()
        try:
            while True:
                for event in await handle.take():
                    yield event
                    if isinstance(event, Finished | Failed):
                        return
        finally:
            # Consumer gone (finished, cancelled, or deadline): the engine frees the
            # sequence at its next step.
            handle.cancelled = True
            with self._cond:
                # Still queued: leave the queue now, so load reports and the max_waiting
                # limit do not count a request nobody waits for.
                with contextlib.suppress(ValueError):
                    self._pending.remove((request, handle))
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
        if self.batch is not None:
            llama_cpp.llama_batch_free(self.batch)
            self.batch = None
        if self.ctx:
            llama_cpp.llama_free(self.ctx)
            self.ctx = None

    # ---- engine thread ----

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._stopping and not self._pending and not self._active:
                        self._cond.wait(timeout=1.0)
                    if self._stopping:
                        break
                    admitted = self._admit_locked()
                for item in admitted:
                    self._start(item)
                self._reap_cancelled()
                if self._active:
                    self._step()
        except Exception:  # a bug here must not leave consumers hanging
            log.exception("engine loop for %s crashed", self.model_id)
            for seq in list(self._active):
                seq.handle.push(Failed("the inference engine failed"))
                self._free(seq)
        finally:
            with self._cond:
                pending = list(self._pending)
                self._pending.clear()
            for _request, handle in pending:
                handle.push(Failed("the engine is shutting down"))
            for seq in list(self._active):
                seq.handle.push(Failed("the engine is shutting down"))
                self._free(seq)

    def _admit_locked(self) -> list[tuple[PreparedRequest, RequestHandle, int]]:
        admitted = []
        while self._pending and self._free_ids:
            request, handle = self._pending.popleft()
            if handle.cancelled:
                continue
            admitted.append((request, handle, heapq.heappop(self._free_ids)))
        return admitted

    def _start(self, item: tuple[PreparedRequest, RequestHandle, int]) -> None:
        request, handle, seq_id = item
        try:
            sampler = SamplerChain(
                request.config,
                self.model.vocab,
                self.model.n_vocab,
                penalty_window=request.max_new_tokens,
            )
        except Exception as exc:
            if not isinstance(exc, LaloError):
                log.exception("could not set up sampling for %s", request.request_id)
            handle.push(Failed(getattr(exc, "message", "could not set up sampling")))
            heapq.heappush(self._free_ids, seq_id)
            return
        seq = _Sequence(request=request, handle=handle, seq_id=seq_id, sampler=sampler)
        seq.max_stop = max((len(s) for s in request.config.stop), default=0)
        self._active.append(seq)

    def _reap_cancelled(self) -> None:
        for seq in list(self._active):
            if seq.handle.cancelled:
                self._free(seq)

    def _free(self, seq: _Sequence) -> None:
        if seq.freed:
            return
        seq.freed = True
        if seq in self._active:
            self._active.remove(seq)
        llama_cpp.llama_memory_seq_rm(self.memory, seq.seq_id, -1, -1)
        seq.sampler.free()
        heapq.heappush(self._free_ids, seq.seq_id)

    def _step(self) -> None:
        batch = self.batch
        n = 0
        outputs: list[tuple[_Sequence, int]] = []

        def add(token: int, pos: int, seq_id: int, want_logits: bool) -> None:
            nonlocal n
            batch.token[n] = token
            batch.pos[n] = pos
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = seq_id
            batch.logits[n] = want_logits
            n += 1

        # With a KV stream per sequence llama.cpp puts only runs of consecutive, increasing
        # sequence ids into one ubatch; anything else is split into several decodes (four
        # sequences in the wrong order cost 92 ms a step instead of 57 ms on the TinyLlama
        # shape). So the batch goes in id order, and new sequences take the lowest free ids.
        self._active.sort(key=lambda seq: seq.seq_id)
        # Generating sequences first: one token each keeps their latency flat.
        for seq in self._active:
            if not seq.prefilling:
                add(seq.last_token, seq.n_past, seq.seq_id, True)
                outputs.append((seq, n - 1))
                seq.n_past += 1
        # Then prompt chunks within what is left of the batch.
        generating = n
        # Prompt positions whose logits score the next prompt token (echo with logprobs).
        scored: list[tuple[_Sequence, int, int]] = []
        for seq in self._active:
            if not seq.prefilling or n >= self.n_batch:
                continue
            ids = seq.request.prompt_ids
            score = seq.request.config.echo and seq.request.config.logprobs
            take = min(self.n_batch - n, len(ids) - seq.prefill_done)
            for i in range(take):
                index = seq.prefill_done + i
                last = index == len(ids) - 1
                add(ids[index], index, seq.seq_id, last or score)
                if score and not last:
                    scored.append((seq, n - 1, index + 1))
                if last:
                    outputs.append((seq, n - 1))
            seq.prefill_done += take
            seq.n_past = seq.prefill_done
        batch.n_tokens = n
        if n > generating:
            # A prompt chunk makes this step many times slower than the last: output held
            # for the next token (stream_hold_s) would wait for the whole chunk, so it goes now.
            for seq in self._active:
                self._send(seq)
        status = llama_cpp.llama_decode(self.ctx, batch)
        if status != 0:
            log.error("llama_decode returned %d for %d tokens", status, n)
            for seq, _ in outputs:
                self._send(seq)  # what was generated before the failure still arrives
                seq.handle.push(Failed(f"decoding failed (llama.cpp status {status})"))
                self._free(seq)
            return
        for seq, index, position in scored:
            token = seq.request.prompt_ids[position]
            seq.echo_tokens.append(self._token_info(seq, index, token))
        for seq, index in outputs:
            if seq.generated == 0 and seq.request.config.echo:
                self._echo(seq)
            if seq.request.max_new_tokens == 0:  # echo only: the prompt scored, no output
                self._finish(seq, "length")
                continue
            self._advance(seq, index)

    def _echo(self, seq: _Sequence) -> None:
        """Send the prompt back before the first generated token. Its tokens (with logprobs)
        leave out a leading BOS, which is not in the prompt's text; the first real token is
        then scored given it, and only a first token with nothing before it has no logprob."""
        request = seq.request
        tokens: list[TokenOut] = []
        if request.config.logprobs:
            ids = request.prompt_ids
            first = ids[0]
            if not (self.model.add_bos and first == self.model.bos_id):
                text = self.model.token_text(first)
                tokens.append(TokenOut(first, text, None, self.model.token_bytes(first)))
            tokens.extend(seq.echo_tokens)
            seq.echo_tokens = []
        seq.handle.push(Echo(request.prompt_text, tuple(tokens)))

    def _token_info(self, seq: _Sequence, index: int, token: int) -> TokenOut:
        model = self.model
        if not seq.request.config.logprobs:
            return TokenOut(token, model.token_text(token), 0.0, model.token_bytes(token))
        pointer = llama_cpp.llama_get_logits_ith(self.ctx, index)
        logits = np.ctypeslib.as_array(pointer, shape=(model.n_vocab,))
        peak = logits.max()
        log_norm = peak + np.log(np.exp(logits - peak).sum(dtype=np.float32))
        top: tuple[TopToken, ...] = ()
        k = seq.request.config.top_logprobs
        if k:
            best = np.argpartition(-logits, k)[:k]
            best = best[np.argsort(-logits[best])]
            top = tuple(
                TopToken(
                    int(t),
                    model.token_text(int(t)),
                    float(logits[t] - log_norm),
                    model.token_bytes(int(t)),
                )
                for t in best
            )
        return TokenOut(
            token,
            model.token_text(token),
            float(logits[token] - log_norm),
            model.token_bytes(token),
            top,
        )

    def _advance(self, seq: _Sequence, index: int) -> None:
        token = seq.sampler.sample(self.ctx, index)
        seq.generated += 1
        request = seq.request
        if self.model.is_eog(token):
            # Bytes of an unfinished UTF-8 character become U+FFFD, as a full decode would.
            seq.held_text += seq.decoder.decode(b"", final=True)
            self._release(seq, len(seq.held_text))
            self._finish(seq, "stop")
            return
        info = self._token_info(seq, index, token)
        seq.held_tokens.append(info)
        seq.held_text += seq.decoder.decode(info.token_bytes)
        stopped = False
        if request.config.stop:
            cut = min(
                (i for i in (seq.held_text.find(s) for s in request.config.stop) if i >= 0),
                default=-1,
            )
            if cut >= 0:
                seq.held_text = seq.held_text[:cut]
                stopped = True
        out_of_room = seq.generated >= request.max_new_tokens or seq.n_past + 1 >= self.n_ctx
        if stopped or out_of_room:
            if not stopped:
                seq.held_text += seq.decoder.decode(b"", final=True)
            self._release(seq, len(seq.held_text))
            self._finish(seq, "stop" if stopped else "length")
            return
        # Hold back text that could still become the start of a stop sequence.
        keep = seq.max_stop - 1 if seq.max_stop else 0
        self._release(seq, max(0, len(seq.held_text) - keep))
        seq.last_token = token

    def _release(self, seq: _Sequence, upto: int) -> None:
        text = seq.held_text[:upto]
        if not text and not (seq.request.config.logprobs and seq.held_tokens):
            return
        now = time.monotonic()
        if not seq.out_text and not seq.out_tokens:
            seq.out_since = now
        seq.out_text += text
        seq.out_tokens.extend(seq.held_tokens)
        seq.held_tokens.clear()
        seq.held_text = seq.held_text[upto:]
        gap = now - seq.last_release_at
        seq.last_release_at = now
        if send_now(now, gap, seq.out_since, self.config.stream_hold_s, first=not seq.sent_any):
            self._send(seq)

    def _send(self, seq: _Sequence) -> None:
        if not seq.out_text and not seq.out_tokens:
            return
        seq.handle.push(TextDelta(seq.out_text, tuple(seq.out_tokens)))
        seq.out_text = ""
        seq.out_tokens = []
        seq.sent_any = True

    def _finish(self, seq: _Sequence, reason: str) -> None:
        self._send(seq)
        seq.handle.push(Finished(reason, len(seq.request.prompt_ids), seq.generated))
        self._free(seq)
