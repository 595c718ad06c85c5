"""The Query/Retrieve SCP's C-FIND (PS3.4 C.4.1): Patient Root and Study Root, every level, over what the caller may see.

The identifier's keys with a value become `images.query` parameters (the matching QIDO-RS uses); each match is
answered with every key asked for, valued from the index. Reading the identifier, the refusals and the audit record
are shared with C-MOVE and C-GET (retrieve.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, time

from django.db import DatabaseError, close_old_connections
from django.db.models import Count, Sum
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from subscribers import audit
from subscribers.access import Principal
from subscribers.models import AuditEvent, Role

from .. import query, selectors
from ..errors import NotAuthorized
from ..models import Patient, Study
from .association import AssociationState, state_of
from .storage import failure

logger = logging.getLogger("images.dimse")

PENDING = 0xFF00
CANCEL = 0xFE00
# PS3.4 C.4.1.1.4 (C-FIND), C.4.2.1.5 (C-MOVE), C.4.3.1.4 (C-GET). A700 is C-FIND's "out of resources"; the retrieves
# say A701 when they cannot count the matches.
OUT_OF_RESOURCES = 0xA700
UNABLE_TO_COUNT = 0xA701
IDENTIFIER_DOES_NOT_MATCH = 0xA900  # the identifier does not fit the information model: level, required key
UNABLE_TO_PROCESS = 0xC000  # a key's value cannot be understood, or the identifier cannot be decoded
NOT_AUTHORIZED = NotAuthorized.dicom_status  # PS3.7 Annex C, "Refused: Not Authorized": the AE lacks the role

PATIENT_ROOT, STUDY_ROOT = "patient root", "study root"
ROOTS = {
    PatientRootQueryRetrieveInformationModelFind: PATIENT_ROOT,
    PatientRootQueryRetrieveInformationModelMove: PATIENT_ROOT,
    PatientRootQueryRetrieveInformationModelGet: PATIENT_ROOT,
    StudyRootQueryRetrieveInformationModelFind: STUDY_ROOT,
    StudyRootQueryRetrieveInformationModelMove: STUDY_ROOT,
    StudyRootQueryRetrieveInformationModelGet: STUDY_ROOT,
}
LEVELS = {PATIENT_ROOT: ("PATIENT", "STUDY", "SERIES", "IMAGE"), STUDY_ROOT: ("STUDY", "SERIES", "IMAGE")}
RANK = {"PATIENT": 0, "STUDY": 1, "SERIES": 2, "IMAGE": 3}
INDEX_LEVEL = {"STUDY": "study", "SERIES": "series", "IMAGE": "instance"}  # images.query's names
UNIQUE_KEYS = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
PATIENT_KEYS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")
# Elements of the identifier that are not keys: the level, and what every response carries anyway.
NOT_KEYS = {tag_for_keyword(k) for k in ("QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle")}
# Responses carry the index's text, which is Unicode whatever the stored objects' character sets were.
UNICODE = "ISO_IR 192"
PAGE = 500  # rows read from the database at a time


class Refusal(Exception):
    """A request answered with one failure status, its Error Comment and Offending Element (PS3.7 Annex C)."""

    def __init__(self, status: int, comment: str, *, keyword: str = ""):
        super().__init__(comment)
        self.status = status
        self.comment = comment
        self.keyword = keyword

    def response(self) -> Dataset:
        status = failure(self.status, self.comment)
        tag = tag_for_keyword(self.keyword) if self.keyword else None
        if tag is not None:
            status.OffendingElement = [tag]
        return status


# --- The identifier ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    tag: int
    keyword: str
    vr: str


@dataclass
class Identifier:
    """A C-FIND, C-MOVE or C-GET identifier: its model, level, the keys asked for and the values given to them."""

    root: str
    level: str  # "PATIENT", "STUDY", "SERIES" or "IMAGE"
    keys: list[Key] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)  # keyword -> value, for keys given a value


def read_identifier(event) -> Identifier:
    """The request's identifier; a Refusal when it cannot be decoded or names no level of its model."""
    root = ROOTS[event.context.abstract_syntax]
    try:
        # pydicom decodes elements lazily: iterating is where a malformed identifier fails.
        elements = [(element.tag, element.keyword, element.VR, element.value) for element in event.identifier]
    except Exception as error:
        raise Refusal(UNABLE_TO_PROCESS, f"The identifier cannot be decoded: {error}") from None
    found = {tag: value for tag, _, _, value in elements}
    level = _text(found.get(tag_for_keyword("QueryRetrieveLevel"))).upper()
    if not level:
        raise Refusal(IDENTIFIER_DOES_NOT_MATCH, "QueryRetrieveLevel is required.", keyword="QueryRetrieveLevel")
    if level not in LEVELS[root]:
        raise Refusal(
            IDENTIFIER_DOES_NOT_MATCH,
            f"QueryRetrieveLevel {level[:16]!r} is not a level of {root}.",
            keyword="QueryRetrieveLevel",
        )
    identifier = Identifier(root=root, level=level)
    for tag, keyword, vr, value in elements:
        if tag in NOT_KEYS or tag.group in (0x0000, 0x0002):
            continue
        identifier.keys.append(Key(int(tag), keyword, vr))
        text = "" if vr == "SQ" else _text(value)
        if keyword and text:
            identifier.values[keyword] = text
    return identifier


