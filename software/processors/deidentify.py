"""De-identification for research and teaching: the DICOM PS3.15 Basic Application Level Confidentiality Profile
(Annex E.1), with the Retain Longitudinal Temporal Information With Full Dates Option and the Clean Descriptors Option.

The attribute actions are those of PS3.15 Table E.1-1, as published in machine-readable form by the dicom-anonymizer
package (its 2026c table); the actions are applied here, with pydicom, to every level of every sequence:

- X (remove), Z (zero length), D (dummy value), U (UID replaced, the same way for every object of one job);
- the choices X/Z, X/D, X/Z/D and Z/D take the least that keeps a conformant object: X where the attribute is Type 3
  in the image IODs the archive holds, Z otherwise; X/Z/U* sequences are kept with their UIDs replaced;
- private attributes are removed (the Retain Safe Private Option is not offered), curves and overlays too;
- Patient ID and Patient's Name become a pseudonym derived from the job and the original ID (never reversible without
  the server's secret); the same patient gets the same pseudonym within a job, a new one in another job;
- images with burned-in annotation are refused (the Clean Pixel Data Option is not offered): pixels are never changed.

The object records what was done: Patient Identity Removed YES, De-identification Method and its Code Sequence
(CID 7050), Longitudinal Temporal Information Modified, and a Contributing Equipment item (109104, "De-identifying
Equipment") naming the processing type, its version and the options.
"""

from __future__ import annotations

import copy
import hashlib
import re

from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as table
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian

from .base import ProcessingContext, Processor, ProcessorError, WorkItem
from .derived import code_item, contributing_equipment

TABLE_VERSION = "PS3.15 2026c Table E.1-1"
TEMPORAL_VRS = ("DA", "DT", "TM")

# Action per tag, from Table E.1-1 (single tags), and per masked tag (repeating groups such as 50xx and 60xx).
_GROUPS = (
    ("D", table.D_TAGS),
    ("Z", table.Z_TAGS),
    ("X", table.X_TAGS),
    ("U", table.U_TAGS),
    ("ZD", table.Z_D_TAGS),
    ("XZ", table.X_Z_TAGS),
    ("XD", table.X_D_TAGS),
    ("XZD", table.X_Z_D_TAGS),
    ("XZU", table.X_Z_U_STAR_TAGS),
)
ACTIONS: dict[int, str] = {}
MASKED: list[tuple[int, int, int, int, str]] = []
for _action, _tags in _GROUPS:
    for _tag in _tags:
        if len(_tag) == 2:
            ACTIONS[int(Tag(_tag[0], _tag[1]))] = _action
        else:
            MASKED.append((*_tag, _action))

# Attributes the Clean Descriptors Option cleans (C) rather than removes: free-text descriptions and comments.
CLEAN_DESCRIPTORS = {
    tag_for_keyword(keyword)
    for keyword in (
        "AcquisitionComments",
        "AcquisitionDeviceProcessingDescription",
        "AcquisitionProtocolDescription",
        "AdditionalPatientHistory",
        "AdmittingDiagnosesDescription",
        "CommentsOnThePerformedProcedureStep",
        "ContrastBolusAgent",
        "DerivationDescription",
        "DischargeDiagnosisDescription",
        "FrameComments",
        "IdentifyingComments",
        "ImageComments",
        "ImagingServiceRequestComments",
        "InterpretationText",
        "LabelText",
        "PatientComments",
        "PerformedProcedureStepDescription",
        "ProtocolName",
        "ReasonForStudy",
        "ReasonForTheRequestedProcedure",
        "RequestedContrastAgent",
        "RequestedProcedureComments",
        "RequestedProcedureDescription",
        "ScheduledProcedureStepDescription",
        "SeriesDescription",
        "StructureSetDescription",
        "StudyComments",
        "StudyDescription",
        "VisitComments",
    )
}
PATIENT_NAME = tag_for_keyword("PatientName")
PATIENT_ID = tag_for_keyword("PatientID")
# Dates in the usual spellings, and runs of digits long enough to be an identifier or a telephone number.
_DATE_OR_NUMBER = re.compile(r"\b(\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}|\d{6,})\b")


