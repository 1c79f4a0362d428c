"""Apps and their revisions, stored in the platform's database."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine, delete, func, select, tuple_
from sqlalchemy.orm import Session

from tidal.control.changes import announce
from tidal.control.db import AppRow, RevisionRow
from tidal.domain.app import LIMIT_FIELDS, AppRecord
from tidal.spec import (
    SCALING_FIELDS,
    AppSpec,
    InvalidOptionError,
    ScalingOptions,
    describe_validation_error,
)

# The most apps one page of the listing holds (`GET /api/v1/apps?limit=`).
LIST_PAGE_MAX = 1000
# Records the listing keeps (one per app); past this many it starts again.
LISTED_MAX = 20_000


class NotFound(LookupError):
    pass


class Registry:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # The listing's records, by (owner, name), with the row they came from: a page
        # re-reads rows but builds (parses) only the records whose row changed, and an
        # unchanged app is the same object page after page (what it computes, such as
        # its options, is kept). Shared objects: only the listing's read-only use sees them.
        self._listed: dict[tuple[str, str], tuple[tuple[Any, ...], AppRecord]] = {}

    def deploy(
        self, owner: str, spec: AppSpec, public: bool = False, reset_scale: bool = False
    ) -> AppRecord:
        """A new revision. Live scaling changes (`scale`) carry over unless `reset_scale`."""
        if spec.bundle_digest is None:
            raise ValueError("a revision needs its code bundle")
        now = time.time()
        with Session(self._engine) as s, s.begin():
            row = s.scalar(select(AppRow).where(AppRow.owner == owner, AppRow.name == spec.name))
            if row is None:
                row = AppRow(owner=owner, name=spec.name, created_at=now, updated_at=now)
                s.add(row)
                s.flush()
            last = s.scalar(
                select(func.max(RevisionRow.number)).where(RevisionRow.app_id == row.id)
            )
            number = (last or 0) + 1
            s.add(
                RevisionRow(
                    app_id=row.id,
                    number=number,
                    spec_json=spec.model_dump_json(),
                    bundle_digest=spec.bundle_digest,
                    created_at=now,
                )
            )
            row.current_revision = number
            row.public = public
            if reset_scale:
                row.scaling_json = "{}"
            row.updated_at = now
            s.flush()
            announce(s.connection())
            return self._record(s, row)

    def set_openapi(self, owner: str, name: str, revision: int, document: dict[str, Any]) -> None:
        """Store the OpenAPI document a runner of this revision served."""
        with Session(self._engine) as s, s.begin():
            row = s.scalar(select(AppRow).where(AppRow.owner == owner, AppRow.name == name))
            if row is None:
                return
            rev = s.scalar(
                select(RevisionRow).where(
                    RevisionRow.app_id == row.id, RevisionRow.number == revision
                )
            )
            if rev is not None:
                spec = AppSpec.model_validate_json(rev.spec_json)
                rev.spec_json = spec.model_copy(update={"openapi": document}).model_dump_json()

    def get(self, owner: str, name: str) -> AppRecord:
        with Session(self._engine) as s:
            row = s.scalar(select(AppRow).where(AppRow.owner == owner, AppRow.name == name))
            if row is None:
                raise NotFound(f"no app named {name!r} (owner {owner!r})")
            return self._record(s, row)

    def list(self) -> list[AppRecord]:
        """Every app, in (owner, name) order."""
        records: list[AppRecord] = []
        after: tuple[str, str] | None = None
        while page := self.page(after, LIST_PAGE_MAX, shared=False):
            records += page
            after = (page[-1].owner, page[-1].name)
        return records

    def page(
        self, after: tuple[str, str] | None, limit: int, shared: bool = True
    ) -> Sequence[AppRecord]:
        """Up to `limit` apps after (owner, name), in that order, each with its current
        revision: one statement (an index range on the apps' unique (owner, name), the
        revision by its unique (app_id, number)), whatever the number of apps.

        `shared`: a record may be the same object as an earlier page's (an unchanged app is
        not built again); read it, never change it."""
        query = (
            select(
                AppRow.owner, AppRow.name, AppRow.created_at, AppRow.updated_at,
                AppRow.scaling_json, AppRow.public, RevisionRow.number, RevisionRow.spec_json,
            )
            .join(
                RevisionRow,
                (RevisionRow.app_id == AppRow.id)
                & (RevisionRow.number == AppRow.current_revision),
            )
            .order_by(AppRow.owner, AppRow.name)
            .limit(limit)
        )  # fmt: skip
        if after is not None:
            query = query.where(tuple_(AppRow.owner, AppRow.name) > tuple_(*after))
        # Plain rows, not ORM objects: a page is read, never changed.
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        if not shared:
            return [_record_of(row, row.number, row.spec_json) for row in rows]
        return [self._listed_record(row) for row in rows]

    def _listed_record(self, row: Any) -> AppRecord:
        key = (row.owner, row.name)
        signature = tuple(row)
        cached = self._listed.get(key)
        if cached is not None and cached[0] == signature:
            return cached[1]
        record = _record_of(row, row.number, row.spec_json)
        if len(self._listed) >= LISTED_MAX:
            self._listed.clear()
        self._listed[key] = (signature, record)
        return record

    def versions(self) -> dict[tuple[str, str], tuple[int, float]]:
        """Each app's current revision and last change, cheaply: what a platform sharing
        the database compares with what it runs."""
        with Session(self._engine) as s:
            rows = s.execute(
                select(AppRow.owner, AppRow.name, AppRow.current_revision, AppRow.updated_at)
            ).all()
        return {(r.owner, r.name): (r.current_revision, r.updated_at) for r in rows}

    def revisions(self, owner: str, name: str) -> Sequence[tuple[int, float, AppSpec]]:
        """Every revision of the app, newest first: (number, created_at, spec)."""
        with Session(self._engine) as s:
            row = s.scalar(select(AppRow).where(AppRow.owner == owner, AppRow.name == name))
            if row is None:
                raise NotFound(f"no app named {name!r} (owner {owner!r})")
            revs = s.scalars(
                select(RevisionRow)
                .where(RevisionRow.app_id == row.id)
                .order_by(RevisionRow.number.desc())
            ).all()
            return [
                (r.number, r.created_at, AppSpec.model_validate_json(r.spec_json)) for r in revs
            ]

    def delete(self, owner: str, name: str) -> None:
        with Session(self._engine) as s, s.begin():
            row = s.scalar(select(AppRow).where(AppRow.owner == owner, AppRow.name == name))
            if row is None:
                raise NotFound(f"no app named {name!r} (owner {owner!r})")
            s.execute(delete(RevisionRow).where(RevisionRow.app_id == row.id))
            s.delete(row)
            announce(s.connection())
        self._listed.pop((owner, name), None)

    def scale(self, owner: str, name: str, changes: dict[str, Any]) -> AppRecord:
        unknown = sorted(set(changes) - SCALING_FIELDS - set(LIMIT_FIELDS))
        if unknown:
            raise InvalidOptionError(
                f"{unknown[0]!r} cannot change on a live app; scalable options: "
                f"{', '.join(sorted(SCALING_FIELDS | set(LIMIT_FIELDS)))}. Redeploy to "
                "change the others."
            )
        for limit, (low, high) in LIMIT_FIELDS.items():
            value = changes.get(limit, low)
            if value is not None and (type(value) is not int or not low <= value <= high):
                raise InvalidOptionError(
                    f"{limit} must be a whole number from {low} to {high} (or null for the "
                    f"platform's default), not {value!r}"
                )
        with Session(self._engine) as s, s.begin():
            row = s.scalar(select(AppRow).where(AppRow.owner == owner, AppRow.name == name))
            if row is None:
                raise NotFound(f"no app named {name!r} (owner {owner!r})")
            record = self._record(s, row)
            merged = {**record.scaling_overrides, **changes}
            merged = {k: v for k, v in merged.items() if not (k in LIMIT_FIELDS and v is None)}
            current = {k: getattr(record.spec.options, k) for k in SCALING_FIELDS}
            scaling = {k: v for k, v in merged.items() if k not in LIMIT_FIELDS}
            try:
                ScalingOptions.model_validate({**current, **scaling})
            except ValidationError as exc:
                raise InvalidOptionError(describe_validation_error(exc, changes)) from None
            row.scaling_json = json.dumps(merged)
            row.updated_at = time.time()
            s.flush()
            announce(s.connection())
            return self._record(s, row)

    @staticmethod
    def _record(s: Session, row: AppRow) -> AppRecord:
        rev = s.scalar(
            select(RevisionRow).where(
                RevisionRow.app_id == row.id, RevisionRow.number == row.current_revision
            )
        )
        assert rev is not None
        return _record_of(row, rev.number, rev.spec_json)


def _record_of(row: Any, revision: int, spec_json: str) -> AppRecord:
    """The record of an app's row (an AppRow, or a row with its columns)."""
    return AppRecord(
        owner=row.owner,
        name=row.name,
        revision=revision,
        spec=AppSpec.model_validate_json(spec_json),
        created_at=row.created_at,
        updated_at=row.updated_at,
        scaling_overrides=json.loads(row.scaling_json),
        public=bool(row.public),
    )
