"""Transfer syntax conversion of stored instances, one at a time: decompress, recompress losslessly, deflate.

The archive keeps every object as received. What leaves it in another transfer syntax is made here with pydicom's own
encoders and decoders (pylibjpeg-openjpeg for JPEG 2000, pyjpegls for JPEG-LS, pydicom for RLE and deflate). Whether
a target can be produced is decided from the pixel description alone (`unavailable_reason`), so a request can be
refused before any byte is sent; the conversion itself checks again on the real data set.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import BinaryIO

import numpy as np
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.pixels import get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSLossless,
    RLELossless,
)

AS_STORED = "*"
SPOOL_BYTES = 8 << 20  # a converted instance larger than this waits in a temporary file, not in memory
PIXEL_DATA = 0x7FE00010
FLOAT_PIXEL_DATA = (0x7FE00008, 0x7FE00009)

# What this archive can produce from what it stores, besides the stored syntax itself (PS3.18 8.7.3.4: Explicit VR
# Little Endian is the default every origin server must produce).
PRODUCIBLE = (ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless, DeflatedExplicitVRLittleEndian)
COMPRESSING = {JPEG2000Lossless: "pylibjpeg", JPEGLSLossless: "pyjpegls", RLELossless: "pydicom"}
NATIVE = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian)

# Transfer syntaxes that are always lossy (PS3.5 Annex A, 8.2): their pixels are already changed; decoding them and
# encoding losslessly keeps the changed pixels exactly, and Lossy Image Compression (0028,2110) says "01" (PS3.3
# C.7.6.1.1.5). JPEG 2000 (.91, .93) and HTJ2K (.203) may be lossless or lossy: for them the attribute tells.
LOSSY = {
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    *(f"1.2.840.10008.1.2.4.{n}" for n in range(100, 109)),  # MPEG-2, MPEG-4 AVC/H.264, HEVC/H.265
    *(f"1.2.840.10008.1.2.4.{n}.1" for n in range(100, 107)),  # their fragmentable variants
}

# Pixel descriptions each lossless encoder takes, as (photometric interpretations, samples, pixel representations, bits
# allocated, bits stored): PS3.5 Table 8.2.2-1 (RLE), 8.2.3-1 (JPEG-LS), 8.2.4-1 (JPEG 2000). JPEG 2000 is held to 8 and
# 16 bits allocated: the openjpeg encoder takes at most 24 bits stored.
_MONO = ("MONOCHROME1", "MONOCHROME2")
ENCODABLE = {
    RLELossless: [
        (_MONO, 1, (0, 1), (8, 16), range(1, 17)),
        (("PALETTE COLOR",), 1, (0,), (8, 16), range(1, 17)),
        (("YBR_FULL",), 3, (0,), (8,), range(1, 9)),
        (("RGB",), 3, (0,), (8, 16), range(1, 17)),
    ],
    JPEGLSLossless: [
        (_MONO, 1, (0, 1), (8, 16), range(2, 17)),
        (("PALETTE COLOR",), 1, (0,), (8, 16), range(2, 17)),
        (("YBR_FULL",), 3, (0,), (8,), range(2, 9)),
        (("RGB",), 3, (0,), (8, 16), range(2, 17)),
    ],
    JPEG2000Lossless: [
        (_MONO, 1, (0, 1), (8, 16), range(1, 17)),
        (("PALETTE COLOR",), 1, (0,), (8, 16), range(1, 17)),
        (("RGB", "YBR_FULL"), 3, (0,), (8, 16), range(1, 17)),
    ],
}
MAX_NATIVE_PIXEL_BYTES = 0xFFFFFFFE  # PS3.5 7.1.1: a defined length is a 32-bit even value


class CannotTranscode(Exception):
    """This instance cannot be given in the asked transfer syntax; `reason` says why, for the person asking (406)."""

    def __init__(self, reason: str, *, transfer_syntax: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.transfer_syntax = transfer_syntax


def syntax_name(uid: str) -> str:
    if uid == AS_STORED:
        return "as stored"
    name = UID(uid).name
    return f"{uid} ({name})" if name != uid else uid


def producible_names() -> str:
    return ", ".join(syntax_name(uid) for uid in (AS_STORED, *PRODUCIBLE))


@dataclass(frozen=True)
class PixelDescription:
    """What decides which transfer syntaxes an instance can be given in: its stored syntax and Image Pixel module."""

    transfer_syntax_uid: str
    has_pixel_data: bool = False
    photometric_interpretation: str = ""
    samples_per_pixel: int = 1
    bits_allocated: int = 0
    bits_stored: int = 0
    pixel_representation: int = 0
    rows: int = 0
    columns: int = 0
    number_of_frames: int = 1
    lossy: bool = False
    float_pixels: bool = False

    @classmethod
    def of_metadata(cls, transfer_syntax_uid: str, metadata: dict) -> PixelDescription:
        """From the stored DICOM JSON (which has no pixel data: an image is what has Rows, Columns and Bits Allocated)."""

        def first(tag: str, default=None):
            values = (metadata.get(tag) or {}).get("Value") or [default]
            return values[0] if values[0] is not None else default

        rows, columns, bits = first("00280010", 0), first("00280011", 0), first("00280100", 0)
        return cls(
            transfer_syntax_uid=transfer_syntax_uid,
            has_pixel_data=bool(rows and columns and bits),
            photometric_interpretation=str(first("00280004", "")).strip(),
            samples_per_pixel=int(first("00280002", 1)),
            bits_allocated=int(bits or 0),
            bits_stored=int(first("00280101", bits) or 0),
            pixel_representation=int(first("00280103", 0)),
            rows=int(rows or 0),
            columns=int(columns or 0),
            number_of_frames=int(first("00280008", 1) or 1),
            lossy=transfer_syntax_uid in LOSSY or str(first("00282110", "")).strip() == "01",
        )

    @classmethod
    def of_dataset(cls, ds: Dataset) -> PixelDescription:
        transfer_syntax_uid = str(ds.file_meta.TransferSyntaxUID)
        float_pixels = any(tag in ds for tag in FLOAT_PIXEL_DATA)
        return cls(
            transfer_syntax_uid=transfer_syntax_uid,
            has_pixel_data=PIXEL_DATA in ds or float_pixels,
            photometric_interpretation=str(ds.get("PhotometricInterpretation", "")).strip(),
            samples_per_pixel=int(ds.get("SamplesPerPixel", 1) or 1),
            bits_allocated=int(ds.get("BitsAllocated", 0) or 0),
            bits_stored=int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 0) or 0),
            pixel_representation=int(ds.get("PixelRepresentation", 0) or 0),
            rows=int(ds.get("Rows", 0) or 0),
            columns=int(ds.get("Columns", 0) or 0),
            number_of_frames=int(ds.get("NumberOfFrames", 1) or 1),
            lossy=transfer_syntax_uid in LOSSY or str(ds.get("LossyImageCompression", "")).strip() == "01",
            float_pixels=float_pixels,
        )

    @property
    def compressed(self) -> bool:
        return self.transfer_syntax_uid not in NATIVE

    @property
    def decoded_photometric_interpretation(self) -> str:
        """The photometric interpretation once decoded the way `decode_to_native` does it."""
        if self.compressed and self.photometric_interpretation in ("YBR_ICT", "YBR_RCT"):
            return "RGB"  # the JPEG 2000 decoder undoes its colour transform
        if as_rgb(self.transfer_syntax_uid) and self.photometric_interpretation in ("YBR_FULL", "YBR_FULL_422"):
            return "RGB"
        return self.photometric_interpretation

    @property
    def native_pixel_bytes(self) -> int:
        pixels = self.rows * self.columns * self.samples_per_pixel * self.number_of_frames
        return (pixels * self.bits_allocated + 7) // 8


def as_rgb(transfer_syntax_uid: str) -> bool:
    """Decode lossy JPEG's YCbCr to RGB, as DICOM toolkits do when they decompress it (PS3.5 8.2.1); keep every other colour space."""
    return transfer_syntax_uid in (JPEGBaseline8Bit, JPEGExtended12Bit)


