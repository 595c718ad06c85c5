"""images/transcode.py and images/frames.py: which transfer syntaxes an image can be given in, conversions that keep every pixel, frames."""

import io

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.encaps import generate_frames
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from images.frames import read_bulk_value, read_frames
from images.ingest.validation import metadata_json
from images.transcode import (
    AS_STORED,
    CannotTranscode,
    PixelDescription,
    transcode,
    unavailable_reason,
)
from tests.dicom_files import COMPRESSED, bundled_bytes, make_dataset, to_bytes

LOSSLESS_TARGETS = [JPEG2000Lossless, JPEGLSLossless, RLELossless, DeflatedExplicitVRLittleEndian]


def convert(data: bytes, target: str) -> bytes:
    out = io.BytesIO()
    transcode(io.BytesIO(data), target=target, out=out)
    return out.getvalue()


def decoded(data: bytes, **options) -> np.ndarray:
    """The pixels as pydicom decodes them with whatever plugin it picks (any correct decoder of a lossless stream agrees)."""
    ds = dcmread(io.BytesIO(data))
    if options:
        ds.pixel_array_options(**options)
    return ds.pixel_array


def signed_multiframe() -> bytes:
    """Signed 12-bit CT values (negative ones too) in three frames: the case lossless coders most often get wrong."""
    ds = make_dataset("CT", rows=40, cols=56, frames=3)
    rng = np.random.default_rng(7)
    ds.PixelRepresentation = 1
    ds.PixelData = rng.integers(-2048, 2048, size=(3, 40, 56)).astype(np.int16).tobytes()
    return to_bytes(ds)


SOURCES = {
    "CT 16-bit signed": lambda: bundled_bytes("CT_small.dcm"),
    "MR 16-bit": lambda: bundled_bytes("MR_small.dcm"),
    "synthetic CT 12-bit unsigned": lambda: to_bytes(make_dataset("CT", rows=48, cols=48)),
    "CT 12-bit signed, 3 frames": signed_multiframe,
    "US RGB 8-bit": lambda: bundled_bytes("examples_rgb_color.dcm"),
}


@pytest.mark.parametrize("target", LOSSLESS_TARGETS)
@pytest.mark.parametrize("source", SOURCES)
def test_lossless_conversion_there_and_back_keeps_every_pixel(source, target):
    original = SOURCES[source]()
    converted = convert(original, target)
    back = convert(converted, ExplicitVRLittleEndian)

    ds = dcmread(io.BytesIO(converted))
    assert ds.file_meta.TransferSyntaxUID == target
    assert ds.SOPInstanceUID == dcmread(io.BytesIO(original), stop_before_pixels=True).SOPInstanceUID
    assert np.array_equal(decoded(converted), decoded(original))
    assert np.array_equal(decoded(back), decoded(original))
    assert dcmread(io.BytesIO(back)).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


@pytest.mark.parametrize(
    "name",
    [COMPRESSED["jpeg2000_lossless"], COMPRESSED["jpeg_ls_lossless"], COMPRESSED["rle"], COMPRESSED["big_endian"], "MR_small_implicit.dcm"],
)
def test_compressed_big_endian_and_implicit_sources_decompress_to_the_same_pixels(name):
    original = bundled_bytes(name)
    converted = convert(original, ExplicitVRLittleEndian)
    assert dcmread(io.BytesIO(converted)).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(decoded(converted), decoded(original))
    # Every other attribute survives the change of encoding (big endian numbers included).
    before, after = dcmread(io.BytesIO(original), stop_before_pixels=True), dcmread(io.BytesIO(converted), stop_before_pixels=True)
    assert [e.value for e in after if e.tag != 0x7FE00010] == [e.value for e in before if e.tag != 0x7FE00010]


