"""QIDO-RS (PS3.18 10.6): search for studies, series and instances the caller may see, answered in DICOM JSON.

Matching is `images.query` (shared with C-FIND) over the scoped selectors; the required return attributes come from
the index, attributes asked for with `includefield` from the stored DICOM JSON of the instance (of the first
instance for studies and series). Every request costs a fixed number of queries, whatever the number of results.

Nothing matching is 200 with an empty array rather than 204 (PS3.18 allows both; OHIF and dicomweb-client read
both, and a JSON body is easier on every client). Each answered search writes one audit event.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, time

from django.db.models import F, OuterRef, QuerySet, Subquery
from pydicom.datadict import tag_for_keyword
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from subscribers import audit
from subscribers.access import NotVisible
from subscribers.drf import IsMember

from .. import query, selectors
from ..models import Instance
from .responses import RENDERERS, dataset, element, studies_url

STUDY, SERIES, INSTANCE = "study", "series", "instance"

# An absent limit means "all results" (PS3.18 8.3.4.4), up to these maxima; beyond them the answer is cut and says so
# in a Warning header. An instance search reaches further so that a thin-slice CT series comes back in one answer.
MAX_RESULTS = {STUDY: 1000, SERIES: 1000, INSTANCE: 5000}
# PS3.18 8.3.4.4 and 8.4.3: the warning of an answer cut at the server's maximum.
TOO_MANY_WARNING = (
    '299 medarchive "The number of results exceeded the maximum supported by the server. Additional results can be requested."'
)

SPECIFIC_CHARACTER_SET = 0x00080005
RETRIEVE_URL = 0x00081190
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
# The answer is JSON, so every text in it is Unicode whatever the character set of the stored objects was.
UNICODE = "ISO_IR 192"


# --- DICOM JSON values of the index's columns ---------------------------------------------------------------------


def _da(value: date | None) -> str | None:
    return f"{value.year:04d}{value.month:02d}{value.day:02d}" if value else None


def _tm(value: time | None) -> str | None:
    if value is None:
        return None
    text = f"{value.hour:02d}{value.minute:02d}{value.second:02d}"
    return f"{text}.{value.microsecond:06d}" if value.microsecond else text


def _pn(text: str) -> dict | None:
    """A person name as kept in the index ("Alphabetic=Ideographic=Phonetic") as its PS3.18 F.2.2 object."""
    groups = dict(zip(("Alphabetic", "Ideographic", "Phonetic"), (text or "").split("="), strict=False))
    return {group: value for group, value in groups.items() if value} or None


def _multi(text: str) -> list[str]:
    return [value for value in (text or "").split("\\") if value]


@dataclass(frozen=True)
class Column:
    """An attribute answered from the index: its VR and its values from the row of its own level."""

    vr: str
    values: Callable[[object], list]


# PS3.18 Table 10.6.3-3 (study), 10.6.3-4 (series) and 10.6.3-5 (instance): the required return attributes, all of them
# kept in the index. Retrieve URL (0008,1190) is added per result for its own level.
STUDY_COLUMNS: dict[int, Column] = {
    0x00080020: Column("DA", lambda s: [_da(s.study_date)]),
    0x00080030: Column("TM", lambda s: [_tm(s.study_time)]),
    0x00080050: Column("SH", lambda s: [s.accession_number]),
    0x00080056: Column("CS", lambda s: ["ONLINE"]),
    0x00080061: Column("CS", lambda s: _multi(s.modalities_in_study)),
    0x00080090: Column("PN", lambda s: [_pn(s.referring_physician_name)]),
    0x00081030: Column("LO", lambda s: [s.study_description]),
    0x00100010: Column("PN", lambda s: [_pn(s.patient.patient_name)]),
    0x00100020: Column("LO", lambda s: [s.patient.patient_id]),
    0x00100030: Column("DA", lambda s: [_da(s.patient.patient_birth_date)]),
    0x00100040: Column("CS", lambda s: [s.patient.patient_sex]),
    STUDY_INSTANCE_UID: Column("UI", lambda s: [s.study_instance_uid]),
    0x00200010: Column("SH", lambda s: [s.study_id]),
    0x00201206: Column("IS", lambda s: [s.number_of_series]),
    0x00201208: Column("IS", lambda s: [s.number_of_instances]),
}
SERIES_COLUMNS: dict[int, Column] = {
    0x00080021: Column("DA", lambda s: [_da(s.series_date)]),
    0x00080031: Column("TM", lambda s: [_tm(s.series_time)]),
    0x00080060: Column("CS", lambda s: [s.modality]),
    0x0008103E: Column("LO", lambda s: [s.series_description]),
    SERIES_INSTANCE_UID: Column("UI", lambda s: [s.series_instance_uid]),
    0x00200011: Column("IS", lambda s: [s.series_number]),
    0x00201209: Column("IS", lambda s: [s.number_of_instances]),
}
INSTANCE_COLUMNS: dict[int, Column] = {
    0x00080016: Column("UI", lambda i: [i.sop_class_uid]),
    0x00080018: Column("UI", lambda i: [i.sop_instance_uid]),
    0x00080056: Column("CS", lambda i: ["ONLINE"]),
    0x00200013: Column("IS", lambda i: [i.instance_number]),
    0x00280008: Column("IS", lambda i: [i.number_of_frames]),
    0x00280010: Column("US", lambda i: [i.rows]),
    0x00280011: Column("US", lambda i: [i.columns]),
    0x00280100: Column("US", lambda i: [i.bits_allocated]),
}


def _tags(*keywords: str) -> frozenset[int]:
    return frozenset(tag_for_keyword(keyword) for keyword in keywords)


# What `includefield=all` adds from the stored objects at the study and series levels: the attributes of the Patient,
# General Study and Patient Study modules (PS3.3 C.7.1.1, C.7.2.1, C.7.2.2), and of the General Series and General
# Equipment modules (C.7.3.1, C.7.5.1). At the instance level `all` is every attribute of the instance.
STUDY_LEVEL_TAGS = _tags(
    "PatientName", "PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence", "PatientBirthDate", "PatientBirthTime",
    "PatientSex", "OtherPatientIDsSequence", "OtherPatientNames", "EthnicGroup", "PatientComments", "PatientSpeciesDescription",
    "PatientBreedDescription", "ResponsiblePerson", "PatientIdentityRemoved", "DeidentificationMethod",
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "ReferringPhysicianIdentificationSequence",
    "ConsultingPhysicianName", "StudyID", "AccessionNumber", "IssuerOfAccessionNumberSequence", "StudyDescription",
    "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy", "RequestingService", "ProcedureCodeSequence",
    "ReasonForPerformedProcedureCodeSequence", "ReferencedStudySequence", "TimezoneOffsetFromUTC",
    "AdmittingDiagnosesDescription", "PatientAge", "PatientSize", "PatientWeight", "Occupation", "AdditionalPatientHistory",
    "PregnancyStatus", "MedicalAlerts", "Allergies", "SmokingStatus", "AdmissionID",
)  # fmt: skip
SERIES_LEVEL_TAGS = _tags(
    "Modality", "SeriesInstanceUID", "SeriesNumber", "Laterality", "SeriesDate", "SeriesTime", "PerformingPhysicianName",
    "ProtocolName", "SeriesDescription", "SeriesDescriptionCodeSequence", "OperatorsName", "BodyPartExamined",
    "PatientPosition", "AnatomicalOrientationType", "PerformedProcedureStepID", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "PerformedProcedureStepDescription", "RequestAttributesSequence",
    "ReferencedPerformedProcedureStepSequence", "Manufacturer", "InstitutionName", "InstitutionAddress", "StationName",
    "InstitutionalDepartmentName", "ManufacturerModelName", "DeviceSerialNumber", "SoftwareVersions", "FrameOfReferenceUID",
)  # fmt: skip


# --- The request's parameters -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Search:
    filters: dict[str, str]
    limit: int
    limit_asked: int | None
    offset: int
    fuzzy: bool
    include_all: bool
    include: frozenset[int]


def _number(parameter: str, value: str, *, minimum: int) -> int:
    if not re.fullmatch(r"\d{1,9}", value.strip()) or int(value) < minimum:
        raise query.QueryError(parameter, f"{value!r} is not a whole number of at least {minimum}")
    return int(value)


def _include_tag(parameter: str, name: str) -> int:
    # An attribute path into a sequence ("00081250.00081150") includes the whole top-level sequence.
    name = name.strip().split(".")[0]
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        return int(name, 16)  # private and unknown tags too: the stored objects may hold them
    tag = tag_for_keyword(name)
    if tag is None:
        raise query.QueryError(parameter, f"{name!r} is not a DICOM attribute keyword or tag")
    return tag


def parse_search(params, level: str) -> Search:
    """The QIDO-RS query parameters (PS3.18 8.3.4); a malformed one is a QueryError naming it."""
    filters: dict[str, str] = {}
    controls: dict[str, str] = {}
    include: set[int] = set()
    include_all = False
    for parameter in params:
        values = params.getlist(parameter)
        name = parameter.lower()
        if name == "includefield":
            for value in values:
                for item in filter(None, (part.strip() for part in value.split(","))):
                    if item.lower() == "all":
                        include_all = True
                    else:
                        include.add(_include_tag(parameter, item))
            continue
        if len(values) > 1:
            raise query.QueryError(parameter, "is given more than once; list several values in one parameter, separated by '\\'")
        if name in query.CONTROL_PARAMETERS:
            controls[name] = values[0]
        else:
            filters[parameter] = values[0]
    fuzzy = controls.get("fuzzymatching", "false").strip().lower()
    if fuzzy not in ("true", "false"):
        raise query.QueryError("fuzzymatching", f"{controls['fuzzymatching']!r} is neither true nor false")
    limit_asked = _number("limit", controls["limit"], minimum=1) if controls.get("limit", "").strip() else None
    offset = _number("offset", controls["offset"], minimum=0) if controls.get("offset", "").strip() else 0
    maximum = MAX_RESULTS[level]
    return Search(
        filters=filters,
        limit=min(limit_asked or maximum, maximum),
        limit_asked=limit_asked,
        offset=offset,
        fuzzy=fuzzy == "true",
        include_all=include_all,
        include=frozenset(include),
    )


# --- Building results ------------------------------------------------------------------------------------------------


def _columns(columns: dict[int, Column], row) -> dict[int, dict]:
    return {tag: element(column.vr, *column.values(row)) for tag, column in columns.items()}


def _without_bulk_data(attributes: dict) -> dict:
    """Stored DICOM JSON less the elements held as bulk data: search results carry no bulk data references."""
    kept = {}
    for key, value in attributes.items():
        if "BulkDataURI" in value:
            continue
        if value.get("vr") == "SQ" and value.get("Value"):
            value = {**value, "Value": [_without_bulk_data(item) for item in value["Value"]]}
        kept[key] = value
    return kept


def _from_metadata(metadata: dict | None, tags: frozenset[int] | None) -> dict[int, dict]:
    """Attributes of a stored object (all when tags is None), keyed by tag."""
    found = {}
    for key, value in _without_bulk_data(metadata or {}).items():
        tag = int(key, 16)
        if tags is None or tag in tags:
            found[tag] = value
    return found


@dataclass
class Answer:
    """How one level answers: its rows, the columns it and its parents hold, and where their first instance is."""

    level: str
    study_in_path: bool
    series_in_path: bool

    def columns(self) -> dict[int, Column]:
        """Every attribute this level can answer from the index (its own and its parents')."""
        found = dict(STUDY_COLUMNS)
        if self.level in (SERIES, INSTANCE):
            found.update(SERIES_COLUMNS)
        if self.level == INSTANCE:
            found.update(INSTANCE_COLUMNS)
        return found

    def metadata_tags(self, search: Search) -> frozenset[int] | None:
        """Tags to take from stored objects (None: all of them); empty when the index answers everything asked."""
        if search.include_all:
            if self.level == STUDY:
                return STUDY_LEVEL_TAGS
            if self.level == SERIES:
                return STUDY_LEVEL_TAGS | SERIES_LEVEL_TAGS
            return None
        return frozenset(search.include - set(self.columns()) - {RETRIEVE_URL, SPECIFIC_CHARACTER_SET})

    def result(self, row, base_url: str, search: Search, metadata: dict | None, metadata_tags) -> dict:
        study = row if self.level == STUDY else row.study
        attributes: dict[int, dict] = {}
        if metadata_tags is None or metadata_tags:
            attributes.update(_from_metadata(metadata, metadata_tags))
        # The index's values win over the stored object's: they are what the search matched.
        attributes.update(self._index_attributes(row, study, search))
        attributes[SPECIFIC_CHARACTER_SET] = element("CS", UNICODE)
        url = f"{base_url}/{study.study_instance_uid}"
        if self.level in (SERIES, INSTANCE):
            series = row if self.level == SERIES else row.series
            url += f"/series/{series.series_instance_uid}"
        if self.level == INSTANCE:
            url += f"/instances/{row.sop_instance_uid}"
        attributes[RETRIEVE_URL] = element("UR", url)
        return dataset(attributes)

    def _index_attributes(self, row, study, search: Search) -> dict[int, dict]:
        everything = search.include_all
        wanted = search.include
        found: dict[int, dict] = {}

        def add(columns: dict[int, Column], obj, *, required: bool) -> None:
            for tag, column in columns.items():
                if required or everything or tag in wanted:
                    found[tag] = element(column.vr, *column.values(obj))

        # PS3.18 10.6.3.3: a result of a level below the study carries the study's attributes when the study is not
        # named in the path (and the series' for an instance); their UIDs always, for the client to build URLs.
        add(STUDY_COLUMNS, study, required=self.level == STUDY or not self.study_in_path)
        found[STUDY_INSTANCE_UID] = element("UI", study.study_instance_uid)
        if self.level in (SERIES, INSTANCE):
            series = row if self.level == SERIES else row.series
            add(SERIES_COLUMNS, series, required=self.level == SERIES or not self.series_in_path)
            found[SERIES_INSTANCE_UID] = element("UI", series.series_instance_uid)
        if self.level == INSTANCE:
            add(INSTANCE_COLUMNS, row, required=True)
        return found


# --- Queries -------------------------------------------------------------------------------------------------------


def _ordered(queryset: QuerySet, level: str) -> QuerySet:
    """Deterministic order on every database: newest study first, then series and instances by number."""
    prefix = "" if level == STUDY else "study__"
    order = [F(f"{prefix}study_date").desc(nulls_last=True), F("pk" if level == STUDY else "study_id").desc()]
    if level in (SERIES, INSTANCE):
        series_prefix = "" if level == SERIES else "series__"
        order += [F(f"{series_prefix}series_number").asc(nulls_last=True), F("pk" if level == SERIES else "series_id").asc()]
    if level == INSTANCE:
        order += [F("instance_number").asc(nulls_last=True), F("pk").asc()]
    return queryset.order_by(*order)


def _first_instance_metadata(principal, level: str, rows: list) -> dict[int, dict]:
    """The stored DICOM JSON of the first instance of each study or series in rows, in one query (no N+1)."""
    if not rows:
        return {}
    if level == STUDY:
        key = "study_id"
        first = Instance.objects.filter(study_id=OuterRef("pk")).order_by(
            F("series__series_number").asc(nulls_last=True), "series_id", F("instance_number").asc(nulls_last=True), "pk"
        )
        owners = selectors.studies_visible_to(principal)
    else:
        key = "series_id"
        first = Instance.objects.filter(series_id=OuterRef("pk")).order_by(F("instance_number").asc(nulls_last=True), "pk")
        owners = selectors.series_visible_to(principal)
    first_ids = owners.filter(pk__in=[row.pk for row in rows]).annotate(first=Subquery(first.values("pk")[:1])).values("first")
    instances = selectors.instances_visible_to(principal).filter(pk__in=first_ids)
    return dict(instances.values_list(key, "metadata"))


class SearchView(APIView):
    """GET a QIDO-RS resource; subclasses name the level."""

    renderer_classes = RENDERERS
    permission_classes = [IsMember]
    level: str

    def handle_exception(self, exc):
        response = super().handle_exception(exc)
        # Errors are {"error", "code"} JSON, not DICOM JSON data sets: labelled application/json whatever was asked.
        self.request.accepted_renderer, self.request.accepted_media_type = JSONRenderer(), "application/json"
        return response

    def get(self, request, study: str | None = None, series: str | None = None):
        principal = request.auth
        try:
            search = parse_search(request.query_params, self.level)
            base = self.scope(principal, study, series)
            matching = query.apply(base, self.level, search.filters, fuzzy=search.fuzzy)
        except query.QueryError as error:
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), "application/json"
            return Response({"error": str(error), "code": "invalid_query", "parameter": error.parameter}, status=400)
        answer = Answer(self.level, study_in_path=study is not None, series_in_path=series is not None)
        tags = answer.metadata_tags(search)
        needs_metadata = tags is None or bool(tags)
        # The JSON columns are read only where they are answered from (an instance's own metadata).
        deferred = {STUDY: [], SERIES: ["conditions"], INSTANCE: ["conditions", "series__conditions"]}[self.level]
        if self.level == INSTANCE and not needs_metadata:
            deferred.append("metadata")
        # One row past the page tells whether the server's maximum cut the answer.
        page = _ordered(matching, self.level).defer(*deferred)[search.offset : search.offset + search.limit + 1]
        rows = list(page)
        cut = len(rows) > search.limit
        rows = rows[: search.limit]
        metadata = self.metadata(principal, rows) if needs_metadata else {}
        base_url = studies_url(request)
        results = [answer.result(row, base_url, search, metadata.get(row.pk), tags) for row in rows]
        audit.record(
            action="dicomweb.search",
            principal=principal,
            request=request._request,
            object_type=self.level,
            object_id=series or study or "",
            query={key: ",".join(request.query_params.getlist(key)) for key in request.query_params},
            results=len(results),
        )
        response = Response(results)
        if cut and (search.limit_asked is None or search.limit_asked > search.limit):
            response["Warning"] = TOO_MANY_WARNING
        return response

    def scope(self, principal, study: str | None, series: str | None) -> QuerySet:
        raise NotImplementedError

    def metadata(self, principal, rows: list) -> dict[int, dict]:
        return _first_instance_metadata(principal, self.level, rows)


