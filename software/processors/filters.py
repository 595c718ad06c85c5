"""Image filters applied to each image (each frame) on its own: non-local means denoising and CLAHE (scikit-image)."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from skimage import exposure, restoration

from .base import ProcessingContext, Processor, WorkItem
from .derived import derive, require_greyscale, require_plain_images, to_stored
from .volume import _pixels


class ImageFilter(Processor):
    """One product per source image, in one product series per source series."""

    scope = "instances"
    series_offset = 5000
    label = ""

    def check(self, item: WorkItem) -> None:
        super().check(item)
        require_plain_images(item.sources)
        require_greyscale(item.sources)

    def filter_frame(self, frame: np.ndarray, parameters: dict) -> np.ndarray:
        raise NotImplementedError

    def process(self, item: WorkItem, parameters: dict, context: ProcessingContext) -> list[Dataset]:
        products = []
        for source in item.sources:
            pixels = _pixels(source)
            frames = int(source.get("NumberOfFrames", 1) or 1)
            stack = pixels if frames > 1 else pixels[np.newaxis]
            filtered = []
            for frame in stack:
                context.checkpoint()
                filtered.append(to_stored(source, self.filter_frame(frame.astype(np.float64), parameters)))
            result = np.stack(filtered) if frames > 1 else filtered[0]
            references = [(source, n) for n in range(1, frames + 1)] if frames > 1 else [(source, None)]
            products.append(
                derive(
                    source,
                    context=context,
                    pixels=result,
                    series_instance_uid=context.uid("series", source.SeriesInstanceUID),
                    sop_instance_uid=context.uid("instance", source.SOPInstanceUID),
                    instance_number=int(source.get("InstanceNumber") or 1),
                    series_number=self.series_offset + int(source.get("SeriesNumber") or 0),
                    series_description=f"{self.label} {source.get('SeriesDescription', '')}".strip(),
                    references=references,
                    image_type=[str(source.ImageType[2])] if len(source.get("ImageType", [])) > 2 else [],
                )
            )
        return products


class NonLocalMeansDenoise(ImageFilter):
    id = "denoise"
    name = "Non-local means denoising"
    version = "1.0"
    label = "DENOISED"
    series_offset = 5000
    description = (
        "Non-local means (scikit-image, fast mode): each pixel becomes a weighted mean of pixels whose neighbourhoods look "
        "alike; the filter strength h is a multiple of the noise level estimated in each image."
    )
    derivation_code = codes.DCM.Smoothing
    parameters_schema = {
        "type": "object",
        "properties": {
            "strength": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 5,
                "default": 0.8,
                "title": "Strength",
                "description": "h, as a multiple of the estimated noise standard deviation.",
            },
            "patch_size": {"type": "integer", "minimum": 3, "maximum": 15, "default": 5, "title": "Patch size (pixels)"},
            "patch_distance": {"type": "integer", "minimum": 1, "maximum": 20, "default": 6, "title": "Search distance (pixels)"},
        },
        "additionalProperties": False,
    }

    def filter_frame(self, frame, parameters):
        sigma = float(restoration.estimate_sigma(frame))
        if sigma <= 0:
            return frame
        return restoration.denoise_nl_means(
            frame,
            h=parameters.get("strength", 0.8) * sigma,
            sigma=sigma,
            patch_size=parameters.get("patch_size", 5),
            patch_distance=parameters.get("patch_distance", 6),
            fast_mode=True,
            preserve_range=True,
        )


class ContrastLimitedEqualization(ImageFilter):
    id = "clahe"
    name = "Contrast enhancement (CLAHE)"
    version = "1.0"
    label = "CLAHE"
    series_offset = 6000
    description = (
        "Contrast-limited adaptive histogram equalisation (scikit-image): local contrast raised tile by tile, limited by "
        "the clip limit; the image keeps its value range, but values are no longer calibrated (HU, SUV)."
    )
    derivation_code = codes.DCM.ImageProcessing
    parameters_schema = {
        "type": "object",
        "properties": {
            "clip_limit": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 1,
                "default": 0.01,
                "title": "Clip limit",
                "description": "Higher values give more contrast (0 to 1).",
            },
            "kernel_size": {
                "type": ["integer", "null"],
                "minimum": 8,
                "maximum": 1024,
                "default": None,
                "title": "Tile size (pixels)",
                "description": "Empty: an eighth of the image.",
            },
            "nbins": {"type": "integer", "minimum": 16, "maximum": 65536, "default": 1024, "title": "Histogram bins"},
        },
        "additionalProperties": False,
    }

    def filter_frame(self, frame, parameters):
        low, high = float(frame.min()), float(frame.max())
        if high <= low:
            return frame
        scaled = (frame - low) / (high - low)
        equalized = exposure.equalize_adapthist(
            scaled,
            kernel_size=parameters.get("kernel_size"),
            clip_limit=parameters.get("clip_limit", 0.01),
            nbins=parameters.get("nbins", 1024),
        )
        return equalized * (high - low) + low
