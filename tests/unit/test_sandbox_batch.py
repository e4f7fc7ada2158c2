"""The sandbox's Batch decisions, pure (submitter/sandbox/batch.py, task_credentials.py): when a failed attempt
is retried, and which job roles ECS would hand to a task."""

from __future__ import annotations

from submitter.sandbox.batch import retry_action
from submitter.sandbox.task_credentials import trusts_ecs_tasks

# The strategy submitter registers (backends/batch/job.py retry_strategy).
STRATEGY = {"attempts": 4, "evaluateOnExit": [
    {"onStatusReason": "Host EC2*", "action": "RETRY"},
    {"onExitCode": "75", "action": "RETRY"},
    {"onReason": "*", "action": "EXIT"},
]}
EXITED = "Essential container in task exited"


def test_the_wrappers_retry_code_is_retried_while_attempts_remain() -> None:
    assert retry_action(STRATEGY, 1, 75, "", EXITED) == "RETRY"
    assert retry_action(STRATEGY, 3, 75, "", EXITED) == "RETRY"
    assert retry_action(STRATEGY, 4, 75, "", EXITED) == "EXIT"


def test_any_other_exit_ends_the_job_by_the_catch_all() -> None:
    assert retry_action(STRATEGY, 1, 1, "", EXITED) == "EXIT"
    assert retry_action(STRATEGY, 1, 0, "", EXITED) == "EXIT"
    assert retry_action(STRATEGY, 1, 7, "", "Host EC2 (instance i-0abc) terminated.") == "RETRY"


def test_no_rule_matching_retries_and_no_strategy_means_one_attempt() -> None:
    assert retry_action({"attempts": 2, "evaluateOnExit": [{"onExitCode": "75", "action": "EXIT"}]},
                        1, 3, "", EXITED) == "RETRY"
    assert retry_action({"attempts": 2, "evaluateOnExit": [{"onExitCode": "7*", "action": "exit"}]},
                        1, 75, "", EXITED) == "EXIT"
    assert retry_action({"attempts": 2}, 1, 3, "", EXITED) == "RETRY"
    assert retry_action(None, 1, 75, "", EXITED) == "EXIT"


def test_only_a_role_that_trusts_ecs_tasks_gets_task_credentials() -> None:
    def trust(principal: object, action: object = "sts:AssumeRole", effect: str = "Allow") -> dict[str, object]:
        return {"Version": "2012-10-17",
                "Statement": [{"Effect": effect, "Principal": principal, "Action": action}]}

    assert trusts_ecs_tasks(trust({"Service": "ecs-tasks.amazonaws.com"}))
    assert trusts_ecs_tasks(trust({"Service": ["ec2.amazonaws.com", "ecs-tasks.amazonaws.com"]}, ["sts:*"]))
    assert not trusts_ecs_tasks(trust({"Service": "ec2.amazonaws.com"}))
    assert not trusts_ecs_tasks(trust({"Service": "ecs-tasks.amazonaws.com"}, effect="Deny"))
    assert not trusts_ecs_tasks(trust({"Service": "ecs-tasks.amazonaws.com"}, "sts:TagSession"))
    assert not trusts_ecs_tasks(trust({"AWS": "arn:aws:iam::123456789012:root"}))
