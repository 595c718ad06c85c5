"""A reusable benchmark corpus: 512x512 16-bit CT and MR slices with anatomy-like content and noise.

Layout: studies of 5 series of 50 slices, two studies per patient, CT and MR studies alternating,
Explicit VR Little Endian, about 515 KiB a file. Generated once into var/bench/corpus-<n>/ (two
processes) and reused while its manifest.json is there: `python -m bench.corpus --instances 2000`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

ROOT = Path(__file__).resolve().parent.parent / "var" / "bench"
SIZE = 512
SERIES_PER_STUDY = 5
INSTANCES_PER_SERIES = 50
STUDIES_PER_PATIENT = 2
MANIFEST = "manifest.json"
CT_SERIES = ["Chest 1.25mm B30f", "Chest 1.25mm B70f lung", "Chest 5mm B30f", "Chest arterial 1.25mm", "Chest venous 1.25mm"]
MR_SERIES = ["T1 SE axial", "T2 TSE axial", "FLAIR axial", "DWI b1000", "T1 post-contrast axial"]


@dataclass(frozen=True)
class Instance:
    path: Path
    size: int
    modality: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str


@dataclass(frozen=True)
class Corpus:
    root: Path
    instances: list[Instance]

    @property
    def total_bytes(self) -> int:
        return sum(i.size for i in self.instances)

    @property
    def studies(self) -> int:
        return len({i.study_instance_uid for i in self.instances})


def _uid(*parts) -> str:
    # Deterministic, so a regenerated corpus has the same UIDs (and the same sizes).
    return generate_uid(entropy_srcs=["medarchive-bench", *map(str, parts)])


# --- Pixel content ------------------------------------------------------------------------------

_AXIS = np.linspace(-1, 1, SIZE, dtype=np.float32)


def _fill(image: np.ndarray, cx: float, cy: float, a: float, b: float, value: float) -> None:
    """Set the ellipse centred at (cx, cy) with half-axes a, b (normalised -1..1 coordinates) to value.

    Only its bounding box is evaluated, which keeps a slice at a few milliseconds.
    """
    x0, x1 = np.searchsorted(_AXIS, [cx - a, cx + a])
    y0, y1 = np.searchsorted(_AXIS, [cy - b, cy + b])
    if x1 <= x0 or y1 <= y0:
        return
    dx = ((_AXIS[x0:x1] - cx) / a) ** 2
    dy = ((_AXIS[y0:y1] - cy) / b) ** 2
    box = image[y0:y1, x0:x1]
    box[dy[:, None] + dx[None, :] < 1] = value


def ct_slice(z: float, rng: np.random.Generator) -> np.ndarray:
    """A chest slice in HU (z from 0 at the apex to 1 at the base), as stored values HU + 1024."""
    hu = np.full((SIZE, SIZE), -1000.0, dtype=np.float32)
    _fill(hu, 0, 0.05, 0.86, 0.62, -100)  # subcutaneous fat
    _fill(hu, 0, 0.05, 0.80, 0.56, 40)  # muscle and soft tissue
    lung_a, lung_b = 0.30 + 0.06 * math.sin(math.pi * z), 0.36 + 0.05 * math.sin(math.pi * z)
    for side in (-1, 1):
        _fill(hu, side * 0.38, 0.0, lung_a, lung_b, -850)
        _fill(hu, side * 0.38 + 0.05 * math.cos(7 * z), -0.05, 0.015, 0.015, 60)  # a vessel in the lung
        for k in range(5):  # ribs along the chest wall
            angle = math.pi * (0.15 + 0.17 * k)
            _fill(hu, side * 0.74 * math.cos(angle), 0.05 - 0.52 * math.sin(angle), 0.035, 0.025, 700)
    heart = 0.20 * min(1.0, 0.4 + 1.2 * z)
    _fill(hu, 0.08, 0.05, heart, heart * 0.85, 45)
    _fill(hu, -0.06, -0.12, 0.06, 0.06, 200)  # contrast-filled aorta
    _fill(hu, 0, 0.45, 0.09, 0.08, 900)  # vertebral body
    _fill(hu, 0, 0.45, 0.05, 0.045, 250)  # its marrow
    _fill(hu, 0, 0.58, 0.03, 0.03, 30)  # spinal canal
    hu += rng.standard_normal((SIZE, SIZE), dtype=np.float32) * np.float32(12.0)
    return np.clip(hu + 1024, 0, 4095).astype(np.uint16)


def mr_slice(z: float, rng: np.random.Generator, weighting: int) -> np.ndarray:
    """An axial head slice, contrast per series weighting (0: T1, 1: T2, ...), Rician-like noise."""
    fat, csf, grey, white = [(400, 200, 500, 650), (300, 1600, 800, 650), (250, 150, 900, 700), (0, 100, 700, 600), (420, 220, 520, 680)][
        weighting % 5
    ]
    image = np.zeros((SIZE, SIZE), dtype=np.float32)
    scale = 0.7 + 0.3 * math.sin(math.pi * (0.2 + 0.7 * z))
    _fill(image, 0, 0, 0.72 * scale, 0.86 * scale, fat)  # scalp
    _fill(image, 0, 0, 0.68 * scale, 0.82 * scale, 30)  # skull
    _fill(image, 0, 0, 0.63 * scale, 0.77 * scale, grey)
    _fill(image, 0, 0, 0.52 * scale, 0.66 * scale, white)
    ventricles = 0.10 * max(0.0, math.sin(math.pi * (z - 0.2) / 0.6)) if 0.2 < z < 0.8 else 0.0
    if ventricles:
        for side in (-1, 1):
            _fill(image, side * 0.09, -0.05, ventricles, 2.2 * ventricles, csf)
    noise = rng.standard_normal((2, SIZE, SIZE), dtype=np.float32) * np.float32(18.0)
    image = np.hypot(image + noise[0], noise[1])
    return np.clip(image, 0, 4095).astype(np.uint16)


# --- Datasets -----------------------------------------------------------------------------------


def _dataset(*, study: int, series: int, number: int, seed: int) -> tuple[Dataset, str]:
    patient = study // STUDIES_PER_PATIENT
    modality = "CT" if study % 2 == 0 else "MR"
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
    ds.SOPInstanceUID = _uid(seed, study, series, number)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.StudyInstanceUID = _uid(seed, study)
    ds.SeriesInstanceUID = _uid(seed, study, series)
    ds.FrameOfReferenceUID = _uid(seed, study, "frame")
    ds.PatientID = f"BENCH-{patient:04d}"
    ds.PatientName = f"Bench^Patient{patient:04d}"
    ds.PatientBirthDate = f"19{50 + patient % 40:02d}0{1 + patient % 9}15"
    ds.PatientSex = "FM"[patient % 2]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = f"2026{1 + study % 12:02d}{1 + study % 28:02d}"
    ds.StudyTime = ds.SeriesTime = "093000"
    ds.ContentTime = f"0930{number % 60:02d}"
    ds.AccessionNumber = f"ACC{seed:02d}{study:05d}"
    ds.StudyID = str(study + 1)
    ds.StudyDescription = "CT chest with contrast" if modality == "CT" else "MR head"
    ds.SeriesDescription = (CT_SERIES if modality == "CT" else MR_SERIES)[series % 5]
    ds.ReferringPhysicianName = "Referrer^Rita"
    ds.Modality = modality
    ds.SeriesNumber = series + 1
    ds.InstanceNumber = number + 1
    ds.Manufacturer = "medarchive bench"
    ds.ManufacturerModelName = "Phantom 512"
    ds.StationName = "BENCH01"
    ds.InstitutionName = "Benchmark Hospital"
    ds.BodyPartExamined = "CHEST" if modality == "CT" else "HEAD"
    ds.PatientPosition = "HFS"
    thickness = 1.25 if modality == "CT" else 4.0
    ds.SliceThickness = thickness
    ds.SpacingBetweenSlices = thickness
    ds.ImagePositionPatient = [-175.0, -175.0, round(-number * thickness, 2)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = round(-number * thickness, 2)
    ds.PixelSpacing = [0.683594, 0.683594] if modality == "CT" else [0.46875, 0.46875]
    if modality == "CT":
        ds.KVP = 120
        ds.XRayTubeCurrent = 250
        ds.ExposureTime = 500
        ds.ConvolutionKernel = "B70f" if series == 1 else "B30f"
        ds.CTDIvol = 8.5
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = (-600, 1500) if series == 1 else (40, 400)
    else:
        ds.MagneticFieldStrength = 3
        ds.RepetitionTime = [500, 4000, 9000, 5000, 500][series % 5]
        ds.EchoTime = [12, 95, 120, 80, 12][series % 5]
        ds.FlipAngle = 90
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "SK"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.WindowCenter, ds.WindowWidth = 600, 1200
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = SIZE
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    return ds, modality


def _write_series(job: tuple[Path, int, int, int, int]) -> list[dict]:
    root, seed, study, series, count = job
    rng = np.random.default_rng([seed, study, series])
    folder = root / f"study{study:03d}" / f"series{series}"
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for number in range(count):
        ds, modality = _dataset(study=study, series=series, number=number, seed=seed)
        z = number / max(1, INSTANCES_PER_SERIES - 1)
        pixels = ct_slice(z, rng) if modality == "CT" else mr_slice(z, rng, series)
        ds.PixelData = pixels.tobytes()
        path = folder / f"{number + 1:03d}.dcm"
        ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
        entries.append(
            {
                "path": str(path.relative_to(root)),
                "size": path.stat().st_size,
                "modality": modality,
                "sop_class_uid": str(ds.SOPClassUID),
                "sop_instance_uid": str(ds.SOPInstanceUID),
                "study_instance_uid": str(ds.StudyInstanceUID),
            }
        )
    return entries


def _jobs(root: Path, instances: int, seed: int) -> list[tuple[Path, int, int, int, int]]:
    jobs, left, study = [], instances, 0
    while left > 0:
        for series in range(SERIES_PER_STUDY):
            count = min(INSTANCES_PER_SERIES, left)
            if count <= 0:
                break
            jobs.append((root, seed, study, series, count))
            left -= count
        study += 1
    return jobs


def _load(root: Path) -> Corpus:
    manifest = json.loads((root / MANIFEST).read_text())
    return Corpus(
        root=root,
        instances=[
            Instance(
                path=root / e["path"],
                size=e["size"],
                modality=e["modality"],
                sop_class_uid=e["sop_class_uid"],
                sop_instance_uid=e["sop_instance_uid"],
                study_instance_uid=e["study_instance_uid"],
            )
            for e in manifest["instances"]
        ],
    )


def ensure_corpus(instances: int, *, root: Path = ROOT, seed: int = 1, workers: int | None = None, log=print) -> Corpus:
    """The corpus of `instances` files under root/corpus-<instances>, generated unless already complete."""
    folder = root / f"corpus-{instances}"
    if (folder / MANIFEST).exists():
        corpus = _load(folder)
        if len(corpus.instances) == instances and all(i.path.exists() for i in corpus.instances):
            return corpus
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    workers = workers or min(2, os.cpu_count() or 1)
    log(f"generating {instances} instances of 512x512 CT/MR into {folder} ({workers} processes)...")
    started = time.perf_counter()
    entries: list[dict] = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for series_entries in pool.map(_write_series, _jobs(folder, instances, seed)):
            entries.extend(series_entries)
    # The manifest is written last: its presence means the corpus is complete.
    (folder / MANIFEST).write_text(json.dumps({"seed": seed, "instances": entries}, indent=0))
    corpus = _load(folder)
    log(f"  {instances} files, {corpus.total_bytes / 1e6:,.0f} MB, in {time.perf_counter() - started:.0f} s")
    return corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=2000, help="number of instances (default %(default)s)")
    parser.add_argument("--root", type=Path, default=ROOT, help="cache folder (default %(default)s)")
    args = parser.parse_args(argv)
    corpus = ensure_corpus(args.instances, root=args.root)
    print(f"{corpus.root}: {len(corpus.instances)} instances, {corpus.studies} studies, {corpus.total_bytes / 1e6:,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
