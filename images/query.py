"""DICOM attribute matching (PS3.4 C.2.2.2) on the index, shared by QIDO-RS and C-FIND.

Keys are DICOM keywords or hex tags ("PatientID" or "00100020"). Values follow the standard:
single value, wildcard (`*`, `?`) on text, ranges on dates and times (`20260101-20260131`,
`-20260131`, `20260101-`), lists of UIDs separated by backslashes, and empty for universal
matching. An unknown key or a malformed value is a QueryError naming the parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time

from django.db.models import Q, QuerySet
from pydicom.datadict import keyword_for_tag, tag_for_keyword

from .ingest.validation import UID_RE, parse_da, parse_tm


class QueryError(ValueError):
    """A query parameter cannot be understood; `parameter` names it."""

    def __init__(self, parameter: str, message: str):
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


@dataclass(frozen=True)
class Field:
    path: str  # ORM path relative to the queried model's level
    kind: str  # "text", "name", "uid", "date", "time", "int", "modalities", "code"


# Attribute -> ORM path, per level. Paths are from Study, Series or Instance respectively.
STUDY_FIELDS = {
    "PatientName": Field("patient__patient_name_search", "name"),
    "PatientID": Field("patient__patient_id", "text"),
    "IssuerOfPatientID": Field("patient__issuer_of_patient_id", "text"),
    "PatientBirthDate": Field("patient__patient_birth_date", "date"),
    "PatientSex": Field("patient__patient_sex", "code"),
    "StudyInstanceUID": Field("study_instance_uid", "uid"),
    "StudyDate": Field("study_date", "date"),
    "StudyTime": Field("study_time", "time"),
    "AccessionNumber": Field("accession_number", "text"),
    "StudyID": Field("study_id", "text"),
    "StudyDescription": Field("study_description", "text"),
    "ReferringPhysicianName": Field("referring_physician_name", "name"),
    "ModalitiesInStudy": Field("modalities_in_study", "modalities"),
}
SERIES_FIELDS = {
    "SeriesInstanceUID": Field("series_instance_uid", "uid"),
    "Modality": Field("modality", "code"),
    "SeriesNumber": Field("series_number", "int"),
    "SeriesDescription": Field("series_description", "text"),
    "BodyPartExamined": Field("body_part_examined", "code"),
    "SeriesDate": Field("series_date", "date"),
    "SeriesTime": Field("series_time", "time"),
    "InstitutionName": Field("acquiring_institution_name", "text"),
    "Manufacturer": Field("manufacturer", "text"),
    "StationName": Field("station_name", "text"),
}
INSTANCE_FIELDS = {
    "SOPClassUID": Field("sop_class_uid", "uid"),
    "SOPInstanceUID": Field("sop_instance_uid", "uid"),
    "InstanceNumber": Field("instance_number", "int"),
    "Rows": Field("rows", "int"),
    "Columns": Field("columns", "int"),
    "NumberOfFrames": Field("number_of_frames", "int"),
}


def fields_for(level: str) -> dict[str, Field]:
    """Matchable attributes at a level, with paths from that level's model (Study, Series, Instance)."""
    if level == "study":
        return STUDY_FIELDS
    prefix_study = {k: Field(f"study__{f.path}", f.kind) for k, f in STUDY_FIELDS.items()}
    if level == "series":
        return {**prefix_study, **SERIES_FIELDS}
    if level == "instance":
        series = {k: Field(f"series__{f.path}", f.kind) for k, f in SERIES_FIELDS.items()}
        return {**prefix_study, **series, **INSTANCE_FIELDS}
    raise ValueError(level)


# Parameters that are not attribute filters (PS3.18 8.3.4).
CONTROL_PARAMETERS = {"limit", "offset", "includefield", "fuzzymatching", "orderby"}


def keyword_of(key: str) -> str:
    """'00100020' or 'PatientID' -> 'PatientID'; raise QueryError for anything else."""
    if re.fullmatch(r"[0-9A-Fa-f]{8}", key):
        keyword = keyword_for_tag(int(key, 16))
        if keyword:
            return keyword
    elif tag_for_keyword(key) is not None:
        return key
    raise QueryError(key, "is not a DICOM attribute keyword or tag")


