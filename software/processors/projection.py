"""Maximum, minimum and mean intensity projections of a series, over the whole volume or in slabs of a given thickness."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from .base import ProcessingContext, Processor, ProcessorError, WorkItem
from .derived import derive, require_greyscale, require_plain_images, to_stored
from .volume import assemble

VOLUME_MODALITIES = ("CT", "MR", "PT", "NM")


class IntensityProjection(Processor):
    """Project a series along its slice normal: one image for the whole volume, or one per slab."""

    scope = "series"
    modalities = VOLUME_MODALITIES
    label: str = ""
    parameters_schema = {
        "type": "object",
        "properties": {
            "slab_thickness_mm": {
                "type": ["number", "null"],
                "exclusiveMinimum": 0,
                "maximum": 5000,
                "default": None,
                "title": "Slab thickness (mm)",
                "description": "Thickness of each projected slab along the slice normal; empty: the whole series in one image.",
            },
        },
        "additionalProperties": False,
    }

    def reduce(self, voxels: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def check(self, item: WorkItem) -> None:
        super().check(item)
        require_plain_images(item.sources)
        require_greyscale(item.sources)

    def process(self, item: WorkItem, parameters: dict, context: ProcessingContext) -> list[Dataset]:
        volume = assemble(item.sources)
        count = volume.voxels.shape[0]
        thickness = parameters.get("slab_thickness_mm")
        if thickness:
            if not volume.spacing:
                raise ProcessorError("A slab thickness needs the distance between slices, which this series does not give.")
            per_slab = max(1, round(thickness / volume.spacing))
        else:
            per_slab = count
        first = volume.slices[0][0]
        series_uid = context.uid("series", first.SeriesInstanceUID)
        value3 = [str(first.ImageType[2])] if len(first.get("ImageType", [])) > 2 else []
        products = []
        for index, start in enumerate(range(0, count, per_slab)):
            context.checkpoint()
            stop = min(start + per_slab, count)
            pixels = to_stored(first, self.reduce(volume.voxels[start:stop]))
            product = derive(
                volume.slices[start][0],
                context=context,
                pixels=pixels,
                series_instance_uid=series_uid,
                sop_instance_uid=context.uid("instance", first.SeriesInstanceUID, index),
                instance_number=index + 1,
                series_number=1000 + int(first.get("SeriesNumber") or 0),
                series_description=f"{self.label} {first.get('SeriesDescription', '')}".strip(),
                references=volume.slices[start:stop],
                image_type=[*value3, self.label],
            )
            if volume.positions is not None:
                product.ImagePositionPatient = [round(float(v), 4) for v in volume.positions[start:stop].mean(axis=0)]
            if volume.spacing:
                product.SliceThickness = round(volume.spacing * (stop - start), 4)
                if "SpacingBetweenSlices" in product:
                    product.SpacingBetweenSlices = round(volume.spacing * per_slab, 4)
            products.append(product)
        return products


class MaximumIntensityProjection(IntensityProjection):
    id = "mip"
    name = "Maximum intensity projection"
    version = "1.0"
    label = "MIP"
    description = "The brightest voxel along the slice normal, over the series or in slabs (vessels, nodules, contrast)."
    derivation_code = codes.DCM.MaximumIntensityProjection

    def reduce(self, voxels):
        return voxels.max(axis=0)


class MinimumIntensityProjection(IntensityProjection):
    id = "minip"
    name = "Minimum intensity projection"
    version = "1.0"
    label = "MINIP"
    description = "The darkest voxel along the slice normal, over the series or in slabs (airways, emphysema)."
    derivation_code = codes.DCM.MinimumIntensityProjection

    def reduce(self, voxels):
        return voxels.min(axis=0)


class MeanIntensityProjection(IntensityProjection):
    id = "meanip"
    name = "Mean intensity projection"
    version = "1.0"
    label = "AVERAGE"
    description = "The mean of the voxels along the slice normal, rounded: thick-slab averaging that lowers noise."
    derivation_code = codes.DCM.PixelByPixelMean

    def reduce(self, voxels):
        return voxels.mean(axis=0, dtype=np.float64)