@cache
def decoding_plugin(transfer_syntax_uid: str) -> str:
    """The pydicom decoding plugin to use: CharLS for JPEG-LS, pylibjpeg for JPEG and JPEG 2000, pydicom's own for RLE.

    Named explicitly so that a library installed for something else (GDCM) never decides what a viewer receives.
    """
    try:
        available = get_decoder(UID(transfer_syntax_uid)).available_plugins
    except (NotImplementedError, ValueError):
        return ""
    for plugin in ("pyjpegls", "pylibjpeg", "pydicom", "pillow"):
        if plugin in available:
            return plugin
    return ""


def decodable(transfer_syntax_uid: str) -> bool:
    return transfer_syntax_uid in NATIVE or bool(decoding_plugin(transfer_syntax_uid))


def unavailable_reason(description: PixelDescription, target: str) -> str | None:
    """Why this instance cannot be given in `target`; None when it can."""
    source = description.transfer_syntax_uid
    if target in (AS_STORED, source):
        return None
    if target not in PRODUCIBLE:
        return "this archive does not produce it"
    if not description.has_pixel_data:
        return None  # no pixel data: every producible syntax encodes the data set the same way
    if description.compressed and not decodable(source):
        return f"its pixel data ({syntax_name(source)}) cannot be decoded here, only sent as stored"
    if target in (ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        if description.compressed and description.native_pixel_bytes > MAX_NATIVE_PIXEL_BYTES:
            return "its decompressed pixel data is longer than an uncompressed transfer syntax can hold (PS3.18 8.7.3.4)"
        return None
    if description.float_pixels:
        return f"{syntax_name(target)} does not encode floating point pixel data"
    photometric = description.decoded_photometric_interpretation
    for photometrics, samples, representations, allocated, stored in ENCODABLE[target]:
        if (
            photometric in photometrics
            and description.samples_per_pixel == samples
            and description.pixel_representation in representations
            and description.bits_allocated in allocated
            and description.bits_stored in stored
        ):
            return None
    signed = "signed" if description.pixel_representation else "unsigned"
    return (
        f"{syntax_name(target)} does not encode {photometric or 'its'} pixels of {description.samples_per_pixel} sample(s), "
        f"{description.bits_stored} of {description.bits_allocated} bits, {signed} (PS3.5 8.2)"
    )


def check_producible(description: PixelDescription, target: str) -> None:
    reason = unavailable_reason(description, target)
    if reason is not None:
        raise CannotTranscode(reason, transfer_syntax=target)


# --- Whole instances ------------------------------------------------------------------------------------------------


def transcode(source: BinaryIO, *, target: str, out: BinaryIO) -> None:
    """Write the Part 10 file read from `source` to `out` in `target` (one of PRODUCIBLE), keeping its SOP Instance UID.

    Lossless targets of a lossy source re-encode the already lossy pixels exactly; Lossy Image Compression stays "01".
    """
    ds = dcmread(source)
    description = PixelDescription.of_dataset(ds)
    check_producible(description, target)
    decode_to_native(ds, description)
    if target in COMPRESSING and PIXEL_DATA in ds:
        # JPEG 2000 without its colour transform: RGB stays RGB (allowed for 1.2.840.10008.1.2.4.90, PS3.5 8.2.4).
        options = {"use_mct": False} if target == JPEG2000Lossless else {}
        try:
            ds.compress(target, encoding_plugin=COMPRESSING[target], generate_instance_uid=False, **options)
        except (ValueError, RuntimeError) as error:
            raise CannotTranscode(f"{syntax_name(target)} could not encode its pixel data: {error}", transfer_syntax=target) from error
    else:
        ds.file_meta.TransferSyntaxUID = UID(target)
    if description.lossy and description.has_pixel_data:
        ds.LossyImageCompression = "01"
    dcmwrite(out, ds, enforce_file_format=True)


def decode_to_native(ds: Dataset, description: PixelDescription) -> None:
    """Make ds Explicit VR Little Endian with uncompressed pixel data, in place and keeping its UIDs."""
    source = description.transfer_syntax_uid
    if description.compressed and PIXEL_DATA in ds:
        try:
            ds.decompress(as_rgb=as_rgb(source), generate_instance_uid=False, decoding_plugin=decoding_plugin(source))
        except (ValueError, RuntimeError, NotImplementedError) as error:
            raise CannotTranscode(f"its pixel data ({syntax_name(source)}) could not be decoded: {error}") from error
    elif source == ExplicitVRBigEndian:
        _swap_to_little_endian(ds, description.bits_allocated)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


# Byte width of the values of binary VRs whose bytes pydicom keeps as read (dcmwrite does not swap them, PS3.5 7.3).
SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def _swap_to_little_endian(ds: Dataset, bits_allocated: int) -> None:
    for element in _elements(ds):
        width = SWAP_WIDTH.get(element.VR)
        if element.tag == PIXEL_DATA and element.VR == "OW" and bits_allocated > 16:
            width = bits_allocated // 8  # 32-bit pixels in OW are 32-bit words (PS3.5 8.1.1)
        if width and element.value:
            element.value = np.frombuffer(element.value, dtype=f">u{width}").astype(f"<u{width}").tobytes()


def _elements(ds: Dataset) -> Iterator[DataElement]:
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                yield from _elements(item)
        else:
            yield element
