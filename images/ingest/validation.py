"""Parsing and validating one DICOM object before anything is written (PS3.5, PS3.10)."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import date, time

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from ..errors import InvalidDataset, NotDicom

# PS3.5 9.1: components of digits without leading zeros, separated by dots, at most 64 characters.
UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
BULK_THRESHOLD = 1024


def check_uid(keyword: str, value) -> str:
    text = str(value or "").strip("\0 ")
    if not text:
        raise InvalidDataset(f"{keyword} is missing; every object needs a {keyword}.")
    if len(text) > 64 or not UID_RE.match(text):
        shown = text[:70].encode("ascii", "backslashreplace").decode()
        raise InvalidDataset(f"{keyword} {shown!r} is not a valid UID (digits and dots, at most 64 characters, PS3.5 9.1).")
    return text


def parse_da(value) -> date | None:
    text = str(value or "").strip()
    if len(text) >= 8 and text[:8].isdigit():
        try:
            return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
        except ValueError:
            return None
    return None


def parse_tm(value) -> time | None:
    text = str(value or "").strip().replace(":", "")
    digits = text.split(".")[0]
    if not digits.isdigit() or len(digits) < 2:
        return None
    try:
        hh, mm, ss = int(digits[0:2]), int(digits[2:4] or 0), int(digits[4:6] or 0)
        micro = int((text.split(".")[1] + "000000")[:6]) if "." in text else 0
        return time(hh, mm, min(ss, 59), micro)
    except (ValueError, IndexError):
        return None


def _is_image_storage(sop_class_uid: str) -> bool:
    name = UID(sop_class_uid).name
    return "Image Storage" in name and "Presentation State" not in name


@dataclass
class ParsedObject:
    """A validated object: its dataset (without pixel values loaded) and what the index needs."""

    dataset: Dataset
    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str


def parse(fp: io.BufferedIOBase, size: int) -> ParsedObject:
    """Parse a Part 10 file from fp (positioned at 0) and validate it; raise NotDicom / InvalidDataset."""
    try:
        # Large values are deferred, not read: the reader seeks past them, so a file cut short
        # leaves the position beyond its end, which is how truncation is noticed below.
        ds = pydicom.dcmread(fp, defer_size=BULK_THRESHOLD, force=False)
    except InvalidDicomError:
        raise NotDicom("This is not a DICOM file: it has no 'DICM' preamble (PS3.10 7.1).") from None
    except Exception as exc:  # pydicom raises many kinds on broken input
        raise NotDicom(f"This DICOM file cannot be read: {exc}.") from None
    if fp.tell() > size:
        raise NotDicom("This DICOM file is truncated: an element runs past the end of the file.")
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        raise NotDicom("This DICOM file has no transfer syntax in its file meta information.")
    uids = {keyword: check_uid(keyword, ds.get(keyword)) for keyword in REQUIRED_UIDS}
    transfer_syntax = check_uid("TransferSyntaxUID", meta.TransferSyntaxUID)
    if "MediaStorageSOPInstanceUID" in meta and str(meta.MediaStorageSOPInstanceUID).strip("\0 ") != uids["SOPInstanceUID"]:
        raise InvalidDataset("The file meta's MediaStorageSOPInstanceUID differs from the dataset's SOPInstanceUID.")
    if _is_image_storage(uids["SOPClassUID"]):
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            raise InvalidDataset("This image has no pixel data (the file may be truncated).")
        if "PixelData" in ds and not UID(transfer_syntax).is_compressed:
            expected = _expected_pixel_bytes(ds)
            actual = _value_length(ds, 0x7FE00010)
            if expected and actual is not None and actual < expected:
                raise NotDicom(f"The pixel data is truncated: {actual} of {expected} bytes.")
    return ParsedObject(
        dataset=ds,
        transfer_syntax_uid=transfer_syntax,
        sop_class_uid=uids["SOPClassUID"],
        sop_instance_uid=uids["SOPInstanceUID"],
        study_instance_uid=uids["StudyInstanceUID"],
        series_instance_uid=uids["SeriesInstanceUID"],
    )


def _value_length(ds: Dataset, tag: int) -> int | None:
    """Length of an element's value without reading a deferred value (None when undefined length)."""
    element = ds.get_item(tag, keep_deferred=True)  # pydicom 3 reads a deferred value unless told not to
    if getattr(element, "is_raw", False):
        return None if element.length == 0xFFFFFFFF else element.length
    return None if element.is_undefined_length else len(element.value or b"")


def _expected_pixel_bytes(ds: Dataset) -> int | None:
    try:
        bits = int(ds.BitsAllocated)
        count = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    return (count * bits + 7) // 8


def as_part10(dataset_bytes: bytes, *, transfer_syntax_uid: str, sop_class_uid: str, sop_instance_uid: str) -> bytes:
    """Wrap a dataset received over the network (no preamble) into a Part 10 file: preamble, 'DICM', file meta."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = transfer_syntax_uid
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MEDARCHIVE_1"
    buffer = DicomBytesIO()
    buffer.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=False)
    buffer.write(dataset_bytes)
    return buffer.getvalue()


def metadata_json(ds: Dataset) -> dict:
    """The DICOM JSON model of ds (PS3.18 F.2) without pixel data; large binary values become BulkDataURIs."""

    def bulk(element) -> str:
        return f"bulkdata/{element.tag:08X}"

    pixel_tags = {0x7FE00010, 0x7FE00008, 0x7FE00009}
    # Element by element, by tag, so deferred pixel data is never read and no trimmed copy is built.
    return {
        f"{tag:08X}": ds[tag].to_json_dict(bulk, BULK_THRESHOLD)
        for tag in ds.keys()  # noqa: SIM118
        if tag not in pixel_tags
    }
