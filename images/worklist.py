"""The clinicians' worklist: the studies a caller may see, filtered, sorted and cut into keyset pages.

A page is addressed by a cursor — the sort key and id of the row it starts after (or ends before) — never by an
offset or a count, so a page deep in 100,000 studies costs what the first one does, and a bookmarked link keeps
showing the same rows while new studies arrive. Every sort key is non-NULL (an undated study counts as the oldest)
and ends with the id, so rows with equal keys are neither skipped nor repeated from page to page; each sort has its
index (images/models.py, migration 0004_worklist_indexes).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.db.models import F, Q, QuerySet, Value
from django.db.models.expressions import Expression
from django.db.models.functions import Coalesce
from django.utils import timezone

from subscribers.access import Principal

from . import query, selectors
from .models import Study

PAGE_SIZES = (25, 50, 100)
DEFAULT_PAGE_SIZE = 25
NO_DATE = date.min  # the sort and range key of a study without a StudyDate: older than any real one
MAX_FILTER_LENGTH = 64


class WorklistError(ValueError):
    """A worklist parameter cannot be understood; `parameter` names it (as in the URL)."""

    def __init__(self, parameter: str, message: str):
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


def _study_date_key() -> Expression:
    # Exactly the expression of the index study_worklist_date, so the database reads the index in order.
    return Coalesce("study_date", Value(NO_DATE))


def _parse_date(text: str) -> date:
    return date.fromisoformat(text)


def _parse_datetime(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if timezone.is_naive(value):
        raise ValueError("naive datetime")
    return value


@dataclass(frozen=True)
class Sort:
    """One order of the worklist: a non-NULL key, then the id in the same direction."""

    name: str  # as in the URL: "-study_date", "patient_name", ...
    label: str
    column: str  # the column header that sorts this way
    descending: bool
    key: Callable[[], Expression]
    value_of: Callable[[Study], Any]  # the key of a loaded row (for the cursors)
    parse: Callable[[str], Any]  # a cursor's key back from its text

    def ordering(self, *, reverse: bool = False) -> list:
        descending = self.descending != reverse
        return [F("worklist_key").desc() if descending else F("worklist_key").asc(), F("pk").desc() if descending else F("pk").asc()]

    def beyond(self, value, pk: int, *, reverse: bool = False) -> Q:
        """Rows strictly past (value, pk) in this order (before it, with reverse)."""
        descending = self.descending != reverse
        op = "lt" if descending else "gt"
        # The first term alone is a range on the index; the second settles ties on the key by id.
        return Q(**{f"worklist_key__{op}e": value}) & (Q(**{f"worklist_key__{op}": value}) | Q(**{f"pk__{op}": pk}))


def _both_ways(column: str, label: str, key, value_of, parse, *, words: tuple[str, str], usual_descending: bool) -> list[Sort]:
    """A column's two orders, its usual one first (what its header asks for at first); words: (ascending, descending)."""
    return [
        Sort(
            name=("-" if descending else "") + column,
            label=f"{label}, {words[descending]}",
            column=column,
            descending=descending,
            key=key,
            value_of=value_of,
            parse=parse,
        )
        for descending in (usual_descending, not usual_descending)
    ]


SORTS: dict[str, Sort] = {
    order.name: order
    for order in (
        *_both_ways(
            "study_date",
            "Study date",
            _study_date_key,
            lambda s: s.study_date or NO_DATE,
            _parse_date,
            words=("oldest first", "newest first"),
            usual_descending=True,
        ),
        *_both_ways(
            "patient_name",
            "Patient name",
            lambda: F("patient__patient_name_search"),
            lambda s: s.patient.patient_name_search,
            str,
            words=("A to Z", "Z to A"),
            usual_descending=False,
        ),
        *_both_ways(
            "received_at",
            "Received",
            lambda: F("received_at"),
            lambda s: s.received_at,
            _parse_datetime,
            words=("oldest first", "newest first"),
            usual_descending=True,
        ),
    )
}
DEFAULT_SORT = "-study_date"


@dataclass(frozen=True)
class Cursor:
    """A position in one sort order: the key and id of a row."""

    sort: str
    value: Any
    pk: int

    def encode(self) -> str:
        value = self.value.isoformat() if isinstance(self.value, date | datetime) else self.value
        raw = json.dumps([self.sort, value, self.pk], separators=(",", ":"), ensure_ascii=False).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, sort: Sort, parameter: str) -> Cursor:
        invalid = WorklistError(parameter, "this page link is damaged or out of date; start again from the first page.")
        if not text or len(text) > 1000:
            raise invalid
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            name, value, pk = json.loads(raw)
            # A NUL cannot reach PostgreSQL in a text parameter; no key of ours holds one.
            if not isinstance(value, str) or "\x00" in value or not isinstance(pk, int) or isinstance(pk, bool) or pk < 0:
                raise ValueError(pk)
            parsed = sort.parse(value)
        except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
            raise invalid from None
        if name != sort.name:
            raise WorklistError(parameter, "this page link belongs to another sort order; start again from the first page.")
        return cls(sort.name, parsed, pk)


