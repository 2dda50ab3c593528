from datetime import UTC, datetime, timedelta

import pytest

from services.scan import keys
from services.scan.model import Answer, Outcome, Position, ScanInput, Status, new_scan_id
from services.scan.service import implausible_speed

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def scan_at(lat: float, lon: float, at: datetime, accuracy: float = 5.0) -> ScanInput:
    return ScanInput("p1", "h1", "t1", lat, lon, accuracy, at, "c1")


def test_keys_share_the_player_slot():
    assert keys.idempotency("p42", "h7", "c-91f3") == "scan:idem:{p42}:h7:c-91f3"
    assert keys.rate("p42") == "scan:rate:{p42}"
    assert keys.last_scan("p42") == "scan:last:{p42}"


def test_scan_ids_sort_by_time_and_are_valid_ids():
    from libs.validate import is_id

    first = new_scan_id()
    second = new_scan_id()
    assert is_id(first) and len(first) == 22
    assert first[:12] <= second[:12]


def test_walking_is_plausible_and_teleporting_is_not():
    previous = Position(38.7139, -9.1394, 5.0, T0)
    # ~1 km in 10 minutes: walking
    assert not implausible_speed(
        previous, scan_at(38.7229, -9.1394, T0 + timedelta(minutes=10)).position(), 50.0
    )
    # ~270 km (Lisbon -> Porto-ish) in a minute: no
    assert implausible_speed(
        previous, scan_at(41.15, -8.61, T0 + timedelta(minutes=1)).position(), 50.0
    )


def test_gps_error_is_given_to_the_player():
    previous = Position(38.7139, -9.1394, 40.0, T0)
    # 70 m apart one second later, but both fixes are +-40 m: not a cheat
    assert not implausible_speed(
        previous, scan_at(38.71453, -9.1394, T0 + timedelta(seconds=1), 40.0).position(), 50.0
    )


def test_out_of_order_scans_use_the_absolute_gap():
    previous = Position(38.7139, -9.1394, 5.0, T0)
    assert implausible_speed(
        previous, scan_at(41.15, -8.61, T0 - timedelta(minutes=1)).position(), 50.0
    )


def test_answer_round_trip():
    answer = Answer("s1", Status.APPLIED, Outcome.UNLOCKED, 15, 40, "cp1", "Tower", True)
    assert Answer.from_dict(answer.to_dict()) == answer
    pending = Answer("s2", Status.RECEIVED)
    assert Answer.from_dict(pending.to_dict()) == pending


def test_a_repeat_is_the_same_request_and_has_the_same_fingerprint():
    first = scan_at(38.7139, -9.1394, T0)
    repeat = ScanInput("p1", "h1", "t1", 38.7139, -9.1394, 5.0, T0, "c1")
    assert first.same_request(repeat) and first.fingerprint() == repeat.fingerprint()
    # -0.0 and 0.0 are the same number, on the wire and in Postgres.
    zero = ScanInput("p1", "h1", "t1", 0.0, 0.0, 0.0, T0, "c1")
    negative_zero = ScanInput("p1", "h1", "t1", -0.0, -0.0, -0.0, T0, "c1")
    assert zero.same_request(negative_zero) and zero.fingerprint() == negative_zero.fingerprint()


def test_any_other_field_makes_another_request():
    first = scan_at(38.7139, -9.1394, T0)
    others = [
        ScanInput("p1", "h2", "t1", 38.7139, -9.1394, 5.0, T0, "c1"),
        ScanInput("p1", "h1", "t2", 38.7139, -9.1394, 5.0, T0, "c1"),
        ScanInput("p1", "h1", "t1", 38.71391, -9.1394, 5.0, T0, "c1"),
        ScanInput("p1", "h1", "t1", 38.7139, -9.13941, 5.0, T0, "c1"),
        ScanInput("p1", "h1", "t1", 38.7139, -9.1394, 5.5, T0, "c1"),
        ScanInput("p1", "h1", "t1", 38.7139, -9.1394, 5.0, T0 + timedelta(microseconds=1), "c1"),
    ]
    for other in others:
        assert not first.same_request(other), other
        assert first.fingerprint() != other.fingerprint(), other


def test_a_purged_row_is_matched_on_hunt_tag_and_time():
    purged = ScanInput("p1", "h1", "t1", None, None, None, T0, "c1")
    assert purged.same_request(scan_at(38.7139, -9.1394, T0))
    assert scan_at(1.0, 2.0, T0).same_request(purged)
    assert not purged.same_request(scan_at(38.7139, -9.1394, T0 + timedelta(seconds=1)))


def test_the_key_is_scoped_to_one_player_in_one_hunt():
    assert scan_at(1.0, 2.0, T0).key == ("p1", "h1", "c1")


@pytest.mark.parametrize("bad", ["", "a b", "x}y", "x{y", "x:y", "a" * 65])
def test_keys_refuse_ids_that_could_break_the_schema(bad):
    for build in (
        lambda: keys.idempotency(bad, "h1", "c1"),
        lambda: keys.idempotency("p1", bad, "c1"),
        lambda: keys.idempotency("p1", "h1", bad),
        lambda: keys.rate(bad),
        lambda: keys.last_scan(bad),
    ):
        with pytest.raises(ValueError):
            build()
