"""When digests are due: pure functions of a list's schedule, a time zone and a moment.

A digest is due at its scheduled local time (weekday + hour, or day of month +
hour, in TIMEZONE). A period is named by that moment (`period_end`); the run
for it is unique, so the moment is the digest's identity. Only the latest
scheduled moment is ever due, and only for `CATCH_UP` after it: after a long
outage there is one digest, not one per missed week, and it still holds
everything since each reader's last digest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from ..models import DigestFrequency

#: How long after its time a digest may still start (beat or workers were down).
CATCH_UP = timedelta(hours=24)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
#: Days 29-31 do not exist in every month; 1-28 keep the monthly digest monthly.
MONTHDAYS = range(1, 29)
HOURS = range(24)


class ScheduleError(ValueError):
    """A schedule value out of range; the message names the field."""


@dataclass(frozen=True)
class Schedule:
    """One list's digest times (weekday 0 = Monday)."""

    weekday: int = 0
    weekly_hour: int = 9
    monthday: int = 1
    monthly_hour: int = 9

    def __post_init__(self) -> None:
        if self.weekday not in range(7):
            raise ScheduleError("The weekly digest's day must be a weekday (0 = Monday to 6).")
        if self.monthday not in MONTHDAYS:
            raise ScheduleError("The monthly digest's day must be between 1 and 28.")
        for hour in (self.weekly_hour, self.monthly_hour):
            if hour not in HOURS:
                raise ScheduleError("A digest's hour must be between 0 and 23.")

    @classmethod
    def of(cls, mailing_list: object) -> Schedule:
        return cls(
            weekday=mailing_list.digest_weekday,  # type: ignore[attr-defined]
            weekly_hour=mailing_list.digest_weekly_hour,  # type: ignore[attr-defined]
            monthday=mailing_list.digest_monthday,  # type: ignore[attr-defined]
            monthly_hour=mailing_list.digest_monthly_hour,  # type: ignore[attr-defined]
        )

    def describe(self, frequency: str) -> str:
        if frequency == DigestFrequency.WEEKLY:
            return f"{WEEKDAYS[self.weekday]}s at {self.weekly_hour:02d}:00"
        return f"day {self.monthday} of each month at {self.monthly_hour:02d}:00"


def _local(day: datetime, hour: int, zone: ZoneInfo) -> datetime:
    """That local day at `hour`:00, as UTC (a time skipped by DST comes out an hour later)."""
    local = datetime.combine(day.date(), time(hour), tzinfo=zone)
    return local.astimezone(UTC)


def latest_at_or_before(
    schedule: Schedule, frequency: str, now: datetime, timezone: str
) -> datetime:
    """The latest scheduled moment not after `now` (UTC)."""
    zone = ZoneInfo(timezone)
    local_now = now.astimezone(zone)
    if frequency == DigestFrequency.WEEKLY:
        back = (local_now.weekday() - schedule.weekday) % 7
        moment = _local(local_now - timedelta(days=back), schedule.weekly_hour, zone)
        if moment > now:
            moment = _local(local_now - timedelta(days=back + 7), schedule.weekly_hour, zone)
        return moment
    if frequency == DigestFrequency.MONTHLY:
        year, month = local_now.year, local_now.month
        for _ in range(2):
            moment = _local(
                datetime(year, month, schedule.monthday, tzinfo=zone), schedule.monthly_hour, zone
            )
            if moment <= now:
                return moment
            year, month = (year - 1, 12) if month == 1 else (year, month - 1)
        raise AssertionError("unreachable: last month's day is always in the past")
    raise ScheduleError(f"Unknown digest frequency {frequency!r}.")


def previous(schedule: Schedule, frequency: str, moment: datetime, timezone: str) -> datetime:
    """The scheduled moment before `moment` (a scheduled moment itself)."""
    return latest_at_or_before(schedule, frequency, moment - timedelta(seconds=1), timezone)


def following(schedule: Schedule, frequency: str, now: datetime, timezone: str) -> datetime:
    """The first scheduled moment after `now`."""
    # Every period is at most 31 days (plus an hour of DST) long: look back from beyond that.
    candidate = latest_at_or_before(schedule, frequency, now + timedelta(days=32), timezone)
    earlier = previous(schedule, frequency, candidate, timezone)
    while earlier > now:
        candidate, earlier = earlier, previous(schedule, frequency, earlier, timezone)
    return candidate


def due_moment(schedule: Schedule, frequency: str, now: datetime, timezone: str) -> datetime | None:
    """The period due at `now`: the latest scheduled moment, if it is recent enough."""
    moment = latest_at_or_before(schedule, frequency, now, timezone)
    return moment if now - moment < CATCH_UP else None
