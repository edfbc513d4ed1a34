"""The nightly schedule comes from settings: cron syntax checked when settings load, mapped onto
Celery's crontab (whose positional order differs from cron's), and empty disables it."""

from __future__ import annotations

import pytest
from celery.schedules import crontab
from pydantic import ValidationError

from packsight.settings import Settings
from packsight.workers.app import SCHEDULED_TRAINING_TASK, training_schedule


def test_cron_fields_map_onto_celery_crontab() -> None:
    schedule = training_schedule(Settings(training_schedule="30 1 1-7 * 0"))
    entry = schedule["nightly-training"]
    assert entry["task"] == SCHEDULED_TRAINING_TASK
    # 01:30 on the first Sunday-or-day-1..7 of every month: day of month and weekday kept apart.
    expected = crontab(minute="30", hour="1", day_of_month="1-7", day_of_week="0")
    assert entry["schedule"] == expected
    assert entry["schedule"].day_of_month == set(range(1, 8))
    assert entry["schedule"].day_of_week == {0}


def test_default_is_nightly_and_empty_disables() -> None:
    default = training_schedule(Settings())["nightly-training"]["schedule"]
    assert default.hour == {2} and default.minute == {0}
    assert training_schedule(Settings(training_schedule="")) == {}


@pytest.mark.parametrize("bad", ["0 2 * *", "0 25 * * *", "every night", "0 2 * * * *"])
def test_malformed_schedules_are_refused_at_start(bad: str) -> None:
    with pytest.raises(ValidationError, match="training_schedule"):
        Settings(training_schedule=bad)


def test_an_empty_adapter_from_compose_means_none() -> None:
    assert Settings(adapter="").adapter is None
