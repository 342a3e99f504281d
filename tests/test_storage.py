"""Artifact store contract on file:// and on s3:// against a real moto S3 server on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from loopback_servers import make_bucket, moto_s3  # noqa: F401  (session fixture)

from components.storage import ChecksumError, StorageError, open_store
from components.storage_s3 import S3Store, make_s3_client

MB = 1024 * 1024


@pytest.fixture
def s3_store(moto_s3):  # noqa: F811
    bucket = f"vpo-{uuid.uuid4().hex[:8]}"
    make_bucket(bucket)
    return open_store(f"s3://{bucket}/runs", multipart_threshold_mb=5)


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path):
    if request.param == "file":
        return open_store(f"file://{tmp_path}/store")
    return request.getfixturevalue("s3_store")


def test_bytes_roundtrip_list_exists_delete(store):
    store.write_bytes("a/b/one.bin", b"\x00\x01payload")
    store.write_text("a/two.txt", "hello")
    store.write_text("c.txt", "x")
    assert store.read_bytes("a/b/one.bin") == b"\x00\x01payload"
    assert store.read_text("a/two.txt") == "hello"
    assert store.list() == ["a/b/one.bin", "a/two.txt", "c.txt"]
    assert store.list("a/") == ["a/b/one.bin", "a/two.txt"]
    assert store.exists("c.txt") and not store.exists("nope.txt")
    store.write_text("c.txt", "replaced")
    assert store.read_text("c.txt") == "replaced"
    store.delete("c.txt")
    store.delete("c.txt")  # idempotent
    assert not store.exists("c.txt")
    with pytest.raises(StorageError, match="no object"):
        store.read_bytes("c.txt")


def test_child_store_and_dirs(store, tmp_path):
    src = tmp_path / "ckpt"
    (src / "sub").mkdir(parents=True)
    (src / "model.safetensors").write_bytes(os.urandom(1000))
    (src / "sub" / "state.json").write_text('{"step": 3}')
    child = store.child("exp/checkpoints")
    keys = child.put_dir("step-000003", src)
    assert keys == ["step-000003/model.safetensors", "step-000003/sub/state.json"]
    assert store.list("exp/") == [f"exp/checkpoints/{k}" for k in keys]
    out = child.get_dir("step-000003", tmp_path / "restored")
    assert sorted(p.relative_to(tmp_path / "restored").as_posix() for p in out) == [
        "model.safetensors", "sub/state.json"]
    assert (tmp_path / "restored/model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()


@pytest.mark.parametrize("bad", ["", "/abs", "a/../b", "a//b", "./a"])
def test_bad_keys_rejected(store, bad):
    with pytest.raises(StorageError, match="invalid storage key"):
        store.write_bytes(bad, b"x")


def test_large_file_roundtrip_is_multipart(s3_store, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(12 * MB))  # 3 parts of 5 MB, 5 MB, 2 MB
    s3_store.put_file("big.bin", big)
    head = s3_store.client.head_object(Bucket=s3_store.bucket, Key="runs/big.bin")
    assert "-3" in head["ETag"], "a 12 MB file with a 5 MB threshold must be a 3-part upload"
    s3_store.get_file("big.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()


def test_corruption_detected_on_read(s3_store, tmp_path):
    # An object whose recorded checksum does not match its bytes (bit rot, a foreign writer).
    s3_store.client.put_object(
        Bucket=s3_store.bucket, Key="runs/bad.bin", Body=b"tampered", Metadata={"sha256": "0" * 64}
    )
    with pytest.raises(ChecksumError):
        s3_store.read_bytes("bad.bin")
    with pytest.raises(ChecksumError):
        s3_store.get_file("bad.bin", tmp_path / "bad.bin")
    assert not (tmp_path / "bad.bin").exists()
    assert not list(tmp_path.glob("*.part")), "a failed download leaves no temp file"


def test_local_corruption_detected(tmp_path):
    store = open_store(tmp_path / "s")
    store.write_bytes("x.bin", b"original")
    (tmp_path / "s" / "x.bin").write_bytes(b"flipped!")
    with pytest.raises(ChecksumError):
        store.read_bytes("x.bin")


def test_failed_multipart_upload_is_aborted_and_invisible(s3_store, tmp_path):
    s3_store.write_bytes("model.bin", b"previous version")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(11 * MB))
    sent = []

    def fail_on_second_part(params, **_):  # a network failure in the middle of the upload
        sent.append(1)
        if len(sent) == 2:
            raise ConnectionResetError("connection reset by peer")

    s3_store.client.meta.events.register("before-call.s3.UploadPart", fail_on_second_part)
    try:
        with pytest.raises(ConnectionResetError):
            s3_store.put_file("model.bin", big)
    finally:
        s3_store.client.meta.events.unregister("before-call.s3.UploadPart", fail_on_second_part)
    assert s3_store.read_bytes("model.bin") == b"previous version"
    uploads = s3_store.client.list_multipart_uploads(Bucket=s3_store.bucket).get("Uploads", [])
    assert uploads == [], "the failed multipart upload must be aborted"


UPLOADER = textwrap.dedent("""
    import sys, time
    from components.storage import open_store
    store = open_store(sys.argv[1], multipart_threshold_mb=5)
    parts = []
    def slow_after_first(params, **_):
        parts.append(1)
        if len(parts) == 2:
            time.sleep(120)  # the parent kills us here, one part in
    store.client.meta.events.register("before-call.s3.UploadPart", slow_after_first)
    store.put_file("weights.bin", sys.argv[2])
""")


def test_killed_upload_leaves_no_visible_object(s3_store, tmp_path):
    big = tmp_path / "weights.bin"
    big.write_bytes(os.urandom(11 * MB))
    proc = subprocess.Popen(
        [sys.executable, "-c", UPLOADER, s3_store.uri, str(big)],
        cwd=Path(__file__).resolve().parents[1], env=os.environ.copy(),
    )
    client = make_s3_client()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            uploads = client.list_multipart_uploads(Bucket=s3_store.bucket).get("Uploads", [])
            if uploads and client.list_parts(
                Bucket=s3_store.bucket, Key=uploads[0]["Key"], UploadId=uploads[0]["UploadId"]
            ).get("Parts"):
                break
            assert proc.poll() is None, "uploader exited before it could be killed"
            time.sleep(0.1)
        else:
            pytest.fail("the upload never started")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not s3_store.exists("weights.bin")
    assert "weights.bin" not in s3_store.list()
    assert isinstance(s3_store, S3Store)
    assert s3_store.abort_stale_uploads() == 1
    assert client.list_multipart_uploads(Bucket=s3_store.bucket).get("Uploads", []) == []
