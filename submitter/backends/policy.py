"""What a run may reach, whichever backend runs it: its submission's S3 keys, the staged inputs, its secrets,
S3 inputs it names, and spot prices (the runtime prices its attempts). Backends add what their hosts need."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from submitter import contract
from submitter.plan import Plan

VERSION = "2012-10-17"
# The S3 statements, first.
STORAGE = ("OwnObjectsRead", "OwnRunWrites", "NeverWhatSubmitWrote", "OwnPrunes", "StagedInputs",
           "ListOwnPrefixes")


def run_patterns(plan: Plan) -> list[str]:
    """The run ids as IAM patterns, one per index width: `SUB` alone, or `SUB-?`, `SUB-??`, `SUB-???` for a sweep
    of up to 1,000 runs. `?` is exactly one character, so `Layout.run("SUB-??")` cannot reach another
    submission's runs whatever its job is named: every other id ends in `-<6 digits>-<6 hex>[-<index>]`, which
    no 1 to 6 characters after `SUB-` can spell (docs/decisions.md). A pattern `SUB*` would also reach a job
    named `SUB-x`."""
    sub = plan.submission_id
    return sorted({sub if r.index is None else f"{sub}-{'?' * len(str(r.index))}" for r in plan.runs})


def staged_prefixes(plan: Plan, uris: Sequence[str] | None) -> list[str]:
    """The prefixes `Layout.input(DIGEST)` of this submission's staged inputs, from their URIs (StagedInput.uri).
    None (a plan not yet staged, e.g. --dry-run) shows a placeholder per local input: the digest is known only
    once the input is hashed for its upload."""
    layout = plan.layout
    if uris is None:
        return [layout.input(f"<sha256 of {s}>") for s in sorted(plan.loaded.local_inputs)] + [
            layout.input(d) for d in sorted(_rerun_digests(plan))]
    ours = contract.Layout.uri(plan.bucket_or_placeholder, layout.inputs)
    digests = {u[len(ours):].split("/", 1)[0] for u in uris if u.startswith(ours)}
    return [layout.input(d) for d in sorted(digests) if d]


def _rerun_digests(plan: Plan) -> set[str]:
    found = (contract.staged_digest(plan.layout, plan.bucket_or_placeholder, i.source) for i in plan.spec.inputs)
    return {d for d in found if d}


def run_statements(plan: Plan, inputs: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """`inputs`: the staged inputs' URIs (see staged_prefixes). Reads: the submission's documents and its runs.
    Writes: only what the runtime writes (each run's status, logs, outputs, checkpoints; the instance reports),
    never what submit wrote (the runtime artefact, the submission document, the queued marker, the Batch runs and
    record, a run's spec or cancel marker)."""
    layout, bucket, sub = plan.layout, plan.bucket_or_placeholder, plan.submission_id
    runs = run_patterns(plan)
    readable = [layout.submission(sub) + "*"] + [layout.run(r) + "*" for r in runs]
    # Each run's own folder (status, logs, outputs, checkpoints), one resource per pattern so that a 1,000-run sweep
    # with the longest names fits IAM's 10,240-character inline limit; what submit wrote there (the run record, a
    # cancel marker) is denied below, and an explicit deny wins over any allow.
    writable = [layout.run(r) + "*" for r in runs]
    # The run index (runtime/index.py): every run of the submission writes its entries after each status, and
    # deletes the one its next entry supersedes; one resource for the submission keeps the policy short.
    index_entries = [layout.index(sub) + "*"]
    writable += index_entries
    writable.append(layout.instances(sub) + "*")
    submit_wrote = [layout.run_spec("*"), layout.run_cancel("*")]
    # The spend ledger: each run books its own attempts (written, and an attempt's older entry removed), and
    # reads the whole month by listing it, never by reading an entry: the one deliberate widening beyond the
    # submission (docs/decisions.md, "The monthly budget"). The month is not known before the run starts.
    ledger = [f"{layout.ledgers}*/{r}/attempt-*" for r in runs]
    writable += ledger
    staged = [prefix + "*" for prefix in staged_prefixes(plan, inputs)]
    statements: list[dict[str, Any]] = [
        {
            "Sid": "OwnObjectsRead",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": [f"arn:aws:s3:::{bucket}/{key}" for key in readable],
        },
        {
            "Sid": "OwnRunWrites",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": [f"arn:aws:s3:::{bucket}/{key}" for key in writable],
        },
        {
            "Sid": "NeverWhatSubmitWrote",
            "Effect": "Deny",
            "Action": ["s3:PutObject", "s3:DeleteObject"],
            "Resource": [f"arn:aws:s3:::{bucket}/{key}" for key in submit_wrote],
        },
        {
            # Checkpoint generations no kept manifest names are deleted after each sync (runtime/checkpoints.py),
            # an attempt's older ledger entry as it renews it (runtime/ledger.py), and a run index entry its next one
            # supersedes (runtime/index.py); nothing else.
            "Sid": "OwnPrunes",
            "Effect": "Allow",
            "Action": ["s3:DeleteObject"],
            "Resource": [f"arn:aws:s3:::{bucket}/{layout.checkpoints(r)}*" for r in runs]
            + [f"arn:aws:s3:::{bucket}/{key}" for key in ledger + index_entries],
        },
        {
            "Sid": "ListOwnPrefixes",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{bucket}"],
            "Condition": {"StringLike": {"s3:prefix": [*readable, *staged, layout.ledgers + "*"]}},
        },
        {
            "Sid": "ReadSpotPrice",
            "Effect": "Allow",
            "Action": ["ec2:DescribeSpotPriceHistory"],
            "Resource": ["*"],  # read-only, no resource-level scoping exists
        },
    ]
    if staged:
        statements.insert(2, {
            "Sid": "StagedInputs",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": [f"arn:aws:s3:::{bucket}/{key}" for key in staged],
        })
    if plan.spec.secrets:
        statements.append({
            "Sid": "OwnSecrets",
            "Effect": "Allow",
            "Action": ["ssm:GetParameters", "ssm:GetParameter"],
            "Resource": [f"arn:aws:ssm:{plan.region}:{plan.account}:parameter"
                         f"{contract.secrets_prefix(sub)}*"],
        })
    # A rerun's inputs point at this bucket's staged digests: StagedInputs covers those, and they must not widen
    # into a read of the whole bucket here.
    s3_inputs = sorted({i.source for i in plan.spec.inputs if i.source.startswith("s3://")
                        and not contract.staged_digest(plan.layout, bucket, i.source)})
    if s3_inputs:
        statements.append({
            "Sid": "ReadS3Inputs",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:ListBucket"],
            "Resource": sorted({arn for uri in s3_inputs for arn in _s3_arns(uri)}),
        })
    return statements


def document(statements: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Version": VERSION, "Statement": statements}


def _s3_arns(uri: str) -> list[str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/{key}*"]
