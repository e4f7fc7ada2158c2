"""The boot script (EC2 user-data) template and its rendering; the on-instance agent lives beside it."""

from __future__ import annotations

import shlex
from importlib import resources

from submitter.errors import UsageError

USER_DATA_LIMIT = 16 * 1024  # EC2 rejects larger user-data (before base64)


def template() -> str:
    return resources.files(__package__).joinpath("boot.sh").read_text(encoding="utf-8")


def render(values: dict[str, str | int]) -> str:
    """The boot script with every {{NAME}} replaced by its shell-quoted value; checked against EC2's limit."""
    text = template()
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", shlex.quote(str(value)))
    if "{{" in text:
        missing = text[text.index("{{"):].split("}}")[0] + "}}"
        raise ValueError(f"boot script value {missing} was not given")
    check_size(text)
    return text


def check_size(user_data: str) -> None:
    size = len(user_data.encode("utf-8"))
    if size > USER_DATA_LIMIT:
        raise UsageError(
            "boot script",
            f"the rendered user-data is {size} bytes; EC2 accepts at most {USER_DATA_LIMIT} bytes",
            "shorten the values that go into it (job name, bucket, prefix)",
        )