def _wildcard_q(path: str, value: str, *, case_insensitive: bool) -> Q:
    if "*" not in value and "?" not in value:
        return Q(**{f"{path}__iexact" if case_insensitive else path: value})
    stripped = value.strip("*")
    if "?" not in value and "*" not in stripped:
        lookup = "contains" if value.startswith("*") and value.endswith("*") else "startswith" if value.endswith("*") else "endswith"
        return Q(**{f"{path}__{'i' if case_insensitive else ''}{lookup}": stripped})
    regex = "^" + "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in value) + "$"
    return Q(**{f"{path}__{'i' if case_insensitive else ''}regex": regex})


def _range(parameter: str, value: str, parse, kind: str) -> tuple:
    low_text, _, high_text = value.partition("-")
    low = parse(low_text) if low_text else None
    high = parse(high_text) if high_text else None
    if (low_text and low is None) or (high_text and high is None) or (low is None and high is None):
        raise QueryError(parameter, f"{value!r} is not a {kind} or a {kind} range (e.g. 20260101-20260131)")
    return low, high


def condition(parameter: str, keyword: str, field: Field, value: str) -> Q | None:
    """The Q object for one attribute match; None for universal matching (empty value)."""
    value = value.strip()
    if value in ("", "*"):
        return None
    if field.kind == "uid":
        uids = [u.strip() for u in value.split("\\") if u.strip()]
        for uid in uids:
            if len(uid) > 64 or not UID_RE.match(uid):
                raise QueryError(parameter, f"{uid[:70]!r} is not a valid UID")
        return Q(**{f"{field.path}__in": uids}) if len(uids) > 1 else Q(**{field.path: uids[0]})
    if field.kind in ("date", "time"):
        parse = parse_da if field.kind == "date" else parse_tm
        if "-" not in value:
            single = parse(value)
            if single is None:
                raise QueryError(parameter, f"{value!r} is not a valid {field.kind}")
            return Q(**{field.path: single})
        low, high = _range(parameter, value, parse, field.kind)
        q = Q()
        if low is not None:
            q &= Q(**{f"{field.path}__gte": low})
        if high is not None:
            q &= Q(**{f"{field.path}__lte": high if not isinstance(high, time) else high.replace(microsecond=999999)})
        return q
    if field.kind == "int":
        try:
            return Q(**{field.path: int(value)})
        except ValueError:
            raise QueryError(parameter, f"{value!r} is not a number") from None
    if field.kind == "modalities":
        # ModalitiesInStudy matches when any listed modality is among the study's (PS3.4 C.6.2.1.2).
        q = Q()
        for modality in [m.strip().upper() for m in value.split("\\") if m.strip()]:
            if not re.fullmatch(r"[A-Z0-9_]{1,16}", modality):
                raise QueryError(parameter, f"{modality!r} is not a modality code")
            q |= Q(**{field.path: modality}) | Q(**{f"{field.path}__startswith": modality + "\\"})
            q |= Q(**{f"{field.path}__endswith": "\\" + modality}) | Q(**{f"{field.path}__contains": "\\" + modality + "\\"})
        return q
    if field.kind == "name":
        # Person names match case-insensitively (the index keeps an upper-cased copy of PatientName).
        return _wildcard_q(field.path, value.upper() if field.path.endswith("_search") else value, case_insensitive=True)
    if field.kind == "code":
        if "\\" in value:
            return Q(**{f"{field.path}__in": [v.strip() for v in value.split("\\")]})
        return _wildcard_q(field.path, value, case_insensitive=False)
    return _wildcard_q(field.path, value, case_insensitive=False)


def apply(queryset: QuerySet, level: str, params: dict[str, str], *, fuzzy: bool = False) -> QuerySet:
    """Filter queryset (Study, Series or Instance objects) by the attribute parameters of a query."""
    fields = fields_for(level)
    for parameter, value in params.items():
        if parameter.lower() in CONTROL_PARAMETERS:
            continue
        keyword = keyword_of(parameter)
        field = fields.get(keyword)
        if field is None:
            raise QueryError(parameter, f"{keyword} cannot be matched at the {level} level")
        if fuzzy and field.kind == "name" and value and "*" not in value and "?" not in value:
            value = f"*{value}*"  # fuzzymatching=true: a part of the name is enough
        q = condition(parameter, keyword, field, value)
        if q is not None:
            queryset = queryset.filter(q)
    return queryset


__all__ = ["QueryError", "apply", "condition", "fields_for", "keyword_of"]
