"""The sandbox's speed patches to moto (submitter/sandbox/speed.py) answer exactly what moto's own code does."""

from __future__ import annotations

import time

from submitter.sandbox import speed


def test_the_patches_keep_what_moto_answers_and_installing_twice_keeps_the_originals() -> None:
    from moto import backends
    from moto.core import utils
    from moto.sqs import models

    before_modules, before_clock = backends.list_of_moto_modules, models.unix_time_millis
    try:
        speed.install()
        speed.install()
        assert backends.list_of_moto_modules.__wrapped_original__ is before_modules  # type: ignore[attr-defined]
        assert list(backends.list_of_moto_modules()) == list(before_modules())
        assert "sqs" in backends.list_of_moto_modules() and "__pycache__" not in backends.list_of_moto_modules()
        low = utils.unix_time_millis()
        fast = models.unix_time_millis()
        high = utils.unix_time_millis()
        assert low - 1 <= fast <= high + 1  # the same clock, in milliseconds
        moment = utils.utcfromtimestamp(1_700_000_000)
        assert models.unix_time_millis(moment) == 1_700_000_000_000.0  # a given time goes to moto's own code
        assert abs(models.unix_time_millis() - time.time() * 1000) < 1000
    finally:
        backends.list_of_moto_modules, models.unix_time_millis = before_modules, before_clock
