"""Build the sandbox image offline: debootstrap rootfs -> ``docker import`` -> Dockerfile on top.

Idempotent and content-addressed: the image is tagged ``<repo>:<inputs hash>``
(hash of the Dockerfile, the runner and the rootfs recipe) and also with the
configured name (``vpo-sandbox:local``); a build whose hash tag exists only
re-tags. The debootstrap tarball is cached in ``~/.cache/vpo-sandbox`` (or
``$VPO_SANDBOX_CACHE``), so a rebuild after a runner change takes seconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO_ROOT / "infra" / "sandbox"
DOCKERFILE = INFRA_DIR / "Dockerfile"
ROOTFS_SCRIPT = INFRA_DIR / "build_rootfs.sh"
RUNNER = Path(__file__).with_name("runner.py")
SUITE = "bookworm"
INPUTS_LABEL = "org.vpo.sandbox.inputs"
BASE_REPO = "vpo-sandbox-base"

Log = Callable[[str], None]


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def rootfs_hash() -> str:
    """Identity of the base rootfs: suite + the script that builds it."""
    return _digest(SUITE.encode(), ROOTFS_SCRIPT.read_bytes())


def inputs_hash() -> str:
    """Identity of the final image: rootfs recipe + Dockerfile + runner."""
    return _digest(rootfs_hash().encode(), DOCKERFILE.read_bytes(), RUNNER.read_bytes())


def cache_dir() -> Path:
    return Path(os.environ.get("VPO_SANDBOX_CACHE", Path.home() / ".cache" / "vpo-sandbox"))


def _split_tag(image: str) -> tuple[str, str]:
    repo, _, tag = image.rpartition(":")
    if not repo or "/" in tag:
        return image, "latest"
    return repo, tag


def _image_exists(client: docker.DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


def image_status(client: docker.DockerClient, image: str) -> str | None:
    """None when ``image`` exists and matches the current inputs; else why it cannot be used."""
    try:
        found = client.images.get(image)
    except docker.errors.ImageNotFound:
        return f"image {image} not found; build it with `vpo sandbox build-image`"
    labels = found.labels or {}
    if labels.get(INPUTS_LABEL) != inputs_hash():
        return (f"image {image} is stale (built from other runner/Dockerfile inputs); "
                "rebuild it with `vpo sandbox build-image`")
    return None


def _ensure_rootfs(log: Log) -> Path:
    tarball = cache_dir() / f"rootfs-{SUITE}-{rootfs_hash()}.tar"
    if tarball.exists():
        log(f"rootfs: cached {tarball}")
        return tarball
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed (apt-get install -y debootstrap)")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    log(f"rootfs: debootstrap {SUITE} (about a minute) -> {tarball}")
    subprocess.run(["bash", str(ROOTFS_SCRIPT), SUITE, str(tarball)], check=True,
                   stdout=subprocess.DEVNULL)
    return tarball


def _ensure_base(client: docker.DockerClient, log: Log) -> str:
    base = f"{BASE_REPO}:{rootfs_hash()}"
    if _image_exists(client, base):
        log(f"base image: {base} exists")
        return base
    tarball = _ensure_rootfs(log)
    log(f"base image: docker import {tarball.name} -> {base}")
    with open(tarball, "rb") as f:
        client.api.import_image_from_data(f, repository=BASE_REPO, tag=rootfs_hash())
    return base


def build_image(image: str = "vpo-sandbox:local", *, force: bool = False, log: Log = print) -> str:
    """Build (or just re-tag) the sandbox image; returns the content-hash tag.

    Raises:
        docker.errors.DockerException: no engine; RuntimeError: debootstrap missing/failed.
    """
    client = docker.from_env()
    repo, tag = _split_tag(image)
    digest = inputs_hash()
    hashed = f"{repo}:{digest}"
    if not force and _image_exists(client, hashed):
        log(f"image {hashed} is up to date")
    else:
        base = _ensure_base(client, log)
        with tempfile.TemporaryDirectory() as ctx:
            shutil.copy(DOCKERFILE, Path(ctx) / "Dockerfile")
            shutil.copy(RUNNER, Path(ctx) / "runner.py")
            log(f"image: docker build FROM {base} -> {hashed}")
            client.images.build(path=ctx, tag=hashed, buildargs={"BASE": base}, pull=False,
                                rm=True, forcerm=True, labels={INPUTS_LABEL: digest})
    client.images.get(hashed).tag(repo, tag)
    log(f"image {image} -> {hashed}")
    _prune_old_builds(client, repo, digest, log)
    return hashed


def _prune_old_builds(client: docker.DockerClient, repo: str, digest: str, log: Log) -> None:
    """Untag earlier content-hash builds of ``repo`` (an image still in use is kept)."""
    for img in client.images.list(name=repo):
        for old in img.tags:
            old_repo, _, old_tag = old.rpartition(":")
            if old_repo == repo and len(old_tag) == len(digest) and old_tag != digest \
                    and all(c in "0123456789abcdef" for c in old_tag):
                try:
                    client.images.remove(old)
                    log(f"removed old build {old}")
                except docker.errors.APIError:
                    pass
