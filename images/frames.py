"""Frames and other bulk data of one stored instance, read from its file without loading the rest of it.

Stored compressed frames are cut from the encapsulated pixel data as they are; uncompressed frames are cut from the
native pixel data (big endian words swapped), and compressed ones decoded one at a time, to little endian octets
(PS3.18 8.7.3.3.1).
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import BinaryIO

import numpy as np
from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.filewriter import dcmwrite
from pydicom.pixels import iter_pixels, pack_bits
from pydicom.tag import Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian

from .transcode import (
    SPOOL_BYTES,
    SWAP_WIDTH,
    CannotTranscode,
    PixelDescription,
    as_rgb,
    decodable,
    decoding_plugin,
    syntax_name,
)

# Media types of compressed frames (PS3.18 Table 8.7.3-5); uncompressed frames are application/octet-stream.
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
}
OCTET_STREAM = "application/octet-stream"


# --- Frames ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    data: bytes
    transfer_syntax_uid: str  # ExplicitVRLittleEndian for uncompressed frames

    @property
    def media_type(self) -> str:
        return FRAME_MEDIA_TYPES.get(self.transfer_syntax_uid, OCTET_STREAM)


def read_frames(source: BinaryIO, description: PixelDescription, numbers: list[int], *, as_stored: bool) -> Iterator[Frame]:
    """Frames `numbers` (1-based) of the instance in `source`: the stored compressed frames as they are when `as_stored`,
    else uncompressed little endian bytes (PS3.18 8.7.3.3.1), decoding one frame at a time."""
    if description.transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
        with _inflated(source) as inflated:
            yield from _read_frames(
                inflated, replace(description, transfer_syntax_uid=ExplicitVRLittleEndian), numbers, as_stored=as_stored
            )
    else:
        yield from _read_frames(source, description, numbers, as_stored=as_stored)


def _read_frames(source: BinaryIO, description: PixelDescription, numbers: list[int], *, as_stored: bool) -> Iterator[Frame]:
    source.seek(0)
    header = dcmread(source, stop_before_pixels=True)
    value_length = _enter_pixel_data(source, header)
    start = source.tell()
    if description.compressed and as_stored:
        extended = (header.ExtendedOffsetTable, header.ExtendedOffsetTableLengths) if "ExtendedOffsetTable" in header else None
        for number in numbers:
            source.seek(start)
            data = get_frame(source, number - 1, number_of_frames=description.number_of_frames, extended_offsets=extended)
            yield Frame(data=data, transfer_syntax_uid=description.transfer_syntax_uid)
    elif not description.compressed and description.bits_allocated >= 8:
        yield from _native_frames(source, description, numbers, start=start, value_length=value_length)
    else:
        yield from _decoded_frames(source, description, numbers)


def _enter_pixel_data(source: BinaryIO, header: Dataset) -> int:
    """Read the Pixel Data element header where dcmread stopped; return its value length (0xFFFFFFFF: encapsulated)."""
    ts = header.file_meta.TransferSyntaxUID
    endian = "<" if ts.is_little_endian else ">"
    raw = source.read(8)
    if len(raw) < 8 or struct.unpack(f"{endian}HH", raw[:4]) != (0x7FE0, 0x0010):
        raise CannotTranscode("it has no pixel data")
    if ts.is_implicit_VR:
        return struct.unpack(f"{endian}L", raw[4:])[0]
    return struct.unpack(f"{endian}L", source.read(4))[0]


def _native_frames(source: BinaryIO, description: PixelDescription, numbers: list[int], *, start: int, value_length: int):
    """Uncompressed frames are cut from the stored pixel data without decoding; big endian words are swapped."""
    # Native YBR_FULL_422 keeps two samples a pixel (PS3.3 C.7.6.3.1.2); the others all of theirs.
    samples = 2 if description.photometric_interpretation == "YBR_FULL_422" else description.samples_per_pixel
    frame_length = description.rows * description.columns * samples * description.bits_allocated // 8
    width = description.bits_allocated // 8
    for number in numbers:
        if number * frame_length > value_length:
            raise CannotTranscode(f"its pixel data ends before frame {number}")
        source.seek(start + (number - 1) * frame_length)
        data = source.read(frame_length)
        if description.transfer_syntax_uid == ExplicitVRBigEndian and width > 1:
            data = np.frombuffer(data, dtype=f">u{width}").astype(f"<u{width}").tobytes()
        yield Frame(data=data, transfer_syntax_uid=ExplicitVRLittleEndian)


def _decoded_frames(source: BinaryIO, description: PixelDescription, numbers: list[int]):
    ts = description.transfer_syntax_uid
    if description.compressed and not decodable(ts):
        raise CannotTranscode(f"its pixel data ({syntax_name(ts)}) cannot be decoded here, only sent as stored")
    options = {"as_rgb": as_rgb(ts), "decoding_plugin": decoding_plugin(ts)} if description.compressed else {"raw": True}
    for number in numbers:
        source.seek(0)
        try:
            (array,) = iter_pixels(source, indices=[number - 1], **options)
        except (ValueError, RuntimeError, NotImplementedError) as error:
            raise CannotTranscode(f"frame {number} could not be decoded: {error}") from error
        data = pack_bits(array) if description.bits_allocated == 1 else array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        yield Frame(data=data, transfer_syntax_uid=ExplicitVRLittleEndian)


def _inflated(source: BinaryIO):
    """A deflated data set rewritten in Explicit VR Little Endian, in a temporary file, so frames can be found by offset."""
    ds = dcmread(source)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (the caller closes it)
    dcmwrite(out, ds, enforce_file_format=True)
    out.seek(0)
    return out


# --- Bulk data ------------------------------------------------------------------------------------------------------


def read_bulk_value(source: BinaryIO, tag: int) -> bytes | None:
    """The value bytes of the element `tag` (at the top level, else the first one nested in a sequence), little endian.

    None when the data set has no such element. The stored metadata names bulk data by tag alone (bulkdata/TTTTTTTT),
    so a tag that also occurs in sequence items resolves to its top-level element first.
    """
    ds = dcmread(source, stop_before_pixels=True)
    big_endian = not ds.file_meta.TransferSyntaxUID.is_little_endian
    element = _find_raw(ds, Tag(tag))
    if element is None:
        return None
    if isinstance(element, RawDataElement):
        value, vr = element.value or b"", element.VR or _dictionary_vr(element.tag)
    else:
        value, vr = element.value, element.VR
        if not isinstance(value, bytes | bytearray):
            return None  # a value pydicom decoded (text, numbers below the bulk threshold) is not bulk data
    width = SWAP_WIDTH.get(vr)
    if big_endian and width and value:
        value = np.frombuffer(value, dtype=f">u{width}").astype(f"<u{width}").tobytes()
    return bytes(value)


def _find_raw(ds: Dataset, tag) -> RawDataElement | DataElement | None:
    if tag in ds:
        return ds.get_item(tag)
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                found = _find_raw(item, tag)
                if found is not None:
                    return found
    return None


def _dictionary_vr(tag) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"
