"""Push-stream accounting, error wording and references, from push streams recorded off a real engine
(docker 20.10, pushing to a distribution registry): no engine or registry needed here."""

from __future__ import annotations

import io

from submitter.image import parse_reference
from submitter.image.build import build_error
from submitter.image.push import push_error, push_log, pushed_bytes
from submitter.progress import NullProgress, PlainProgress

DIGEST = "sha256:363c09f1d52b4f76da87c61cb090c7bfa7308d503248f1b8135e866dba38a594"
AUX = {"progressDetail": {}, "aux": {"Tag": "c-6efe17d262e8b5bd7e08c4a8", "Digest": DIGEST, "Size": 1156}}
DIFF_IDS = [
    "sha256:49392fe172195295c404d1e8eb05a479c2528ec4e5ceb62dfa241403fbd01451",
    "sha256:7fdbe04c83b11cd9aa3b43900dcddb3816191672bc3cfaa143bee02dbb6f7464",
    "sha256:1e0c18487b142cc25689e9d1ebc17eb418a2336cc36fec4a6a2e3095098b1caa",
    "sha256:66e6f3c652f9686556d385d97bf4b06537a568417049c382bcaec2fe5158db5d",
]
# The registry's manifest for that push (sizes are the gzip blobs actually stored).
MANIFEST = {
    "schemaVersion": 2,
    "config": {
        "size": 2634,
        "digest": "sha256:c92a2ef85f1b0e9e5881d1c9663b249fb333a270332120a2a27b2d04ef7a935b",
    },
    "layers": [
        {
            "size": 122914335,
            "digest": "sha256:5615d1a99453fb5051891fa5d3f90ccdbc06e273cd4e8c576fed2f74cdbb63f5",
        },
        {
            "size": 104889920,
            "digest": "sha256:f445f9355f2d69f6704ddc01b6f06209a8862b6bea5170be7abe147869001275",
        },
        {"size": 98, "digest": "sha256:26da0116fe71f5815b2cfb5e20c7d0196b930bedb2be6da9b260c6b619649091"},
        {"size": 163, "digest": "sha256:4af0d8059ef16edd6755872a20d306baf221645ea220fdb5c14638bb338b2238"},
    ],
}


def _prepare() -> list[dict]:
    return [{"status": "The push refers to repository [127.0.0.1:5055/try/r1]"}] + [
        {"status": "Preparing", "progressDetail": {}, "id": d[7:19]} for d in reversed(DIFF_IDS)
    ]


# A one-line change to the training script: only the code layer (the last) goes up.
ONE_LINE_CHANGE = _prepare() + [
    {"status": "Layer already exists", "progressDetail": {}, "id": "49392fe17219"},
    {"status": "Layer already exists", "progressDetail": {}, "id": "1e0c18487b14"},
    {"status": "Pushing", "progressDetail": {"current": 512, "total": 21}, "id": "66e6f3c652f9"},
    {"status": "Layer already exists", "progressDetail": {}, "id": "7fdbe04c83b1"},
    {"status": "Pushing", "progressDetail": {"current": 2560, "total": 21}, "id": "66e6f3c652f9"},
    {"status": "Pushed", "progressDetail": {}, "id": "66e6f3c652f9"},
    {"status": f"c-6efe17d262e8b5bd7e08c4a8: digest: {DIGEST} size: 1156"},
    AUX,
]
# The same image pushed to a second repository of the same registry: every blob is mounted, none sent.
MOUNTED = (
    _prepare() + [{"status": "Mounted from try/r1", "progressDetail": {}, "id": d[7:19]} for d in DIFF_IDS] + [AUX]
)
COLD = (
    _prepare()
    + [
        {
            "status": "Pushing",
            "progressDetail": {"current": 1 << 20, "total": 104869376},
            "id": "7fdbe04c83b1",
        },
    ]
    + [{"status": "Pushed", "progressDetail": {}, "id": d[7:19]} for d in DIFF_IDS]
    + [AUX]
)


def test_one_line_change_counts_only_the_code_layer() -> None:
    log = push_log(ONE_LINE_CHANGE)
    assert log.uploaded == ["66e6f3c652f9"]
    assert sorted(log.reused) == sorted(d[7:19] for d in DIFF_IDS[:3])
    assert log.digest == DIGEST and log.manifest_size == 1156
    sent, image = pushed_bytes(log, DIFF_IDS, MANIFEST)
    assert sent == 163 + 2634 + 1156  # the code layer's blob, the new config, the manifest
    assert image == 122914335 + 104889920 + 98 + 163 + 2634 + 1156
    assert sent <= image // 100


