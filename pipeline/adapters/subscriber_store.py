"""Subscribers and watchlists in the store (same database and engine as feeds and items)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Integer, String, delete, func, select, type_coerce, update
from sqlalchemy.exc import IntegrityError

from pipeline.adapters.schema import (
    consent,
    delivery,
    edition,
    subscriber,
    suppression,
    used_token,
    watchlist,
)
from pipeline.adapters.storage import Store, StoredItem
from pipeline.core.subscribers import (
    MAX_WATCHLISTS,
    Frequency,
    Subscriber,
    SubscriberError,
    SubscriberStatus,
    Watchlist,
)


class _Undo(Exception):
    """Roll the current transaction back and report ``outcome``."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


@dataclass(frozen=True)
class ConsentRecord:
    """One row of the consent log: what was done, when, from where, under which text."""

    action: str  # signup, confirm, unsubscribe, resubscribe
    ip: str = ""
    user_agent: str = ""
    text_version: str = ""
    source: str = ""  # web, one-click, cli


class SubscriberStore:
    """Reads and writes subscribers and their watchlists through a Store's engine."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(
        self,
        email: str,
        *,
        themes: Sequence[str],
        frequency: Frequency,
        hour: int,
        timezone: str,
        status: SubscriberStatus,
        now: datetime,
    ) -> tuple[Subscriber, bool]:
        """Insert a subscriber, or update the preferences of a known address.

        Returns (subscriber, created). A suppressed address keeps its status: only a fresh
        confirmation (the web flow) may reactivate it.
        """
        values = {
            "themes": list(themes),
            "frequency": frequency.value,
            "hour": hour,
            "timezone": timezone,
            "updated_at": now,
        }
        with self.store._begin() as conn:
            existing = conn.execute(
                select(subscriber.c.id).where(subscriber.c.email == email)
            ).scalar()
            if existing is None:
                conn.execute(
                    subscriber.insert().values(
                        email=email, status=status.value, created_at=now, **values
                    )
                )
                created = True
            else:
                conn.execute(update(subscriber).where(subscriber.c.id == existing).values(**values))
                created = False
        found = self.get(email)
        assert found is not None
        return found, created

    def get(self, email: str) -> Subscriber | None:
        found = self._load(subscriber.c.email == email)
        return found[0] if found else None

    def all(self) -> list[Subscriber]:
        return self._load(None)

    def active(self) -> list[Subscriber]:
        """Active subscribers and their watchlists, as ``all`` gives them less the creation
        times: what a digest build reads of 100,000 readers and 500,000 watchlists, without
        parsing 600,000 timestamps (SQLite keeps them as text)."""
        return self._lean(subscriber.c.status == SubscriberStatus.ACTIVE.value)

    def active_queries(self) -> dict[int, str]:
        """Watchlist id → query of every active subscriber's watchlists: what ``active``
        gives of them, for the digest build's watchlist engine (which is loaded in a
        process of its own while the build reads the readers)."""
        with self.store._begin() as conn:
            rows = conn.execute(
                select(watchlist.c.id, watchlist.c.query)
                .join(subscriber, subscriber.c.id == watchlist.c.subscriber_id)
                .where(subscriber.c.status == SubscriberStatus.ACTIVE.value)
            ).all()
        return {int(wid): text for wid, text in rows}

    def by_ids(self, ids: Sequence[int]) -> dict[int, Subscriber]:
        """Subscribers by id, read fresh (the send queue re-checks status just before
        sending), less the creation times (as ``active``)."""
        if not ids:
            return {}
        return {s.id: s for s in self._lean(subscriber.c.id.in_(list(ids)))}

    def for_sending(self, ids: Sequence[int]) -> tuple[dict[int, Subscriber], dict[int, int]]:
        """``by_ids`` for the send queue: each reader with their instant watchlists alone
        (what an alert is matched against), and apart how many watchlists each keeps (the
        footer says so; a reader with none is left out). Reading every watchlist of a
        batch's readers only to count them was about 5% of the send path."""
        if not ids:
            return {}, {}
        chosen = subscriber.c.id.in_(list(ids))
        readers = {s.id: s for s in self._lean(chosen, instant_only=True)}
        with self.store._begin() as conn:
            counts = conn.execute(
                select(watchlist.c.subscriber_id, func.count())
                .where(watchlist.c.subscriber_id.in_(list(ids)))
                .group_by(watchlist.c.subscriber_id)
            ).all()
        return readers, {int(owner): int(count) for owner, count in counts}

    def _lean(self, condition: Any, instant_only: bool = False) -> list[Subscriber]:
        """The subscribers ``condition`` selects with their watchlists (``instant_only``:
        those sending alerts), no timestamps."""
        with self.store._begin() as conn:
            rows = conn.execute(
                select(
                    subscriber.c.id,
                    subscriber.c.email,
                    subscriber.c.status,
                    # as the driver gives it (SQLite: the JSON text, decoded below once per
                    # distinct choice rather than once per reader; psycopg: decoded)
                    type_coerce(subscriber.c.themes, String),
                    subscriber.c.frequency,
                    subscriber.c.hour,
                    subscriber.c.timezone,
                )
                .where(condition)
                .order_by(subscriber.c.id)
            ).all()
            lists: dict[int, list[Watchlist]] = defaultdict(list)
            query = (
                select(
                    watchlist.c.subscriber_id,
                    watchlist.c.id,
                    watchlist.c.query,
                    # the stored 0/1 (or bool) as is: made a bool below, not by a result
                    # processor per row (~40% of reading 500,000 of them)
                    type_coerce(watchlist.c.instant, Integer),
                )
                .join(subscriber, subscriber.c.id == watchlist.c.subscriber_id)
                .where(condition)
                .order_by(watchlist.c.id)
            )
            if instant_only:
                query = query.where(watchlist.c.instant.is_(True))
            # fetched at once: row by row, the result's own bookkeeping doubled the read
            for owner, wid, text, instant in conn.execute(query).all():
                lists[owner].append(Watchlist(wid, text, bool(instant)))
        statuses = {s.value: s for s in SubscriberStatus}
        frequencies = {f.value: f for f in Frequency}
        choices: dict[str, tuple[str, ...]] = {}

        def chosen(themes: Any) -> tuple[str, ...]:
            if not isinstance(themes, str):  # a driver that decodes JSON itself
                return tuple(themes or ())
            found = choices.get(themes)
            if found is None:
                found = choices[themes] = tuple(json.loads(themes) or ())
            return found

        return [
            Subscriber(
                id=sid,
                email=email,
                status=statuses[status],
                themes=chosen(themes),
                frequency=frequencies[frequency],
                hour=hour,
                timezone=zone,
                watchlists=tuple(lists[sid]),
            )
            for sid, email, status, themes, frequency, hour, zone in rows
        ]

    def remove(self, email: str) -> bool:
        """Delete a subscriber and their watchlists. False when the address is unknown."""
        with self.store._begin() as conn:
            return bool(
                conn.execute(delete(subscriber).where(subscriber.c.email == email)).rowcount
            )

    def set_status(self, email: str, status: SubscriberStatus, now: datetime) -> bool:
        with self.store._begin() as conn:
            result = conn.execute(
                update(subscriber)
                .where(subscriber.c.email == email)
                .values(status=status.value, updated_at=now)
            )
            return bool(result.rowcount)

    def add_watchlist(self, email: str, query: str, instant: bool, now: datetime) -> Watchlist:
        """Save a canonical query for a subscriber (the same query twice is one watchlist)."""
        with self.store._begin() as conn:
            owner = conn.execute(
                select(subscriber.c.id).where(subscriber.c.email == email)
            ).scalar()
            if owner is None:
                raise SubscriberError("email", f"no subscriber {email}")
            count = conn.execute(
                select(func.count())
                .select_from(watchlist)
                .where(watchlist.c.subscriber_id == owner)
            ).scalar_one()
            existing = conn.execute(
                select(watchlist).where(
                    watchlist.c.subscriber_id == owner, watchlist.c.query == query
                )
            ).first()
            if existing is not None:
                conn.execute(
                    update(watchlist).where(watchlist.c.id == existing.id).values(instant=instant)
                )
                return Watchlist(existing.id, query, instant, existing.created_at)
            if count >= MAX_WATCHLISTS:
                raise SubscriberError(
                    "watchlist", f"{email} already has {count} watchlists (the limit)"
                )
            try:
                new_id = conn.execute(
                    watchlist.insert()
                    .values(subscriber_id=owner, query=query, instant=instant, created_at=now)
                    .returning(watchlist.c.id)
                ).scalar_one()
            except IntegrityError as error:  # a concurrent add of the same query
                raise SubscriberError("watchlist", "this watchlist already exists") from error
        return Watchlist(int(new_id), query, instant, now)

    def remove_watchlist(self, watchlist_id: int) -> bool:
        with self.store._begin() as conn:
            return bool(
                conn.execute(delete(watchlist).where(watchlist.c.id == watchlist_id)).rowcount
            )

    def items_between(self, since: datetime, until: datetime) -> list[StoredItem]:
        """Stored items published in [since, until), newest first (for watchlist backtests)."""
        return self.store.items_between(since, until)

    def _load(self, condition: Any) -> list[Subscriber]:
        query = select(subscriber).order_by(subscriber.c.id)
        if condition is not None:
            query = query.where(condition)
        with self.store._begin() as conn:
            rows = conn.execute(query).all()
            ids = [row.id for row in rows]
            lists: dict[int, list[Watchlist]] = defaultdict(list)
            lists_query = select(watchlist).order_by(watchlist.c.id)
            if condition is not None:  # everyone: no IN list (SQLite caps its parameters)
                lists_query = lists_query.where(watchlist.c.subscriber_id.in_(ids))
            if ids:
                for w in conn.execute(lists_query):
                    lists[w.subscriber_id].append(
                        Watchlist(w.id, w.query, bool(w.instant), w.created_at)
                    )
        return [
            Subscriber(
                id=row.id,
                email=row.email,
                status=SubscriberStatus(row.status),
                themes=tuple(row.themes or ()),
                frequency=Frequency(row.frequency),
                hour=row.hour,
                timezone=row.timezone,
                watchlists=tuple(lists[row.id]),
                created_at=row.created_at,
            )
            for row in rows
        ]

    # -- the web app: consent, one-time links, suppression, export and erase ---------------

    def by_id(self, subscriber_id: int) -> Subscriber | None:
        found = self._load(subscriber.c.id == subscriber_id)
        return found[0] if found else None

    def add_consent(self, subscriber_id: int, record: ConsentRecord, now: datetime) -> None:
        with self.store._begin() as conn:
            self._consent(conn, subscriber_id, record, now)

    @staticmethod
    def _consent(
        conn: Connection, subscriber_id: int, record: ConsentRecord, now: datetime
    ) -> None:
        conn.execute(
            consent.insert().values(
                subscriber_id=subscriber_id,
                action=record.action,
                at=now,
                ip=record.ip[:64],
                user_agent=record.user_agent[:500],
                text_version=record.text_version[:32],
                source=record.source[:32],
            )
        )

    def transition(
        self,
        subscriber_id: int,
        *,
        to: SubscriberStatus,
        allowed_from: Sequence[SubscriberStatus],
        now: datetime,
        record: ConsentRecord | None = None,
        confirmed: bool = False,
        one_time: tuple[str, str] | None = None,
        clear_suppression: str | None = None,
    ) -> str:
        """Move a subscriber to ``to`` if their status is one of ``allowed_from``, in one
        transaction with its consent row. Returns "done", "skipped" (status not allowed)
        or "used" (the one-time link ``(token hash, purpose)`` was used before).

        ``confirmed`` stamps confirmed_at; ``clear_suppression`` drops that address hash
        from the suppression list (a confirmed opt-in supersedes an earlier leave).
        """
        values: dict[str, Any] = {"status": to.value, "updated_at": now}
        if confirmed:
            values["confirmed_at"] = now
        try:
            with self.store._begin() as conn:
                changed = conn.execute(
                    update(subscriber)
                    .where(
                        subscriber.c.id == subscriber_id,
                        subscriber.c.status.in_([s.value for s in allowed_from]),
                    )
                    .values(**values)
                ).rowcount
                if not changed:
                    raise _Undo("skipped")
                if one_time is not None:
                    token_hash, purpose = one_time
                    inserted = conn.execute(
                        self.store.insert_ignoring(used_token, "token_hash")
                        .values(token_hash=token_hash, purpose=purpose, used_at=now)
                        .returning(used_token.c.token_hash)
                    ).scalar()
                    if inserted is None:
                        raise _Undo("used")
                if record is not None:
                    self._consent(conn, subscriber_id, record, now)
                if clear_suppression:
                    conn.execute(
                        delete(suppression).where(suppression.c.email_hash == clear_suppression)
                    )
        except _Undo as undo:
            return undo.outcome
        return "done"

    def token_used(self, token_hash: str) -> bool:
        with self.store._begin() as conn:
            return (
                conn.execute(
                    select(used_token.c.token_hash).where(used_token.c.token_hash == token_hash)
                ).scalar()
                is not None
            )

    def suppression_reason(self, email_hash: str) -> str | None:
        """Why this address hash is suppressed (bounced, complained, erased...), or None."""
        with self.store._begin() as conn:
            found = conn.execute(
                select(suppression.c.reason).where(suppression.c.email_hash == email_hash)
            ).scalar()
        return str(found) if found is not None else None

    def queue_once(self, subscriber_id: int, channel: str, since: datetime, now: datetime) -> bool:
        """Queue a transactional email (confirm, link) unless one of that channel was
        queued for this subscriber since ``since``. True when a row was queued.

        The check and the insert share a transaction that locks the subscriber's row on
        PostgreSQL (SQLite serialises writers), so concurrent requests queue one email.
        """
        with self.store._begin() as conn:
            lock = select(subscriber.c.id).where(subscriber.c.id == subscriber_id)
            if not self.store.is_sqlite:
                lock = lock.with_for_update()
            if conn.execute(lock).scalar() is None:
                return False
            recent = conn.execute(
                select(func.count())
                .select_from(delivery)
                .where(
                    delivery.c.subscriber_id == subscriber_id,
                    delivery.c.channel == channel,
                    delivery.c.created_at >= since,
                )
            ).scalar_one()
            if recent:
                return False
            conn.execute(
                delivery.insert().values(
                    subscriber_id=subscriber_id,
                    channel=channel,
                    status="queued",
                    not_before=now,
                    created_at=now,
                )
            )
        return True

    def update_preferences(
        self,
        subscriber_id: int,
        *,
        themes: Sequence[str],
        frequency: Frequency,
        hour: int,
        timezone: str,
        now: datetime,
    ) -> bool:
        with self.store._begin() as conn:
            return bool(
                conn.execute(
                    update(subscriber)
                    .where(subscriber.c.id == subscriber_id)
                    .values(
                        themes=list(themes),
                        frequency=frequency.value,
                        hour=hour,
                        timezone=timezone,
                        updated_at=now,
                    )
                ).rowcount
            )

    def edit_watchlist(
        self, subscriber_id: int, watchlist_id: int, query: str, instant: bool
    ) -> Watchlist:
        """Change one of a subscriber's watchlists (query and instant flag)."""
        with self.store._begin() as conn:
            row = conn.execute(
                select(watchlist).where(
                    watchlist.c.id == watchlist_id, watchlist.c.subscriber_id == subscriber_id
                )
            ).first()
            if row is None:
                raise SubscriberError("watchlist", "no such watchlist")
            clash = conn.execute(
                select(watchlist.c.id).where(
                    watchlist.c.subscriber_id == subscriber_id,
                    watchlist.c.query == query,
                    watchlist.c.id != watchlist_id,
                )
            ).scalar()
            if clash is not None:
                raise SubscriberError("watchlist", "you already have a watchlist with this query")
            conn.execute(
                update(watchlist)
                .where(watchlist.c.id == watchlist_id)
                .values(query=query, instant=instant)
            )
        return Watchlist(watchlist_id, query, instant, row.created_at)

    def remove_watchlist_of(self, subscriber_id: int, watchlist_id: int) -> bool:
        """Delete a watchlist only if it belongs to this subscriber."""
        with self.store._begin() as conn:
            return bool(
                conn.execute(
                    delete(watchlist).where(
                        watchlist.c.id == watchlist_id, watchlist.c.subscriber_id == subscriber_id
                    )
                ).rowcount
            )

    def export(self, subscriber_id: int) -> dict[str, Any] | None:
        """Everything stored about one subscriber, as JSON-ready values (GDPR export)."""

        def when(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        with self.store._begin() as conn:
            row = conn.execute(select(subscriber).where(subscriber.c.id == subscriber_id)).first()
            if row is None:
                return None
            lists = conn.execute(
                select(watchlist)
                .where(watchlist.c.subscriber_id == subscriber_id)
                .order_by(watchlist.c.id)
            ).all()
            consents = conn.execute(
                select(consent)
                .where(consent.c.subscriber_id == subscriber_id)
                .order_by(consent.c.id)
            ).all()
            deliveries = conn.execute(
                select(delivery, edition.c.subject, edition.c.local_date)
                .select_from(delivery.outerjoin(edition, edition.c.id == delivery.c.edition_id))
                .where(delivery.c.subscriber_id == subscriber_id)
                .order_by(delivery.c.id)
            ).all()
        return {
            "subscriber": {
                "id": row.id,
                "email": row.email,
                "status": row.status,
                "themes": list(row.themes or ()),
                "frequency": row.frequency,
                "hour": row.hour,
                "timezone": row.timezone,
                "created_at": when(row.created_at),
                "updated_at": when(row.updated_at),
                "confirmed_at": when(row.confirmed_at),
            },
            "watchlists": [
                {
                    "id": w.id,
                    "query": w.query,
                    "instant": bool(w.instant),
                    "created_at": when(w.created_at),
                }
                for w in lists
            ],
            "consent": [
                {
                    "action": c.action,
                    "at": when(c.at),
                    "ip": c.ip,
                    "user_agent": c.user_agent,
                    "text_version": c.text_version,
                    "source": c.source,
                }
                for c in consents
            ],
            "deliveries": [
                {
                    "id": d.id,
                    "channel": d.channel,
                    "status": d.status,
                    "edition_id": d.edition_id,
                    "edition_subject": d.subject,
                    "edition_date": d.local_date,
                    "alert_item_id": d.alert_item_id,
                    "attempts": d.attempts,
                    "created_at": when(d.created_at),
                    "sent_at": when(d.sent_at),
                }
                for d in deliveries
            ],
        }

    def erase(self, subscriber_id: int, email_hash: str, now: datetime) -> bool:
        """Delete a subscriber and everything that cascades from them (watchlists, consent,
        deliveries, personal editions) and keep only the hash of the address, so it is
        never mailed again without a fresh double opt-in. One transaction."""
        with self.store._begin() as conn:
            gone = conn.execute(delete(subscriber).where(subscriber.c.id == subscriber_id)).rowcount
            if not gone:
                return False
            conn.execute(
                self.store.insert_ignoring(suppression, "email_hash").values(
                    email_hash=email_hash, reason="erased", created_at=now
                )
            )
        return True

    def sign_up(
        self,
        email: str,
        email_hash: str,
        *,
        themes: Sequence[str],
        frequency: Frequency,
        hour: int,
        timezone: str,
        record: ConsentRecord,
        watchlist_query: str,
        confirm_since: datetime,
        now: datetime,
    ) -> tuple[str, int | None]:
        """The web sign-up in one transaction, so every path does the same reads and the
        new-address path only adds a few inserts (A-03: timing tells nothing).

        - active or paused: nothing changes → ("receiving", id)
        - unsubscribed, bounced, complained, or an unknown address whose hash is suppressed
          for any reason but "erased": nothing → ("suppressed", id or None)
        - new, erased earlier, or pending: pending with these preferences, a consent row,
          the first watchlist (unless at the limit), and a confirmation queued unless one
          was queued since ``confirm_since`` → ("queued" or "throttled", id)
        """
        values = {
            "themes": list(themes),
            "frequency": frequency.value,
            "hour": hour,
            "timezone": timezone,
            "updated_at": now,
        }
        with self.store._begin() as conn:
            lookup = select(subscriber.c.id, subscriber.c.status).where(subscriber.c.email == email)
            if not self.store.is_sqlite:
                lookup = lookup.with_for_update()
            row = conn.execute(lookup).first()
            reason = conn.execute(
                select(suppression.c.reason).where(suppression.c.email_hash == email_hash)
            ).scalar()
            if row is not None:
                status = SubscriberStatus(row.status)
                if status in (SubscriberStatus.ACTIVE, SubscriberStatus.PAUSED):
                    return "receiving", row.id
                if status is not SubscriberStatus.PENDING:
                    return "suppressed", row.id
                owner = int(row.id)
                conn.execute(update(subscriber).where(subscriber.c.id == owner).values(**values))
            elif reason is not None and reason != "erased":
                return "suppressed", None
            else:
                owner = int(
                    conn.execute(
                        subscriber.insert()
                        .values(
                            email=email,
                            status=SubscriberStatus.PENDING.value,
                            created_at=now,
                            **values,
                        )
                        .returning(subscriber.c.id)
                    ).scalar_one()
                )
            self._consent(conn, owner, record, now)
            if watchlist_query:
                count = conn.execute(
                    select(func.count())
                    .select_from(watchlist)
                    .where(watchlist.c.subscriber_id == owner)
                ).scalar_one()
                if count < MAX_WATCHLISTS:
                    conn.execute(
                        self.store.insert_ignoring(watchlist, "subscriber_id", "query").values(
                            subscriber_id=owner,
                            query=watchlist_query,
                            instant=False,
                            created_at=now,
                        )
                    )
            recent = conn.execute(
                select(func.count())
                .select_from(delivery)
                .where(
                    delivery.c.subscriber_id == owner,
                    delivery.c.channel == "confirm",
                    delivery.c.created_at >= confirm_since,
                )
            ).scalar_one()
            if recent:
                return "throttled", owner
            conn.execute(
                delivery.insert().values(
                    subscriber_id=owner,
                    channel="confirm",
                    status="queued",
                    not_before=now,
                    created_at=now,
                )
            )
        return "queued", owner
