"""Geometry of a rendering: square pixels, the source region of a viewport, fitting (PS3.18 8.3.5.1.3)."""

from __future__ import annotations

from PIL import Image
from pydicom.dataset import Dataset

from .options import MAX_VIEWPORT_SIDE, InvalidParameter, Viewport


def square_pixels(image: Image.Image, ds: Dataset) -> Image.Image:
    """Stretch images with non-square pixels (Pixel Aspect Ratio, or unequal Pixel Spacing) as a viewer shows them."""
    ratio = None
    aspect = ds.get("PixelAspectRatio")
    spacing = ds.get("PixelSpacing")
    try:
        if aspect and len(aspect) == 2 and float(aspect[1]):
            ratio = float(aspect[0]) / float(aspect[1])  # vertical / horizontal size of a pixel
        elif spacing and len(spacing) == 2 and float(spacing[1]):
            ratio = float(spacing[0]) / float(spacing[1])  # row spacing (vertical) / column spacing (horizontal)
    except (TypeError, ValueError):
        ratio = None
    if ratio is None or ratio <= 0 or abs(ratio - 1) < 0.01:
        return image
    width, height = image.size
    # Enlarge the side whose pixels are longer, so no acquired detail is lost.
    size = (width, round(height * ratio)) if ratio > 1 else (round(width / ratio), height)
    return image.resize((min(size[0], MAX_VIEWPORT_SIDE), min(size[1], MAX_VIEWPORT_SIDE)), Image.Resampling.BICUBIC)


def source_region(image: Image.Image, viewport: Viewport | None) -> Image.Image:
    """The viewport's source region: sx, sy its top left corner, |sw| x |sh| its size (clipped to the image, the rest of
    the image when absent), flipped horizontally where sw is negative and vertically where sh is."""
    if viewport is None:
        return image
    width, height = image.size
    x0, x1 = source_span(viewport.sx, viewport.sw, width, "sx")
    y0, y1 = source_span(viewport.sy, viewport.sh, height, "sy")
    if (x0, y0, x1, y1) != (0, 0, width, height):
        image = image.crop((x0, y0, x1, y1))
    if viewport.sw is not None and viewport.sw < 0:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if viewport.sh is not None and viewport.sh < 0:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return image


def source_span(start: int, length: int | None, size: int, start_name: str) -> tuple[int, int]:
    """[first, last) pixels of one side of the source region."""
    if start >= size:
        raise InvalidParameter(
            "viewport", f"The viewport's source region starts outside the image ({start_name}={start}; that side has {size} pixels)."
        )
    return start, size if length is None else min(size, start + abs(length))


def fit(image: Image.Image, width: int | None, height: int | None, *, enlarge: bool) -> Image.Image:
    """Scale to fit width x height (either may be None) keeping the aspect ratio."""
    source_width, source_height = image.size
    scales = [s for s in ((width / source_width) if width else None, (height / source_height) if height else None) if s]
    scale = min(scales)
    if scale >= 1 and not enlarge:
        return image
    size = (max(1, round(source_width * scale)), max(1, round(source_height * scale)))
    if size == image.size:
        return image
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
    return image.resize(size, resample, reducing_gap=3.0 if scale < 1 else None)