def _text(value) -> str:
    """A key's value as images.query takes it: text, with multiple values separated by backslashes."""
    if value is None or isinstance(value, bytes | bytearray):
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()


# --- The attributes a response is valued with ---------------------------------------------------------------------


def _da(value: date | None) -> str:
    return value.strftime("%Y%m%d") if value else ""


def _tm(value: time | None) -> str:
    if value is None:
        return ""
    return value.strftime("%H%M%S.%f") if value.microsecond else value.strftime("%H%M%S")


def _multi(text: str) -> list[str]:
    return [value for value in (text or "").split("\\") if value]


# keyword -> (the level whose row holds it, its value from that row). Patient counts exist at the PATIENT level only.
ATTRIBUTES: dict[str, tuple[str, Callable]] = {
    "PatientName": ("PATIENT", lambda p: p.patient_name),
    "PatientID": ("PATIENT", lambda p: p.patient_id),
    "IssuerOfPatientID": ("PATIENT", lambda p: p.issuer_of_patient_id),
    "PatientBirthDate": ("PATIENT", lambda p: _da(p.patient_birth_date)),
    "PatientSex": ("PATIENT", lambda p: p.patient_sex),
    "NumberOfPatientRelatedStudies": ("PATIENT", lambda p: getattr(p, "related_studies", None)),
    "NumberOfPatientRelatedSeries": ("PATIENT", lambda p: getattr(p, "related_series", None)),
    "NumberOfPatientRelatedInstances": ("PATIENT", lambda p: getattr(p, "related_instances", None)),
    "StudyInstanceUID": ("STUDY", lambda s: s.study_instance_uid),
    "StudyDate": ("STUDY", lambda s: _da(s.study_date)),
    "StudyTime": ("STUDY", lambda s: _tm(s.study_time)),
    "AccessionNumber": ("STUDY", lambda s: s.accession_number),
    "StudyID": ("STUDY", lambda s: s.study_id),
    "StudyDescription": ("STUDY", lambda s: s.study_description),
    "ReferringPhysicianName": ("STUDY", lambda s: s.referring_physician_name),
    "ModalitiesInStudy": ("STUDY", lambda s: _multi(s.modalities_in_study)),
    "NumberOfStudyRelatedSeries": ("STUDY", lambda s: s.number_of_series),
    "NumberOfStudyRelatedInstances": ("STUDY", lambda s: s.number_of_instances),
    "SeriesInstanceUID": ("SERIES", lambda s: s.series_instance_uid),
    "Modality": ("SERIES", lambda s: s.modality),
    "SeriesNumber": ("SERIES", lambda s: s.series_number),
    "SeriesDescription": ("SERIES", lambda s: s.series_description),
    "BodyPartExamined": ("SERIES", lambda s: s.body_part_examined),
    "SeriesDate": ("SERIES", lambda s: _da(s.series_date)),
    "SeriesTime": ("SERIES", lambda s: _tm(s.series_time)),
    "InstitutionName": ("SERIES", lambda s: s.acquiring_institution_name),
    "Manufacturer": ("SERIES", lambda s: s.manufacturer),
    "ManufacturerModelName": ("SERIES", lambda s: s.manufacturer_model_name),
    "StationName": ("SERIES", lambda s: s.station_name),
    "NumberOfSeriesRelatedInstances": ("SERIES", lambda s: s.number_of_instances),
    "SOPClassUID": ("IMAGE", lambda i: i.sop_class_uid),
    "SOPInstanceUID": ("IMAGE", lambda i: i.sop_instance_uid),
    "InstanceNumber": ("IMAGE", lambda i: i.instance_number),
    "Rows": ("IMAGE", lambda i: i.rows),
    "Columns": ("IMAGE", lambda i: i.columns),
    "NumberOfFrames": ("IMAGE", lambda i: i.number_of_frames),
    "BitsAllocated": ("IMAGE", lambda i: i.bits_allocated),
    "PhotometricInterpretation": ("IMAGE", lambda i: i.photometric_interpretation),
}