def test_cold_push_counts_every_layer() -> None:
    log = push_log(COLD)
    assert len(log.uploaded) == 4 and not log.reused
    sent, image = pushed_bytes(log, DIFF_IDS, MANIFEST)
    assert sent == image


def test_mounted_blobs_are_not_counted_as_pushed() -> None:
    log = push_log(MOUNTED)
    assert log.uploaded == [] and len(log.reused) == 4
    sent, _ = pushed_bytes(log, DIFF_IDS, MANIFEST)
    assert sent == 1156  # only the manifest went up


def test_without_a_manifest_the_stream_counters_stand_in() -> None:
    log = push_log(ONE_LINE_CHANGE)
    sent, _ = pushed_bytes(log, DIFF_IDS, None)
    assert sent == 2560 + 1156


def test_push_error_event_is_recorded() -> None:
    log = push_log(
        _prepare()
        + [
            {
                "errorDetail": {"message": "unauthorized: authentication required"},
                "error": "unauthorized: authentication required",
            }
        ]
    )
    assert log.error == "unauthorized: authentication required"
    assert log.digest is None


def test_push_errors_name_the_fix() -> None:
    auth = push_error("127.0.0.1:5055", "r/x", "unauthorized: authentication required")
    assert auth.where == "registry 127.0.0.1:5055" and "ecr:GetAuthorizationToken" in (auth.next_step or "")
    denied = push_error(
        "1.dkr",
        "r/x",
        "denied: User: arn:aws:iam::1:user/u is not authorized to perform: ecr:InitiateLayerUpload",
    )
    assert "policy" in denied.what and denied.next_step and "ecr:InitiateLayerUpload" in denied.next_step
    full = push_error("h", "r/x", "write /var/lib/docker/tmp/x: no space left on device")
    assert "no space left" in full.what and "docker system prune" in (full.next_step or "")
    # a digest that happens to contain 401 is not an auth failure
    other = push_error("h", "r/x", "blob upload unknown sha256:ab401cd")
    assert "ecr:GetAuthorizationToken" not in (other.next_step or "")


def test_build_error_shows_the_step_and_its_last_lines() -> None:
    tail = [f"line {i}" for i in range(20)][-15:]
    err = build_error("Step 3/5 : RUN make", "The command '/bin/sh -c make' returned a non-zero code: 2", tail)
    text = err.render()
    assert err.where == "docker build"
    assert "Step 3/5 : RUN make failed: The command" in text
    assert "line 19" in text and "line 5" in text and "line 4" not in text
    full = build_error("Step 2/5 : RUN dd", "failed to copy: no space left on device", [])
    assert "docker system prune" in (full.next_step or "")


def test_parse_reference() -> None:
    assert parse_reference("123456789012.dkr.ecr.us-east-1.amazonaws.com/train@sha256:ab") == (
        "123456789012.dkr.ecr.us-east-1.amazonaws.com",
        "train",
        None,
        "sha256:ab",
    )
    assert parse_reference("localhost:5000/a/b:c-1") == ("localhost:5000", "a/b", "c-1", None)
    assert parse_reference("python:3.11-slim") == ("docker.io", "library/python", "3.11-slim", None)
    assert parse_reference("org/img") == ("docker.io", "org/img", None, None)


def test_plain_progress_prints_final_layer_states_only() -> None:
    out = io.StringIO()
    progress = PlainProgress(out)
    for event in ONE_LINE_CHANGE:
        if event.get("id"):
            progress.layer(event["id"], event["status"])
    progress.done("pushed")
    lines = out.getvalue().splitlines()
    assert lines[-1] == "pushed"
    assert "  66e6f3c652f9: Pushed" in lines and not any("Pushing" in line or "Preparing" in line for line in lines)


def test_null_progress_records() -> None:
    progress = NullProgress()
    progress.step("a")
    progress.done("b")
    assert progress.events == [("step", "a"), ("done", "b")]


def test_rich_progress_draws_a_bar_per_layer_and_the_summary() -> None:
    from submitter.progress import RichProgress, for_stream

    out = io.StringIO()
    progress = RichProgress(out)
    progress.step("Step 1/3 : FROM base")
    progress.layer("66e6f3c652f9", "Pushing", 100, 300)
    progress.layer("66e6f3c652f9", "Pushed")
    progress.layer("49392fe17219", "Layer already exists")
    progress.done("pushed")
    text = out.getvalue()
    assert "Step 1/3 : FROM base" in text and "66e6f3c652f9" in text and "Layer already exists" in text
    assert text.rstrip().endswith("pushed")
    assert isinstance(for_stream(io.StringIO()), PlainProgress)  # not a terminal
