"""What a polling source collects: its match keys (study or series attributes, with DICOM wildcards) and age window,
checked when the source is saved and applied again to every answer, so a PACS that ignores a key it does not support
never makes us fetch what the subscriber did not ask for."""

from __future__ import annotations

import re
from datetime import date, timedelta

from django.core.exceptions import ValidationError
from pydicom.datadict import keyword_for_tag

STUDY, SERIES = "STUDY", "SERIES"
# The keys a source may match on, and the Query/Retrieve level each is matched at (PS3.4 C.6.2.1.2). A study matches
# a series-level key when one of its series does.
MATCH_KEYS = {
    "ModalitiesInStudy": STUDY,
    "StudyDescription": STUDY,
    "PatientID": STUDY,
    "AccessionNumber": STUDY,
    "ReferringPhysicianName": STUDY,
    "StudyID": STUDY,
    "BodyPartExamined": SERIES,
    "SeriesDescription": SERIES,
}
ALIASES = {"Modality": "ModalitiesInStudy"}
# At series level a study's modalities are each series' Modality.
SERIES_KEYWORD = {"ModalitiesInStudy": "Modality"}
MAX_VALUE_LENGTH = 64
MAX_AGE_DAYS = 36_500


def keyword_of(name: str) -> str:
    """A match key given as a keyword (Modality, StudyDescription) or a tag (0008,1030 or 00081030)."""
    text = (name or "").strip()
    tag = re.fullmatch(r"\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?", text)
    if tag:
        text = keyword_for_tag(int(tag.group(1) + tag.group(2), 16)) or text
    return ALIASES.get(text, text)


def normalize_query(raw: dict | None) -> dict[str, str]:
    """The match keys as stored on the source; a ValidationError names the key it refuses."""
    query = {}
    for name, value in (raw or {}).items():
        keyword = keyword_of(str(name))
        if keyword not in MATCH_KEYS:
            known = ", ".join(sorted([*MATCH_KEYS, *ALIASES]))
            raise ValidationError(f"Cannot match on {name!r}; a polling source matches on {known}.", code="query_key")
        text = str(value if value is not None else "").strip()
        if not text:
            raise ValidationError(f"{keyword}: give a value to match (wildcards * and ? allowed).", code="query_value")
        if len(text) > MAX_VALUE_LENGTH or "\\" in text or any(ord(c) < 32 for c in text):
            raise ValidationError(
                f"{keyword}: at most {MAX_VALUE_LENGTH} characters, without backslash or control characters.", code="query_value"
            )
        query[keyword] = text
    return query


def study_keys(query: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in query.items() if MATCH_KEYS[k] == STUDY}


def series_keys(query: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in query.items() if MATCH_KEYS[k] == SERIES}


def date_range(max_age_days: int | None, today: date) -> str:
    """StudyDate range matching (PS3.4 C.2.2.2.5) for the age window: 'YYYYMMDD-', or '' for any age."""
    if not max_age_days:
        return ""
    return (today - timedelta(days=max_age_days)).strftime("%Y%m%d") + "-"


def _pattern(wanted: str) -> re.Pattern:
    # PS3.4 C.2.2.2.4: * any sequence, ? one character; everything else literally.
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in wanted), re.DOTALL)


def value_matches(wanted: str, answered, *, keyword: str = "") -> bool:
    """Whether an answered value (or any of its values) matches wanted. Names match without regard to case."""
    values = answered if isinstance(answered, list | tuple) else [answered]
    flags_text = keyword.endswith("PhysicianName") or keyword == "PatientName"
    pattern = _pattern(wanted.upper() if flags_text else wanted)
    for value in values:
        text = str(value if value is not None else "").strip()
        if flags_text:
            text = text.upper()
        if pattern.fullmatch(text):
            return True
    return False


def within_window(study_date: str, window: str) -> bool:
    """Whether a StudyDate (YYYYMMDD) is inside the 'YYYYMMDD-' window; a study without a date is outside any window."""
    if not window:
        return True
    return bool(study_date) and study_date[:8] >= window[:8]


class UnsupportedKey(Exception):
    """The source did not answer a key it was asked to match on: it cannot match on it, so we cannot either."""

    def __init__(self, keyword: str):
        super().__init__(keyword)
        self.keyword = keyword


# An answer, as both kinds of source give it: keyword -> its values; a key absent from the answer is absent here,
# a key answered empty is an empty list.
Answer = dict[str, list[str]]


def check_study(answer: Answer, query: dict[str, str], window: str) -> dict[str, str] | None:
    """None when a study-level answer does not match; else the series-level keys still to check (empty: it matches).

    A modality the source could not match at study level is checked on its series; any other key it did not answer
    raises UnsupportedKey.
    """
    dates = answer.get("StudyDate")
    if window and dates is not None and not within_window(dates[0] if dates else "", window):
        return None
    needs_series = series_keys(query)
    for keyword, value in study_keys(query).items():
        answered = answer.get(keyword)
        if answered:
            if not value_matches(value, answered, keyword=keyword):
                return None
        elif keyword in SERIES_KEYWORD:
            needs_series[SERIES_KEYWORD[keyword]] = value
        elif answered is not None:
            if value.strip("*"):
                return None  # answered empty: the study does not have the value asked for
        else:
            raise UnsupportedKey(keyword)
    return needs_series


def check_series(answer: Answer, keys: dict[str, str]) -> bool:
    """Whether one series-level answer matches every key; UnsupportedKey for a key it did not answer."""
    for keyword, value in keys.items():
        if keyword not in answer:
            raise UnsupportedKey(keyword)
        if not value_matches(value, answer[keyword], keyword=keyword):
            return False
    return True


def unsupported(where: str, keyword: str) -> str:
    return f"{where} does not support matching on {keyword}; remove it from the source's query."