def _action_for(tag: int) -> str | None:
    action = ACTIONS.get(tag)
    if action is not None:
        return action
    group, element = tag >> 16, tag & 0xFFFF
    for g, e, gmask, emask, masked_action in MASKED:
        if group & gmask == g & gmask and element & emask == e & emask:
            return masked_action
    return None


def _dummy(vr: str):
    """D: a non-zero-length value of the VR that carries no information."""
    if vr in ("DA",):
        return "19000101"
    if vr == "TM":
        return "000000"
    if vr == "DT":
        return "19000101000000"
    if vr in ("AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"):
        return "ANONYMIZED"
    if vr == "UR":
        return "http://anonymized.invalid"
    if vr == "AS":
        return "000Y"
    if vr in ("DS", "IS"):
        return "0"
    if vr in ("FD", "FL", "SS", "US", "SL", "UL", "SV", "UV"):
        return 0
    if vr in ("OB", "OW", "UN", "OD", "OF", "OL", "OV"):
        return b"\x00\x00"
    return None


class BasicProfileDeidentification(Processor):
    id = "deidentify"
    name = "De-identification (PS3.15 Basic Profile)"
    version = "1.0"
    description = (
        "A copy of each image with the identifying attributes of PS3.15 Table E.1-1 removed or replaced and its UIDs replaced "
        "consistently within the job, put in your institution's research collection under new patients and studies. "
        "Options: retain dates, clean descriptors. Pixels are unchanged; images with burned-in annotation are refused."
    )
    scope = "instances"
    research_products = True
    parameters_schema = {
        "type": "object",
        "properties": {
            "retain_dates": {
                "type": "boolean",
                "default": False,
                "title": "Retain dates",
                "description": "Retain Longitudinal Temporal Information With Full Dates Option: dates and times are kept.",
            },
            "clean_descriptors": {
                "type": "boolean",
                "default": False,
                "title": "Clean descriptors",
                "description": "Clean Descriptors Option: descriptions and comments are kept with names, IDs and dates taken out.",
            },
        },
        "additionalProperties": False,
    }

    def check(self, item: WorkItem) -> None:
        for ds in item.sources:
            if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
                raise ProcessorError(
                    f"{ds.SOPInstanceUID} has burned-in annotation (Burned In Annotation YES); its pixels would identify the "
                    "patient, and cleaning pixel data is not offered."
                )

    def process(self, item: WorkItem, parameters: dict, context: ProcessingContext) -> list[Dataset]:
        return [self.deidentify(source, parameters, context) for source in item.sources]

    def deidentify(self, source: Dataset, parameters: dict, context: ProcessingContext) -> Dataset:
        retain_dates = bool(parameters.get("retain_dates"))
        clean = bool(parameters.get("clean_descriptors"))
        ds = copy.deepcopy(source)
        # The pixel data stays as encoded: the product keeps the source's transfer syntax, nothing else of its file meta.
        syntax = getattr(getattr(source, "file_meta", None), "TransferSyntaxUID", None) or ExplicitVRLittleEndian
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = syntax
        ds.remove_private_tags()
        identifying = _identifying_texts(source)
        pseudonym = self.pseudonym(source, context)
        self._apply(ds, context=context, retain_dates=retain_dates, clean=clean, identifying=identifying)
        ds.PatientID = pseudonym
        ds.PatientName = f"RESEARCH^{pseudonym}"
        ds.PatientIdentityRemoved = "YES"
        methods = [f"{TABLE_VERSION} Basic Profile"]
        method_codes = [code_item(codes.DCM.BasicApplicationConfidentialityProfile)]
        if retain_dates:
            methods.append("Retain Longitudinal Full Dates")
            method_codes.append(code_item(codes.DCM.RetainLongitudinalTemporalInformationFullDatesOption))
        if clean:
            methods.append("Clean Descriptors")
            method_codes.append(code_item(codes.DCM.CleanDescriptorsOption))
        methods.append(f"medarchive {self.id} {self.version}")
        ds.DeidentificationMethod = methods
        ds.DeidentificationMethodCodeSequence = Sequence(method_codes)
        ds.LongitudinalTemporalInformationModified = "UNMODIFIED" if retain_dates else "REMOVED"
        ds.ContributingEquipmentSequence = Sequence(
            [*ds.get("ContributingEquipmentSequence", []), contributing_equipment(context, codes.DCM.DeIdentifyingEquipment)]
        )
        return ds

    @staticmethod
    def pseudonym(source: Dataset, context: ProcessingContext) -> str:
        original = f"{source.get('PatientID', '')}^{source.get('IssuerOfPatientID', '')}"
        return "R" + hashlib.sha256(context.uid("patient", original).encode()).hexdigest()[:15].upper()

    def _apply(self, ds: Dataset, *, context, retain_dates: bool, clean: bool, identifying: list[str]) -> None:
        for tag in list(ds.keys()):
            element = ds[tag]
            tag = int(tag)
            if tag >> 16 in (0x0000, 0x0002):
                continue
            action = _action_for(tag)
            vr = element.VR
            if action is not None and retain_dates and vr in TEMPORAL_VRS and tag != tag_for_keyword("PatientBirthDate"):
                action = None  # the option keeps dates and times (not the birth date: that identifies the patient)
            if action is not None and clean and tag in CLEAN_DESCRIPTORS:
                cleaned = _clean(element.value, identifying)
                if cleaned:
                    element.value = cleaned
                else:
                    del ds[tag]
                continue
            if action in ("X", "XZ", "XD", "XZD"):
                del ds[tag]
                continue
            if action == "U":
                element.value = self._uids(element.value, context)
                continue
            if action == "Z" or (action == "ZD" and tag != PATIENT_ID):
                element.value = Sequence() if vr == "SQ" else None
                continue
            if action == "D" or (action == "ZD" and tag == PATIENT_ID):
                if vr == "SQ":
                    pass  # its items are cleaned below, attribute by attribute
                elif vr == "UI":
                    element.value = self._uids(element.value, context)
                else:
                    element.value = _dummy(vr)
            if vr == "SQ" and element.value is not None:
                for child in element.value:
                    self._apply(child, context=context, retain_dates=retain_dates, clean=clean, identifying=identifying)

    @staticmethod
    def _uids(value, context: ProcessingContext):
        if value is None or value == "":
            return value
        if isinstance(value, MultiValue | list | tuple):
            return [context.uid("deid", str(v)) for v in value]
        return context.uid("deid", str(value))


