"""Making a product: a new DICOM object derived from a source image (PS3.3 C.7.6.1 General Image, C.12.1 SOP Common).

The product keeps the source's patient, study, series-level and acquisition attributes (so it stays a valid object of
the same IOD), and gets new UIDs, Image Type DERIVED\\SECONDARY, Derivation Description and Derivation Code Sequence,
the Source Image Sequence naming its source images, the Related Series Sequence naming the series they come from
(PS3.3 C.7.3.1, purpose "Source series for image processing operation"), and a Contributing Equipment item naming the
processing type, its version and the parameters applied. Times come from the job, so a retried job writes the very
same bytes.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterable

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian

from .base import ProcessingContext, ProcessorError

MANUFACTURER = "medarchive"
# Not carried from the source into a product: its identity, its pixels and what described them, its references.
NOT_COPIED = {
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "PixelData",
    "FloatPixelData",
    "DoubleFloatPixelData",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "NumberOfFrames",
    "FrameIncrementPointer",
    "SourceImageSequence",
    "ReferencedImageSequence",
    "RelatedSeriesSequence",
    "DerivationDescription",
    "DerivationCodeSequence",
    "IconImageSequence",
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries",
    "InstanceCreationDate",
    "InstanceCreationTime",
    "ContentDate",
    "ContentTime",
    "SliceLocation",
}
FUNCTIONAL_GROUPS = ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")


def code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def require_plain_images(sources: Iterable[Dataset]) -> None:
    """Enhanced multi-frame objects describe each frame in functional groups this module does not rewrite."""
    for ds in sources:
        if any(keyword in ds for keyword in FUNCTIONAL_GROUPS):
            raise ProcessorError("Enhanced multi-frame objects (with functional groups) are not supported by this processing type.")


def require_greyscale(sources: Iterable[Dataset]) -> None:
    for ds in sources:
        if int(ds.get("SamplesPerPixel", 1)) != 1 or str(ds.get("PhotometricInterpretation", "")) not in ("MONOCHROME1", "MONOCHROME2"):
            raise ProcessorError(f"This processing type works on greyscale images; this one is {ds.get('PhotometricInterpretation', '?')}.")


def stored_range(ds: Dataset) -> tuple[int, int]:
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def stored_dtype(ds: Dataset) -> np.dtype:
    bits = int(ds.get("BitsAllocated", 16))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    if bits not in (8, 16, 32):
        raise ProcessorError(f"Images of {bits} bits allocated are not supported.")
    return np.dtype(f"{'i' if signed else 'u'}{bits // 8}").newbyteorder("<")


def to_stored(ds: Dataset, values: np.ndarray) -> np.ndarray:
    """Values as the source stores them: rounded, clipped to Bits Stored, in its data type."""
    low, high = stored_range(ds)
    if np.issubdtype(values.dtype, np.floating):
        values = np.rint(values)
    return np.clip(values, low, high).astype(stored_dtype(ds))


def derive(
    source: Dataset,
    *,
    context: ProcessingContext,
    pixels: np.ndarray,
    series_instance_uid: str,
    sop_instance_uid: str,
    instance_number: int,
    series_number: int,
    series_description: str,
    references: Iterable[tuple[Dataset, int | None]] = (),
    source_items: list[Dataset] | None = None,
    image_type: Iterable[str] = (),
    derivation_code: Code | None = None,
) -> Dataset:
    """A product of `source` with `pixels` (rows x columns, or frames x rows x columns, in the source's stored type).

    The Source Image Sequence names `references` (source, frame number or None), or is `source_items` as built once by
    `source_image_items` for many products of the same sources (the items are shared, not copied).
    """
    processor = context.processor
    ds = Dataset()
    for element in source:
        if element.keyword in NOT_COPIED or element.keyword in FUNCTIONAL_GROUPS or element.tag.group == 0x7FE0:
            continue
        ds.add(copy.deepcopy(element))
    ds.remove_private_tags()
    ds.SOPInstanceUID = sop_instance_uid
    ds.SeriesInstanceUID = series_instance_uid
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.SeriesDescription = series_description[:64]
    day, time = context.created_at.strftime("%Y%m%d"), context.created_at.strftime("%H%M%S")
    ds.InstanceCreationDate = ds.ContentDate = day
    ds.InstanceCreationTime = ds.ContentTime = time
    ds.ImageType = ["DERIVED", "SECONDARY", *image_type]
    ds.DerivationDescription = context.description[:1024]
    code = derivation_code or processor.derivation_code
    if code is not None:
        ds.DerivationCodeSequence = Sequence([code_item(code)])
    ds.SourceImageSequence = Sequence(source_items if source_items is not None else source_image_items(references))
    ds.RelatedSeriesSequence = Sequence([related_series_item(source)])
    ds.ContributingEquipmentSequence = Sequence(
        [
            *copy.deepcopy(list(source.get("ContributingEquipmentSequence", []))),
            contributing_equipment(context, codes.DCM.ProcessingEquipment),
        ]
    )
    set_pixels(ds, source, pixels)
    return ds


def source_image_items(references: Iterable[tuple[Dataset, int | None]]) -> list[Dataset]:
    """Source Image Sequence items (PS3.3 C.7.6.1.1.4) of (source, frame number or None) pairs."""
    items = []
    for referenced, frame in references:
        item = Dataset()
        item.ReferencedSOPClassUID = referenced.SOPClassUID
        item.ReferencedSOPInstanceUID = referenced.SOPInstanceUID
        if frame is not None:
            item.ReferencedFrameNumber = frame
        item.PurposeOfReferenceCodeSequence = Sequence([code_item(codes.DCM.SourceImageForImageProcessingOperation)])
        items.append(item)
    return items


def related_series_item(source: Dataset) -> Dataset:
    """A Related Series Sequence item (PS3.3 C.7.3.1): the source's series, every image of which this one may draw on."""
    item = Dataset()
    item.StudyInstanceUID = source.StudyInstanceUID
    item.SeriesInstanceUID = source.SeriesInstanceUID
    item.PurposeOfReferenceCodeSequence = Sequence([code_item(codes.DCM.SourceSeriesForImageProcessingOperation)])
    return item


def contributing_equipment(context: ProcessingContext, purpose: Code) -> Dataset:
    """PS3.3 C.12.1.1.5: who changed the object, naming the processing type, its version and the parameters applied."""
    processor = context.processor
    item = Dataset()
    item.Manufacturer = MANUFACTURER
    item.ManufacturerModelName = processor.name[:64]
    item.SoftwareVersions = [f"{processor.id} {processor.version}"[:64]]
    item.ContributionDateTime = context.created_at.strftime("%Y%m%d%H%M%S")
    item.ContributionDescription = context.description[:1024]
    item.PurposeOfReferenceCodeSequence = Sequence([code_item(purpose)])
    return item


def set_pixels(ds: Dataset, source: Dataset, pixels: np.ndarray) -> None:
    pixels = np.ascontiguousarray(pixels)
    samples = int(source.get("SamplesPerPixel", 1))
    frames_axis = pixels.ndim == (4 if samples > 1 else 3)
    if frames_axis:
        ds.NumberOfFrames = pixels.shape[0]
        if "FrameIncrementPointer" in source:
            ds.FrameIncrementPointer = source.FrameIncrementPointer
    rows, columns = pixels.shape[1:3] if frames_axis else pixels.shape[0:2]
    ds.Rows, ds.Columns = int(rows), int(columns)
    ds.SamplesPerPixel = samples
    if samples > 1:
        # pydicom hands colour pixels over as RGB, interleaved.
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    for keyword in ("BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation"):
        setattr(ds, keyword, source[keyword].value)
    pixels = pixels.astype(stored_dtype(source), copy=False)
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OB" if int(source.BitsAllocated) == 8 else "OW"


def part10(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    """The product as a Part 10 file (new file meta)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
