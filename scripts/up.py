"""``make up``: run gateway, router and inference-small locally (embedded mode).

Uses the model named by LALO_INFERENCE_SMALL_MODEL_PATH when set, otherwise writes the tiny
random-weight model; serves all-MiniLM-L6-v2 (from the installed package, converted to GGUF)
for /v1/embeddings unless LALO_EMBEDDINGS=0; creates a development API key when LALO_API_KEYS
is unset; prints how to call the API; stops every process on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from pathlib import Path

from lalo_testing.embedding_model import MODEL_ID as MINILM_ID
from lalo_testing.embedding_model import write_minilm
from lalo_testing.stack import start_stack
from lalo_testing.tiny_model import write_model

STATE = Path(".lalo")


def _caught_signals(pid: int) -> int | None:
    """The mask of signals ``pid`` has handlers for (Linux /proc), or None if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        return None
    return None


class MakeWatch:
    """Notices when the ``make`` that launched us was interrupted.

    GNU make passes SIGTERM on to its children but not SIGINT: it expects the terminal to
    deliver SIGINT to the whole process group, resets its handler and waits for the children
    to exit. So ``kill -INT <make>`` alone would leave make waiting on a platform that never
    heard of it. The reset handler is visible in /proc: when the parent stops catching SIGINT
    (or is gone), we stop too.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.initial = _caught_signals(pid)

    @classmethod
    def of_parent(cls) -> MakeWatch | None:
        ppid = os.getppid()
        try:
            name = Path(f"/proc/{ppid}/comm").read_text().strip()
        except OSError:
            return None
        return cls(ppid) if name in ("make", "gmake") else None

    def interrupted(self) -> bool:
        sigint = 1 << (signal.SIGINT - 1)
        if self.initial is None or not self.initial & sigint:
            return False  # make ignores SIGINT (started in the background): nothing to see
        now = _caught_signals(self.pid)
        return now is None or not now & sigint or os.getppid() != self.pid


def _configured(kind: str) -> tuple[Path, str] | None:
    """LALO_INFERENCE_SMALL_{kind}_PATH (which must exist) and its _ID, when set."""
    configured = os.environ.get(f"LALO_INFERENCE_SMALL_{kind}_PATH")
    if not configured:
        return None
    path = Path(configured)
    if not path.is_file():
        sys.exit(f"LALO_INFERENCE_SMALL_{kind}_PATH={configured} does not exist")
    return path, os.environ.get(f"LALO_INFERENCE_SMALL_{kind}_ID") or path.stem


def _model() -> tuple[Path, str]:
    configured = _configured("MODEL")
    if configured:
        return configured
    path = STATE / "models" / "tiny-chat.gguf"
    if not path.exists():
        print(
            "No model configured: writing the tiny random-weight test model "
            f"({path}). Set LALO_INFERENCE_SMALL_MODEL_PATH to serve a real GGUF model."
        )
        write_model(path, "tiny", seed=0)
    return path, "tiny-chat"


def _embedding_model() -> tuple[Path, str] | None:
    """The embedding model for /v1/embeddings: LALO_INFERENCE_SMALL_EMBEDDING_MODEL_PATH, or
    all-MiniLM-L6-v2 (real weights, from the installed package) converted to GGUF once;
    LALO_EMBEDDINGS=0 serves none."""
    if os.environ.get("LALO_EMBEDDINGS", "1") == "0":
        return None
    configured = _configured("EMBEDDING_MODEL")
    if configured:
        return configured
    path = STATE / "models" / f"{MINILM_ID}.gguf"
    if not path.exists():
        print(f"Writing the embedding model {MINILM_ID} ({path}) from the installed package.")
        write_minilm(path)
    return path, MINILM_ID


def _api_key() -> tuple[str, bool]:
    configured = os.environ.get("LALO_API_KEYS", "").strip()
    if configured:
        return configured, False
    key_file = STATE / "dev-api-key"
    if key_file.exists():
        return key_file.read_text().strip(), True
    key = f"sk-lalo-dev-{secrets.token_urlsafe(24)}"
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    return key, True


def main() -> int:
    model_path, model_id = _model()
    embedding = _embedding_model()
    keys, generated = _api_key()
    first_key = keys.split(",")[0].strip()
    port = int(os.environ.get("LALO_GATEWAY_PORT", "8000"))
    workflows = os.environ.get("LALO_WORKFLOWS", "1") != "0"
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    make = MakeWatch.of_parent()
    print(f"Starting LALO (model {model_id}) ... logs in {STATE / 'logs'}/")
    try:
        stack = start_stack(
            model_path,
            api_key=keys,
            model_id=model_id,
            gateway_port=port,
            # The complex path (workflows, tools) in embedded mode; LALO_WORKFLOWS=0 skips it.
            workflows=workflows,
            gateway_grpc_port=int(os.environ.get("LALO_GATEWAY_GRPC_PORT", "50050")),
            log_dir=STATE / "logs",
            embedding_model_path=embedding[0] if embedding else None,
            embedding_model_id=embedding[1] if embedding else MINILM_ID,
            service_token=os.environ.get("LALO_SERVICE_TOKEN") or secrets.token_hex(16),
            extra_env={
                "LALO_GATEWAY_DATABASE_URL": os.environ.get(
                    "LALO_GATEWAY_DATABASE_URL", f"sqlite:///{(STATE / 'gateway.db').resolve()}"
                ),
                "LALO_GATEWAY_AUDIT_SPOOL_PATH": str(
                    (STATE / "gateway-audit-spool.jsonl").resolve()
                ),
            },
        )
    except KeyboardInterrupt:
        print("stopped before it was ready")
        return 130
    except (RuntimeError, TimeoutError) as exc:
        print(f"LALO did not start: {exc}\nSee the logs in {STATE / 'logs'}/", file=sys.stderr)
        return 1
    url = stack.gateway_url
    key_note = " (development key, kept in .lalo/dev-api-key)" if generated else ""
    workflow_note = (
        'Workflows: model "workflow" (or "auto" for agentic requests) answers through a\n'
        "planned, durable workflow; /v1/workflows creates and follows them directly.\n"
        if workflows
        else "Workflows are off (LALO_WORKFLOWS=0).\n"
    )
    embedding_note = (
        f"""Embeddings ({embedding[1]}):
