"""Tiles of a sheet on the server: identifiers resolved to instances, images rendered after the VOI, annotations."""

from __future__ import annotations

import numpy as np

from images import conditions as imaging_conditions
from images import rendering
from images.models import Instance
from images.templatetags.dicom import readable_person_name

from . import sheet
from .sheet import Tile

# Shown elsewhere on the tile (institution, ruler) or not imaging conditions of the acquisition.
EQUIPMENT = {"Manufacturer", "ManufacturerModelName", "StationName", "InstitutionName", "PixelSpacing"}

# A sheet has little room: the unit says what most values are; a short word names the others.
SHORT_LABELS = {
    "KVP": "",
    "XRayTubeCurrent": "",
    "ExposureTime": "",
    "Exposure": "",
    "ConvolutionKernel": "kernel",
    "SliceThickness": "slice",
    "SpacingBetweenSlices": "spacing",
    "MagneticFieldStrength": "",
    "RepetitionTime": "TR",
    "EchoTime": "TE",
    "InversionTime": "TI",
    "FlipAngle": "flip",
    "SequenceName": "seq",
    "ScanningSequence": "",
    "BodyPartExamined": "",
    "Radiopharmaceutical": "",
    "RadionuclideTotalDose": "dose",
    "RadionuclideHalfLife": "half-life",
    "RadiopharmaceuticalStartTime": "injected",
    "Units": "",
    "TransducerData": "transducer",
    "TransducerFrequency": "",
    "ExposureIndex": "EI",
    "ViewPosition": "view",
    "DistanceSourceToDetector": "SID",
}


def window_of(fmt: dict) -> rendering.Window | None:
    """The format's window, or None for each image's own VOI."""
    if fmt.get("window_center") is None or fmt.get("window_width") is None:
        return None
    return rendering.Window(float(fmt["window_center"]), float(fmt["window_width"]))


def _values(instance: Instance, tag: str) -> list:
    element = (instance.metadata or {}).get(tag) or {}
    return element.get("Value") or []


def _letter(vector) -> str:
    """PS3.3 C.7.6.1.1.1: the patient direction a vector points to, its strongest axes first (e.g. 'L', 'LA')."""
    letters = []
    for axis in np.argsort(-np.abs(vector)):
        if abs(vector[axis]) < 0.3:
            break
        # Patient coordinates point to the left, posterior and head (PS3.3 C.7.6.2.1.1).
        letters.append("LPH"[axis] if vector[axis] > 0 else "RAF"[axis])
    return "".join(letters[:2])


def orientation_markers(instance: Instance) -> dict:
    """Letters for the image's left, right, top and bottom edges, from Image Orientation (Patient) or Patient Orientation."""
    cosines = _values(instance, "00200037")
    if len(cosines) == 6:
        row, column = np.array(cosines[:3], dtype=float), np.array(cosines[3:], dtype=float)
        return {"right": _letter(row), "left": _letter(-row), "bottom": _letter(column), "top": _letter(-column)}
    patient = _values(instance, "00200020")
    if len(patient) == 2:
        flip = str.maketrans("LRAPHF", "RLPAFH")
        return {"right": patient[0], "left": patient[0].translate(flip), "bottom": patient[1], "top": patient[1].translate(flip)}
    return {}


def _date(value) -> str:
    return value.isoformat() if value else ""


def annotations(instance: Instance, frame: int) -> dict:
    """What a tile shows besides its pixels (plain JSON, so the device side gets the same)."""
    series, study = instance.series, instance.study
    patient = study.patient
    spacing = _values(instance, "00280030") or _values(instance, "00181164")
    field_width = None
    if len(spacing) == 2 and instance.columns:
        # PS3.3 10.7.1.3: the second value is the spacing of adjacent columns. The image's width in the patient holds
        # at any resolution it is rendered or printed at.
        field_width = float(spacing[1]) * instance.columns
    return {
        "sop_instance_uid": instance.sop_instance_uid,
        "frame": frame,
        "number_of_frames": instance.number_of_frames,
        "patient_name": readable_person_name(patient.patient_name),
        "patient_id": patient.patient_id,
        "birth_date": _date(patient.patient_birth_date),
        "study_date": _date(study.study_date),
        "study_description": study.study_description,
        "institution": series.acquiring_institution_name or instance.institution.name,
        "series_number": series.series_number,
        "series_description": series.series_description,
        "instance_number": instance.instance_number,
        "modality": series.modality,
        "markers": orientation_markers(instance),
        "field_width_mm": field_width,
        "conditions": [
            {"label": SHORT_LABELS.get(row["keyword"], row["label"]), "display": row["display"]}
            for row in imaging_conditions.describe(series.conditions, series.modality)
            if row["keyword"] not in EQUIPMENT
        ],
    }


def render_tile(instance: Instance, frame: int, fmt: dict) -> Tile:
    """The frame after the VOI (the format's window or the image's own), at its own resolution, with its annotations."""
    image = rendering.render_image(instance, frame, window=window_of(fmt))
    return Tile(image=image, annotations=annotations(instance, frame))


def print_png(instance: Instance, frame: int, fmt: dict) -> bytes:
    """The frame as a sheet of fmt places it, for the print agent: after the VOI, resampled to the printer's resolution
    for the layout's tile size, lossless PNG. The agent puts these bytes into the PDF as they are."""
    image = rendering.render_image(instance, frame, window=window_of(fmt))
    return sheet.png(sheet.print_size(image, fmt))
