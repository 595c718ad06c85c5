"""What a rendering is asked for (window, viewport, output) and the errors it can end in; shared by every caller."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Part of every ETag and cache key: bump it when the same request would render different bytes (new pipeline, encoder).
RENDERER_VERSION = "1"

JPEG, PNG = "jpeg", "png"
CONTENT_TYPES = {JPEG: "image/jpeg", PNG: "image/png"}
DEFAULT_QUALITY = 90
# PNG is lossless at every level; 3 is about four times faster to write than zlib's default 6, a few percent larger.
PNG_COMPRESS_LEVEL = 3

THUMBNAIL_SIZE = 128  # pixels, the longer side; smaller images are not enlarged
THUMBNAIL_CACHE_SECONDS = 7 * 24 * 3600
# The largest side of a viewport: bounds the memory one request can ask for (4096 x 4096 x 3 bytes = 48 MiB).
MAX_VIEWPORT_SIDE = 4096

LINEAR, LINEAR_EXACT, SIGMOID = "linear", "linear-exact", "sigmoid"
# PS3.18 8.3.5.1.4 names the functions in lower case with a hyphen; VOI LUT Function (0028,1056) uses upper case and an
# underscore. Both spellings are accepted.
WINDOW_FUNCTIONS = {LINEAR: LINEAR, LINEAR_EXACT: LINEAR_EXACT, SIGMOID: SIGMOID, "linear_exact": LINEAR_EXACT}


class RenderingError(Exception):
    """This rendering cannot be made; `reason` is written for the person who asked."""

    code = "not_renderable"

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class InvalidParameter(RenderingError):
    """A rendering parameter (window, viewport, quality, frame) is malformed or does not fit this image."""

    code = "invalid_parameter"

    def __init__(self, parameter: str, reason: str):
        super().__init__(reason)
        self.parameter = parameter


class FrameOutOfRange(InvalidParameter):
    code = "frame_out_of_range"

    def __init__(self, frame: int, number_of_frames: int):
        super().__init__("frame", f"Frame {frame} does not exist: this instance has {number_of_frames} frame(s), numbered from 1.")


class NotRenderable(RenderingError):
    """The instance has no image to render (a report, a document) or its pixel data cannot be decoded here."""


@dataclass(frozen=True)
class Window:
    """A VOI window in the units of the Modality LUT output (Hounsfield units for CT), PS3.3 C.11.2.1.2."""

    center: float
    width: float
    function: str = LINEAR

    def __post_init__(self):
        function = WINDOW_FUNCTIONS.get(str(self.function).strip().lower())
        if function is None:
            raise InvalidParameter("window", f"The window function must be linear, linear-exact or sigmoid, not {self.function!r}.")
        object.__setattr__(self, "function", function)
        if not (np.isfinite(self.center) and np.isfinite(self.width)):
            raise InvalidParameter("window", "The window center and width must be finite numbers.")
        if function == LINEAR and self.width < 1:
            raise InvalidParameter("window", "A linear window needs a width of at least 1 (PS3.3 C.11.2.1.2.1).")
        if self.width <= 0:
            raise InvalidParameter("window", f"A {function} window needs a width greater than 0.")

    def key(self) -> str:
        return f"{self.center!r},{self.width!r},{self.function}"


@dataclass(frozen=True)
class Viewport:
    """Where the rendering goes (PS3.18 8.3.5.1.3): the source region - top left corner sx, sy and size |sw| x |sh| in
    image pixels, flipped where sw or sh is negative, the rest of the image where absent - scaled to fit width x height
    with its aspect ratio kept. Width or height may be None (WADO-URI's rows or columns alone): the other one decides."""

    width: int | None
    height: int | None
    sx: int = 0
    sy: int = 0
    sw: int | None = None
    sh: int | None = None

    def __post_init__(self):
        if self.width is None and self.height is None:
            raise InvalidParameter("viewport", "A viewport needs a width or a height.")
        for side in (self.width, self.height):
            if side is not None and not 1 <= side <= MAX_VIEWPORT_SIDE:
                raise InvalidParameter("viewport", f"The viewport width and height must be from 1 to {MAX_VIEWPORT_SIDE} pixels.")
        if self.sx < 0 or self.sy < 0:
            raise InvalidParameter("viewport", "The viewport's source region must start inside the image (sx and sy of 0 or more).")
        if self.sw == 0 or self.sh == 0:
            raise InvalidParameter("viewport", "The viewport's source region must not be empty (sw and sh other than 0).")

    def key(self) -> str:
        return ",".join("" if v is None else str(v) for v in (self.width, self.height, self.sx, self.sy, self.sw, self.sh))
