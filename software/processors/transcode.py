"""Conversion of images to a chosen transfer syntax: losslessly (checked to decode to the same pixels), or lossy and
marked so in the object (PS3.3 C.7.6.1.1.5: Lossy Image Compression "01", with ratio and method)."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from .base import ProcessingContext, Processor, ProcessorError, WorkItem
from .derived import derive, require_plain_images
from .volume import _pixels

# name -> (transfer syntax, lossy method per PS3.3 C.7.6.1.1.5.1 or None for lossless)
TARGETS = {
    "explicit-vr-little-endian": (ExplicitVRLittleEndian, None),
    "deflated": (DeflatedExplicitVRLittleEndian, None),
    "rle-lossless": (RLELossless, None),
    "jpeg-ls-lossless": (JPEGLSLossless, None),
    "jpeg2000-lossless": (JPEG2000Lossless, None),
    "jpeg-ls-near-lossless": (JPEGLSNearLossless, "ISO_14495_1"),
    "jpeg2000-lossy": (JPEG2000, "ISO_15444_1"),
}
NATIVE = (ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)


class TransferSyntaxConversion(Processor):
    id = "transcode"
    name = "Transfer syntax conversion"
    version = "1.0"
    description = (
        "A copy of each image in another transfer syntax. Lossless targets are checked to decode to the very same pixels; "
        "lossy ones (JPEG 2000 at a compression ratio, JPEG-LS near-lossless at a maximum error) are marked lossy in the object."
    )
    scope = "instances"
    parameters_schema = {
        "type": "object",
        "properties": {
            "transfer_syntax": {"enum": list(TARGETS), "default": "jpeg2000-lossless", "title": "Transfer syntax"},
            "compression_ratio": {
                "type": "number",
                "minimum": 2,
                "maximum": 100,
                "default": 10,
                "title": "Compression ratio (JPEG 2000 lossy)",
            },
            "max_error": {
                "type": "integer",
                "minimum": 1,
                "maximum": 255,
                "default": 2,
                "title": "Largest pixel error (JPEG-LS near-lossless)",
            },
        },
        "required": ["transfer_syntax"],
        "additionalProperties": False,
    }

    def check(self, item: WorkItem) -> None:
        super().check(item)
        require_plain_images(item.sources)

    def process(self, item: WorkItem, parameters: dict, context: ProcessingContext) -> list[Dataset]:
        target, method = TARGETS[parameters["transfer_syntax"]]
        products = []
        for source in item.sources:
            context.checkpoint()
            pixels = _pixels(source)
            frames = int(source.get("NumberOfFrames", 1) or 1)
            product = derive(
                source,
                context=context,
                pixels=pixels,
                series_instance_uid=context.uid("series", source.SeriesInstanceUID),
                sop_instance_uid=context.uid("instance", source.SOPInstanceUID),
                instance_number=int(source.get("InstanceNumber") or 1),
                series_number=7000 + int(source.get("SeriesNumber") or 0),
                series_description=f"{parameters['transfer_syntax']} {source.get('SeriesDescription', '')}".strip(),
                references=[(source, n) for n in range(1, frames + 1)] if frames > 1 else [(source, None)],
                image_type=[str(source.ImageType[2])] if len(source.get("ImageType", [])) > 2 else [],
                derivation_code=codes.DCM.LossyCompression if method else codes.DCM.ImageProcessing,
            )
            native_bytes = len(product.PixelData)
            product.file_meta = FileMetaDataset()
            product.file_meta.TransferSyntaxUID = target if target in NATIVE else ExplicitVRLittleEndian
            if target not in NATIVE:
                options = {}
                if target == JPEG2000:
                    options["j2k_cr"] = [parameters.get("compression_ratio", 10)]
                elif target == JPEGLSNearLossless:
                    options["jls_error"] = parameters.get("max_error", 2)
                try:
                    product.compress(target, generate_instance_uid=False, **options)
                except Exception as error:  # the encoders refuse what they cannot take with several kinds of error
                    raise ProcessorError(f"{source.SOPInstanceUID} cannot be encoded as {parameters['transfer_syntax']}: {error}") from None
                if method is None and not np.array_equal(product.pixel_array, pixels):
                    raise ProcessorError(
                        f"{source.SOPInstanceUID}: the {parameters['transfer_syntax']} encoding does not decode to the same pixels."
                    )
            if method is not None:
                ratio = native_bytes / max(len(product.PixelData), 1)
                product.LossyImageCompression = "01"
                product.LossyImageCompressionRatio = [*_values(source, "LossyImageCompressionRatio"), f"{ratio:.2f}"]
                product.LossyImageCompressionMethod = [*_values(source, "LossyImageCompressionMethod"), method]
            products.append(product)
        return products


def _values(ds: Dataset, keyword: str) -> list:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, list | tuple) or hasattr(value, "__len__") and not isinstance(value, str) else [value]
