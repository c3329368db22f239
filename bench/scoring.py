"""Prompt scoring (text completions' echo + logprobs + max_tokens 0, what evaluation harnesses
send for log-likelihoods) through gateway + router + inference-small, beside raw
llama-cpp-python scoring the same prompts on the same model and threads (``logits_all`` and
one log-softmax over every position, the reference a harness would run by hand).

Prints scored prompt tokens per second for both, one request at a time and, through the
stack, four at once (the engine scores them in one batch).
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from bench_model import MODEL_ID, bench_model, start_bench_stack

SERVICE_TOKEN = secrets.token_hex(16)
WORDS = [
    "the",
    "river",
    "ran",
    "past",
    "a",
    "quiet",
    "town",
    "where",
    "people",
    "read",
    "old",
    "books",
    "and",
    "baked",
    "bread",
]


def prompts(count: int, words: int) -> list[str]:
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS, size=words)) for _ in range(count)]


def raw_scoring(model: Path, texts: list[str], threads: int) -> tuple[float, int]:
    """Seconds and prompt tokens to score ``texts`` with llama-cpp-python alone."""
    import llama_cpp

    llm = llama_cpp.Llama(
        str(model), n_ctx=1024, n_batch=512, logits_all=True, n_threads=threads, verbose=False
    )
    scored = 0
    start = time.perf_counter()
    for text in texts:
        ids = llm.tokenize(text.encode(), add_bos=False)
        llm.reset()
        llm.eval(ids)
        logits = np.asarray(llm.scores[: len(ids)], dtype=np.float32)
        peak = logits.max(axis=1, keepdims=True)
        log_norm = peak + np.log(np.exp(logits - peak).sum(axis=1, keepdims=True))
        _ = logits[np.arange(len(ids) - 1), ids[1:]] - log_norm[:-1, 0]
        scored += len(ids)
    return time.perf_counter() - start, scored


def stack_scoring(base_url: str, key: str, texts: list[str], workers: int) -> tuple[float, int]:
    """Seconds and prompt tokens to score ``texts`` through the gateway, ``workers`` at once."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=300) as client:

        def score(text: str) -> int:
            body = {
                "model": MODEL_ID,
                "prompt": text,
                "echo": True,
                "max_tokens": 0,
                "logprobs": 0,
            }
            response = client.post("/v1/completions", json=body)
            response.raise_for_status()
            payload = response.json()
            assert payload["choices"][0]["text"] == text
            return int(payload["usage"]["prompt_tokens"])

        score(texts[0])  # warm-up
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            scored = sum(pool.map(score, texts))
        return time.perf_counter() - start, scored


def main() -> int:
    parser = argparse.ArgumentParser(description="LALO prompt-scoring benchmark")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--words", type=int, default=200)
    args = parser.parse_args()
    model = bench_model()
    texts = prompts(args.prompts, args.words)
    print(
        f"model {model.name}, {args.threads} threads, {args.prompts} prompts of {args.words} words",
        flush=True,
    )
    raw_s, raw_tokens = raw_scoring(model, texts, args.threads)
    key = f"sk-bench-{secrets.token_hex(8)}"
    stack = start_bench_stack(model, api_key=key, service_token=SERVICE_TOKEN, threads=args.threads)
    try:
        one_s, one_tokens = stack_scoring(stack.gateway_url, key, texts, workers=1)
        four_s, four_tokens = stack_scoring(stack.gateway_url, key, texts, workers=4)
    finally:
        stack.stop()
    raw_rate = raw_tokens / raw_s
    print()
    print(f"{'path':40} {'prompt tok/s':>12} {'vs raw':>7}")
    print(f"{'raw llama-cpp-python (logits_all)':40} {raw_rate:12.0f} {1.0:6.2f}x")
    for label, seconds, tokens in (
        ("gateway+router+inference, 1 at a time", one_s, one_tokens),
        ("gateway+router+inference, 4 at once", four_s, four_tokens),
    ):
        rate = tokens / seconds
        print(f"{label:40} {rate:12.0f} {rate / raw_rate:6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
