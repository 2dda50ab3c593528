"""Scan's decision order, in process and in milliseconds: the rules of
services/scan/service.py (`decide`, `catalog_verdict`) against fakes of geo's
and score's Protocols (services.geo.model.GeoApi's answer, services.score.model.
ScoreApi). The e2e tests prove the same order with the real services."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from libs import errors
from libs.deadlines import Budget
from services.geo.model import CheckInAnswer, HuntStatus, TagStatus
from services.scan.model import Answer, Outcome, Position, ScanInput, ScanRecord, Status
from services.scan.service import catalog_verdict, decide
from tests.support.scan_doubles import FakeScore, passing_check_in

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
HERE = (38.7139, -9.1394)

#: A check-in that lets the scan through: a FOUND tag of a playable hunt, in range.
PASSES = passing_check_in(T0)
UNKNOWN_HUNT = CheckInAnswer(TagStatus.UNKNOWN_HUNT, "", "", 0, 0, None, None, None, 0, 0, False)


def record(at: datetime = T0) -> ScanRecord:
    scan = ScanInput("p1", "h1", "t1", *HERE, 5.0, at, "c1")
    return ScanRecord("s1", scan, at, Answer("s1", Status.RECEIVED), attempts=1, applied_at=None)


class Previous:
    """The player's previous position, counting how often it was asked for."""

    def __init__(self, position: Position | None = None) -> None:
        self.position = position
        self.asked = 0

    async def __call__(self) -> Position | None:
        self.asked += 1
        return self.position


def run(check: CheckInAnswer, *, previous: Previous | None = None, score: FakeScore | None = None,
        at: datetime = T0) -> Answer:  # fmt: skip
    return asyncio.run(
        decide(
            record(at),
            check,
            previous or Previous(),
            score or FakeScore(),
            max_speed_mps=50.0,
            budget=Budget(),
            score_timeout_s=1.0,
        )
    )


def teleport() -> Previous:
    """A previous scan 270 km away a minute earlier."""
    return Previous(Position(41.15, -8.61, 5.0, T0 - timedelta(minutes=1)))


def test_each_rule_in_its_order():
    # Every failing condition at once: the first rule in the order decides.
    everything_wrong = dataclasses.replace(
        PASSES,
        tag_status=TagStatus.INACTIVE,
        hunt_status=HuntStatus.DRAFT,
        in_range=False,
    )
    assert catalog_verdict(UNKNOWN_HUNT, T0) is Outcome.UNKNOWN_HUNT
    assert catalog_verdict(everything_wrong, T0) is Outcome.UNKNOWN_TAG
    hunt_off = dataclasses.replace(everything_wrong, tag_status=TagStatus.FOUND)
    assert catalog_verdict(hunt_off, T0) is Outcome.HUNT_NOT_ACTIVE
    far = dataclasses.replace(hunt_off, hunt_status=HuntStatus.PUBLISHED)
    assert catalog_verdict(far, T0) is Outcome.OUT_OF_RANGE
    assert catalog_verdict(PASSES, T0) is None
    # Out of range is decided before the speed check, which is not even asked.
    previous = teleport()
    assert run(far, previous=previous).outcome is Outcome.OUT_OF_RANGE
    assert previous.asked == 0
    # In range but too fast: no Unlock.
    score = FakeScore()
    assert run(PASSES, previous=teleport(), score=score).outcome is Outcome.IMPLAUSIBLE_SPEED
    assert score.calls == []


@pytest.mark.parametrize(
    ("check", "outcome"),
    [
        (UNKNOWN_HUNT, Outcome.UNKNOWN_HUNT),
        (CheckInAnswer(TagStatus.UNKNOWN, "", "", 0, 0, None, None, None, 0, 0, False),
         Outcome.UNKNOWN_TAG),
        (dataclasses.replace(PASSES, tag_status=TagStatus.INACTIVE), Outcome.UNKNOWN_TAG),
        (dataclasses.replace(PASSES, hunt_status=HuntStatus.CANCELLED), Outcome.HUNT_NOT_ACTIVE),
        (dataclasses.replace(PASSES, in_range=False), Outcome.OUT_OF_RANGE),
    ],
)  # fmt: skip
def test_outcomes_decided_before_scoring_never_call_score(check, outcome):
    score = FakeScore()
    answer = run(check, score=score)
    assert (answer.outcome, answer.status, answer.points_awarded) == (outcome, Status.APPLIED, 0)
    assert score.calls == []
    # Only a tag that is a checkpoint of the hunt names it in the answer.
    named = check.tag_status is TagStatus.FOUND
    assert (answer.checkpoint_id == "cp1") is named and (answer.checkpoint_name != "") is named


def test_the_hunt_window_is_half_open():
    assert run(PASSES, at=PASSES.hunt_starts_at).outcome is Outcome.UNLOCKED
    assert run(PASSES, at=PASSES.hunt_ends_at).outcome is Outcome.HUNT_NOT_ACTIVE
    before = PASSES.hunt_starts_at - timedelta(microseconds=1)
    assert run(PASSES, at=before).outcome is Outcome.HUNT_NOT_ACTIVE


def test_an_unlock_carries_score_answer():
    score = FakeScore()
    walked = Previous(Position(38.7229, -9.1394, 5.0, T0 - timedelta(minutes=10)))  # 1 km
    answer = run(PASSES, previous=walked, score=score)
    assert walked.asked == 1
    assert (answer.outcome, answer.points_awarded, answer.total_points) == (
        Outcome.UNLOCKED, 15, 40,
    )  # fmt: skip
    assert answer.first_finder and answer.checkpoint_id == "cp1"
    (call,) = score.calls
    assert (call["scan_id"], call["checkpoint_id"], call["points"]) == ("s1", "cp1", 10)
    assert (call["first_finder_bonus"], call["at"], call["timeout_s"]) == (5, T0, 1.0)


def test_already_unlocked_awards_nothing():
    answer = run(PASSES, score=FakeScore(unlocked=False))
    assert (answer.outcome, answer.points_awarded, answer.first_finder) == (
        Outcome.ALREADY_UNLOCKED, 0, False,
    )  # fmt: skip


def test_a_first_scan_has_no_speed_check():
    assert run(PASSES, previous=Previous(None)).outcome is Outcome.UNLOCKED


def test_a_score_that_cannot_answer_passes_its_error_on():
    unavailable = errors.Unavailable("score is down", retry_after_s=0.5)
    with pytest.raises(errors.Unavailable):
        run(PASSES, score=FakeScore(fail=unavailable))


def test_scores_deadline_is_what_the_budget_leaves_when_unlocking():
    score = FakeScore()
    asyncio.run(
        decide(
            record(),
            PASSES,
            Previous(),
            score,
            max_speed_mps=50.0,
            budget=Budget.within(0.3),
            score_timeout_s=2.0,
        )
    )
    (call,) = score.calls
    assert 0 < call["timeout_s"] <= 0.3  # the budget, not the 2 s default