@dataclass(frozen=True)
class Filters:
    """What the worklist is narrowed to; empty values match everything."""

    patient_name: str = ""  # DICOM wildcards * and ?, any case; "Doe, Jane" works too; without a wildcard, a prefix
    patient_id: str = ""  # exact, or DICOM wildcards
    accession_number: str = ""  # exact, or DICOM wildcards
    date_from: date | None = None
    date_to: date | None = None
    modality: str = ""  # a modality code, or several separated by backslashes
    description: str = ""  # any part of the description, any case; DICOM wildcards allowed
    shared_only: bool = False


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def patient_name_pattern(value: str) -> str:
    """What a person types ('doe, jane', 'Doe^J*') as a wildcard on the upper-cased DICOM name ('DOE^JANE*')."""
    value = re.sub(r"\s*[,^]\s*", "^", value.strip()).upper()
    return value if _has_wildcard(value) else value + "*"


def _match(parameter: str, keyword: str, path: str, kind: str, value: str) -> Q | None:
    if len(value) > MAX_FILTER_LENGTH:
        raise WorklistError(parameter, f"at most {MAX_FILTER_LENGTH} characters.")
    try:
        return query.condition(parameter, keyword, query.Field(path, kind), value)
    except query.QueryError as error:
        raise WorklistError(parameter, error.message) from None


def filter_studies(studies: QuerySet[Study], filters: Filters) -> QuerySet[Study]:
    """Narrow visible studies (from selectors.studies_visible_to) with the DICOM matching of images/query.py."""
    conditions = []
    if filters.patient_name.strip():
        # Case-sensitive on the upper-cased copy of the name, so a prefix is a range on its index.
        pattern = patient_name_pattern(filters.patient_name)
        conditions.append(_match("patient_name", "PatientName", "patient__patient_name_search", "text", pattern))
    if filters.patient_id.strip():
        conditions.append(_match("patient_id", "PatientID", "patient__patient_id", "text", filters.patient_id.strip()))
    if filters.accession_number.strip():
        conditions.append(_match("accession_number", "AccessionNumber", "accession_number", "text", filters.accession_number.strip()))
    if filters.modality.strip():
        conditions.append(_match("modality", "ModalitiesInStudy", "modalities_in_study", "modalities", filters.modality.strip()))
    if filters.description.strip():
        text = filters.description.strip()
        conditions.append(
            _match("description", "StudyDescription", "study_description", "name", text if _has_wildcard(text) else f"*{text}*")
        )
    if filters.date_from and filters.date_to and filters.date_from > filters.date_to:
        raise WorklistError("date_to", "the end of the date range is before its start.")
    if filters.date_from or filters.date_to:
        # On the sort key's expression, so a date range is a range on the index (undated studies fall outside).
        studies = studies.alias(worklist_date=_study_date_key())
        conditions.append(Q(worklist_date__gt=NO_DATE))
        if filters.date_from:
            conditions.append(Q(worklist_date__gte=filters.date_from))
        if filters.date_to:
            conditions.append(Q(worklist_date__lte=filters.date_to))
    for condition in conditions:
        if condition is not None:
            studies = studies.filter(condition)
    if filters.shared_only:
        studies = studies.filter(is_shared=True)
    return studies


@dataclass
class WorklistPage:
    studies: list[Study]
    sort: Sort
    per_page: int
    next_cursor: str | None = None  # after=: the page after this one
    previous_cursor: str | None = None  # before=: the page before this one
    at_start: bool = True  # no cursor was given: this is the first page


def worklist_page(
    principal: Principal,
    *,
    filters: Filters,
    sort: str = DEFAULT_SORT,
    per_page: int = DEFAULT_PAGE_SIZE,
    after: str = "",
    before: str = "",
) -> WorklistPage:
    """One page of the caller's worklist: at most per_page studies, with the cursors of its neighbours.

    One query for the rows (patient and owning institution joined in), whatever the page and the archive's size.
    """
    if sort not in SORTS:
        raise WorklistError("sort", f"unknown order {sort!r}; use one of {', '.join(SORTS)}.")
    if per_page not in PAGE_SIZES:
        raise WorklistError("per_page", f"use {', '.join(map(str, PAGE_SIZES))} studies per page.")
    if after and before:
        raise WorklistError("before", "a page link has either after= or before=, not both.")
    order = SORTS[sort]
    studies = filter_studies(selectors.studies_visible_to(principal), filters).alias(worklist_key=order.key())
    backwards = bool(before)
    cursor = Cursor.decode(before or after, order, "before" if backwards else "after") if (before or after) else None
    if cursor is not None:
        studies = studies.filter(order.beyond(cursor.value, cursor.pk, reverse=backwards))
    rows = list(studies.order_by(*order.ordering(reverse=backwards))[: per_page + 1])
    more = len(rows) > per_page
    rows = rows[:per_page]
    if backwards:
        rows.reverse()
    page = WorklistPage(studies=rows, sort=order, per_page=per_page, at_start=cursor is None)
    if rows:
        first = Cursor(order.name, order.value_of(rows[0]), rows[0].pk).encode()
        last = Cursor(order.name, order.value_of(rows[-1]), rows[-1].pk).encode()
        # Going forwards, the cursor's own row lies behind; going backwards, ahead: that side has rows without asking.
        page.next_cursor = last if (more if not backwards else True) else None
        page.previous_cursor = first if (more if backwards else cursor is not None) else None
    return page
