"""Rendering stored images for display: one frame through the PS3.4 Annex N pipeline to an 8-bit JPEG or PNG.

No HTTP here. DICOMweb rendered resources and thumbnails, WADO-URI and hard-copy film sheets call it with an instance
they obtained through the scoped selectors (images/selectors.py); this package does not check visibility.

Grayscale: decoded stored values -> Modality LUT (Rescale Slope/Intercept, Modality LUT Sequence, or the Pixel Value
Transformation of enhanced multi-frame objects) -> VOI (a window asked for, else the image's first window, else its VOI
LUT Sequence, else the frame's minimum to maximum) -> MONOCHROME1 inverted -> 8 bits. Colour: palette colour applied,
YBR converted to RGB; colour images ignore windowing. Then the source region, square pixels and the viewport.
"""

from .options import (
    CONTENT_TYPES,
    DEFAULT_QUALITY,
    JPEG,
    LINEAR,
    LINEAR_EXACT,
    MAX_VIEWPORT_SIDE,
    PNG,
    SIGMOID,
    THUMBNAIL_SIZE,
    FrameOutOfRange,
    InvalidParameter,
    NotRenderable,
    RenderingError,
    Viewport,
    Window,
)
from .render import (
    check_rendering,
    encode,
    render_frame,
    render_frames,
    render_image,
    render_images,
    renderable,
    rendition_id,
    representative_frame,
    representative_instance,
    thumbnail,
    thumbnail_for_series,
    thumbnail_for_study,
)

__all__ = [
    "CONTENT_TYPES",
    "DEFAULT_QUALITY",
    "JPEG",
    "LINEAR",
    "LINEAR_EXACT",
    "MAX_VIEWPORT_SIDE",
    "PNG",
    "SIGMOID",
    "THUMBNAIL_SIZE",
    "FrameOutOfRange",
    "InvalidParameter",
    "NotRenderable",
    "RenderingError",
    "Viewport",
    "Window",
    "check_rendering",
    "encode",
    "render_frame",
    "render_frames",
    "render_image",
    "render_images",
    "renderable",
    "rendition_id",
    "representative_frame",
    "representative_instance",
    "thumbnail",
    "thumbnail_for_series",
    "thumbnail_for_study",
]