def _rows_by_level(level: str, row) -> dict[str, object]:
    """The row of each level a result at `level` belongs to, from the row itself (select_related, no queries)."""
    if level == "PATIENT":
        return {"PATIENT": row}
    if level == "STUDY":
        return {"PATIENT": row.patient, "STUDY": row}
    if level == "SERIES":
        return {"PATIENT": row.study.patient, "STUDY": row.study, "SERIES": row}
    return {"PATIENT": row.study.patient, "STUDY": row.study, "SERIES": row.series, "IMAGE": row}


def matchable(level: str) -> frozenset[str]:
    """Keys images.query matches at this level; PATIENT matches the patient's own attributes."""
    if level == "PATIENT":
        return frozenset(PATIENT_KEYS)
    return frozenset(query.fields_for(INDEX_LEVEL[level]))


def unique_keys(identifier: Identifier) -> list[str]:
    """The unique keys of the query level and the levels above it in its model (PS3.4 C.4.1.2.1)."""
    return [UNIQUE_KEYS[level] for level in LEVELS[identifier.root] if RANK[level] <= RANK[identifier.level]]


def _vr(tag: int, asked: str) -> str:
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return asked
    if " or " in vr:  # e.g. "US or SS": the identifier's own VR says which
        choices = vr.split(" or ")
        return asked if asked in choices else choices[0]
    return vr


def _response(identifier: Identifier, row, *, retrieve_ae_title: str, keys: list[Key]) -> Dataset:
    """One pending response: every key asked for, valued when the index (or, for an image, its stored object) has it.

    Keys the archive does not keep are returned empty, as PS3.4 C.2.2.1.3 asks of keys an SCP does not support; keys
    of levels below the query level likewise.
    """
    rows = _rows_by_level(identifier.level, row)
    response = Dataset()
    response.SpecificCharacterSet = UNICODE
    response.QueryRetrieveLevel = identifier.level
    response.RetrieveAETitle = retrieve_ae_title
    for key in keys:
        owner_level, value_of = ATTRIBUTES.get(key.keyword, (None, None))
        if key.keyword == "InstanceAvailability":
            response.add_new(key.tag, "CS", "ONLINE")
        elif owner_level in rows:
            response.add_new(key.tag, _vr(key.tag, key.vr), value_of(rows[owner_level]))
        elif identifier.level == "IMAGE" and (stored := _stored_element(row, key.tag)) is not None:
            response.add(stored)
        elif key.vr == "SQ":
            response.add_new(key.tag, "SQ", Sequence())
        else:
            response.add_new(key.tag, key.vr, None)
    return response


