"""Decoding one frame and turning it into 8-bit display values (PS3.4 Annex N): the grayscale and colour pipelines."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, pixel_array
from pydicom.uid import DeflatedExplicitVRLittleEndian

from ..models import Instance
from ..storage import open_instance
from .options import LINEAR, LINEAR_EXACT, SIGMOID, InvalidParameter, NotRenderable, Window

log = logging.getLogger(__name__)

# Read beside group 0028 (which pixel_array always returns): the functional groups of enhanced multi-frame objects.
SHARED_FUNCTIONAL_GROUPS = 0x52009229
PER_FRAME_FUNCTIONAL_GROUPS = 0x52009230


class PixelSource:
    """The stored file of one instance, open for decoding frames one at a time (only the frames asked for are decoded)."""

    def __init__(self, instance: Instance):
        self.instance = instance
        self.file = None
        self.dataset: Dataset | None = None  # a deflated data set, read whole
        self.header: Dataset | None = None  # group 0028 and the functional groups, read with the first frame

    def __enter__(self):
        try:
            self.file = open_instance(self.instance.storage_name)
        except FileNotFoundError:
            # The index points at bytes the storage no longer has: the archive's fault, never the caller's.
            log.error("stored file of instance %s is missing: %s", self.instance.pk, self.instance.storage_name)
            raise
        if self.instance.transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
            # A deflated data set must be inflated as a whole before its pixel data can even be found.
            self.dataset = dcmread(self.file)
        return self

    def __exit__(self, *exc):
        self.file.close()

    def frame(self, index: int) -> tuple[np.ndarray, Dataset]:
        """(decoded frame, data set with group 0028 and the functional groups); YBR is converted to RGB."""
        try:
            if self.dataset is not None and hasattr(self.dataset, "PixelData"):
                return pixel_array(self.dataset, index=index), self.dataset
            if self.header is None:
                header = Dataset()
                tags = [SHARED_FUNCTIONAL_GROUPS, PER_FRAME_FUNCTIONAL_GROUPS]
                array = pixel_array(self.file, index=index, ds_out=header, specific_tags=tags)
                self.header = header
                return array, header
            return pixel_array(self.file, index=index), self.header
        except NotImplementedError as error:
            raise NotRenderable(f"The pixel data of this instance cannot be decoded here: {error}") from None
        except Exception as error:  # a decoder's own exception type: corrupt or truncated pixel data
            log.warning("could not decode frame %s of instance %s: %s", index + 1, self.instance.pk, error)
            raise NotRenderable(f"The pixel data of this instance could not be decoded ({error}).") from None


# --- The grayscale and colour pipelines ------------------------------------------------------------------------------


def display_values(array: np.ndarray, ds: Dataset, index: int, window: Window | None) -> np.ndarray:
    """uint8 rows x columns (grayscale) or rows x columns x 3 (RGB) display values of one decoded frame."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(array, ds)[..., :3]  # an alpha palette, if any, is not shown
        return (rgb >> 8).astype(np.uint8) if rgb.dtype != np.uint8 else rgb
    if array.ndim == 3:
        # RGB, or YBR that pydicom has already converted to RGB; colour images are not windowed.
        if array.dtype == np.uint8:
            return array
        bits = int(ds.get("BitsStored") or array.dtype.itemsize * 8)
        return (np.clip(array, 0, 2**bits - 1) >> max(bits - 8, 0)).astype(np.uint8)
    values = _grayscale(array, _frame_attributes(ds, index), window)
    return 255 - values if photometric == "MONOCHROME1" else values


def _frame_attributes(ds: Dataset, index: int) -> Dataset:
    """The Modality LUT and VOI attributes that apply to one frame: top level, overridden by the shared, then by this
    frame's functional groups (Pixel Value Transformation, Frame VOI LUT; PS3.3 C.7.6.16.2.9-10)."""
    attrs = Dataset()
    attrs.file_meta = ds.file_meta if hasattr(ds, "file_meta") else Dataset()
    keywords = (
        "RescaleSlope",
        "RescaleIntercept",
        "ModalityLUTSequence",
        "WindowCenter",
        "WindowWidth",
        "VOILUTFunction",
        "VOILUTSequence",
        "BitsStored",
        "PixelRepresentation",
        "PhotometricInterpretation",
    )
    for keyword in keywords:
        if keyword in ds:
            attrs[keyword] = ds[keyword]
    groups = []
    if ds.get("SharedFunctionalGroupsSequence"):
        groups.append(ds.SharedFunctionalGroupsSequence[0])
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and index < len(per_frame):
        groups.append(per_frame[index])
    for group in groups:
        for sequence, members in (
            ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept")),
            ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth", "VOILUTFunction")),
        ):
            items = group.get(sequence)
            if items:
                for keyword in members:
                    if keyword in items[0]:
                        attrs[keyword] = items[0][keyword]
    return attrs


