"""Sentence embeddings from a GGUF embedding model (BERT family: all-MiniLM, bge, nomic-embed)
through llama.cpp's low-level API.

One context per model, sized so that a whole input fits one micro-batch: encoder models attend
in both directions, so llama.cpp cannot split a sequence across decodes. Inputs are packed
into batches of up to ``max_sequences`` sequences and ``n_ctx`` tokens; llama.cpp pools each
sequence (the model's own pooling type, mean for sentence-transformers models) and the vector
is L2-normalised, as OpenAI's are, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import llama_cpp
import numpy as np
from lalo_common.embedding_inputs import checked_token_lists
from lalo_common.errors import FailedPrecondition, Unavailable
from numpy.typing import NDArray

from lalo_inference_small.llama_model import LlamaModel


@dataclass(frozen=True)
class Embeddings:
    vectors: list[NDArray[np.float32]]
    prompt_tokens: int


class EmbeddingEngine:
    """Serves one embedding model. ``embed`` is thread-safe (calls take turns on the
    context); ``embed_async`` queues calls on the engine's own thread."""

    def __init__(
        self,
        model: LlamaModel,
        model_id: str,
        *,
        n_ctx: int = 512,
        max_sequences: int = 8,
        threads: int = 2,
    ) -> None:
        if not model.pools_embeddings:
            raise FailedPrecondition(
                f"{model.path} is not a sentence-embedding model (its GGUF names no pooling)"
            )
        self.model = model
        self.model_id = model_id
        self.n_ctx = min(n_ctx, model.n_ctx_train) if model.n_ctx_train > 0 else n_ctx
        self.max_sequences = max_sequences
        # One pool of n_ctx cells shared by the batch's sequences (split per sequence, each
        # would get n_ctx / max_sequences rounded up, and llama.cpp would warn of it); a whole
        # input in one micro-batch, as encoders need.
        ctx = model.new_context(
            model_id,
            n_ctx=self.n_ctx,
            n_batch=self.n_ctx,
            n_seq_max=max_sequences,
            threads=threads,
            kv_unified=True,
            embeddings=True,
        )
        self.ctx = ctx
        self.memory = llama_cpp.llama_get_memory(ctx)
        self.dimensions = int(llama_cpp.llama_model_n_embd(model.model))
        self.batch = llama_cpp.llama_batch_init(self.n_ctx, 0, 1)
        self._lock = threading.Lock()
        # Calls wait their turn here rather than in asyncio's default thread pool: a burst of
        # embeddings blocked on the lock there would hold every thread that chat requests
        # need to tokenize their prompts.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"embed-{model_id}")
        self._count_lock = threading.Lock()
        self.running = 0
        self.waiting = 0

    def tokenize(self, text: str) -> list[int]:
        return self.model.tokenize(text, add_special=True, parse_special=False)

    def embed(self, texts: list[str]) -> Embeddings:
        """One normalised vector per text, in order. Raises InvalidArgument for an empty text
        or one longer than the context (nothing is cut silently: the vector would describe
        only part of the text)."""
        self._count("waiting", 1)
        return self._embed_counted(texts)

    async def embed_async(self, texts: list[str]) -> Embeddings:
        """``embed`` on the engine's own thread (counted as waiting while queued)."""
        self._count("waiting", 1)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._embed_counted, texts)

    def _count(self, what: str, step: int) -> None:
        with self._count_lock:
            setattr(self, what, getattr(self, what) + step)

    def _embed_counted(self, texts: list[str]) -> Embeddings:
        """``embed`` for a call already counted as waiting."""
        try:
            token_lists = self._checked_tokens(texts)
        except BaseException:
            self._count("waiting", -1)
            raise
        with self._lock:
            self._count("waiting", -1)
            self._count("running", 1)
            try:
                vectors = self._embed_locked(token_lists)
            finally:
                self._count("running", -1)
        return Embeddings(vectors=vectors, prompt_tokens=sum(len(ids) for ids in token_lists))

    def _checked_tokens(self, texts: list[str]) -> list[list[int]]:
        return checked_token_lists(texts, self.tokenize, self.n_ctx, self.model_id)

    def _embed_locked(self, token_lists: list[list[int]]) -> list[NDArray[np.float32]]:
        if self.ctx is None:
            raise Unavailable(f"{self.model_id} is shutting down")
        vectors: list[NDArray[np.float32]] = []
        group: list[list[int]] = []
        tokens = 0
        for ids in token_lists:
            if group and (tokens + len(ids) > self.n_ctx or len(group) >= self.max_sequences):
                vectors.extend(self._decode(group))
                group, tokens = [], 0
            group.append(ids)
            tokens += len(ids)
        if group:
            vectors.extend(self._decode(group))
        return vectors

    def _decode(self, group: list[list[int]]) -> list[NDArray[np.float32]]:
        batch = self.batch
        n = 0
        for seq_id, ids in enumerate(group):
            for pos, token in enumerate(ids):
                batch.token[n] = token
                batch.pos[n] = pos
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq_id
                # Every token is an output in embedding mode (llama.cpp pools them).
                batch.logits[n] = True
                n += 1
        batch.n_tokens = n
        if self.memory:
            llama_cpp.llama_memory_clear(self.memory, True)
        status = llama_cpp.llama_decode(self.ctx, batch)
        if status != 0:
            raise Unavailable(f"llama.cpp could not embed with {self.model_id} (status {status})")
        out: list[NDArray[np.float32]] = []
        for seq_id in range(len(group)):
            pointer = llama_cpp.llama_get_embeddings_seq(self.ctx, seq_id)
            if not pointer:
                raise Unavailable(f"llama.cpp returned no embedding for {self.model_id}")
            vector = np.ctypeslib.as_array(pointer, shape=(self.dimensions,)).astype(np.float32)
            norm = float(np.linalg.norm(vector))
            out.append(vector / norm if norm > 0.0 else vector)
        return out

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            if self.batch is not None:
                llama_cpp.llama_batch_free(self.batch)
                self.batch = None
            if self.ctx:
                llama_cpp.llama_free(self.ctx)
                self.ctx = None