class SearchStudies(SearchView):
    level = STUDY

    def scope(self, principal, study, series):
        return selectors.studies_visible_to(principal)


class SearchSeries(SearchView):
    level = SERIES

    def scope(self, principal, study, series):
        queryset = selectors.series_visible_to(principal).select_related("study__patient")
        if study is not None:
            queryset = queryset.filter(study=selectors.get_study(principal, study))
        return queryset


class SearchInstances(SearchView):
    level = INSTANCE

    def scope(self, principal, study, series):
        queryset = selectors.instances_visible_to(principal).select_related("study__patient", "series")
        if study is not None:
            visible_study = selectors.get_study(principal, study)
            queryset = queryset.filter(study=visible_study)
            if series is not None:
                # The series in the path must be one of that study's: any other is not found, like an unseen study.
                found = selectors.series_visible_to(principal).filter(study=visible_study, series_instance_uid=series).first()
                if found is None:
                    raise NotVisible()
                queryset = queryset.filter(series=found)
        return queryset

    def metadata(self, principal, rows: list) -> dict[int, dict]:
        # Instances are their own stored objects: the metadata came with the rows.
        return {row.pk: row.metadata for row in rows}


search_studies = SearchStudies.as_view()
search_series = SearchSeries.as_view()
search_instances = SearchInstances.as_view()

__all__ = ["MAX_RESULTS", "search_instances", "search_series", "search_studies"]
