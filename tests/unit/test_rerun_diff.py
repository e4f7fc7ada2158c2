"""rerun's spec from a record, and diff's comparison: pure functions of run records, statuses and metrics."""

from __future__ import annotations

from typing import Any

import pytest

from submitter import diff, rerun
from submitter.errors import UsageError

IMAGE = "1.dkr.ecr.us-east-1.amazonaws.com/train@sha256:" + "a" * 64


def test_rerun_spec_is_the_record_with_the_overrides_and_nothing_else() -> None:
    record = {
        "image": "1.dkr.ecr.us-east-1.amazonaws.com/train@sha256:" + "a" * 64, "command": ["python", "t.py"],
        "env": {"EPOCHS": "2", "LR": "0.1"}, "sweep": {"LR": "0.1"}, "region": "eu-west-1",
        "git": {"commit": "abc", "dirty": True}, "spec_file": "jobs/x.yaml",
        "inputs": [{"uri": "s3://bkt/p/inputs/" + "f" * 32 + "/", "target": "/data/x", "digest": "f" * 32}],
        "spec": {"name": "x", "command": ["python", "t.py"], "env": {"EPOCHS": "2"},
                 "image": {"dockerfile": "../Dockerfile", "context": "..", "build_args": {"A": "1"}, "uri": None},
                 "resources": {"instance_types": ["c5.large"]}, "sweep": {"LR": ["0.1", "0.2"]},
                 "inputs": [{"source": "./x", "target": "/data/x"}], "limits": {"max_runtime": 600.0}},
    }
    loaded = rerun.rerun_spec("x-20261130-000000-abcdef-0", record, {"EPOCHS": "3"}, ["m5.large"])
    spec = loaded.spec
    assert spec.image.uri == record["image"] and spec.image.dockerfile is None
    assert spec.env == {"EPOCHS": "3"} and spec.sweep == {"LR": ["0.1"]}
    assert spec.resources.region == "eu-west-1" and spec.resources.instance_types == ["m5.large"]
    assert [(i.source, i.target) for i in spec.inputs] == [(record["inputs"][0]["uri"], "/data/x")]
    assert spec.limits.max_runtime == 600.0
    assert loaded.record["overrides"] == {"env": {"EPOCHS": {"was": "2", "now": "3"}},
                                          "instance_types": {"was": ["c5.large"], "now": ["m5.large"]}}
    assert loaded.record["git"] == {"commit": "abc", "dirty": True}


def test_set_refuses_a_malformed_or_repeated_or_secret_looking_value() -> None:
    assert rerun.parse_sets(["LR=0.1", "NOTE=a=b"]) == {"LR": "0.1", "NOTE": "a=b"}
    for bad, said in ((["LR"], "expected NAME=VALUE"), (["LR=1", "LR=2"], "is given twice"),
                      (["API_TOKEN=x"], "looks like a secret")):
        with pytest.raises(UsageError, match=said):
            rerun.parse_sets(bad)


def test_a_changed_pin_says_what_changed() -> None:
    was = {"etag": "e1", "version_id": "v1", "size": 4}
    assert rerun.pin_change(was, dict(was)) is None
    assert rerun.pin_change(was, {"etag": "e2", "version_id": "v2", "size": 4}) == \
        "etag was e1, now e2; version_id was v1, now v2"
    assert rerun.pin_change({"objects": 1, "listing_sha256": "x"}, {"objects": 2, "listing_sha256": "y"}) == \
        "objects was 1, now 2; listing_sha256 was x, now y"


def _side(run_id: str, **changes: Any) -> diff.Side:
    record: dict[str, Any] = {
        "run_id": run_id, "image": IMAGE, "command": ["python", "train.py"], "git": {"commit": "c1", "dirty": False},
        "env": {"EPOCHS": "2", "LR": "0.1"}, "sweep": {"LR": "0.1"},
        "inputs": [{"target": "/data/x", "uri": "s3://bkt/p/inputs/d1/", "digest": "d1"}],
        "spec": {"limits": {"max_runtime": 600.0, "max_cost": None}, "retries": {"on_failure": 0},
                 "resources": {"gpus": "auto", "volume_gb": 8}, "outputs": "/outputs"},
    }
    status = {"state": "succeeded", "exit_code": 0, "instance_type": "c5.large", "availability_zone": "us-east-1a",
              "attempt": 1, "interruptions": 0, "started_at": "2026-11-30T10:00:00Z",
              "ended_at": "2026-11-30T10:01:40Z", "cost": 0.001, "host": {"ami_id": "ami-1"}}
    metrics = {"accuracy": 0.9, "loss": 0.3, "hyper_parameters": {"lr": 0.1}, "history": [{"loss": 1.0}]}
    for key, value in changes.items():
        target = record if key in record else status if key in status else metrics
        target[key] = value
    return diff.Side(run_id, record, status, metrics)


def test_the_same_experiment_differs_only_in_its_outcome() -> None:
    result = diff.compare(_side("a"), _side("b", availability_zone="us-east-1b", accuracy=0.91, attempt=2))
    assert result["same_experiment"] is True and result["experiment_differs"] == []
    assert result["outcome_differs"] == ["availability_zone", "attempts", "metrics.accuracy"]
    assert "metrics.history" not in [r["field"] for r in result["outcome"]]  # lists are left out
    runtime = next(r for r in result["outcome"] if r["field"] == "runtime_s")
    assert runtime["a"] == 100 and runtime["same"]
    text = "\n".join(diff.lines(result))
    assert "same experiment" in text and "≠ availability_zone" in text and "us-east-1a  ->  us-east-1b" in text


def test_each_experiment_field_that_differs_is_named() -> None:
    b = _side("b", image=IMAGE[:-1] + "b", env={"EPOCHS": "3", "LR": "0.1"}, git={"commit": "c2", "dirty": True},
              inputs=[{"target": "/data/x", "uri": "s3://bkt/p/inputs/d2/", "digest": "d2"}])
    result = diff.compare(_side("a"), b)
    assert result["same_experiment"] is False
    assert result["experiment_differs"] == ["image.digest", "image.git_commit", "image.git_dirty", "env.EPOCHS",
                                            "input /data/x"]
    assert "different experiments: 5 field(s) differ" in "\n".join(diff.lines(result))


def test_a_field_only_one_run_has_differs_from_none() -> None:
    b = _side("b", env={"EPOCHS": "2", "LR": "0.1", "EXTRA": "1"})
    result = diff.compare(_side("a"), b)
    (row,) = [r for r in result["experiment"] if r["field"] == "env.EXTRA"]
    assert row == {"field": "env.EXTRA", "a": None, "b": "1", "same": False}


def test_an_s3_input_compares_by_its_pin() -> None:
    pinned = [{"target": "/data/y", "uri": "s3://data/y.csv", "pin": {"etag": "e1", "size": 3}}]
    changed = [{"target": "/data/y", "uri": "s3://data/y.csv", "pin": {"etag": "e2", "size": 3}}]
    assert diff.compare(_side("a", inputs=pinned), _side("b", inputs=pinned))["same_experiment"]
    assert diff.compare(_side("a", inputs=pinned), _side("b", inputs=changed))["experiment_differs"] == \
        ["input /data/y"]


def test_the_human_view_escapes_control_characters_from_the_job_side() -> None:
    result = diff.compare(_side("a"), _side("b", accuracy="\x1b[2Jgone"))
    text = "\n".join(diff.lines(result))
    assert "\x1b" not in text and "\\x1b[2Jgone" in text
