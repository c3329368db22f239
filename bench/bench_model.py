"""The TinyLlama-shaped benchmark model and the stack serving it, shared by the inference
and prompt-scoring benchmarks (same model, same engine settings, so their figures compare)."""

from __future__ import annotations

from pathlib import Path

from lalo_testing.stack import Stack, start_stack
from lalo_testing.tiny_model import write_model

ROOT = Path(__file__).resolve().parents[1]
# "v2": the layout whose output is real text (earlier files streamed empty padding tokens).
BENCH_MODEL = ROOT / ".lalo" / "models" / "bench-tinyllama-q4_0.v2.gguf"
MODEL_ID = "bench"


def bench_model(path: Path | None = None) -> Path:
    """The benchmark model (``path`` or the default), written once if missing."""
    model = path or BENCH_MODEL
    if not model.exists():
        print(f"writing the TinyLlama-shaped Q4_0 benchmark model to {model} ...", flush=True)
        write_model(model, "tinyllama", seed=0)
    return model


def start_bench_stack(model: Path, *, api_key: str, service_token: str, threads: int) -> Stack:
    """gateway + router + inference-small on ``model`` as ``MODEL_ID``: four sequences of
    1,024 tokens, logs in .lalo/bench-logs."""
    return start_stack(
        model,
        api_key=api_key,
        service_token=service_token,
        model_id=MODEL_ID,
        threads=threads,
        parallel=4,
        n_ctx=1024,
        log_dir=ROOT / ".lalo" / "bench-logs",
        timeout_s=300,
    )
