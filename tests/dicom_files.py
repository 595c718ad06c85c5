"""Real DICOM test files: pydicom's bundled ones, and valid files synthesized for what it lacks.

Synthesized images have realistic content (a phantom-like disc with structure and noise), proper
UIDs and the per-modality acquisition parameters, so ingest and delivery see what a scanner sends.
"""

from __future__ import annotations

import io

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import RLELossless

from images.synthetic import (  # noqa: F401 (re-exported: the synthesizer is shared with the demo data)
    SOP_CLASS,
    make_dataset,
    phantom,
    series,
    synth_bytes,
    to_bytes,
)

# Bundled with pydicom's wheel (no download): modality -> file name.
BUNDLED = {
    "CT": "CT_small.dcm",
    "MR": "MR_small.dcm",
    "US": "examples_rgb_color.dcm",
    "CR": "6154",  # a dicomdir test CR image (found by name below)
}
COMPRESSED = {
    "jpeg2000_lossless": "MR_small_jp2klossless.dcm",
    "jpeg_ls_lossless": "MR_small_jpeg_ls_lossless.dcm",
    "rle": "MR_small_RLE.dcm",
    "jpeg_baseline": "examples_ybr_color.dcm",  # multi-frame US, 30 frames
    "jpeg2000_ct": "693_J2KI.dcm",
    "big_endian": "MR_small_bigendian.dcm",
}
TRUNCATED = "MR_truncated.dcm"


def bundled_path(name: str) -> str:
    if name.isdigit():
        from pydicom.data import get_testdata_files

        matches = [p for p in get_testdata_files() if p.endswith("/" + name)]
        if not matches:
            raise FileNotFoundError(name)
        return matches[0]
    path = get_testdata_file(name)
    if path is None:
        raise FileNotFoundError(name)
    return path


def bundled_bytes(name: str) -> bytes:
    with open(bundled_path(name), "rb") as fh:
        return fh.read()


def rle_compressed(ds: Dataset) -> Dataset:
    """The same image, RLE Lossless encoded with pydicom's own encoder."""
    ds = dcmread(io.BytesIO(to_bytes(ds)))
    ds.compress(RLELossless)
    return ds
