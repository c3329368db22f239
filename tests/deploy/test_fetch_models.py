"""The model init step (deploy/docker/fetch_models.py): nothing reaches the model volume
unless its hash matches, against pins or the hub's published records."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


class FakeHub:
    """A hub listing and download for one repository, from in-memory files."""

    def __init__(
        self, files: dict[str, bytes], lfs: set[str], served: dict[str, bytes] | None = None
    ):
        self.files = files
        self.lfs = lfs
        self.served = served or files
        self.downloads: list[str] = []

    def listing(self, repo: str, revision: str) -> dict[str, Any]:
        siblings = []
        for name, data in self.files.items():
            entry: dict[str, Any] = {"rfilename": name, "blobId": git_blob_sha1(data)}
            if name in self.lfs:
                entry["lfs"] = {"sha256": sha256(data), "size": len(data)}
            siblings.append(entry)
        return {"sha": "c0ffee" + "0" * 34, "siblings": siblings}

    def download(self, repo: str, commit: str, name: str, target: Path) -> None:
        assert commit.startswith("c0ffee"), "downloads must use the resolved commit"
        self.downloads.append(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.served[name])


def test_url_entry_is_verified_and_stamped(fetch_models: ModuleType, tmp_path: Path) -> None:
    source = tmp_path / "src" / "m.gguf"
    source.parent.mkdir()
    source.write_bytes(b"GGUF model bytes")
    entry = {
        "id": "m",
        "url": source.as_uri(),
        "sha256": sha256(b"GGUF model bytes"),
        "path": "m/m.gguf",
    }
    dest = tmp_path / "models"
    target = fetch_models.fetch_url(entry, dest)
    assert target.read_bytes() == b"GGUF model bytes"
    source.unlink()  # a second run must not download again
    assert fetch_models.fetch_url(entry, dest) == target


def test_url_entry_with_wrong_hash_is_deleted(fetch_models: ModuleType, tmp_path: Path) -> None:
    source = tmp_path / "m.gguf"
    source.write_bytes(b"tampered")
    entry = {"id": "m", "url": source.as_uri(), "sha256": sha256(b"original")}
    with pytest.raises(fetch_models.FetchError, match="sha256 mismatch"):
        fetch_models.fetch_url(entry, tmp_path / "models")
    assert not (tmp_path / "models" / "m.gguf").exists()


def test_url_entry_needs_a_hash(fetch_models: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(fetch_models.FetchError, match="needs a 64-hex sha256"):
        fetch_models.fetch_url({"id": "m", "url": "https://example.com/m.gguf"}, tmp_path)


def test_paths_cannot_escape_the_volume(fetch_models: ModuleType, tmp_path: Path) -> None:
    entry = {"id": "m", "url": "https://example.com/m", "sha256": "0" * 64, "path": "../../etc/x"}
    with pytest.raises(fetch_models.FetchError, match="escapes"):
        fetch_models.fetch_url(entry, tmp_path / "models")


def test_repo_files_are_checked_against_the_hub(fetch_models: ModuleType, tmp_path: Path) -> None:
    files = {"config.json": b'{"a": 1}', "model.safetensors": b"weights", "README.md": b"x"}
    hub = FakeHub(files, lfs={"model.safetensors"})
    entry = {"id": "big", "repo": "org/big", "allow_patterns": ["*.json", "*.safetensors"]}
    local = fetch_models.fetch_repo(entry, tmp_path, hub.listing, hub.download)
    assert sorted(hub.downloads) == ["config.json", "model.safetensors"]
    assert (local / "model.safetensors").read_bytes() == b"weights"
    assert (local / ".lalo-revision").read_text().startswith("org/big@c0ffee")
    fetch_models.fetch_repo(entry, tmp_path, hub.listing, hub.download)
    assert len(hub.downloads) == 2, "verified files are not fetched again"


@pytest.mark.parametrize("bad", ["config.json", "model.safetensors"])
def test_repo_file_that_differs_from_the_hub_record_fails(
    fetch_models: ModuleType, tmp_path: Path, bad: str
) -> None:
    files = {"config.json": b"{}", "model.safetensors": b"weights"}
    hub = FakeHub(files, lfs={"model.safetensors"}, served={**files, bad: b"swapped"})
    with pytest.raises(fetch_models.FetchError, match="mismatch"):
        fetch_models.fetch_repo({"id": "m", "repo": "org/m"}, tmp_path, hub.listing, hub.download)
    assert not (tmp_path / "m" / bad).exists()


def test_pins_override_the_hub(fetch_models: ModuleType, tmp_path: Path) -> None:
    hub = FakeHub({"model.safetensors": b"weights"}, lfs={"model.safetensors"})
    entry = {"id": "m", "repo": "org/m", "sha256": {"model.safetensors": sha256(b"reviewed")}}
    with pytest.raises(fetch_models.FetchError, match="mismatch"):
        fetch_models.fetch_repo(entry, tmp_path, hub.listing, hub.download)
    entry["sha256"] = {"missing.safetensors": "0" * 64}
    with pytest.raises(fetch_models.FetchError, match="pinned files not in the repository"):
        fetch_models.fetch_repo(entry, tmp_path, hub.listing, hub.download)


def test_patterns_matching_nothing_fail(fetch_models: ModuleType, tmp_path: Path) -> None:
    hub = FakeHub({"a.bin": b"x"}, lfs=set())
    with pytest.raises(fetch_models.FetchError, match="no files match"):
        fetch_models.fetch_repo(
            {"id": "m", "repo": "org/m", "allow_patterns": ["*.gguf"]},
            tmp_path,
            hub.listing,
            hub.download,
        )


def test_cli_reports_failure(fetch_models: ModuleType, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("models:\n  - id: m\n")
    assert fetch_models.main(["--catalog", str(catalog), "--dest", str(tmp_path)]) == 1
