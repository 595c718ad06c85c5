"""Synthesized DICOM images with realistic content, for demo data and tests.

A phantom-like disc with structure and noise, proper UIDs and the per-modality acquisition parameters,
so ingest, delivery and the viewer see what a scanner sends. `manage.py seed_demo` fills the demo
archive with these; the test suite uses them too (tests/dicom_files.py).
"""

from __future__ import annotations

import io
from datetime import date

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    PositronEmissionTomographyImageStorage,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    generate_uid,
)

SOP_CLASS = {
    "CT": CTImageStorage,
    "MR": MRImageStorage,
    "PT": PositronEmissionTomographyImageStorage,
    "DX": DigitalXRayImageStorageForPresentation,
    "CR": ComputedRadiographyImageStorage,
    "US": UltrasoundImageStorage,
    "OT": SecondaryCaptureImageStorage,
}


def phantom(rows: int, cols: int, *, seed: int = 0, slice_index: int = 0, max_value: int = 3000) -> np.ndarray:
    """A 16-bit image with a body-like disc, inner structures varying by slice, and noise."""
    rng = np.random.default_rng(seed + slice_index)
    y, x = np.mgrid[0:rows, 0:cols]
    cy, cx = rows / 2, cols / 2
    r = np.hypot((y - cy) / (rows * 0.42), (x - cx) / (cols * 0.36))
    image = np.where(r < 1, 1000.0, 0.0)
    for k in range(5):
        oy = cy + (rows * 0.2) * np.sin(k * 1.3 + slice_index * 0.05)
        ox = cx + (cols * 0.18) * np.cos(k * 1.7)
        image += np.where(np.hypot(y - oy, x - ox) < rows * (0.04 + 0.01 * k), 300.0 * (k + 1), 0.0)
    image += rng.normal(0, 20, size=image.shape)
    return np.clip(image, 0, max_value).astype(np.uint16)


def make_dataset(
    modality: str = "CT",
    *,
    rows: int = 64,
    cols: int = 64,
    frames: int = 1,
    patient_id: str = "PAT-001",
    patient_name: str = "Doe^Jane",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    instance_number: int = 1,
    series_number: int = 1,
    study_description: str = "Synthetic study",
    series_description: str = "",
    accession_number: str = "ACC-0001",
    study_date: date | None = None,
    institution_name: str = "Synthetic Site",
    seed: int = 0,
) -> Dataset:
    """A valid image of modality with pixel data (uncompressed) and its acquisition parameters."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SOP_CLASS[modality]
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    day = study_date or date(2026, 11, 2)
    ds.StudyDate = day.strftime("%Y%m%d")
    ds.SeriesDate = ds.StudyDate
    ds.StudyTime = "101500"
    ds.AccessionNumber = accession_number
    ds.StudyID = "1"
    ds.StudyDescription = study_description
    ds.SeriesDescription = series_description or f"{modality} series {series_number}"
    ds.ReferringPhysicianName = "Referrer^Rita"
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.Manufacturer = "medarchive tests"
    ds.ManufacturerModelName = "Synth 1"
    ds.StationName = "SYNTH01"
    ds.InstitutionName = institution_name
    ds.BodyPartExamined = {"CT": "CHEST", "MR": "HEAD", "PT": "WHOLEBODY", "DX": "CHEST", "CR": "HAND", "US": "ABDOMEN"}.get(modality, "")
    ds.PixelSpacing = [0.7, 0.7]
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    _acquisition(ds, modality)
    pixels = np.stack([phantom(rows, cols, seed=seed, slice_index=instance_number + f) for f in range(frames)])
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if modality == "CT":
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.SliceThickness = 1.25
        ds.ImagePositionPatient = [0, 0, instance_number * 1.25]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelData = (pixels[0] if frames == 1 else pixels).tobytes()
    ds.set_original_encoding(False, True)
    return ds


def _acquisition(ds: Dataset, modality: str) -> None:
    if modality in ("CT", "CR", "DX"):
        ds.KVP = 120 if modality == "CT" else 80
        ds.XRayTubeCurrent = 250 if modality == "CT" else 200
        ds.ExposureTime = 500 if modality == "CT" else 20
        ds.Exposure = 125 if modality == "CT" else 4
    if modality == "CT":
        ds.ConvolutionKernel = "B30f"
        ds.SpacingBetweenSlices = 1.25
        ds.CTDIvol = 8.5
    if modality in ("CR", "DX"):
        ds.ExposureIndex = 1250
        ds.ViewPosition = "PA"
        if modality == "DX":
            ds.DistanceSourceToDetector = 1800
    if modality == "MR":
        ds.MagneticFieldStrength = 3
        ds.RepetitionTime = 2000
        ds.EchoTime = 30
        ds.InversionTime = 900
        ds.FlipAngle = 90
        ds.SequenceName = "*tse2d1_15"
        ds.ScanningSequence = "SE"
        ds.SliceThickness = 4
    if modality == "PT":
        item = Dataset()
        item.Radiopharmaceutical = "Fluorodeoxyglucose"
        item.RadionuclideTotalDose = 370000000
        item.RadionuclideHalfLife = 6586.2
        item.RadiopharmaceuticalStartTime = "093000"
        ds.RadiopharmaceuticalInformationSequence = Sequence([item])
        ds.Units = "BQML"
        ds.SliceThickness = 3.27
    if modality == "US":
        ds.TransducerData = ["C5-1"]
        region = Dataset()
        region.TransducerFrequency = 3500
        ds.SequenceOfUltrasoundRegions = Sequence([region])


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def synth_bytes(modality: str = "CT", **kwargs) -> bytes:
    return to_bytes(make_dataset(modality, **kwargs))


def series(modality: str, count: int, **kwargs) -> list[bytes]:
    """count instances of one series of one study."""
    study_uid, series_uid = kwargs.pop("study_uid", None) or generate_uid(), kwargs.pop("series_uid", None) or generate_uid()
    return [synth_bytes(modality, study_uid=study_uid, series_uid=series_uid, instance_number=i + 1, **kwargs) for i in range(count)]
