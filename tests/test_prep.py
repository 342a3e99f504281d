"""Dataset prep: versioned parquet splits, reuse by content hash, bad input rows, the CLI."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from loopback_servers import make_bucket, moto_s3  # noqa: F401
from typer.testing import CliRunner

from components.config import load_config
from components.datasets import DatasetError, DatasetManifest, load_split, prepare_dataset
from components.storage import open_store
from flows.cli import app


def config(root: Path | str, *overrides: str):
    uri = root if isinstance(root, str) else root.as_uri()
    return load_config(None, [f"storage.root={uri}", *overrides])


def lcb_record(i: int) -> dict:
    """A LiveCodeBench-format stdin problem: print a + b + i."""
    cases = [{"input": f"{a} {b}\n", "output": f"{a + b + i}\n", "testtype": "stdin"} for a, b in ((1, 2), (3, 4))]
    return {
        "question_id": f"q{i}",
        "question_content": f"Read a and b, print a+b+{i}.",
        "public_test_cases": json.dumps(cases[:1]),
        "private_test_cases": json.dumps(cases[1:]),
        "metadata": "{}",
        "starter_code": "",
    }


def write_lcb(path: Path, n: int, corrupt: tuple[int, ...] = ()) -> Path:
    """JSONL with n records; line numbers in ``corrupt`` (1-based) are broken in different ways."""
    lines = []
    for line_no in range(1, n + 1):
        record = lcb_record(line_no)
        if line_no in corrupt:
            kind = line_no % 3
            if kind == 0:
                lines.append(json.dumps(record)[:-7])  # truncated JSON
            elif kind == 1:
                lines.append(json.dumps({k: v for k, v in record.items() if k != "question_id"}))
            else:
                lines.append(json.dumps({**record, "public_test_cases": "[{\"input\": 1"}))
        else:
            lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_prep_twice_same_hash_and_no_work(tmp_path):
    cfg = config(tmp_path / "store", "task.name=maze", "task.train_size=40", "task.test_size=10")
    calls = []
    first = prepare_dataset(cfg, progress=lambda done, total: calls.append((done, total)))
    assert not first.reused and calls and calls[-1] == (50, 50)
    files = sorted((tmp_path / "store").rglob("*.parquet"))
    stamps = [p.stat().st_mtime_ns for p in files]

    calls.clear()
    second = prepare_dataset(cfg, progress=lambda done, total: calls.append((done, total)))
    assert second.reused and calls == []  # no generation
    assert [p.stat().st_mtime_ns for p in files] == stamps  # nothing rewritten
    assert second.content_hash == first.content_hash
    assert second.model_dump(exclude={"reused"}) == first.model_dump(exclude={"reused"})
    assert first.uri.endswith(f"/datasets/maze-{first.content_hash[:12]}")


def test_hash_depends_on_content_not_on_place_time_or_m(tmp_path):
    base = ("task.name=synthetic_code", "task.train_size=30", "task.test_size=5")
    a = prepare_dataset(config(tmp_path / "a", *base))
    b = prepare_dataset(config(tmp_path / "b", *base, "task.num_answers=5"))
    c = prepare_dataset(config(tmp_path / "a", *base, "task.seed=1"))
    d = prepare_dataset(config(tmp_path / "a", *base, "task.code_tests_per_target=4"))
    assert a.content_hash == b.content_hash
    assert len({a.content_hash, c.content_hash, d.content_hash}) == 3
    assert load_split(a, "train") == load_split(b, "train")
    assert d.objective_names == [f"test_{j}" for j in range(12)]


def test_splits_are_plain_rows_and_disjoint(tmp_path):
    manifest = prepare_dataset(config(tmp_path, "task.name=maze", "task.train_size=60", "task.test_size=20"))
    train, test = load_split(manifest, "train"), load_split(manifest, "test")
    assert len(train) == 60 and len(test) == 20
    assert manifest.counts == {"train": 60, "test": 20}
    assert set(train[0]) == {"id", "grid", "budget"} and isinstance(train[0]["budget"], int)
    assert not {r["grid"] for r in train} & {r["grid"] for r in test}
    assert len({r["id"] for r in train + test}) == 80
    assert manifest.objective_names == ["completion", "gold", "diamond", "safety"]
    assert manifest.generator_version == "maze-v1" and manifest.seed == 0
    stored = DatasetManifest.model_validate_json(open_store(manifest.uri).read_text("manifest.json"))
    assert stored.content_hash == manifest.content_hash
    with pytest.raises(ValueError, match="split"):
        load_split(manifest, "valid")


def test_interrupted_prep_is_redone(tmp_path):
    cfg = config(tmp_path, "task.name=synthetic_code", "task.train_size=20", "task.test_size=4")
    first = prepare_dataset(cfg)
    store = open_store(first.uri)
    store.delete("manifest.json")  # a crash before the manifest = not built
    again = prepare_dataset(cfg)
    assert not again.reused and again.content_hash == first.content_hash
    store.delete("test.parquet")  # incomplete dataset: rebuilt, not reused
    assert not prepare_dataset(cfg).reused
    assert prepare_dataset(cfg).reused


def test_corrupted_input_fails_with_row_numbers(tmp_path):
    source = write_lcb(tmp_path / "lcb.jsonl", 20, corrupt=(3, 7, 11))
    cfg = config(tmp_path / "store", "task.name=livecodebench", f"task.source={source}", "task.test_size=5")
    with pytest.raises(DatasetError) as err:
        prepare_dataset(cfg)
    message = str(err.value)
    assert "3 of 20 input rows are malformed" in message
    assert "bad rows: 3, 7, 11" in message
    assert "row 7:" in message
    assert not list((tmp_path / "store").rglob("manifest.json"))  # nothing half-built left as done


def test_a_few_bad_rows_are_counted_and_skipped(tmp_path):
    source = write_lcb(tmp_path / "lcb.jsonl", 20, corrupt=(7,))
    cfg = config(tmp_path / "store", "task.name=livecodebench", f"task.source={source}",
                 "task.test_size=5", "task.max_bad_fraction=0.1")
    manifest = prepare_dataset(cfg)
    assert manifest.bad_rows == [7]
    assert manifest.counts == {"train": 14, "test": 5, "input_rows": 20, "bad_rows": 1}
    rows = load_split(manifest, "train") + load_split(manifest, "test")
    assert "q7" not in {r["id"] for r in rows} and len(rows) == 19
    assert manifest.input_sha256 and len(manifest.objective_names) == 16
    # the input bytes are part of the hash
    write_lcb(tmp_path / "lcb.jsonl", 20, corrupt=(8,))
    assert prepare_dataset(cfg).content_hash != manifest.content_hash


def test_json_array_input_and_missing_source(tmp_path):
    source = tmp_path / "lcb.json"
    source.write_text(json.dumps([lcb_record(i) for i in range(1, 9)] + [["not", "an", "object"]]))
    cfg = config(tmp_path / "store", "task.name=livecodebench", f"task.source={source}",
                 "task.test_size=2", "task.max_bad_fraction=0.2")
    manifest = prepare_dataset(cfg)
    assert manifest.bad_rows == [9] and manifest.counts["train"] == 6
    gz = tmp_path / "lcb.jsonl.gz"
    gz.write_bytes(gzip.compress(write_lcb(tmp_path / "plain.jsonl", 6).read_bytes()))
    packed = prepare_dataset(config(tmp_path / "store", "task.name=livecodebench", f"task.source={gz.as_uri()}",
                                    "task.test_size=1"))
    assert packed.counts == {"train": 5, "test": 1, "input_rows": 6, "bad_rows": 0}
    single = tmp_path / "one.json"
    single.write_text(json.dumps(lcb_record(1), indent=2))
    one = prepare_dataset(config(tmp_path / "store", "task.name=livecodebench", f"task.source={single}",
                                 "task.test_size=0"))
    assert one.counts["train"] == 1 and one.counts["test"] == 0 and load_split(one, "test") == []
    with pytest.raises(DatasetError, match="task.source"):
        prepare_dataset(config(tmp_path, "task.name=livecodebench"))
    with pytest.raises(DatasetError, match="cannot read"):
        prepare_dataset(config(tmp_path, "task.name=livecodebench", f"task.source={tmp_path}/nope.jsonl"))


def test_humaneval_prep_carries_problems_and_solutions(tmp_path):
    manifest = prepare_dataset(config(tmp_path, "task.name=humaneval", "task.test_size=64", "task.train_size=500"))
    assert manifest.counts == {"train": 100, "test": 64, "input_rows": 164, "bad_rows": 0}
    row = load_split(manifest, "test")[0]
    assert set(row) == {"id", "problem", "solution"}
    assert row["id"].startswith("HumanEval/") and "def " in row["solution"]


def test_prep_on_s3(moto_s3, tmp_path):  # noqa: F811
    make_bucket("prep-bucket")
    cfg = config("s3://prep-bucket/runs", "task.name=maze", "task.train_size=20", "task.test_size=5")
    first = prepare_dataset(cfg)
    assert first.uri.startswith("s3://prep-bucket/runs/datasets/maze-")
    assert len(load_split(first, "train")) == 20
    assert prepare_dataset(cfg).reused


def test_cli_prep_builds_then_reuses_and_reports_bad_rows(tmp_path):
    config_file = tmp_path / "c.yaml"
    config_file.write_text(f"task:\n  name: maze\n  train_size: 20\n  test_size: 5\nstorage:\n  root: {tmp_path.as_uri()}\n")
    runner = CliRunner()
    first = runner.invoke(app, ["prep", str(config_file)])
    assert first.exit_code == 0, first.output
    assert "dataset (built)" in first.output and "train=20, test=5" in first.output
    second = runner.invoke(app, ["prep", str(config_file), "--set", "task.num_answers=4"])
    assert second.exit_code == 0 and "reused" in second.output

    source = write_lcb(tmp_path / "bad.jsonl", 10, corrupt=(2, 5))
    bad = runner.invoke(app, ["prep", str(config_file), "--set", "task.name=livecodebench",
                              "--set", f"task.source={source}"])
    assert bad.exit_code == 1
    assert "bad rows: 2, 5" in " ".join(bad.output.split())
