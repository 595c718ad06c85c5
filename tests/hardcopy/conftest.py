"""Hard-copy fixtures: a real CT series ingested through the ingest service, and poppler's view of a PDF."""

import subprocess

import numpy as np
import pytest
from PIL import Image

from images.ingest import ingest_instance
from images.models import Instance
from tests.dicom_files import series


@pytest.fixture
def ct_series(principal_a):
    """Ten CT slices of one series (128 x 128, PixelSpacing 0.7 mm) stored in Alpha's archive, in instance order."""
    for data in series("CT", 10, rows=128, cols=128, patient_name="Filmer^Fiona", patient_id="FILM-01", study_description="Chest CT"):
        ingest_instance(principal=principal_a, data=data, source="test")
    return list(Instance.objects.order_by("instance_number"))


def pdf_page_size_pt(path) -> tuple[float, float]:
    out = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("Page size:"))
    width, _, height = line.split(":", 1)[1].split()[:3]
    return float(width), float(height)


def pdf_text(path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout


def pdf_raster(path, tmp_path, dpi: int = 100) -> np.ndarray:
    """The first page as an 8-bit grayscale array, rasterized by poppler."""
    prefix = tmp_path / "page"
    subprocess.run(["pdftoppm", "-r", str(dpi), "-gray", "-png", "-singlefile", str(path), str(prefix)], check=True)
    return np.asarray(Image.open(f"{prefix}.png").convert("L"), dtype=float)


def pdf_images(path) -> list[dict]:
    """`pdfimages -list`: one row per embedded image (width, height, color, enc...)."""
    out = subprocess.run(["pdfimages", "-list", str(path)], capture_output=True, text=True, check=True).stdout.splitlines()
    header = out[0].split()
    return [dict(zip(header, line.split(), strict=False)) for line in out[2:]]


def pdf_image_arrays(path, tmp_path) -> list[np.ndarray]:
    """The pixels of each embedded image as stored in the PDF (`pdfimages -png`), in page order."""
    out = tmp_path / f"{path.stem}-images"
    out.mkdir()
    subprocess.run(["pdfimages", "-png", str(path), str(out / "img")], check=True)
    return [np.asarray(Image.open(png)) for png in sorted(out.glob("img-*.png"))]


def windowed(instance, center: float, width: float) -> np.ndarray:
    """The stored frame after the Modality LUT and a linear VOI window (PS3.3 C.11.2.1.2.1), 0-255, from pydicom itself."""
    from pydicom import dcmread

    from images.storage import open_instance

    with open_instance(instance.storage_name) as fh:
        ds = dcmread(fh)
    values = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    out = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.clip(out, 0, 255)