def _grayscale(array: np.ndarray, attrs: Dataset, window: Window | None) -> np.ndarray:
    """Stored values to uint8 display values through the Modality LUT and the VOI.

    The pipeline is a function of the stored value alone (the frame's range matters only for the minimum-to-maximum
    VOI), so for 8- and 16-bit data it is computed once for every possible value and applied as one table lookup.
    """
    if array.dtype.kind in "iu" and array.dtype.itemsize <= 2:
        unsigned = np.dtype(f"u{array.dtype.itemsize}")
        domain = np.arange(2 ** (8 * array.dtype.itemsize), dtype=unsigned).view(array.dtype)
        mapped = apply_modality_lut(domain, attrs)

        def value_range() -> tuple[float, float]:
            if attrs.get("ModalityLUTSequence"):  # a table need not be monotonic: look at every value present
                present = mapped[np.bincount(array.view(unsigned).ravel(), minlength=domain.size) > 0]
            else:  # rescaling is linear: the extremes come from the extremes
                present = apply_modality_lut(np.array([array.min(), array.max()], dtype=array.dtype), attrs)
            return float(present.min()), float(present.max())

        return np.take(_voi(mapped, attrs, window, value_range), array.view(unsigned))
    values = apply_modality_lut(array, attrs)
    return _voi(values, attrs, window, lambda: (float(values.min()), float(values.max())))


def _voi(values: np.ndarray, attrs: Dataset, window: Window | None, value_range: Callable[[], tuple[float, float]]) -> np.ndarray:
    """Modality LUT output to uint8 (PS3.3 C.11.2): the window asked for, the image's own, its VOI LUT, or the frame's
    minimum to maximum (value_range)."""
    if window is None:
        window = _own_window(attrs)
    if window is None and attrs.get("VOILUTSequence"):
        table = _voi_lut(values, attrs)
        if table is not None:
            return table
    if window is None:
        low, high = value_range()
        if high <= low:
            return np.zeros(values.shape, dtype=np.uint8)
        window = Window(center=(low + high) / 2, width=high - low, function=LINEAR_EXACT)
    return np.rint(window_values(values, window)).astype(np.uint8)


def window_values(values: np.ndarray, window: Window) -> np.ndarray:
    """The VOI LUT Functions of PS3.3 C.11.2.1.2-3 with an output range of 0 to 255, as float64."""
    values = values.astype(np.float64, copy=False)
    center, width = window.center, window.width
    if window.function == SIGMOID:
        with np.errstate(over="ignore"):  # far below the center exp() overflows to inf, and 255 / inf is the 0 wanted
            return 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if window.function == LINEAR_EXACT:
        return np.clip(((values - center) / width + 0.5) * 255.0, 0.0, 255.0)
    if width == 1:  # the linear function degenerates to a threshold at center - 0.5
        return np.where(values <= center - 0.5, 0.0, 255.0)
    return np.clip(((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0, 0.0, 255.0)


def _own_window(attrs: Dataset) -> Window | None:
    """The image's first window (Window Center/Width and VOI LUT Function), or None when absent or unusable."""
    center, width = _first_value(attrs.get("WindowCenter")), _first_value(attrs.get("WindowWidth"))
    if center is None or width is None:
        return None
    try:
        return Window(center=center, width=width, function=str(attrs.get("VOILUTFunction") or LINEAR))
    except InvalidParameter:
        log.info("ignoring the image's window %s/%s (%s)", center, width, attrs.get("VOILUTFunction"))
        return None


def _first_value(value) -> float | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str | bytes) and hasattr(value, "__getitem__"):
        if not len(value):
            return None
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _voi_lut(values: np.ndarray, attrs: Dataset) -> np.ndarray | None:
    """The first VOI LUT Sequence item applied, its output scaled from the LUT's bit depth to 8 bits."""
    try:
        item = attrs.VOILUTSequence[0]
        bits = int(item.LUTDescriptor[2])
        output = apply_voi(np.rint(values).astype(np.int64), attrs, index=0)
    except Exception as error:  # a malformed LUT: fall back as if there were none, as viewers do
        log.info("ignoring a VOI LUT Sequence that cannot be applied: %s", error)
        return None
    return np.rint(output.astype(np.float64) * (255.0 / (2**bits - 1))).astype(np.uint8)
