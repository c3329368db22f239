"""One loaded GGUF model: weights, vocabulary, tokenizer and chat template.

Wraps llama.cpp's low-level C API (through llama-cpp-python's ctypes bindings). The
high-level ``Llama`` class is deliberately not used: it decodes one sequence at a time,
while the engine needs one context shared by many sequences.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
import llama_cpp
from lalo_common.errors import FailedPrecondition, InvalidArgument, Unavailable
from lalo_common.tool_calls import (
    CallFormat,
    choose_call_format,
    renders_tool_calls,
    template_calls,
    with_calls_written,
)

log = logging.getLogger(__name__)

_backend_lock = threading.Lock()
_backend_ready = False
_LLAMA_LOG = logging.getLogger("llama.cpp")
# ggml_log_level: NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4, CONT=5.
_LEVELS = {3: logging.WARNING, 4: logging.ERROR}


@llama_cpp.llama_log_callback
def _forward_llama_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    # Only warnings and errors: llama.cpp's info level prints every graph detail.
    python_level = _LEVELS.get(level)
    if python_level is not None and _LLAMA_LOG.isEnabledFor(python_level):
        _LLAMA_LOG.log(python_level, text.decode("utf-8", errors="replace").rstrip())


def ensure_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            # The callback is a module global, so it stays referenced for the process's life
            # (a collected ctypes callback makes llama.cpp segfault).
            llama_cpp.llama_log_set(_forward_llama_log, ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()
            _backend_ready = True


@dataclass(frozen=True)
class ChatTurn:
    role: str
    content: str
    name: str = ""
    tool_call_id: str = ""
    # An assistant turn's calls: (id, name, arguments as a JSON object's text).
    tool_calls: tuple[tuple[str, str, str], ...] = ()


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """``tojson`` as Hugging Face's chat templates expect it (the templates in GGUF files
    are theirs): plain JSON, not Jinja's HTML-escaped kind ("<" would become "\\u003c" in a
    tool's description)."""
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


