"""Subscribers and watchlists in the store (same database and engine as feeds and items)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from pipeline.adapters.schema import subscriber, watchlist
from pipeline.adapters.storage import Store, StoredItem
from pipeline.core.subscribers import (
    MAX_WATCHLISTS,
    Frequency,
    Subscriber,
    SubscriberError,
    SubscriberStatus,
    Watchlist,
)


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
            if ids:
                for w in conn.execute(
                    select(watchlist)
                    .where(watchlist.c.subscriber_id.in_(ids))
                    .order_by(watchlist.c.id)
                ):
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
