"""The sans-I/O Sequencer: order, gaps, the replay window, resyncs and snapshots, by plain calls."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from projctl import events
from projctl.events import Event
from projctl.sequencer import Sequencer, SequencerStats

STAMP = "2024-05-01T12:00:00.000000"
NOW = "2024-06-01T00:00:00.000000"


def fixed_clock() -> str:
    return NOW


@dataclass(frozen=True)
class FakeRead:
    """A read of the journal, as ``store.StoreState`` gives one."""

    journal: tuple[Event, ...] = ()
    latest_seq: int = 0
    database_id: str = "db-1"
    version: object = None
    project_records: tuple[dict[str, Any], ...] = ()
    restores: tuple[tuple[int, int], ...] = ()


def opening(
    sequencer: Sequencer, *, since: int | None, snapshot: bool, state: FakeRead | None
) -> list[bytes]:
    """What a new subscriber gets before the live feed, each message joined whole (the
    server streams :meth:`Sequencer.opening_parts` as they come)."""
    return [
        part if isinstance(part, bytes) else b"".join(part)
        for part in sequencer.opening_parts(since=since, snapshot=snapshot, state=state)
    ]


def record(number: int, **changes: Any) -> dict[str, Any]:
    base = {"project_id": f"proj_{number}", "name": f"Project {number}", "status": "created"}
    return base | changes


def created(seq: int, number: int | None = None) -> Event:
    return events.project_created(
        record(seq if number is None else number), seq=seq, timestamp=STAMP
    )


def history(count: int) -> list[Event]:
    """``count`` creations, seq 1..count, creating proj_1..proj_count."""
    return [created(seq) for seq in range(1, count + 1)]


def read(
    journal: Sequence[Event],
    *,
    latest: int | None = None,
    database_id: str = "db-1",
    version: object = None,
    projects: Sequence[dict[str, Any]] = (),
    restores: Sequence[tuple[int, int]] = (),
) -> FakeRead:
    if latest is None:
        latest = journal[-1]["seq"] if journal else 0
    return FakeRead(tuple(journal), latest, database_id, version, tuple(projects), tuple(restores))


def encoded(journal: Sequence[Event]) -> list[bytes]:
    return [events.encode_event(event) for event in journal]


def loaded(journal: Sequence[Event], **options: Any) -> Sequencer:
    """A sequencer started from a read holding ``journal`` (projects as the journal made them)."""
    sequencer = Sequencer(clock=fixed_clock, **options)
    sequencer.load(read(journal, projects=[events.project_record(e["data"]) for e in journal]))
    return sequencer


# -- accept: order, early events, duplicates -------------------------------------


def test_in_order_events_go_out_at_once_encoded() -> None:
    sequencer = Sequencer(clock=fixed_clock)
    first, second = history(2)
    assert sequencer.accept(first) == [events.encode_event(first)]
    assert sequencer.last_seq == 1
    assert sequencer.accept(second) == [events.encode_event(second)]
    assert sequencer.last_seq == 2
    assert sequencer.waiting is False
    assert sequencer.stats == SequencerStats(events=2, gap_fills=0, resyncs=0)


def test_accept_continues_after_a_loaded_journal() -> None:
    journal = history(4)
    sequencer = loaded(journal[:3])
    assert sequencer.last_seq == 3
    assert sequencer.database_id == "db-1"
    assert sequencer.accept(journal[3]) == [events.encode_event(journal[3])]
    assert sequencer.last_seq == 4
    assert sequencer.stats.events == 1  # loading sends nothing


def test_an_early_event_waits_for_the_missing_one_then_both_go_in_order() -> None:
    sequencer = Sequencer(clock=fixed_clock)
    first, second, third = history(3)
    assert sequencer.accept(third) == []
    assert sequencer.waiting is True
    assert sequencer.last_seq == 0
    assert sequencer.accept(second) == []
    assert sequencer.waiting is True
    assert sequencer.accept(first) == encoded([first, second, third])
    assert sequencer.waiting is False
    assert sequencer.last_seq == 3
    assert sequencer.stats.events == 3


def test_an_early_event_is_released_only_up_to_the_next_gap() -> None:
    sequencer = Sequencer(clock=fixed_clock)
    journal = history(5)
    assert sequencer.accept(journal[1]) == []
    assert sequencer.accept(journal[4]) == []
    assert sequencer.accept(journal[0]) == encoded(journal[:2])
    assert sequencer.waiting is True  # seq 5 still waits for 3 and 4
    assert sequencer.last_seq == 2
    assert sequencer.accept(journal[3]) == []
    assert sequencer.accept(journal[2]) == encoded(journal[2:5])
    assert sequencer.waiting is False
    assert sequencer.last_seq == 5


def test_duplicates_are_ignored_sent_or_waiting() -> None:
    sequencer = Sequencer(clock=fixed_clock)
    first, second, third = history(3)
    assert sequencer.accept(first) == [events.encode_event(first)]
    assert sequencer.accept(first) == []
    assert sequencer.waiting is False  # nothing is kept back for a duplicate
    # Another event with an already-sent seq is a duplicate too: the first one stands.
    assert sequencer.accept(created(1, number=99)) == []
    assert sequencer.accept(third) == []
    assert sequencer.accept(third) == []
    assert sequencer.accept(second) == encoded([second, third])
    assert sequencer.accept(second) == []
    assert sequencer.last_seq == 3
    assert sequencer.stats.events == 3
    assert opening(sequencer, since=0, snapshot=False, state=None) == encoded(
        [first, second, third]
    )


# -- is_explained ----------------------------------------------------------------


def test_a_fresh_sequencer_explains_only_no_file() -> None:
    sequencer = Sequencer(clock=fixed_clock)
    assert sequencer.is_explained(None) is True
    assert sequencer.is_explained("v1") is False


def test_load_explains_the_version_it_read() -> None:
    sequencer = Sequencer(clock=fixed_clock)
    sequencer.load(read(history(2), version="v2"))
    assert sequencer.is_explained("v2") is True
    assert sequencer.is_explained("v3") is False
    assert sequencer.is_explained(None) is False


def test_accept_with_a_version_explains_it() -> None:
    sequencer = loaded(history(1))
    journal = history(4)
    assert sequencer.accept(journal[1], "v2") == [events.encode_event(journal[1])]
    assert sequencer.is_explained("v2") is True
    assert sequencer.is_explained(None) is False
    # A forward without a version leaves the explained version as it was.
    assert sequencer.accept(journal[2]) == [events.encode_event(journal[2])]
    assert sequencer.is_explained("v2") is True
    # A repeated forward cannot move it back or sideways.
    assert sequencer.accept(journal[1], "v-old") == []
    assert sequencer.is_explained("v2") is True
    assert sequencer.is_explained("v-old") is False


def test_an_early_forward_explains_its_version_and_an_older_one_does_not_rewind_it() -> None:
    sequencer = loaded(history(1))
    journal = history(3)
    assert sequencer.accept(journal[2], "v3") == []
    assert sequencer.is_explained("v3") is True
    assert sequencer.waiting is True  # the caller still reads the journal for seq 2
    assert sequencer.accept(journal[1], "v2") == encoded(journal[1:3])
    assert sequencer.is_explained("v3") is True
    assert sequencer.is_explained("v2") is False


def test_catch_up_to_the_latest_seq_explains_the_read_version() -> None:
    sequencer = loaded(history(2))
    journal = history(4)
    # Two commits whose forwards never came: the file changed with nothing to explain it.
    assert sequencer.is_explained("v4") is False
    assert sequencer.catch_up(read(journal, version="v4")) == encoded(journal[2:])
    assert sequencer.is_explained("v4") is True


def test_catch_up_short_of_a_waiting_forward_explains_only_what_it_read() -> None:
    sequencer = loaded(history(1))
    journal = history(4)
    assert sequencer.accept(journal[3], "v4") == []
    # The read ran before seq 3 and 4 committed: it brings seq 2 only.
    assert sequencer.catch_up(read(journal[:2], version="v2")) == [events.encode_event(journal[1])]
    assert sequencer.last_seq == 2
    assert sequencer.waiting is True
    assert sequencer.is_explained("v2") is True
    assert sequencer.is_explained("v4") is False
    assert sequencer.catch_up(read(journal, version="v4")) == encoded(journal[2:])
    assert sequencer.waiting is False
    assert sequencer.is_explained("v4") is True


# -- catch_up ---------------------------------------------------------------------


def test_catch_up_fills_a_gap_and_releases_the_waiting_events() -> None:
    journal = history(5)
    sequencer = loaded(journal[:2])
    assert sequencer.accept(journal[4], "v5") == []
    assert sequencer.waiting is True
    assert sequencer.catch_up(read(journal[:4], version="v4")) == encoded(journal[2:5])
    assert sequencer.waiting is False
    assert sequencer.last_seq == 5
    assert sequencer.stats == SequencerStats(events=3, gap_fills=1, resyncs=0)
    assert opening(sequencer, since=0, snapshot=False, state=None) == encoded(journal)


def test_catch_up_sends_nothing_already_sent() -> None:
    journal = history(4)
    sequencer = loaded(journal[:1])
    assert sequencer.accept(journal[1]) == [events.encode_event(journal[1])]
    assert sequencer.catch_up(read(journal)) == encoded(journal[2:])
    assert sequencer.catch_up(read(journal)) == []
    assert sequencer.last_seq == 4
    assert sequencer.stats == SequencerStats(events=3, gap_fills=2, resyncs=0)


def test_a_stale_read_changes_nothing() -> None:
    journal = history(5)
    sequencer = loaded(journal[:2], window=10)
    assert sequencer.accept(journal[2], "v3") == [events.encode_event(journal[2])]
    assert sequencer.accept(journal[3], "v4") == [events.encode_event(journal[3])]
    # The read ran while seq 3 and 4 were being forwarded: older than what was sent.
    assert sequencer.catch_up(read(journal[:3], version="v3")) == []
    assert sequencer.last_seq == 4
    assert sequencer.is_explained("v4") is True
    assert sequencer.stats.resyncs == 0
    assert sequencer.accept(journal[4]) == [events.encode_event(journal[4])]
    assert opening(sequencer, since=0, snapshot=False, state=None) == encoded(journal)


def test_a_sequencer_without_a_database_adopts_the_first_one_read() -> None:
    sequencer = Sequencer(clock=fixed_clock)
    journal = history(2)
    assert sequencer.catch_up(read(journal, database_id="db-new")) == encoded(journal)
    assert sequencer.database_id == "db-new"
    assert sequencer.stats == SequencerStats(events=2, gap_fills=1, resyncs=0)


def test_a_new_database_id_starts_over_with_one_resync() -> None:
    sequencer = loaded(history(3))
    assert sequencer.accept(created(5), "v5") == []  # waiting, in the old database
    replacement = [created(1, number=41), created(2, number=42)]
    projects = [record(41), record(42)]
    messages = sequencer.catch_up(
        read(replacement, database_id="db-2", version="w2", projects=projects)
    )
    assert len(messages) == 1
    assert orjson.loads(messages[0]) == {
        "event_type": "resync",
        "timestamp": NOW,
        "seq": 2,
        "data": {"projects": projects},
    }
    assert list(orjson.loads(messages[0])) == ["event_type", "timestamp", "seq", "data"]
    assert sequencer.database_id == "db-2"
    assert sequencer.last_seq == 2
    assert sequencer.waiting is False  # the old database's early event is dropped
    assert sequencer.is_explained("w2") is True
    assert sequencer.stats == SequencerStats(events=0, gap_fills=1, resyncs=1)
    # It carries on from the new database's state.
    assert opening(sequencer, since=0, snapshot=False, state=None) == encoded(replacement)
    following = created(3, number=43)
    assert sequencer.accept(following) == [events.encode_event(following)]
    assert sequencer.last_seq == 3


def test_events_gone_from_the_journal_unsent_start_over_with_a_resync() -> None:
    journal = history(6)
    sequencer = loaded(journal[:2])
    projects = [record(number) for number in range(1, 7)]
    # The journal kept only seq 5 and 6: 3 and 4 can never be sent.
    messages = sequencer.catch_up(read(journal[4:], version="v6", projects=projects))
    assert [orjson.loads(message) for message in messages] == [
        {"event_type": "resync", "timestamp": NOW, "seq": 6, "data": {"projects": projects}}
    ]
    assert sequencer.last_seq == 6
    assert sequencer.database_id == "db-1"
    assert sequencer.is_explained("v6") is True
    assert sequencer.stats == SequencerStats(events=0, gap_fills=1, resyncs=1)
    assert sequencer.can_replay(4) is True
    assert sequencer.can_replay(3) is False
    assert opening(sequencer, since=4, snapshot=False, state=None) == encoded(journal[4:])


# -- a new subscriber: can_replay, needs_projects, opening ------------------------


def test_can_replay_boundaries() -> None:
    journal = history(10)
    sequencer = Sequencer(clock=fixed_clock)
    sequencer.load(read(journal[4:]))  # the journal keeps seq 5..10
    assert sequencer.can_replay(4) is True  # oldest - 1: everything after it is kept
    assert sequencer.can_replay(3) is False  # seq 4 is gone
    assert sequencer.can_replay(0) is False
    assert sequencer.can_replay(7) is True
    assert sequencer.can_replay(10) is True  # up to date: nothing to replay
    assert sequencer.can_replay(11) is False  # ahead of this server
    assert sequencer.can_replay(-1) is False


def test_can_replay_with_nothing_retained() -> None:
    fresh = Sequencer(clock=fixed_clock)
    assert fresh.can_replay(0) is True
    assert fresh.can_replay(1) is False
    assert fresh.can_replay(-1) is False
    emptied = Sequencer(clock=fixed_clock)
    emptied.load(read([], latest=7))
    assert emptied.can_replay(7) is True
    assert emptied.can_replay(6) is False
    assert emptied.can_replay(8) is False


@pytest.mark.parametrize(
    ("since", "snapshot", "expected"),
    [
        (None, False, False),
        (None, True, True),
        (4, False, False),
        (10, False, False),
        (3, False, True),
        (11, False, True),
        (0, False, True),
    ],
)
def test_needs_projects(since: int | None, snapshot: bool, expected: bool) -> None:
    sequencer = Sequencer(clock=fixed_clock)
    sequencer.load(read(history(10)[4:]))
    assert sequencer.needs_projects(since=since, snapshot=snapshot) is expected


def test_opening_since_replays_exactly_the_retained_events_after_it() -> None:
    journal = history(10)
    sequencer = Sequencer(clock=fixed_clock)
    sequencer.load(read(journal[4:]))
    assert opening(sequencer, since=4, snapshot=False, state=None) == encoded(journal[4:])
    assert opening(sequencer, since=7, snapshot=False, state=None) == encoded(journal[7:])
    assert opening(sequencer, since=9, snapshot=False, state=None) == encoded(journal[9:])
    assert opening(sequencer, since=10, snapshot=False, state=None) == []


def test_opening_without_since_or_snapshot_is_the_live_feed_only() -> None:
    sequencer = loaded(history(3))
    state = read(history(3), projects=[record(1), record(2), record(3)])
    assert opening(sequencer, since=None, snapshot=False, state=None) == []
    assert opening(sequencer, since=None, snapshot=False, state=state) == []


def test_opening_since_beyond_the_window_is_a_resync_as_of_last_seq() -> None:
    journal = history(10)
    sequencer = Sequencer(clock=fixed_clock)
    projects = [record(number) for number in range(1, 11)]
    sequencer.load(read(journal[4:], projects=projects))
    # Without the projects nothing can be sent: the caller must read them first.
    assert opening(sequencer, since=3, snapshot=False, state=None) == []
    messages = opening(sequencer, since=3, snapshot=False, state=read(journal, projects=projects))
    assert [orjson.loads(message) for message in messages] == [
        {"event_type": "resync", "timestamp": NOW, "seq": 10, "data": {"projects": projects}}
    ]
    ahead = opening(sequencer, since=12, snapshot=False, state=read(journal, projects=projects))
    assert [orjson.loads(message)["event_type"] for message in ahead] == ["resync"]
    assert sequencer.stats.resyncs == 0  # a subscriber's resync does not restart the stream


@pytest.fixture
def lived() -> tuple[Sequencer, FakeRead]:
    """A sequencer at seq 5 and a read of the file taken at seq 2 (before 3, 4 and 5)."""
    one, two = record(1), record(2)
    sequencer = Sequencer(clock=fixed_clock)
    old = read([created(1), created(2)], version="v2", projects=[one, two])
    sequencer.load(old)
    later = [
        created(3),
        events.project_updated(one | {"name": "Renamed"}, ["name"], seq=4, timestamp=STAMP),
        events.project_deleted(two, seq=5, timestamp=STAMP),
    ]
    for event in later:
        assert sequencer.accept(event) == [events.encode_event(event)]
    return sequencer, old


def test_snapshot_applies_the_events_an_older_read_missed(
    lived: tuple[Sequencer, FakeRead],
) -> None:
    sequencer, old = lived
    expected = [record(1, name="Renamed"), record(3)]  # updated, deleted, created
    assert sequencer.projects_at_last_seq(old) == expected
    messages = opening(sequencer, since=None, snapshot=True, state=old)
    assert [orjson.loads(message) for message in messages] == [
        {"event_type": "snapshot", "timestamp": NOW, "seq": 5, "data": {"projects": expected}}
    ]
    assert sequencer.stats == SequencerStats(events=3, gap_fills=0, resyncs=0)


def test_snapshot_applies_only_the_events_after_the_read(
    lived: tuple[Sequencer, FakeRead],
) -> None:
    sequencer, _old = lived
    # Read at seq 4: only the deletion (seq 5) is newer; seq 3 and 4 are in the records.
    at_four = read([], latest=4, projects=[record(1, name="Renamed"), record(2), record(3)])
    assert sequencer.projects_at_last_seq(at_four) == [record(1, name="Renamed"), record(3)]
    # The read's records stand for every event up to its seq: none is applied again.
    at_four_kept = read([], latest=4, projects=[record(1, name="Kept"), record(2)])
    assert sequencer.projects_at_last_seq(at_four_kept) == [record(1, name="Kept")]
    at_five = read([], latest=5, projects=[record(3), record(2), record(1, name="Later")])
    assert sequencer.projects_at_last_seq(at_five) == [
        record(3),
        record(2),
        record(1, name="Later"),
    ]


def test_snapshot_of_an_empty_database() -> None:
    sequencer = Sequencer(clock=fixed_clock)
    sequencer.load(read([]))
    messages = opening(sequencer, since=None, snapshot=True, state=read([]))
    assert [orjson.loads(message) for message in messages] == [
        {"event_type": "snapshot", "timestamp": NOW, "seq": 0, "data": {"projects": []}}
    ]


# -- the replay window -------------------------------------------------------------


def test_the_window_keeps_the_newest_events() -> None:
    journal = history(5)
    sequencer = Sequencer(window=3, clock=fixed_clock)
    for event in journal:
        assert sequencer.accept(event) == [events.encode_event(event)]
    assert opening(sequencer, since=2, snapshot=False, state=None) == encoded(journal[2:])
    assert sequencer.can_replay(2) is True
    assert sequencer.can_replay(1) is False
    assert opening(sequencer, since=1, snapshot=False, state=None) == []


def test_load_keeps_at_least_the_whole_journal() -> None:
    journal = history(6)
    sequencer = Sequencer(window=2, clock=fixed_clock)
    sequencer.load(read(journal[:5]))
    assert sequencer.can_replay(0) is True
    assert opening(sequencer, since=0, snapshot=False, state=None) == encoded(journal[:5])
    # Still five events deep: the next one pushes out only the oldest.
    assert sequencer.accept(journal[5]) == [events.encode_event(journal[5])]
    assert sequencer.can_replay(0) is False
    assert sequencer.can_replay(1) is True
    assert opening(sequencer, since=1, snapshot=False, state=None) == encoded(journal[1:])


def test_load_with_a_short_journal_keeps_the_configured_window() -> None:
    journal = history(6)
    sequencer = Sequencer(window=4, clock=fixed_clock)
    sequencer.load(read(journal[:1]))
    for event in journal[1:]:
        sequencer.accept(event)
    assert opening(sequencer, since=2, snapshot=False, state=None) == encoded(journal[2:])
    assert sequencer.can_replay(1) is False


def test_load_starts_over() -> None:
    journal = history(5)
    sequencer = Sequencer(clock=fixed_clock)
    assert sequencer.accept(journal[4]) == []
    assert sequencer.waiting is True
    sequencer.load(read(journal[:2], database_id="db-7", version="v2"))
    assert sequencer.waiting is False
    assert sequencer.last_seq == 2
    assert sequencer.database_id == "db-7"
    assert opening(sequencer, since=0, snapshot=False, state=None) == encoded(journal[:2])
    # The discarded early event comes again (from the journal) and goes out in order.
    assert sequencer.accept(journal[2]) == [events.encode_event(journal[2])]


# -- stats and the clock -------------------------------------------------------------


def test_stats_count_events_journal_reads_and_resyncs() -> None:
    journal = history(8)
    sequencer = Sequencer(clock=fixed_clock)
    assert sequencer.stats == SequencerStats(events=0, gap_fills=0, resyncs=0)
    sequencer.load(read(journal[:1]))
    sequencer.accept(journal[1])
    sequencer.accept(journal[3])  # early
    sequencer.catch_up(read(journal[:4]))  # sends 3 and 4
    sequencer.catch_up(read(journal[:2]))  # stale: sends nothing, still a journal read
    sequencer.catch_up(read(journal[6:]))  # 5 and 6 are gone: resync at 8
    sequencer.catch_up(read(journal, database_id="db-2"))  # replaced: resync
    assert sequencer.stats == SequencerStats(events=3, gap_fills=4, resyncs=2)
    assert sequencer.last_seq == 8


def test_the_clock_stamps_each_message_it_makes() -> None:
    ticks = iter(["2024-01-01T00:00:01.000000", "2024-01-01T00:00:02.000000"])
    sequencer = Sequencer(clock=lambda: next(ticks))
    sequencer.load(read(history(2)))
    state = read(history(2), projects=[record(1), record(2)])
    first = opening(sequencer, since=None, snapshot=True, state=state)
    second = sequencer.catch_up(read([], latest=0, database_id="db-2"))
    assert [orjson.loads(m)["timestamp"] for m in first + second] == [
        "2024-01-01T00:00:01.000000",
        "2024-01-01T00:00:02.000000",
    ]
    # Events keep their own timestamps: the clock is not consulted for them.
    following = created(1)
    assert orjson.loads(sequencer.accept(following)[0])["timestamp"] == STAMP


def test_the_default_clock_gives_a_contract_timestamp() -> None:
    sequencer = Sequencer()
    sequencer.load(read([]))
    (message,) = opening(sequencer, since=None, snapshot=True, state=read([]))
    timestamp = orjson.loads(message)["timestamp"]
    assert events.parse_timestamp(timestamp) is not None
    assert events.format_timestamp(events.parse_timestamp(timestamp)) == timestamp


# -- an older copy of the database put back -----------------------------------------


def _kinds(messages: Sequence[bytes]) -> list[tuple[str, int]]:
    decoded = [orjson.loads(message) for message in messages]
    return [(message["event_type"], message["seq"]) for message in decoded]


def test_a_restore_seen_by_the_server_resyncs_everyone_and_seq_never_goes_back() -> None:
    journal = history(10)
    sequencer = loaded(journal)
    older = read(journal[:5], projects=[events.project_record(e["data"]) for e in journal[:5]])
    assert sequencer.is_behind(older)
    messages = sequencer.restored(older)
    assert _kinds(messages) == [("resync", 10)]
    assert len(orjson.loads(messages[0])["data"]["projects"]) == 5
    assert sequencer.last_seq == 10
    # The next writer, which finds the restore too, issues seq 11: due at once.
    after = created(11)
    assert sequencer.needs_resync_for((5, 10)) is False
    assert sequencer.accept(after) == encoded([after])
    # A subscriber that saw a lost event (6..10) must start over; one at 5 or 11 need not.
    assert not sequencer.can_replay(7)
    assert not sequencer.can_replay(10)
    assert sequencer.recent_after(5) == [(11, events.encode_event(after))]
    assert sequencer.can_replay(5)
    assert sequencer.can_replay(11)


def test_a_restore_found_by_a_writer_first_resyncs_through_the_journal() -> None:
    journal = history(10)
    sequencer = loaded(journal)
    after = created(11, number=11)
    assert sequencer.needs_resync_for((5, 10)) is True
    restored = read(
        [*journal[:5], after],
        projects=[events.project_record(e["data"]) for e in [*journal[:5], after]],
        restores=[(5, 10)],
    )
    assert _kinds(sequencer.catch_up(restored)) == [("resync", 11)]
    assert sequencer.catch_up(restored) == []
    assert not sequencer.can_replay(10)
    assert sequencer.can_replay(11)


def test_a_restore_before_anything_was_sent_past_it_needs_no_resync() -> None:
    journal = history(5)
    sequencer = loaded(journal)
    assert sequencer.needs_resync_for((5, 10)) is False
    after = created(11)
    assert sequencer.accept(after) == encoded([after])
    # And a server started on the restored database skips the lost seqs too.
    fresh = Sequencer(clock=fixed_clock)
    fresh.load(read([*journal, after], restores=[(5, 10)]))
    assert fresh.last_seq == 11
    assert not fresh.can_replay(8)
    assert fresh.recent_after(5) == [(11, events.encode_event(after))]


def test_a_missing_file_where_the_database_was_is_no_new_database() -> None:
    sequencer = loaded(history(3))
    assert sequencer.catch_up(read([], database_id="")) == []
    assert sequencer.last_seq == 3