def _identifying_texts(ds: Dataset) -> list[str]:
    """Names and identifiers of the patient, the physicians and the site, to take out of descriptions."""
    texts = []
    for keyword in ("PatientName", "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "PhysiciansOfRecord"):
        value = ds.get(keyword)
        if value is None:
            continue
        for name in value if isinstance(value, MultiValue | list) else [value]:
            texts.extend(part for part in re.split(r"[\^=\s,]+", str(name)) if len(part) >= 2)
    for keyword in ("PatientID", "AccessionNumber", "OtherPatientIDs", "InstitutionName", "StationName", "StudyID", "IssuerOfPatientID"):
        value = ds.get(keyword)
        if value:
            texts.extend(str(v) for v in (value if isinstance(value, MultiValue | list) else [value]) if len(str(v)) >= 2)
    return sorted(set(texts), key=len, reverse=True)


def _clean(value, identifying: list[str]):
    """C: the description without names, identifiers, dates and long numbers; None when nothing is left."""
    if value is None:
        return None
    if isinstance(value, MultiValue | list):
        values = [_clean(v, identifying) for v in value]
        values = [v for v in values if v]
        return values or None
    text = str(value)
    for word in identifying:
        text = re.sub(re.escape(word), "", text, flags=re.IGNORECASE)
    text = _DATE_OR_NUMBER.sub("", text)
    text = re.sub(r"\s{2,}", " ", text).strip(" -_,;:/^")
    return text or None
