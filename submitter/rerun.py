"""`rerun`: one recorded run submitted again, byte for byte, from its record alone (no spec file, no source tree).

The record (Layout.run_spec) becomes a LoadedSpec: the image by digest (no build), the same command, env and
sweep values, the inputs at their staged digests or pinned S3 sources, the same limits. That spec goes through
the usual pipeline (execute.submit; `--dry-run` is its plan). What cannot be reproduced any more is refused
here, before anything is created.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from submitter import contract
from submitter.aws import s3 as s3_api
from submitter.aws.s3 import S3
from submitter.aws.session import Aws
from submitter.errors import AwsError, ImageError, UsageError
from submitter.progress import Progress
from submitter.spec import JobSpec, LoadedSpec
from submitter.spec.values import SECRET_NAME, SECRET_VALUE


class RecordError(UsageError):
    """The recorded run cannot be reproduced as recorded (exit 2, before anything is created)."""


@dataclass(frozen=True)
class Rerun:
    run_id: str
    record: dict[str, Any]  # the original's run record
    loaded: LoadedSpec  # what is submitted
    warnings: list[str] = field(default_factory=list)

    @property
    def overrides(self) -> dict[str, Any]:
        return dict(self.loaded.record.get("overrides") or {})


def read_record(s3: S3, layout: contract.Layout, run_id: str) -> dict[str, Any]:
    """The run record with its `inputs` (records written before they were kept there: from the submission
    document, without pins)."""
    doc = s3.get_json(layout.run_spec(run_id))
    if not isinstance(doc, dict) or not isinstance(doc.get("spec"), dict) or not doc.get("image"):
        raise RecordError(f"run {run_id}", f"no run record at s3://{s3.bucket}/{layout.run_spec(run_id)}",
                          "check the id with `submitter status`, and that SUBMITTER_BUCKET and SUBMITTER_PREFIX "
                          "are the settings it was submitted with")
    if not isinstance(doc.get("inputs"), list):
        sub = s3.get_json(layout.submission_doc(str(doc.get("submission_id", "")))) or {}
        doc["inputs"] = [{"source": i.get("uri"), "target": i.get("target"), "uri": i.get("uri"),
                          "kind": i.get("kind"), "digest": contract.staged_digest(layout, s3.bucket, str(i.get("uri"))),
                          "pin": None} for i in sub.get("inputs") or [] if isinstance(i, dict)]
    return doc


def parse_sets(items: list[str]) -> dict[str, str]:
    """`--set KEY=VALUE` options as a mapping, refusing anything else by the option it came from."""
    found: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--set {item}", "expected NAME=VALUE", "write it like --set LR=0.01")
        if name in found:
            raise UsageError(f"--set {name}", "is given twice", "give each name once")
        if SECRET_NAME.search(name) or SECRET_VALUE.search(value):
            raise UsageError(f"--set {name}", "looks like a secret; a rerun's values end up in its record and logs",
                             "keep secrets in the spec's `secrets:` (read from the environment at submit time)")
        found[name] = value
    return found


def rerun_spec(run_id: str, record: dict[str, Any], sets: dict[str, str],
               instance_types: list[str] | None = None) -> LoadedSpec:
    """The spec that reproduces `record` (pure). `sets` replaces env or sweep values that the run had; a name it
    did not have is refused: a rerun changes a run's values, and a new variable is a new experiment (a spec)."""
    sweep = {str(k): str(v) for k, v in (record.get("sweep") or {}).items()}
    env = {str(k): str(v) for k, v in (record.get("env") or {}).items() if k not in sweep}
    unknown = sorted(set(sets) - set(env) - set(sweep))
    if unknown:
        names = ", ".join(sorted({*env, *sweep})) or "none"
        raise UsageError(f"--set {unknown[0]}", f"run {run_id} has no env or sweep value {unknown[0]} (it has: "
                         f"{names})", "set one of those names; to add a variable, submit a spec that has it")
    changed: dict[str, dict[str, str]] = {}
    for name, value in sets.items():
        place = sweep if name in sweep else env
        if place[name] != value:
            changed[name] = {"was": place[name], "now": value}
        place[name] = value
    spec = dict(record["spec"])
    spec.update({
        "image": {"uri": record["image"]},  # the digest the run pulled: nothing is built
        "command": list(record.get("command") or spec["command"]),
        "env": env,
        "sweep": {name: [value] for name, value in sweep.items()},  # one run, with the run's sweep values
        "inputs": [{"source": i["uri"], "target": i["target"]} for i in record.get("inputs") or []],
    })
    resources = dict(spec["resources"])
    resources["region"] = record.get("region") or resources.get("region")
    resources["backend"] = record.get("backend") or resources.get("backend", "pool")
    overrides: dict[str, Any] = {"env": changed} if changed else {}
    if instance_types:
        overrides["instance_types"] = {"was": resources["instance_types"], "now": instance_types}
        resources["instance_types"] = instance_types
    spec["resources"] = resources
    try:
        job = JobSpec.model_validate(spec)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        option = "--instance-types" if "instance_types" in where and instance_types else f"run {run_id}: {where}"
        raise UsageError(option, str(first["msg"]).removeprefix("Value error, "),
                         "fix the option" if option.startswith("--") else "the record is not a spec this "
                         "version reads; submit the original spec file instead") from None
    extra = {"reproduces": run_id, "overrides": overrides, "git": record.get("git"),
             "spec_file": record.get("spec_file")}
    return LoadedSpec(Path(run_id), job, None, None, {}, extra)


