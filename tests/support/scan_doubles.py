"""In-process doubles of the Protocols scan's flow depends on (services.geo.
model.GeoApi's answer, services.score.model.ScoreApi), for unit tests of its rules."""

from __future__ import annotations

from datetime import datetime, timedelta

from libs import errors
from services.geo.model import CheckInAnswer, HuntStatus, TagStatus
from services.score.model import UnlockAnswer


def passing_check_in(at: datetime) -> CheckInAnswer:
    """A check-in that lets a scan made at `at` through: a FOUND tag of a hunt
    playable then, in range."""
    return CheckInAnswer(
        tag_status=TagStatus.FOUND,
        checkpoint_id="cp1",
        checkpoint_name="Rossio",
        points=10,
        first_finder_bonus=5,
        hunt_status=HuntStatus.PUBLISHED,
        hunt_starts_at=at - timedelta(hours=1),
        hunt_ends_at=at + timedelta(hours=1),
        distance_m=3.0,
        allowed_m=30.0,
        in_range=True,
    )


class FakeScore:
    """score's Protocol: every call is recorded; answers `unlocked` or fails."""

    def __init__(self, unlocked: bool = True, fail: errors.ServiceError | None = None) -> None:
        self.calls: list[dict] = []
        self.unlocked = unlocked
        self.fail = fail

    async def unlock(self, **request) -> UnlockAnswer:
        self.calls.append(request)
        if self.fail is not None:
            raise self.fail
        points = request["points"] + request["first_finder_bonus"] if self.unlocked else 0
        return UnlockAnswer(self.unlocked, points, self.unlocked, 40, 3, request["scan_id"])

    def stream_scores(self, hunt_id, page_size=1000, timeout_s=600.0):
        raise AssertionError("the scan flow never streams scores")