curl {url}/v1/embeddings -H "Authorization: Bearer {first_key}" \\
  -H "Content-Type: application/json" -d '{{"model": "{embedding[1]}", "input": "Hello!"}}'

"""
        if embedding
        else ""
    )
    if workflows and "LALO_INFERENCE_SMALL_MODEL_PATH" not in os.environ:
        workflow_note += (
            "With the random-weight test model plans are nonsense and most workflows fail:\n"
            '"auto" then answers directly (x-lalo-workflow-id names the workflow tried),\n'
            'model "workflow" answers 422 workflow_failed saying which step failed.\n'
        )
    print(
        f"""
LALO is ready at {url}/v1
API key: {first_key}{key_note}

curl {url}/v1/chat/completions \\
  -H "Authorization: Bearer {first_key}" -H "Content-Type: application/json" \\
  -d '{{"model": "auto", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

python - <<'PY'
from openai import OpenAI
client = OpenAI(base_url="{url}/v1", api_key="{first_key}")
reply = client.chat.completions.create(
    model="{model_id}", messages=[{{"role": "user", "content": "Hello!"}}], max_tokens=32)
print(reply.choices[0].message.content)
PY

{embedding_note}{workflow_note}
gRPC (lalo.router.v1.RouterService, metadata "authorization: Bearer <key>"):
  {stack.gateway_grpc_target}

Press Ctrl-C to stop.""",
        flush=True,
    )
    try:
        while True:
            for service in stack.services:
                if service.process.poll() is not None:
                    print(
                        f"{service.name} exited ({service.process.returncode}); stopping. "
                        f"See {service.log_path}",
                        file=sys.stderr,
                    )
                    return 1
            if make is not None and make.interrupted():
                print("\nmake was interrupted; stopping LALO ...")
                return 0
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping LALO ...")
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
