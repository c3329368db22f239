#!/usr/bin/env python3
"""Download model files onto the model volume and verify every byte before a server loads them.

Runs as the init step of the inference pods (Helm) and as a one-off in docker-compose. Input
is a small YAML list (the chart renders it from values into a ConfigMap)::

    models:
      # a Hugging Face repository: files listed by allow_patterns land in <dest>/<id>/
      - id: qwen2.5-0.5b-instruct
        repo: Qwen/Qwen2.5-0.5B-Instruct-GGUF
        revision: main          # better: the commit sha you reviewed
        allow_patterns: ["qwen2.5-0.5b-instruct-q4_k_m.gguf"]
        sha256: {}              # optional per-file pins: {"<file>": "<64 hex>"}
      # any single file over https: its sha256 is required
      - id: my-model
        url: https://models.example.internal/my-model-q4_k_m.gguf
        sha256: <64 hex digits>
        path: my-model/my-model-q4_k_m.gguf

Single files must match their declared sha256. Repository files are checked against the
hashes the hub publishes for the resolved commit (sha256 for LFS files, the git blob sha1
for small files) and against any pin given here; a pin always wins. A file that fails is
deleted and the run exits non-zero, so the pod never starts on a corrupt or swapped model.
Verified files get a ``.lalo-verified`` stamp so a restart does not re-hash hundreds of GB.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import shutil
import sys
import tempfile
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHUNK = 8 * 1024 * 1024
STAMP_SUFFIX = ".lalo-verified"


class FetchError(RuntimeError):
    """A model could not be fetched or failed verification."""


@dataclass(frozen=True)
class Expected:
    """What one file must hash to: ``algorithm`` is ``sha256`` or ``gitsha1``."""

    algorithm: str
    digest: str


def file_digest(path: Path, algorithm: str) -> str:
    """sha256 of the bytes, or the git blob id (sha1 over ``blob <size>\\0`` + bytes)."""
    if algorithm == "sha256":
        digest = hashlib.sha256()
    elif algorithm == "gitsha1":
        digest = hashlib.sha1(usedforsecurity=False)
        digest.update(f"blob {path.stat().st_size}\0".encode())
    else:
        raise FetchError(f"unknown hash algorithm {algorithm!r}")
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + STAMP_SUFFIX)


def _stamp_text(path: Path, expected: Expected) -> str:
    stat = path.stat()
    return json.dumps([expected.algorithm, expected.digest.lower(), stat.st_size, stat.st_mtime_ns])


def already_verified(path: Path, expected: Expected) -> bool:
    stamp = _stamp(path)
    if not (path.is_file() and stamp.is_file()):
        return False
    return stamp.read_text() == _stamp_text(path, expected)


def verify(path: Path, expected: Expected) -> None:
    """Raise FetchError (after deleting the file) unless ``path`` hashes to ``expected``."""
    actual = file_digest(path, expected.algorithm)
    if actual.lower() != expected.digest.lower():
        path.unlink(missing_ok=True)
        _stamp(path).unlink(missing_ok=True)
        raise FetchError(
            f"{path}: {expected.algorithm} mismatch: expected {expected.digest}, got {actual};"
            " the file was deleted"
        )
    _stamp(path).write_text(_stamp_text(path, expected))


def _safe_join(root: Path, relative: str) -> Path:
    target = (root / relative).resolve()
    if root.resolve() not in target.parents:
        raise FetchError(f"path {relative!r} escapes the model directory {root}")
    return target


def fetch_url(entry: dict[str, Any], dest: Path) -> Path:
    """Download one URL to ``dest/<path>`` and verify its sha256 (required)."""
    url = str(entry["url"])
    sha = entry.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64:
        raise FetchError(f"model {entry.get('id')!r}: a url entry needs a 64-hex sha256")
    if not url.startswith(("https://", "http://", "file://")):
        raise FetchError(f"model {entry.get('id')!r}: unsupported URL scheme in {url!r}")
    target = _safe_join(dest, str(entry.get("path") or url.rsplit("/", 1)[-1]))
    expected = Expected("sha256", sha)
    if already_verified(target, expected):
        print(f"{entry.get('id')}: {target.name} already verified", flush=True)
        return target
    print(f"{entry.get('id')}: downloading {url}", flush=True)
    _download(url, target)
    verify(target, expected)
    print(f"{entry.get('id')}: {target.name} sha256 verified", flush=True)
    return target


def _hub_expectations(siblings: Iterable[dict[str, Any]]) -> dict[str, Expected]:
    """Map each file of a hub listing to the hash the hub publishes for it."""
    out: dict[str, Expected] = {}
    for sibling in siblings:
        lfs = sibling.get("lfs") or {}
        if lfs.get("sha256"):
            out[sibling["rfilename"]] = Expected("sha256", lfs["sha256"])
        elif sibling.get("blobId"):
            out[sibling["rfilename"]] = Expected("gitsha1", sibling["blobId"])
    return out


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _open(url: str) -> Any:
    if not url.startswith(("https://", "http://")):
        raise FetchError(f"unsupported URL scheme in {url!r}")
    headers = {"User-Agent": "lalo-fetch-models"}
    token = os.environ.get("HF_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (scheme checked)
    return urllib.request.urlopen(request, timeout=60)  # noqa: S310


def hub_listing(repo: str, revision: str) -> dict[str, Any]:
    """The hub's record of a repository at a revision: commit sha and per-file hashes."""
    url = f"{_hub_endpoint()}/api/models/{repo}/revision/{revision}?blobs=true"
    with _open(url) as reply:
        listing: dict[str, Any] = json.load(reply)
    return listing


