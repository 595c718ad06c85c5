"""A series as a volume: its frames stacked in spatial order, with the geometry of the Image Plane module (PS3.3 C.7.6.2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from .base import ProcessorError

# Slices further apart than this share of the mean spacing make an uneven volume (a gap, a second stack).
SPACING_TOLERANCE = 0.01


@dataclass
class Volume:
    voxels: np.ndarray  # slices x rows x columns, stored values
    slices: list[tuple[Dataset, int | None]]  # (source, frame number or None) per slice, in volume order
    positions: np.ndarray | None = None  # slices x 3, ImagePositionPatient of each slice (mm)
    row_cosine: np.ndarray | None = None  # direction of increasing column index
    column_cosine: np.ndarray | None = None  # direction of increasing row index
    pixel_spacing: tuple[float, float] | None = None  # (between rows, between columns), mm
    spacing: float | None = None  # between slices along the normal, mm

    @property
    def normal(self) -> np.ndarray | None:
        if self.row_cosine is None:
            return None
        return np.cross(self.row_cosine, self.column_cosine)


def _floats(ds: Dataset, keyword: str, count: int) -> np.ndarray | None:
    value = ds.get(keyword)
    if value is None or len(value) != count:
        return None
    try:
        return np.array([float(v) for v in value])
    except (TypeError, ValueError):
        return None


def _pixels(ds: Dataset) -> np.ndarray:
    try:
        return ds.pixel_array
    except Exception as error:  # pydicom raises several kinds for undecodable pixel data
        raise ProcessorError(f"The pixel data of {ds.get('SOPInstanceUID', 'an image')} cannot be decoded: {error}") from None


def assemble(sources: list[Dataset], *, need_geometry: bool = False) -> Volume:
    """Stack a series' greyscale frames; sort single-frame slices along their normal when their geometry allows.

    need_geometry: refuse (ProcessorError) a series without a consistent, evenly spaced image plane geometry.
    """
    if not sources:
        raise ProcessorError("The series has no images.")
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in sources if "Rows" in ds and "Columns" in ds}
    if len(sizes) != 1 or any("Rows" not in ds for ds in sources):
        raise ProcessorError("The images of the series differ in size; they do not form one volume.")
    multi_frame = any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in sources)
    orientations = [_floats(ds, "ImageOrientationPatient", 6) for ds in sources]
    positions = [_floats(ds, "ImagePositionPatient", 3) for ds in sources]
    spacings = {tuple(ds.PixelSpacing) for ds in sources if "PixelSpacing" in ds}
    geometry = (
        not multi_frame
        and all(o is not None for o in orientations)
        and all(p is not None for p in positions)
        and all(np.allclose(o, orientations[0], atol=1e-4) for o in orientations)
        and len(spacings) == 1
    )
    if need_geometry and not geometry:
        raise ProcessorError(
            "This needs a series of single-frame slices with one orientation, positions and pixel spacing (Image Plane module)."
        )
    if geometry:
        row, column = orientations[0][:3], orientations[0][3:]
        normal = np.cross(row, column)
        order = sorted(range(len(sources)), key=lambda i: float(np.dot(positions[i], normal)))
        ordered = [sources[i] for i in order]
        position_array = np.array([positions[i] for i in order])
        distances = np.diff(position_array @ normal)
        spacing = None
        if len(ordered) > 1:
            spacing = float(np.mean(distances))
            if np.any(distances <= 0) or np.max(np.abs(distances - spacing)) > SPACING_TOLERANCE * spacing:
                if need_geometry:
                    raise ProcessorError("The slices of the series are not evenly spaced (a gap, or two stacks); it is not one volume.")
                spacing = None
        voxels = np.stack([_pixels(ds) for ds in ordered])
        if voxels.ndim != 3:
            raise ProcessorError("Only greyscale volumes can be processed.")
        pixel_spacing = tuple(float(v) for v in ordered[0].PixelSpacing)
        return Volume(voxels, [(ds, None) for ds in ordered], position_array, row, column, pixel_spacing, spacing)
    ordered = sorted(sources, key=lambda ds: (int(ds.get("InstanceNumber") or 0), str(ds.SOPInstanceUID)))
    stacks, slices = [], []
    for ds in ordered:
        array = _pixels(ds)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            stacks.append(array)
            slices.extend((ds, n) for n in range(1, frames + 1))
        else:
            stacks.append(array[np.newaxis])
            slices.append((ds, None))
    voxels = np.concatenate(stacks)
    if voxels.ndim != 3:
        raise ProcessorError("Only greyscale volumes can be processed.")
    spacing = None
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        if ordered[0].get(keyword):
            spacing = float(ordered[0].get(keyword))
            break
    return Volume(voxels, slices, spacing=spacing)
