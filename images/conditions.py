"""Imaging conditions: the acquisition parameters of an image, per modality, with their units.

They are extracted at ingest into Instance.conditions / Series.conditions (JSON, queryable) and
travel with every delivery (WADO-RS metadata, the per-series summary, film annotations).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import IS, DSfloat, PersonName


@dataclass(frozen=True)
class Parameter:
    keyword: str
    label: str
    unit: str = ""
    # Where the value sits when it is not top-level: a sequence keyword whose first item holds it.
    within: str = ""


COMMON = [
    Parameter("Manufacturer", "Manufacturer"),
    Parameter("ManufacturerModelName", "Model"),
    Parameter("StationName", "Station"),
    Parameter("InstitutionName", "Acquiring institution"),
    Parameter("BodyPartExamined", "Body part"),
    Parameter("PixelSpacing", "Pixel spacing", "mm"),
]

X_RAY_TUBE = [
    Parameter("KVP", "Peak kilovoltage", "kV"),
    Parameter("XRayTubeCurrent", "Tube current", "mA"),
    Parameter("ExposureTime", "Exposure time", "ms"),
    Parameter("Exposure", "Exposure", "mAs"),
]

BY_MODALITY: dict[str, list[Parameter]] = {
    "CT": [
        *X_RAY_TUBE,
        Parameter("ConvolutionKernel", "Reconstruction kernel"),
        Parameter("SliceThickness", "Slice thickness", "mm"),
        Parameter("SpacingBetweenSlices", "Spacing between slices", "mm"),
        Parameter("CTDIvol", "CTDIvol", "mGy"),
    ],
    "MR": [
        Parameter("MagneticFieldStrength", "Field strength", "T"),
        Parameter("RepetitionTime", "Repetition time (TR)", "ms"),
        Parameter("EchoTime", "Echo time (TE)", "ms"),
        Parameter("InversionTime", "Inversion time (TI)", "ms"),
        Parameter("FlipAngle", "Flip angle", "°"),
        Parameter("SequenceName", "Sequence name"),
        Parameter("ScanningSequence", "Scanning sequence"),
        Parameter("SliceThickness", "Slice thickness", "mm"),
    ],
    "US": [
        Parameter("TransducerData", "Transducer"),
        Parameter("TransducerType", "Transducer type"),
        Parameter("TransducerFrequency", "Transducer frequency", "kHz", within="SequenceOfUltrasoundRegions"),
        Parameter("ProcessingFunction", "Processing"),
    ],
    "PT": [
        Parameter("Radiopharmaceutical", "Radiopharmaceutical", within="RadiopharmaceuticalInformationSequence"),
        Parameter("RadionuclideTotalDose", "Injected dose", "Bq", within="RadiopharmaceuticalInformationSequence"),
        Parameter("RadionuclideHalfLife", "Half-life", "s", within="RadiopharmaceuticalInformationSequence"),
        Parameter("RadiopharmaceuticalStartTime", "Injection time", within="RadiopharmaceuticalInformationSequence"),
        Parameter("Units", "Pixel units"),
        Parameter("SliceThickness", "Slice thickness", "mm"),
    ],
    "CR": [*X_RAY_TUBE, Parameter("ExposureIndex", "Exposure index"), Parameter("ViewPosition", "View position")],
    "DX": [
        *X_RAY_TUBE,
        Parameter("ExposureIndex", "Exposure index"),
        Parameter("ViewPosition", "View position"),
        Parameter("DistanceSourceToDetector", "Source-to-detector distance", "mm"),
    ],
}
BY_MODALITY["PET"] = BY_MODALITY["PT"]
BY_MODALITY["MG"] = BY_MODALITY["DX"]


def parameters_for(modality: str) -> list[Parameter]:
    return BY_MODALITY.get((modality or "").upper(), []) + COMMON


def _json_value(value):
    if value is None or value == "":
        return None
    if isinstance(value, MultiValue | list | tuple):
        items = [_json_value(v) for v in value]
        return [v for v in items if v is not None] or None
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, IS):
        return int(value)
    if isinstance(value, DSfloat | float):
        return float(value)
    if isinstance(value, int):
        return value
    if isinstance(value, bytes):
        return None
    return str(value).strip() or None


def extract(ds: Dataset) -> dict:
    """The imaging conditions present in ds, keyed by DICOM keyword (JSON-safe values)."""
    found = {}
    for parameter in parameters_for(getattr(ds, "Modality", "")):
        holder = ds
        if parameter.within:
            sequence = ds.get(parameter.within)
            if not sequence:
                continue
            holder = sequence[0]
        value = _json_value(holder.get(parameter.keyword))
        if value is not None:
            found[parameter.keyword] = value
    return found


def _for_people(value) -> str:
    # A decimal string (DS) of a whole number is read as a float: "120 kV", not "120.0 kV".
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def describe(conditions: dict, modality: str) -> list[dict]:
    """Conditions as rows for people: label, value with unit, in the modality's order."""
    rows = []
    for parameter in parameters_for(modality):
        if parameter.keyword in conditions:
            value = conditions[parameter.keyword]
            text = " \\ ".join(_for_people(v) for v in value) if isinstance(value, list) else _for_people(value)
            rows.append(
                {"keyword": parameter.keyword, "label": parameter.label, "value": value, "display": f"{text} {parameter.unit}".strip()}
            )
    return rows