class LlamaModel:
    """Weights and vocabulary of one GGUF file; safe to tokenize from any thread."""

    def __init__(self, path: Path, *, use_mmap: bool = False) -> None:
        ensure_backend()
        if not path.is_file():
            raise FailedPrecondition(f"model file not found: {path}")
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0
        # Without mmap Q4_0 weights are repacked once into RAM (about half the RSS of mmap).
        params.load_mode = (
            llama_cpp.LLAMA_LOAD_MODE_MMAP if use_mmap else llama_cpp.LLAMA_LOAD_MODE_NONE
        )
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            raise FailedPrecondition(f"llama.cpp could not load {path}")
        self.path = path
        self.model = model
        vocab = llama_cpp.llama_model_get_vocab(model)
        if not vocab:
            raise FailedPrecondition(f"{path} has no vocabulary")
        self.vocab = vocab
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        self.n_ctx_train = llama_cpp.llama_model_n_ctx_train(model)
        self.eos_id = llama_cpp.llama_vocab_eos(vocab)
        self.bos_id = llama_cpp.llama_vocab_bos(vocab)
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        self.architecture = self.metadata("general.architecture") or ""
        # Sentence-embedding models (BERT, nomic-bert, ...) say how to pool token states into
        # one vector; text generators do not.
        self.pools_embeddings = self.metadata(f"{self.architecture}.pooling_type") is not None
        template = llama_cpp.llama_model_chat_template(model, None)
        self.chat_template_source = template.decode("utf-8") if template else None
        self._template: jinja2.Template | None = None
        if self.chat_template_source:
            env = jinja2.sandbox.ImmutableSandboxedEnvironment(
                trim_blocks=True, lstrip_blocks=True, loader=jinja2.BaseLoader()
            )
            env.globals["raise_exception"] = _raise_exception
            env.filters["tojson"] = _tojson
            self._template = env.from_string(self.chat_template_source)
        self._piece_cache: dict[int, bytes] = {}
        self._eog = [bool(llama_cpp.llama_vocab_is_eog(vocab, t)) for t in range(self.n_vocab)]
        self.call_format, self._shown_markers = self._find_call_format()
        # As chat templates write them ("<s>", "</s>", "<|begin_of_text|>"): they are control
        # tokens, which token_text leaves out, and a template that ends each turn with
        # eos_token (TinyLlama's, Mistral's) would otherwise lose the turn's end.
        self.bos_text = self._special_text(self.bos_id)
        self.eos_text = self._special_text(self.eos_id)

    def _find_call_format(self) -> tuple[CallFormat, frozenset[int]]:
        """The format the model writes tool calls in (choose_call_format: told by its
        vocabulary and template), and its marker tokens, which are rendered into text even
        when they are control tokens (LFM2's and DeepSeek's are), which llama.cpp otherwise
        leaves out: the call reader needs them, and they mean nothing else."""
        fmt = choose_call_format(
            self.chat_template_source or "", lambda text: self._single_token(text) is not None
        )
        ids = (self._single_token(marker) for marker in fmt.markers)
        return fmt, frozenset(token for token in ids if token is not None)

    def _special_text(self, token_id: int) -> str:
        if token_id < 0:
            return ""
        return self._piece(token_id, special=True).decode("utf-8", errors="replace")

    def _piece(self, token_id: int, *, special: bool) -> bytes:
        """A token's bytes; ``special``: control tokens as their text, not left out."""
        buffer = ctypes.create_string_buffer(64)
        size = llama_cpp.llama_token_to_piece(self.vocab, token_id, buffer, 64, 0, special)
        if size < 0:
            buffer = ctypes.create_string_buffer(-size)
            size = llama_cpp.llama_token_to_piece(self.vocab, token_id, buffer, -size, 0, special)
        return buffer.raw[:size]

    def _single_token(self, text: str) -> int | None:
        ids = self.tokenize(text, add_special=False, parse_special=True)
        return ids[0] if len(ids) == 1 else None

    def metadata(self, key: str) -> str | None:
        """A GGUF metadata value as text, None when the file lacks the key."""
        buffer = ctypes.create_string_buffer(256)
        size = llama_cpp.llama_model_meta_val_str(self.model, key.encode(), buffer, 256)
        if size < 0:
            return None
        if size >= 256:
            buffer = ctypes.create_string_buffer(size + 1)
            llama_cpp.llama_model_meta_val_str(self.model, key.encode(), buffer, size + 1)
        return buffer.value.decode("utf-8", errors="replace")

    def new_context(
        self,
        model_id: str,
        *,
        n_ctx: int,
        n_batch: int,
        n_seq_max: int,
        threads: int,
        kv_unified: bool,
        embeddings: bool = False,
    ) -> Any:
        """A llama.cpp context over these weights (the caller frees it with llama_free):
        ``n_ctx`` cells in all, micro-batches as large as ``n_batch``, CPU threads for
        decoding and prompt processing alike."""
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = n_seq_max
        params.n_threads = threads
        params.n_threads_batch = threads
        params.kv_unified = kv_unified
        params.embeddings = embeddings
        params.no_perf = True
        ctx = llama_cpp.llama_init_from_model(self.model, params)
        if not ctx:
            raise Unavailable(f"llama.cpp could not create a context for {model_id}")
        return ctx

    def close(self) -> None:
        if self.model:
            llama_cpp.llama_model_free(self.model)
            self.model = None

    def token_text(self, token_id: int) -> str:
        return self.token_bytes(token_id).decode("utf-8", errors="replace")

    def is_eog(self, token_id: int) -> bool:
        return self._eog[token_id]

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8", errors="replace")
        capacity = len(data) + 8
        buffer = (llama_cpp.llama_token * capacity)()
        count = llama_cpp.llama_tokenize(
            self.vocab, data, len(data), buffer, capacity, add_special, parse_special
        )
        if count < 0:
            capacity = -count
            buffer = (llama_cpp.llama_token * capacity)()
            count = llama_cpp.llama_tokenize(
                self.vocab, data, len(data), buffer, capacity, add_special, parse_special
            )
        return list(buffer[:count])

    def token_bytes(self, token_id: int) -> bytes:
        cached = self._piece_cache.get(token_id)
        if cached is not None:
            return cached
        piece = self._piece(token_id, special=token_id in self._shown_markers)
        self._piece_cache[token_id] = piece
        return piece

    def render_chat(self, turns: list[ChatTurn], tools: list[dict[str, Any]] | None = None) -> str:
        """Applies the model's own chat template (from the GGUF metadata)."""
        if self._template is None:
            # No template in the file: a plain transcript is the least surprising fallback.
            lines = [f"{turn.role}: {turn.content}" for turn in turns]
            return "\n".join([*lines, "assistant:"])
        calls_in_content = any(turn.tool_calls for turn in turns) and not self.renders_tool_calls
        messages = []
        for turn in turns:
            message: dict[str, Any] = {"role": turn.role, "content": turn.content}
            if turn.name:
                message["name"] = turn.name
            if turn.tool_call_id:
                message["tool_call_id"] = turn.tool_call_id
            if turn.tool_calls:
                message["tool_calls"] = template_calls(turn.tool_calls)
                if calls_in_content:
                    # The template shows only content (LFM2's): the model sees its earlier
                    # calls as it wrote them.
                    message["content"] = with_calls_written(
                        turn.content,
                        [(name, arguments) for _, name, arguments in turn.tool_calls],
                        self.call_format,
                    )
            messages.append(message)
        return self._apply_template(messages, tools)

    def _apply_template(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> str:
        assert self._template is not None
        try:
            return self._template.render(
                messages=messages,
                tools=tools or None,
                add_generation_prompt=True,
                bos_token=self.bos_text,
                eos_token=self.eos_text,
            )
        except jinja2.exceptions.TemplateError as exc:
            raise InvalidArgument(
                f"the model's chat template rejected the messages: {exc}", param="messages"
            ) from exc

    @functools.cached_property
    def renders_tools(self) -> bool:
        """Whether the chat template shows the model the tools it is given (probed once with
        a made-up one): only then can it decide to call one."""
        if self._template is None:
            return False
        probe = "lalo_probe_tool_7f3a"
        tool = {"type": "function", "function": {"name": probe, "parameters": {}}}
        try:
            text = self.render_chat([ChatTurn("user", "hi")], [tool])
        except InvalidArgument:
            return False
        return probe in text

    @functools.cached_property
    def renders_tool_calls(self) -> bool:
        """Whether the chat template shows an assistant turn's ``tool_calls`` (probed once;
        lalo_common.tool_calls.renders_tool_calls)."""
        if self._template is None:
            return False
        return renders_tool_calls(lambda messages: self._apply_template(messages, None))