def _stored_element(instance, tag: int):
    """An attribute of the stored instance from its DICOM JSON (never bulk data); None when it has none."""
    value = (instance.metadata or {}).get(f"{tag:08X}")
    if not value or "BulkDataURI" in value:
        return None
    try:
        return Dataset.from_json({f"{tag:08X}": value})[tag]
    except Exception:  # an attribute pydicom cannot rebuild is answered empty, like one the archive does not keep
        return None


# --- Matching -------------------------------------------------------------------------------------------------


def _pages(queryset) -> Iterator[list]:
    """The rows of queryset, PAGE at a time in primary key order, each page a query of its own: no cursor stays open
    while responses go out, and rows arriving meanwhile are neither skipped nor repeated."""
    last = 0
    while page := list(queryset.filter(pk__gt=last).order_by("pk")[:PAGE]):
        yield page
        if len(page) < PAGE:
            return
        last = page[-1].pk


def _patients(principal: Principal, params: dict[str, str]) -> Iterator[Patient]:
    """Patients with a visible study matching params, counted over their visible studies only (two queries a page)."""
    visible = selectors.studies_visible_to(principal)
    matching = query.apply(visible, "study", params)
    for page in _pages(Patient.objects.filter(pk__in=matching.values("patient_id"))):
        counts = {
            row["patient_id"]: row
            for row in Study.objects.filter(pk__in=visible.values("pk"), patient_id__in=[p.pk for p in page])
            .values("patient_id")
            .annotate(studies=Count("pk"), series=Sum("number_of_series"), instances=Sum("number_of_instances"))
            .order_by()
        }
        for patient in page:
            row = counts.get(patient.pk, {})
            patient.related_studies = row.get("studies", 0)
            patient.related_series = row.get("series") or 0
            patient.related_instances = row.get("instances") or 0
            yield patient


def matches(principal: Principal, identifier: Identifier, *, with_metadata: bool) -> Iterator:
    """The rows of the query level that match the identifier and the caller may see; QueryError for a bad value."""
    level = identifier.level
    keys = matchable(level)
    params = {keyword: value for keyword, value in identifier.values.items() if keyword in keys}
    if level == "PATIENT":
        yield from _patients(principal, params)
        return
    if level == "STUDY":
        rows = selectors.studies_visible_to(principal)
    elif level == "SERIES":
        rows = selectors.series_visible_to(principal).select_related("study__patient").defer("conditions")
    else:
        deferred = ["conditions", "series__conditions"] + ([] if with_metadata else ["metadata"])
        rows = selectors.instances_visible_to(principal).select_related("series", "study__patient").defer(*deferred)
    for page in _pages(query.apply(rows, INDEX_LEVEL[level], params)):
        yield from page


# --- Who may ask, and what is recorded --------------------------------------------------------------------------


def require_role(principal: Principal, *roles: str) -> None:
    """The AE must hold one of roles (can_send: register, can_receive: receive) for its institution."""
    if not any(principal.has_role(role) for role in roles):
        labels = " or ".join(f"'{Role(role).label}'" for role in roles)
        raise Refusal(NOT_AUTHORIZED, f"This AE title needs the {labels} role.")


def keep_alive(assoc) -> None:
    """Count the association as active while we answer: pynetdicom (3.0.4) times it out from the last PDU *received*,
    and a caller waiting for a long C-FIND or C-MOVE sends none, so the association would be aborted right after
    its final response."""
    timer = getattr(getattr(assoc, "dul", None), "_idle_timer", None)
    if timer is not None:
        timer.restart()