def check(aws: Aws, s3: S3, layout: contract.Layout, run_id: str, record: dict[str, Any],
          progress: Progress) -> list[str]:
    """Refuse (RecordError) what is gone or changed since the run: its image digest, a staged input, a pinned
    S3 input. Returns warnings for what cannot be checked (an S3 input the run could not pin)."""
    from submitter.image import check_prebuilt

    uri = str(record["image"])
    try:
        check_prebuilt(aws, None, uri, progress)
    except ImageError as err:
        git = record.get("git") or {}
        source = f" from git commit {git['commit']}{' (dirty)' if git.get('dirty') else ''}" if git else ""
        raise RecordError(f"run {run_id}: image {uri}", f"the digest is gone from the repository ({err.what})",
                          f"rebuild the image{source} and submit the job's spec; a rerun runs only the recorded "
                          "digest") from None
    warnings = []
    for item in record.get("inputs") or []:
        target, source = item.get("target"), str(item.get("uri"))
        digest = item.get("digest")
        if digest:
            if not s3.exists(layout.input_complete(str(digest))):
                raise RecordError(f"run {run_id}: input {target}",
                                  f"its staged copy {layout.input(str(digest))} is gone or incomplete",
                                  "submit the job's spec from its source tree (it stages the input again)")
            continue
        pin = item.get("pin")
        if not isinstance(pin, dict) or "unpinned" in pin:
            why = pin.get("unpinned") if isinstance(pin, dict) else "not recorded"
            warnings.append(f"input {source}: cannot tell whether it changed since run {run_id} (not pinned: {why})")
            continue
        try:
            now = s3_api.pin(s3.client, source)
        except AwsError as err:
            raise RecordError(f"run {run_id}: input {source}", f"cannot be read now ({err.code}: {err.what})",
                              "restore it, or submit a spec that points at its new place") from None
        changed = pin_change(pin, now)
        if changed:
            raise RecordError(f"run {run_id}: input {source}", f"changed since the run: {changed}",
                              "restore the recorded version, or submit the spec (a new experiment) to use it as "
                              "it is now")
    return warnings


def pin_change(was: dict[str, Any], now: dict[str, Any]) -> str | None:
    """What differs between a recorded pin and the source now (aws.s3.pin), None when it is the same."""
    keys = ["etag", "size", "objects", "listing_sha256"]
    if was.get("version_id") and now.get("version_id"):
        keys.append("version_id")
    differs = [f"{k} was {was.get(k)}, now {now.get(k)}" for k in keys if k in was and was.get(k) != now.get(k)]
    return "; ".join(differs) or None


def prepare(aws: Aws, bucket: str, prefix: str, run_id: str, sets: dict[str, str],
            instance_types: list[str] | None, progress: Progress) -> Rerun:
    """Read the record, build the spec, check what must still exist: everything before planning."""
    s3 = S3.connect(aws, bucket)
    layout = contract.Layout(prefix)
    record = read_record(s3, layout, run_id)
    loaded = rerun_spec(run_id, record, sets, instance_types)
    warnings = check(aws, s3, layout, run_id, record, progress)
    return Rerun(run_id, record, loaded, warnings)
