"""The delivery ledger on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from pipeline.adapters.delivery_store import DeliveryStatus, DeliveryStore
from pipeline.adapters.schema import delivery as delivery_table
from pipeline.adapters.storage import Store
from pipeline.adapters.subscriber_store import SubscriberStore
from pipeline.core.subscribers import Frequency, SubscriberStatus

NOW = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)


def subscriber(store: Store, email: str = "a@example.com") -> int:
    sub, _ = SubscriberStore(store).add(
        email,
        themes=["economy"],
        frequency=Frequency.DAILY,
        hour=7,
        timezone="Asia/Karachi",
        status=SubscriberStatus.ACTIVE,
        now=NOW,
    )
    return sub.id


def edition(
    ledger: DeliveryStore, sid: int | None, end: datetime = NOW, **kw: object
) -> tuple[int, bool]:
    values: dict[str, object] = {
        "kind": "personal" if sid is not None else "public",
        "subscriber_id": sid,
        "frequency": "daily",
        "period_start": end - timedelta(days=1),
        "period_end": end,
        "local_date": end.date().isoformat(),
        "subject": "s",
        "item_count": 1,
        "content": {"x": 1},
        "now": NOW,
        "queue_delivery": sid is not None,
    }
    values.update(kw)
    return ledger.create_edition(**values)  # type: ignore[arg-type]


def test_building_the_same_edition_twice_gives_one_edition_and_one_delivery(store: Store) -> None:
    ledger = DeliveryStore(store)
    sid = subscriber(store)
    first = edition(ledger, sid)
    second = edition(ledger, sid)
    assert first[1] and not second[1] and first[0] == second[0]
    assert len(ledger.deliveries_for(sid)) == 1
    assert ledger.last_period_end("personal", sid, "daily") == NOW


def test_a_batch_of_editions_is_stored_as_one_at_a_time_and_an_existing_one_is_kept(
    store: Store,
) -> None:
    from pipeline.adapters.schema import edition as edition_table

    ledger = DeliveryStore(store)
    a, b, c = (subscriber(store, f"{n}@example.com") for n in "abc")
    alone, _ = edition(ledger, a)
    batch = [
        {"kind": "personal", "subscriber_id": sid, "frequency": "daily",
         "period_start": NOW - timedelta(days=1), "period_end": NOW,
         "local_date": NOW.date().isoformat(), "subject": "s", "item_count": 1,
         "content": {"x": 1}, "now": NOW, "queue_delivery": True}
        for sid in (b, c)
    ]  # fmt: skip
    (second, made_b), (third, made_c) = ledger.create_editions(batch)
    assert made_b and made_c and alone < second < third
    # the same rows as ``create_edition`` stores, the delivery rows queued with them
    columns = [col for col in edition_table.c if col.name not in ("id", "subscriber_id")]
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(*columns).where(edition_table.c.id.in_([alone, second, third]))
        ).all()
    assert rows[0] == rows[1] == rows[2]
    for sid, made in ((b, second), (c, third)):
        (queued,) = ledger.deliveries_for(sid)
        assert (queued.edition_id, queued.status) == (made, DeliveryStatus.QUEUED)
    # a batch holding an edition already built: that one is found, the others made
    d = subscriber(store, "d@example.com")
    again = ledger.create_editions([batch[0], {**batch[0], "subscriber_id": d}])
    assert again[0] == (second, False) and again[1][1]
    assert len(ledger.deliveries_for(b)) == 1 and len(ledger.deliveries_for(d)) == 1


def test_public_editions_are_unique_per_period_and_listed_newest_first(store: Store) -> None:
    ledger = DeliveryStore(store)
    edition(ledger, None, NOW - timedelta(days=1))
    edition(ledger, None, NOW)
    assert not edition(ledger, None, NOW)[1]
    assert [e.period_end for e in ledger.public_editions()] == [NOW, NOW - timedelta(days=1)]


def test_a_claimed_row_is_not_claimed_again(store: Store) -> None:
    ledger = DeliveryStore(store)
    for n in range(3):
        edition(ledger, subscriber(store, f"s{n}@example.com"))
    assert len(ledger.claim(NOW, "w1", 10)) == 3
    assert ledger.claim(NOW, "w2", 10) == []


def test_concurrent_claims_hand_each_row_to_one_worker(store: Store) -> None:
    ledger = DeliveryStore(store)
    for n in range(30):
        edition(ledger, subscriber(store, f"s{n}@example.com"))
    got: dict[str, list[int]] = {}

    def work(name: str) -> None:
        ids: list[int] = []
        for _ in range(10):
            ids += [r.id for r in ledger.claim(NOW, name, 2)]
        got[name] = ids

    threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [i for ids in got.values() for i in ids]
    assert len(claimed) == len(set(claimed)) == 30


def test_only_the_claiming_worker_records_the_outcome(store: Store) -> None:
    ledger = DeliveryStore(store)
    edition(ledger, subscriber(store))
    [row] = ledger.claim(NOW, "w1", 10)
    assert not ledger.mark_sent(row.id, "w2", "x", NOW)
    assert ledger.mark_sent(row.id, "w1", "msg-1", NOW)
    assert ledger.counts_by_status() == {DeliveryStatus.SENT: 1}


def test_many_sends_are_recorded_with_their_own_or_a_shared_provider_id(store: Store) -> None:
    ledger = DeliveryStore(store)
    for n in range(6):
        edition(ledger, subscriber(store, f"s{n}@example.com"))
    assert ledger.count_due(NOW) == 6 and ledger.count_due(NOW - timedelta(days=1)) == 0
    mine = ledger.claim(NOW, "w1", 5)
    [theirs] = ledger.claim(NOW, "w2", 5)
    a, b, c, d, e = (row.id for row in mine)
    accepted = [(a, "file-a"), (b, "file-b"), (c, "request-1"), (d, "request-1"), (e, None)]
    accepted.append((theirs.id, "file-x"))  # another worker's claim: not recorded here
    assert ledger.mark_sent_many(accepted, "w1", NOW) == 5
    assert ledger.count_due(NOW) == 0
    with store.engine.connect() as conn:
        table = delivery_table
        rows = conn.execute(select(table.c.id, table.c.status, table.c.provider_message_id))
        recorded = {row.id: (row.status, row.provider_message_id) for row in rows}
    assert recorded == {
        a: (DeliveryStatus.SENT, "file-a"),
        b: (DeliveryStatus.SENT, "file-b"),
        c: (DeliveryStatus.SENT, "request-1"),
        d: (DeliveryStatus.SENT, "request-1"),
        e: (DeliveryStatus.SENT, None),
        theirs.id: (DeliveryStatus.SENDING, None),
    }


def test_retry_puts_the_row_back_after_not_before(store: Store) -> None:
    ledger = DeliveryStore(store)
    edition(ledger, subscriber(store))
    [row] = ledger.claim(NOW, "w1", 10)
    ledger.mark_retry(row.id, "w1", "429", NOW + timedelta(seconds=30))
    assert ledger.claim(NOW + timedelta(seconds=29), "w1", 10) == []
    [again] = ledger.claim(NOW + timedelta(seconds=30), "w1", 10)
    assert again.attempts == 2


def test_a_dead_workers_rows_become_unknown_and_are_resent_once(store: Store) -> None:
    ledger = DeliveryStore(store)
    edition(ledger, subscriber(store))
    ledger.claim(NOW, "dead", 10)
    assert ledger.reap(NOW + timedelta(minutes=11), timedelta(minutes=10)) == 1
    assert ledger.counts_by_status() == {DeliveryStatus.UNKNOWN: 1}
    window = timedelta(hours=1)
    assert ledger.requeue_unresolved(NOW + timedelta(minutes=30), window) == 0
    assert ledger.requeue_unresolved(NOW + timedelta(hours=2), window) == 1
    [row] = ledger.claim(NOW + timedelta(hours=2), "w2", 10)
    assert row.resent
    ledger.mark_unknown(row.id, "w2", "timeout again")
    assert ledger.requeue_unresolved(NOW + timedelta(hours=5), window) == 0  # never twice


def test_unknown_rows_are_settled_by_provider_events(store: Store) -> None:
    ledger = DeliveryStore(store)
    edition(ledger, subscriber(store))
    [row] = ledger.claim(NOW, "w1", 10)
    ledger.mark_unknown(row.id, "w1", "500")
    assert ledger.resolve(row.id, DeliveryStatus.SENT, "sg-123")
    assert not ledger.resolve(row.id, DeliveryStatus.FAILED)  # settled rows stay settled
    assert ledger.counts_by_status() == {DeliveryStatus.SENT: 1}


def test_one_alert_per_subscriber_and_item(store: Store) -> None:
    from pipeline.core.models import FeedSource, Item

    ledger = DeliveryStore(store)
    sid = subscriber(store)
    feed_id, _ = store.add_feed(FeedSource(url="https://a.example/f"), "cli", NOW)
    store.store_items(
        feed_id,
        "https://a.example/f",
        [Item("g", "https://a.example/1", "t", "", "", NOW, "en")],
        NOW,
    )
    from sqlalchemy import select

    from pipeline.adapters.schema import item

    with store.engine.connect() as conn:
        item_id = conn.execute(select(item.c.id)).scalar_one()
    assert ledger.queue_alert(sid, item_id, NOW)
    assert not ledger.queue_alert(sid, item_id, NOW)
    assert ledger.alerts_since(sid, NOW - timedelta(days=1)) == 1


@pytest.mark.parametrize("status", [DeliveryStatus.FAILED, DeliveryStatus.SUPPRESSED])
def test_final_states_are_recorded_with_the_reason(store: Store, status: str) -> None:
    ledger = DeliveryStore(store)
    edition(ledger, subscriber(store))
    [row] = ledger.claim(NOW, "w1", 10)
    if status == DeliveryStatus.FAILED:
        ledger.mark_failed(row.id, "w1", "550 no such user")
    else:
        ledger.mark_suppressed(row.id, "w1", "unsubscribed")
    assert ledger.counts_by_status() == {status: 1}


@pytest.mark.parametrize(
    "text",
    [
        '{"title": "Caf\\u00e9 \\ud83d\\ude00 <b>", "rank": 1.2345678901234567, "n": [1, 2.0]}',
        '{"rank": NaN, "big": 123456789012345678901234567890}',  # orjson refuses these
    ],
)
def test_editions_are_read_as_json_reads_them(text: str) -> None:
    import json
    import math

    from pipeline.adapters.delivery_store import read_json

    found, expected = read_json(text), json.loads(text)
    if "NaN" in text:
        assert math.isnan(found["rank"]) and found["big"] == expected["big"]
    else:
        assert found == expected and type(found["n"][1]) is float


STORY = {"id": "i1", "title": "T", "link": "https://x.example/1", "source": "Dawn",
         "published": "2026-11-28T10:00:00+00:00", "snippet": "S", "themes": ["economy"],
         "us_link": False, "also": ["Reuters"]}  # fmt: skip
THEME = {"id": "economy", "name": "The economy", "description": "", "context": "Why."}


def compact(query: str, story_part: str = "story1") -> dict[str, object]:
    """A compact edition's content: one entry (among the top stories and in a section)."""
    ref = {"part": story_part, "rank": 9.5, "reasons": [f"watchlist: {query}"],
           "watchlists": [query]}  # fmt: skip
    section = {"theme": {"part": "theme1"}, "count": 1, "previous_count": None,
               "volume_line": "", "entries": [ref]}  # fmt: skip
    return {"version": 2, "period_start": "a", "period_end": "b", "subject": "s",
            "preheader": "", "top": [ref], "watchlist_entries": [], "watchlist_line": "",
            "sections": [section], "item_ids": ["i1"]}  # fmt: skip


