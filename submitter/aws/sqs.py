"""SQS adapter: the submission's queue with its dead-letter queue, and the run messages."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from submitter.aws import limits
from submitter.aws.errors import translate

SEND_THREADS = 8  # SendMessageBatch calls at a time (the client's pool holds 32 connections)

if TYPE_CHECKING:
    from submitter.aws.session import Aws


def client(aws: Aws) -> Any:
    return aws.client("sqs")


def ensure_queue(sqs: Any, name: str, dlq_name: str, visibility: int, retention: int, max_receive: int,
                 tags: dict[str, str]) -> tuple[str, bool]:
    """The queue's URL, and whether it was created now (False: it existed, a retried submit)."""
    from botocore.exceptions import ClientError

    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        return url, False
    except ClientError as exc:
        if "NonExistentQueue" not in str(exc.response.get("Error", {}).get("Code", "")):
            with translate("sqs", "GetQueueUrl"):
                raise
    with translate("sqs", "CreateQueue"):
        dlq_url = sqs.create_queue(QueueName=dlq_name, Attributes={"MessageRetentionPeriod": str(retention),
                                                                    "SqsManagedSseEnabled": "true"},
                                   tags=tags)["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        url = sqs.create_queue(QueueName=name, tags=tags, Attributes={
            "VisibilityTimeout": str(visibility),
            "MessageRetentionPeriod": str(retention),
            "SqsManagedSseEnabled": "true",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive)}),
        })["QueueUrl"]
    return url, True


def body(message: dict[str, Any]) -> str:
    """A run message as SQS receives it: the plan measures this text against SQS's size limit."""
    return json.dumps(message, allow_nan=False)  # strict JSON: the runtime parses it with any JSON parser


def batches(bodies: list[str]) -> list[list[str]]:
    """`bodies` in order, grouped as SendMessageBatch takes them: at most 10 entries and 256 KiB together (a
    sweep of large envs would otherwise fail with BatchRequestTooLong after some runs were queued)."""
    groups: list[list[str]] = []
    size = 0
    for text in bodies:
        length = len(text.encode())
        if not groups or len(groups[-1]) == limits.SQS_BATCH_ENTRIES or size + length > limits.SQS_MESSAGE_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(text)
        size += length
    return groups


def send_runs(sqs: Any, url: str, messages: list[dict[str, Any]]) -> None:
    """Every message, in SendMessageBatch calls of `batches`, SEND_THREADS calls at a time (a 1,000-run sweep is
    100 calls: one after another, they were most of its queueing time). A standard queue keeps no order anyway."""
    from concurrent.futures import ThreadPoolExecutor

    def send(batch: list[str]) -> dict[str, Any] | None:
        entries = [{"Id": str(i), "MessageBody": text} for i, text in enumerate(batch)]
        with translate("sqs", "SendMessageBatch"):
            result = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        return result["Failed"][0] if result.get("Failed") else None

    groups = batches([body(m) for m in messages])
    with ThreadPoolExecutor(max(min(SEND_THREADS, len(groups)), 1)) as pool:
        failed = [f for f in pool.map(send, groups) if f]
    if failed:
        from submitter.errors import AwsError

        raise AwsError("sqs", "SendMessageBatch", failed[0].get("Code", "Failed"), failed[0].get("Message", ""),
                       "submit again with the same spec; runs already queued are not queued twice")


def delete_queue(sqs: Any, name: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError:
        return False
    with translate("sqs", "DeleteQueue"):
        sqs.delete_queue(QueueUrl=url)
    return True


def tagged_queues(sqs: Any, name_prefix: str, tag: str) -> list[tuple[str, str, dict[str, str]]]:
    """(name, url, tags) of the queues named `name_prefix`... that carry the tag key `tag`."""
    found = []
    with translate("sqs", "ListQueues"):
        for page in sqs.get_paginator("list_queues").paginate(QueueNamePrefix=name_prefix):
            for url in page.get("QueueUrls", []):
                tags = sqs.list_queue_tags(QueueUrl=url).get("Tags", {})
                if tag in tags:
                    found.append((url.rsplit("/", 1)[-1], url, tags))
    return found
