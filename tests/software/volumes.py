"""Valid CT and MR volumes (complete image IODs, so dciodvfy finds nothing wrong with the sources) for processing tests."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid

from images.synthetic import make_dataset, phantom, to_bytes


def volume(
    modality: str = "CT",
    *,
    slices: int = 8,
    rows: int = 32,
    columns: int = 40,
    spacing: float = 2.5,
    pixel_spacing: tuple[float, float] = (0.8, 0.7),
    patient_id: str = "PAT-VOL",
    patient_name: str = "Volume^Vera",
    study_uid: str | None = None,
    series_number: int = 3,
    seed: int = 7,
) -> list[Dataset]:
    """An axial series of `slices` single-frame images, ascending in z, shuffled in instance order (as scanners send)."""
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    frame_of_reference = generate_uid()
    result = []
    for index in range(slices):
        ds = make_dataset(
            modality,
            rows=rows,
            cols=columns,
            patient_id=patient_id,
            patient_name=patient_name,
            study_uid=study_uid,
            series_uid=series_uid,
            instance_number=slices - index,  # instance numbers run against z: sorting must use the geometry
            series_number=series_number,
            seed=seed,
        )
        pixels = phantom(rows, columns, seed=seed, slice_index=index * 3)
        pixels[index % rows, : columns // 2] = 4000 if modality == "CT" else 3000  # a marker per slice
        ds.PixelData = np.clip(pixels, 0, 4095).astype(np.uint16).tobytes()
        ds.SOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.FrameOfReferenceUID = frame_of_reference
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "HFS"
        ds.AcquisitionNumber = 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-100.0, -80.0, 10.0 + index * spacing]
        ds.PixelSpacing = list(pixel_spacing)
        ds.SliceThickness = spacing
        ds.SpacingBetweenSlices = spacing
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ReferringPhysicianName = "Referrer^Rita"
        if modality == "MR":
            ds.ScanningSequence = "SE"
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "2D"
            ds.EchoTrainLength = 1
            del ds.InversionTime
        result.append(ds)
    return result


def as_bytes(datasets: list[Dataset]) -> list[bytes]:
    return [to_bytes(ds) for ds in datasets]


def voxels_of(datasets: list[Dataset]) -> np.ndarray:
    """The volume in ascending z, computed independently of the processors' own sorting."""
    ordered = sorted(datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))
    return np.stack([ds.pixel_array for ds in ordered])