@dataclass
class Report:
    """One audit event and one log line per C-FIND, C-MOVE or C-GET, however it ends."""

    action: str  # "dicom.find", "dicom.move", "dicom.get"
    state: AssociationState
    outcome: str = AuditEvent.Outcome.SUCCESS
    detail: dict = field(default_factory=dict)
    object_type: str = ""
    object_id: str = ""
    recorded: bool = False

    def describe(self, identifier: Identifier) -> None:
        self.object_type = identifier.level.lower()
        self.detail.update(model=identifier.root, level=identifier.level, query=dict(identifier.values))

    def refused(self, refusal: Refusal) -> None:
        self.outcome = AuditEvent.Outcome.DENIED if refusal.status == NOT_AUTHORIZED else AuditEvent.Outcome.FAILURE
        self.detail.update(status=f"0x{refusal.status:04X}", reason=refusal.comment)

    def record(self, summary: str) -> None:
        if self.recorded:
            return
        self.recorded = True
        operation = self.action.removeprefix("dicom.").upper()
        logger.info("C-%s from %s: %s", operation, self.state.label(), summary)
        try:
            audit.record(
                action=self.action,
                principal=self.state.principal,
                outcome=self.outcome,
                address=self.state.peer,
                object_type=self.object_type,
                object_id=self.object_id,
                calling_ae_title=self.state.calling_ae_title,
                **self.detail,
            )
        except Exception:
            logger.exception("could not audit the C-%s from %s", operation, self.state.label())


# --- The handler --------------------------------------------------------------------------------------------------


def handle_find(event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """EVT_C_FIND: a pending response per visible match, then success (sent by pynetdicom); C-CANCEL stops it."""
    state = state_of(event.assoc)
    if state is None:  # the gate did not let this association in
        yield Refusal(NOT_AUTHORIZED, "This association was not accepted by the archive.").response(), None
        return
    report = Report(action="dicom.find", state=state)
    results = 0
    try:
        identifier = read_identifier(event)
        report.describe(identifier)
        # An AE may query what its institution may see if it may send or receive; shares need receive (selectors).
        require_role(state.principal, Role.REGISTER, Role.RECEIVE)
        keys = _answered_keys(identifier)
        with_metadata = identifier.level == "IMAGE" and any(key.keyword not in ATTRIBUTES for key in keys)
        title = event.assoc.acceptor.ae_title.strip()
        for row in matches(state.principal, identifier, with_metadata=with_metadata):
            if event.is_cancelled:
                report.detail["cancelled"] = True
                yield CANCEL, None
                return
            results += 1
            if results % PAGE == 0:
                keep_alive(event.assoc)
            yield PENDING, _response(identifier, row, retrieve_ae_title=title, keys=keys)
    except query.QueryError as error:
        refusal = Refusal(UNABLE_TO_PROCESS, str(error), keyword=error.parameter)
        report.refused(refusal)
        yield refusal.response(), None
    except Refusal as refusal:
        report.refused(refusal)
        yield refusal.response(), None
    except DatabaseError:
        logger.exception("C-FIND from %s: database error", state.label())
        close_old_connections()
        refusal = Refusal(OUT_OF_RESOURCES, "The archive's database is unavailable. Try again later.")
        report.refused(refusal)
        yield refusal.response(), None
    finally:
        report.detail["results"] = results
        cancelled = " (cancelled)" if report.detail.get("cancelled") else ""
        report.record(f"{report.detail.get('level', '?')} level, {results} match(es){cancelled}")


def _answered_keys(identifier: Identifier) -> list[Key]:
    """The keys asked for, plus the unique keys of the query level and above, which a response always carries."""
    keys = list(identifier.keys)
    asked = {key.tag for key in keys}
    for keyword in unique_keys(identifier):
        tag = tag_for_keyword(keyword)
        if tag not in asked:
            keys.append(Key(tag, keyword, dictionary_VR(tag)))
    return keys