def spec(sid: int, content: dict[str, object]) -> dict[str, object]:
    """``create_editions``' keywords for a reader's compact edition."""
    import json

    from pipeline.adapters.delivery_store import JSONText

    return {"kind": "personal", "subscriber_id": sid, "frequency": "daily",
            "period_start": NOW - timedelta(days=1), "period_end": NOW,
            "local_date": "2026-11-29", "subject": "s", "item_count": 1,
            "content": JSONText(json.dumps(content)), "now": NOW,
            "queue_delivery": True}  # fmt: skip


def test_compact_editions_are_read_whole_and_their_shared_parts_stored_once(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    from pipeline.adapters.schema import edition_part

    story, theme = STORY, THEME
    parts = {"story1": json.dumps(story), "theme1": json.dumps(theme)}

    ledger = DeliveryStore(store)
    a, b, c = (subscriber(store, f"{n}@example.com") for n in "abc")
    (first, _), (second, _) = ledger.create_editions([spec(a, compact("Gwadar"))], parts) + (
        ledger.create_editions([spec(b, compact("IMF"))], parts)  # the same parts again
    )
    ((lost, _),) = ledger.create_editions([spec(c, compact("x", story_part="gone"))])
    with store.engine.connect() as conn:
        assert sorted(conn.execute(select(edition_part.c.key)).scalars()) == ["story1", "theme1"]
    whole = ledger.get_edition(second)
    assert whole is not None
    entry = {**story, "rank": 9.5, "reasons": ["watchlist: IMF"], "watchlists": ["IMF"]}
    assert whole.content["version"] == 1 and whole.content["top"] == [entry]
    assert whole.content["sections"][0]["theme"] == theme
    assert whole.content["sections"][0]["entries"] == [entry]
    kept: dict[str, dict[str, object]] = {}
    found = ledger.get_editions([first, second, lost], kept, keep_refs=True)
    assert sorted(found) == [first, second] and sorted(kept) == ["story1", "theme1"]
    assert found[first].content["top"][0]["part"] == "story1"
    assert found[first].content["top"][0]["watchlists"] == ["Gwadar"]
    assert f"edition {lost} refers to a missing part" in caplog.text
    assert ledger.get_edition(lost) is None


def test_editions_read_as_references_find_their_parts_after_the_kept_parts_start_over(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries read as references name their story parts: when a batch overflows the parts
    kept across batches, the parts of its editions read before the overflow stay kept."""
    import json

    from pipeline.adapters import delivery_store

    ledger = DeliveryStore(store)
    a, b = (subscriber(store, f"{n}@example.com") for n in "ab")
    parts = {key: json.dumps({**STORY, "id": key}) for key in ("story1", "story2")}
    parts["theme1"] = json.dumps(THEME)
    ((first, _),) = ledger.create_editions([spec(a, compact("Gwadar"))], parts)
    ((second, _),) = ledger.create_editions([spec(b, compact("IMF", story_part="story2"))])
    kept: dict[str, dict[str, object]] = {}
    ledger.get_editions([first], kept, keep_refs=True)
    monkeypatch.setattr(delivery_store, "PARTS_KEPT", 2)  # story1 and theme1 fill it
    found = ledger.get_editions([first, second], kept, keep_refs=True)
    assert sorted(found) == [first, second]
    for edition in found.values():
        assert edition.content["top"][0]["part"] in kept
        assert kept[edition.content["top"][0]["part"]]["id"] == edition.content["top"][0]["part"]


def test_a_shared_section_is_read_with_the_story_parts_its_own_part_names(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A section many readers share is stored once, as a part listing its entries (their
    references to story parts): reading an edition reads that part, then the story parts
    it names, whole or as references; a story part that is gone leaves the edition out."""
    import json

    shared_ref = {"part": "story2", "rank": 7.0, "reasons": ["economy: IMF"], "watchlists": []}
    parts = {
        "story1": json.dumps(STORY),
        "story2": json.dumps({**STORY, "id": "i2", "title": "Shared"}),
        "theme1": json.dumps(THEME),
        "section1": json.dumps({"entries": [shared_ref]}),
        "section2": json.dumps({"entries": [{**shared_ref, "part": "gone"}]}),
    }

    def shared(query: str, section: str) -> dict[str, object]:
        content = compact(query)
        content["sections"][0]["entries"] = {"part": section}  # type: ignore[index]
        return content

    ledger = DeliveryStore(store)
    a, b, c = (subscriber(store, f"{n}@example.com") for n in "abc")
    ((first, _), (second, _), (lost, _)) = ledger.create_editions(
        [
            spec(a, shared("Gwadar", "section1")),
            spec(b, shared("IMF", "section1")),
            spec(c, shared("x", "section2")),
        ],
        parts,
    )
    whole = ledger.get_editions([first, second, lost])
    assert sorted(whole) == [first, second]
    section = whole[first].content["sections"][0]
    expected = {**json.loads(parts["story2"]), "rank": 7.0, "reasons": ["economy: IMF"],
                "watchlists": []}  # fmt: skip
    assert section["entries"] == [expected]
    assert "entries_part" not in section  # read whole: as the digest's own dict
    assert "gone" in caplog.text
    kept: dict[str, dict[str, object]] = {}
    as_refs = ledger.get_editions([first, second], kept, keep_refs=True)
    sections = [as_refs[n].content["sections"][0] for n in (first, second)]
    assert sections[0]["entries_part"] == sections[1]["entries_part"] == "section1"
    assert sections[0]["entries"] is sections[1]["entries"]  # one list for every reader
    assert {"story1", "story2", "theme1", "section1"} <= kept.keys()


def test_migrating_below_edition_parts_drops_compact_editions_and_keeps_whole_ones(
    store: Store,
) -> None:
    import json

    from sqlalchemy import func

    from pipeline.adapters.delivery_store import JSONText
    from pipeline.adapters.schema import edition as edition_table
    from tests.web.test_archive_store import _migrate

    ledger = DeliveryStore(store)
    whole, _ = edition(ledger, subscriber(store, "whole@example.com"))
    compact = json.dumps({"version": 2, "top": [], "sections": [], "watchlist_entries": []})
    edition(ledger, subscriber(store, "compact@example.com"), content=JSONText(compact))
    _migrate(store, "0009")
    with store.engine.connect() as conn:
        assert conn.execute(select(edition_table.c.id)).scalars().all() == [whole]
        assert conn.execute(select(func.count()).select_from(delivery_table)).scalar() == 1
    _migrate(store, "head")
    assert ledger.get_edition(whole) is not None