def hub_download(repo: str, commit: str, name: str, target: Path) -> None:
    url = f"{_hub_endpoint()}/{repo}/resolve/{commit}/{name}"
    _download(url, target)


def _download(url: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        tmp_path = Path(tmp.name)
        try:
            if url.startswith("file://"):
                with Path(urllib.request.url2pathname(url[len("file://") :])).open("rb") as src:
                    shutil.copyfileobj(src, tmp, CHUNK)
            else:
                with _open(url) as reply:
                    shutil.copyfileobj(reply, tmp, CHUNK)
        except Exception:
            tmp_path.unlink(missing_ok=True)
            raise
    os.replace(tmp_path, target)


def fetch_repo(
    entry: dict[str, Any],
    dest: Path,
    listing: Any = hub_listing,
    download: Any = hub_download,
) -> Path:
    """Download a hub repository at a revision into ``dest/<id>`` and verify every file."""
    repo = str(entry["repo"])
    revision = str(entry.get("revision") or "main")
    patterns = list(entry.get("allow_patterns") or ["*"])
    pins = {name: Expected("sha256", sha) for name, sha in (entry.get("sha256") or {}).items()}
    info = listing(repo, revision)
    commit = str(info["sha"])
    published = _hub_expectations(info.get("siblings") or [])
    unknown_pins = sorted(set(pins) - set(published))
    if unknown_pins:
        raise FetchError(f"{repo}@{commit}: pinned files not in the repository: {unknown_pins}")
    expected = {**published, **pins}
    wanted = sorted(name for name in expected if any(fnmatch.fnmatch(name, p) for p in patterns))
    if not wanted:
        raise FetchError(f"{repo}@{commit}: no files match {patterns}")
    local = dest / str(entry["id"])
    print(f"{entry['id']}: {repo}@{commit} ({len(wanted)} files)", flush=True)
    for name in wanted:
        target = _safe_join(local, name)
        if already_verified(target, expected[name]):
            continue
        download(repo, commit, name, target)
        verify(target, expected[name])
    (local / ".lalo-revision").write_text(f"{repo}@{commit}\n")
    print(f"{entry['id']}: all {len(wanted)} files verified", flush=True)
    return local


def fetch_all(catalog: dict[str, Any], dest: Path, only: set[str] | None = None) -> list[Path]:
    results = []
    for entry in catalog.get("models") or []:
        if only and entry.get("id") not in only:
            continue
        if "url" in entry:
            results.append(fetch_url(entry, dest))
        elif "repo" in entry:
            results.append(fetch_repo(entry, dest))
        else:
            raise FetchError(f"model {entry.get('id')!r} needs either url or repo")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True, type=Path, help="YAML list of models")
    parser.add_argument("--dest", required=True, type=Path, help="model volume root")
    parser.add_argument("--only", action="append", help="fetch just these model ids")
    args = parser.parse_args(argv)
    import yaml

    catalog = yaml.safe_load(args.catalog.read_text()) or {}
    try:
        fetch_all(catalog, args.dest, set(args.only) if args.only else None)
    except FetchError as exc:
        print(f"model fetch failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