def test_a_lossy_source_recompressed_losslessly_keeps_its_lossy_pixels_and_says_it_was_lossy():
    original = bundled_bytes(COMPRESSED["jpeg_baseline"])  # 30 frames of YCbCr JPEG baseline
    converted = convert(original, JPEGLSLossless)
    ds = dcmread(io.BytesIO(converted))
    assert ds.LossyImageCompression == "01"
    assert ds.PhotometricInterpretation == "RGB"  # decoded as DICOM toolkits decompress lossy JPEG (PS3.5 8.2.1)
    assert np.array_equal(decoded(converted), decoded(original, decoding_plugin="pylibjpeg", as_rgb=True))


def description(**overrides) -> PixelDescription:
    values = {
        "transfer_syntax_uid": ExplicitVRLittleEndian,
        "has_pixel_data": True,
        "photometric_interpretation": "MONOCHROME2",
        "samples_per_pixel": 1,
        "bits_allocated": 16,
        "bits_stored": 12,
        "pixel_representation": 0,
        "rows": 512,
        "columns": 512,
    }
    return PixelDescription(**(values | overrides))


@pytest.mark.parametrize(
    ("overrides", "target", "refused"),
    [
        ({"pixel_representation": 1, "bits_stored": 16}, JPEGLSLossless, None),
        ({"pixel_representation": 1}, JPEG2000Lossless, None),
        ({"photometric_interpretation": "RGB", "samples_per_pixel": 3, "bits_allocated": 8, "bits_stored": 8}, JPEG2000Lossless, None),
        ({"photometric_interpretation": "RGB", "samples_per_pixel": 3, "bits_allocated": 16, "bits_stored": 16}, JPEGLSLossless, None),
        (
            {"photometric_interpretation": "YBR_FULL_422", "samples_per_pixel": 3, "bits_allocated": 8, "bits_stored": 8},
            JPEGLSLossless,
            "does not encode",
        ),
        (
            {"photometric_interpretation": "YBR_FULL", "samples_per_pixel": 3, "bits_allocated": 16, "bits_stored": 16},
            RLELossless,
            "does not encode",
        ),
        ({"bits_allocated": 32, "bits_stored": 32}, JPEGLSLossless, "does not encode"),
        ({"bits_allocated": 32, "bits_stored": 32}, RLELossless, "does not encode"),
        ({"bits_allocated": 32, "bits_stored": 32}, JPEG2000Lossless, "does not encode"),
        ({"bits_allocated": 32, "bits_stored": 32}, DeflatedExplicitVRLittleEndian, None),
        ({"bits_stored": 1, "bits_allocated": 8}, JPEGLSLossless, "does not encode"),
        ({"float_pixels": True, "bits_allocated": 32, "bits_stored": 32}, JPEG2000Lossless, "floating point"),
        ({}, JPEGBaseline8Bit, "does not produce"),
        ({}, "1.2.3.4.5.6", "does not produce"),
        ({"has_pixel_data": False}, JPEGLSLossless, None),
        ({"transfer_syntax_uid": "1.2.840.10008.1.2.4.100"}, ExplicitVRLittleEndian, "cannot be decoded"),  # MPEG-2 video
        ({"transfer_syntax_uid": "1.2.840.10008.1.2.4.100"}, AS_STORED, None),
        (
            {
                "transfer_syntax_uid": JPEGBaseline8Bit,
                "photometric_interpretation": "YBR_FULL_422",
                "samples_per_pixel": 3,
                "bits_allocated": 8,
                "bits_stored": 8,
            },
            JPEG2000Lossless,
            None,
        ),  # fmt: skip
        (
            {"transfer_syntax_uid": JPEG2000Lossless, "rows": 60000, "columns": 60000, "number_of_frames": 2},
            ExplicitVRLittleEndian,
            "longer than",
        ),
    ],
)
def test_what_can_be_produced_is_decided_per_image(overrides, target, refused):
    reason = unavailable_reason(description(**overrides), target)
    if refused is None:
        assert reason is None
    else:
        assert refused in reason


