"""The interval a backfill run covers (plugins/bridge_flows/runs.py): a cron schedule's zero-width data intervals
become the schedule slot ending at the run's tick."""

import datetime as dt
from types import SimpleNamespace

import pendulum
import pytest
from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable
from bridge_flows.runs import covered_interval

TICK = pendulum.datetime(2026, 12, 5, 12, 30, tz="UTC")


def run(run_type: str = "backfill"):
    return SimpleNamespace(run_type=run_type, logical_date=TICK)


def test_a_normal_run_has_no_backfill_interval():
    assert covered_interval(run("scheduled"), None, TICK, TICK) is None


def test_a_data_interval_with_width_is_taken_as_it_is():
    start = TICK - dt.timedelta(hours=1)
    assert covered_interval(run(), None, start, TICK) == (start, TICK)


DAILY_TICK = pendulum.datetime(2026, 12, 5, 22, tz="UTC")  # 06:00 in Shanghai


@pytest.mark.parametrize("schedule, tick, previous", [
    ("*/15 * * * *", TICK, pendulum.datetime(2026, 12, 5, 12, 15, tz="UTC")),
    (CronTriggerTimetable("0 6 * * *", timezone="Asia/Shanghai"), DAILY_TICK,
     pendulum.datetime(2026, 12, 4, 22, tz="UTC")),
    (AssetOrTimeSchedule(timetable=CronTriggerTimetable("*/5 * * * *", timezone="Asia/Shanghai"),
                         assets=Asset("bridge://test")), TICK, pendulum.datetime(2026, 12, 5, 12, 25, tz="UTC")),
])
def test_a_zero_width_cron_interval_becomes_its_schedule_slot(schedule, tick, previous):
    dag = DAG("intervals", schedule=schedule, start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"))
    assert covered_interval(run(), dag, tick, tick) == (previous, tick)


def test_a_schedule_without_a_cron_is_refused_with_a_reason():
    dag = DAG("intervals_asset", schedule=[Asset("bridge://only")], start_date=pendulum.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="cannot tell the schedule slot"):
        covered_interval(run(), dag, TICK, TICK)
