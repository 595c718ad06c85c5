"""Multiplanar reformat of an axial CT or MR volume to coronal and sagittal series, voxel for voxel (no interpolation).

Every slice of the volume gives one row (coronal) or column (sagittal) of every cut, so each cut is derived from the
whole source series. Each cut names that series once, in its Related Series Sequence (PS3.3 C.7.3.1, purpose "Source
series for image processing operation"), and its Source Image Sequence names the two slices its first and last rows
come from, built once for all cuts. Listing all N slices in every one of the cuts would make N x cuts items (300
slices: 307,200 items, 118 KB of header and DICOM JSON a cut), which costs far more than the voxels.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from .base import ProcessingContext, Processor, ProcessorError, WorkItem
from .derived import derive, require_greyscale, require_plain_images, source_image_items
from .volume import assemble

PLANES = ("coronal", "sagittal")


def _ds_values(vector: np.ndarray) -> list[float]:
    return [round(float(v), 6) + 0.0 for v in vector]


class MultiplanarReformat(Processor):
    id = "mpr"
    name = "Multiplanar reformat"
    version = "1.0"
    description = (
        "Coronal and sagittal series cut from an evenly spaced axial CT or MR volume; each product pixel is a source voxel, "
        "so distances and values are those of the acquisition."
    )
    scope = "series"
    modalities = ("CT", "MR")
    derivation_code = codes.DCM.MultiplanarReformatting
    parameters_schema = {
        "type": "object",
        "properties": {
            "planes": {
                "type": "array",
                "items": {"enum": list(PLANES)},
                "minItems": 1,
                "uniqueItems": True,
                "default": list(PLANES),
                "title": "Planes",
                "description": "Which reformats to make.",
            },
            "step": {
                "type": "integer",
                "minimum": 1,
                "maximum": 64,
                "default": 1,
                "title": "Step",
                "description": "Every how many rows (coronal) or columns (sagittal) of the volume an image is cut.",
            },
        },
        "additionalProperties": False,
    }

    def check(self, item: WorkItem) -> None:
        super().check(item)
        require_plain_images(item.sources)
        require_greyscale(item.sources)
        if len(item.sources) < 2:
            raise ProcessorError("A reformat needs a volume of at least two slices.")

    def process(self, item: WorkItem, parameters: dict, context: ProcessingContext) -> list[Dataset]:
        volume = assemble(item.sources, need_geometry=True)
        normal = volume.normal
        if int(np.argmax(np.abs(normal))) != 2:
            raise ProcessorError("Coronal and sagittal reformats are cut from an axial volume; this series is not axial.")
        # Slices ascend along the normal (towards the head for an axial stack): the top row of a reformat is the last slice.
        voxels = volume.voxels[::-1]
        top = volume.positions[-1]
        row_spacing, column_spacing = volume.pixel_spacing
        first = volume.slices[0][0]
        source_series = first.SeriesInstanceUID
        step = parameters.get("step", 1)
        # The slices of a cut's first row (the top of the volume) and its last row (the bottom), for every cut.
        bounding_slices = source_image_items([volume.slices[-1], volume.slices[0]])
        products = []
        for number, plane in enumerate(PLANES, start=2):
            if plane not in parameters.get("planes", PLANES):
                continue
            series_uid = context.uid("series", source_series, plane)
            if plane == "coronal":
                cuts, direction, in_plane, spacing = voxels.shape[1], volume.column_cosine, volume.row_cosine, column_spacing
                offset = row_spacing
            else:
                cuts, direction, in_plane, spacing = voxels.shape[2], volume.row_cosine, volume.column_cosine, row_spacing
                offset = column_spacing
            for index, cut in enumerate(range(0, cuts, step)):
                context.checkpoint()
                pixels = voxels[:, cut, :] if plane == "coronal" else voxels[:, :, cut]
                product = derive(
                    first,
                    context=context,
                    pixels=np.ascontiguousarray(pixels),
                    series_instance_uid=series_uid,
                    sop_instance_uid=context.uid("instance", source_series, plane, cut),
                    instance_number=index + 1,
                    series_number=1000 * number + int(first.get("SeriesNumber") or 0),
                    series_description=f"MPR {plane} {first.get('SeriesDescription', '')}".strip(),
                    source_items=bounding_slices,
                    image_type=["REFORMATTED", plane.upper()],
                )
                product.ImageOrientationPatient = _ds_values(np.concatenate([in_plane, -normal]))
                product.ImagePositionPatient = _ds_values(top + cut * offset * direction)
                product.PixelSpacing = [round(volume.spacing, 6), spacing]
                product.SliceThickness = round(offset, 6)
                if "SpacingBetweenSlices" in product:
                    product.SpacingBetweenSlices = round(offset * step, 6)
                products.append(product)
        return products