def test_a_refused_conversion_raises_with_its_reason():
    with pytest.raises(CannotTranscode, match="does not encode"):
        convert(bundled_bytes("rtdose.dcm"), JPEGLSLossless)  # 32-bit dose grid
    ds = dcmread(io.BytesIO(convert(bundled_bytes("rtdose.dcm"), DeflatedExplicitVRLittleEndian)))
    assert np.array_equal(ds.pixel_array, decoded(bundled_bytes("rtdose.dcm")))


@pytest.mark.parametrize("name", ["CT_small.dcm", COMPRESSED["jpeg_baseline"], COMPRESSED["jpeg2000_ct"], "SC_rgb_rle_2frame.dcm"])
def test_the_description_read_from_stored_metadata_is_the_one_of_the_file(name):
    ds = dcmread(io.BytesIO(bundled_bytes(name)))
    from_file = PixelDescription.of_dataset(ds)
    from_index = PixelDescription.of_metadata(str(ds.file_meta.TransferSyntaxUID), metadata_json(ds))
    assert from_index == from_file


def test_uncompressed_frames_of_a_big_endian_multiframe_come_little_endian():
    data = bundled_bytes("rtdose_expb.dcm")  # 15 frames of 32-bit big endian
    ds = dcmread(io.BytesIO(data))
    frames = list(read_frames(io.BytesIO(data), PixelDescription.of_dataset(ds), [15, 2], as_stored=False))
    got = [np.frombuffer(f.data, "<u4").reshape(ds.Rows, ds.Columns) for f in frames]
    assert np.array_equal(got[0], ds.pixel_array[14]) and np.array_equal(got[1], ds.pixel_array[1])
    assert {f.media_type for f in frames} == {"application/octet-stream"}


def test_stored_frames_are_the_encapsulated_frames_and_decoded_frames_the_pixels():
    data = bundled_bytes("SC_rgb_rle_2frame.dcm")
    ds = dcmread(io.BytesIO(data))
    description_ = PixelDescription.of_dataset(ds)
    stored = list(read_frames(io.BytesIO(data), description_, [2, 1], as_stored=True))
    assert [f.data for f in stored] == list(generate_frames(ds.PixelData, number_of_frames=2))[::-1]
    assert {(f.media_type, f.transfer_syntax_uid) for f in stored} == {("image/dicom-rle", RLELossless)}
    native = list(read_frames(io.BytesIO(data), description_, [2], as_stored=False))
    assert native[0].data == ds.pixel_array[1].tobytes()


def test_bulk_data_of_a_big_endian_file_comes_little_endian():
    words = np.arange(0, 2048, dtype=np.uint16) * 31
    ds = make_dataset("MR", rows=16, cols=16)
    ds.add_new(0x60000010, "US", 64)
    ds.add_new(0x60000011, "US", 512)
    ds.add_new(0x60003000, "OW", words.astype(">u2").tobytes())
    ds.PixelData = np.frombuffer(ds.PixelData, "<u2").astype(">u2").tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)

    assert read_bulk_value(io.BytesIO(buffer.getvalue()), 0x60003000) == words.astype("<u2").tobytes()
    assert read_bulk_value(io.BytesIO(buffer.getvalue()), 0x00091001) is None
    little = dcmread(io.BytesIO(convert(buffer.getvalue(), ExplicitVRLittleEndian)))
    assert little[0x60003000].value == words.astype("<u2").tobytes() and little[0x60000010].value == 64


def test_native_ybr_full_422_frames_keep_their_two_samples_a_pixel():
    data = bundled_bytes("SC_ybr_full_422_uncompressed.dcm")
    ds = dcmread(io.BytesIO(data))
    (frame,) = read_frames(io.BytesIO(data), PixelDescription.of_dataset(ds), [1], as_stored=False)
    assert frame.data == ds.PixelData[: ds.Rows * ds.Columns * 2]
