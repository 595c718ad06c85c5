"""Rendering instances: frames to Pillow images or encoded bytes, thumbnails (cached) and the ids that name them."""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterator, Sequence

import numpy as np
from django.core.cache import cache
from django.db.models import F
from PIL import Image

from ..models import Instance, Series, Study
from .geometry import fit, source_region, source_span, square_pixels
from .options import (
    CONTENT_TYPES,
    DEFAULT_QUALITY,
    JPEG,
    PNG_COMPRESS_LEVEL,
    RENDERER_VERSION,
    THUMBNAIL_CACHE_SECONDS,
    THUMBNAIL_SIZE,
    FrameOutOfRange,
    InvalidParameter,
    NotRenderable,
    Viewport,
    Window,
)
from .pipeline import PixelSource, display_values

log = logging.getLogger(__name__)


def render_image(instance: Instance, frame: int = 1, *, window: Window | None = None, viewport: Viewport | None = None) -> Image.Image:
    """One frame (numbered from 1) as a Pillow image in mode L (grayscale) or RGB, ready to place or encode."""
    images = render_images(instance, [frame], window=window, viewport=viewport)
    try:
        return next(images)[1]
    finally:
        images.close()


def render_images(
    instance: Instance, frames: Sequence[int], *, window: Window | None = None, viewport: Viewport | None = None
) -> Iterator[tuple[int, Image.Image]]:
    """(frame, image) for each of frames, in the order given, opening the stored file once.

    The frames are checked here, before the first one is decoded; decoding errors arise while iterating.
    """
    check_rendering(instance, frames, viewport=viewport)
    return _rendered_images(instance, list(frames), window, viewport)


def _rendered_images(instance: Instance, frames: list[int], window: Window | None, viewport: Viewport | None):
    with PixelSource(instance) as source:
        for frame in frames:
            array, ds = source.frame(frame - 1)
            image = Image.fromarray(np.ascontiguousarray(display_values(array, ds, frame - 1, window)))
            # PS3.18 8.3.5: the source region is taken after the presentation transformations, then the viewport.
            image = square_pixels(source_region(image, viewport), ds)
            yield frame, fit(image, viewport.width, viewport.height, enlarge=True) if viewport else image


def render_frame(
    instance: Instance,
    frame: int = 1,
    *,
    window: Window | None = None,
    viewport: Viewport | None = None,
    fmt: str = JPEG,
    quality: int = DEFAULT_QUALITY,
) -> tuple[bytes, str]:
    """One frame encoded for display: (bytes, content type). fmt is "jpeg" or "png"; quality (1-100) is JPEG's."""
    _check_encoding(fmt, quality)
    return encode(render_image(instance, frame, window=window, viewport=viewport), fmt=fmt, quality=quality), CONTENT_TYPES[fmt]


def render_frames(
    instance: Instance,
    frames: Sequence[int],
    *,
    window: Window | None = None,
    viewport: Viewport | None = None,
    fmt: str = JPEG,
    quality: int = DEFAULT_QUALITY,
) -> Iterator[tuple[int, bytes]]:
    """(frame, encoded bytes) for each of frames, for answers with one part per frame; parameters are checked at once."""
    _check_encoding(fmt, quality)
    images = render_images(instance, frames, window=window, viewport=viewport)
    return ((frame, encode(image, fmt=fmt, quality=quality)) for frame, image in images)


def thumbnail(
    instance: Instance,
    frame: int | None = None,
    *,
    viewport: Viewport | None = None,
    fmt: str = JPEG,
    quality: int = DEFAULT_QUALITY,
) -> tuple[bytes, str]:
    """A small rendering with the image's own VOI, cached by the instance's bytes (SHA-256) and the parameters.

    Without a frame, the middle frame of a multi-frame instance stands for it. Without a viewport the image fits
    THUMBNAIL_SIZE pixels and is never enlarged.
    """
    _check_encoding(fmt, quality)
    frame = representative_frame(instance) if frame is None else frame
    check_rendering(instance, [frame], viewport=viewport)
    key = "medarchive:thumbnail:" + rendition_id(
        kind="thumbnail", sha256s=[instance.sha256], frames=[frame], viewport=viewport, fmt=fmt, quality=quality
    )
    data = _cached(key)
    if data is None:
        image = render_image(instance, frame, viewport=viewport)
        if viewport is None:
            image = fit(image, THUMBNAIL_SIZE, THUMBNAIL_SIZE, enlarge=False)
        data = encode(image, fmt=fmt, quality=quality)
        _cache(key, data)
    return data, CONTENT_TYPES[fmt]


# The cache only saves work: when it fails (Redis down, a full disk) thumbnails are rendered each time, not refused.


def _cached(key: str) -> bytes | None:
    try:
        return cache.get(key)
    except Exception as error:
        log.warning("thumbnail cache unavailable: %s", error)
        return None


def _cache(key: str, data: bytes) -> None:
    try:
        cache.set(key, data, THUMBNAIL_CACHE_SECONDS)
    except Exception as error:
        log.warning("thumbnail cache unavailable: %s", error)


def thumbnail_for_series(series: Series, **options) -> tuple[bytes, str]:
    """The thumbnail of the series' middle image (options as for thumbnail())."""
    instance = representative_instance(series)
    if instance is None:
        raise NotRenderable("This series has no images to show (it holds only reports, documents or other non-image objects).")
    return thumbnail(instance, **options)


def thumbnail_for_study(study: Study, **options) -> tuple[bytes, str]:
    """The thumbnail of the study's first series with images (by series number), from its middle image."""
    instance = representative_instance(study)
    if instance is None:
        raise NotRenderable("This study has no images to show (it holds only reports, documents or other non-image objects).")
    return thumbnail(instance, **options)


def representative_instance(of: Study | Series) -> Instance | None:
    """The middle image (by instance number) of a series, or of the study's first series that has images."""
    images = Instance.objects.filter(rows__isnull=False, columns__isnull=False)
    if isinstance(of, Study):
        first_series = (
            Series.objects.filter(study=of, instances__rows__isnull=False)
            .order_by(F("series_number").asc(nulls_last=True), "pk")
            .values_list("pk", flat=True)
            .first()
        )
        if first_series is None:
            return None
        images = images.filter(series_id=first_series)
    else:
        images = images.filter(series=of)
    count = images.count()
    if not count:
        return None
    return images.order_by(F("instance_number").asc(nulls_last=True), "pk")[(count - 1) // 2]


def representative_frame(instance: Instance) -> int:
    return (instance.number_of_frames + 1) // 2


def renderable(instance: Instance) -> bool:
    """Whether the index says the instance has an image (rows and columns); reports and documents have none."""
    return bool(instance.rows and instance.columns)


def rendition_id(
    *,
    kind: str,
    sha256s: Sequence[str],
    frames: Sequence[int] | None = None,
    window: Window | None = None,
    viewport: Viewport | None = None,
    fmt: str = JPEG,
    quality: int = DEFAULT_QUALITY,
) -> str:
    """A digest naming exactly one rendering: the stored bytes it starts from and every parameter that changes it.

    The same for every institution that stores the same bytes, so it serves as ETag and cache key; callers check
    visibility before they use it.
    """
    parts = [
        RENDERER_VERSION,
        kind,
        ",".join(sha256s),
        ",".join(map(str, frames or [])),
        window.key() if window else "",
        viewport.key() if viewport else "",
        fmt,
        str(quality if fmt == JPEG else ""),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:40]


def encode(image: Image.Image, *, fmt: str = JPEG, quality: int = DEFAULT_QUALITY) -> bytes:
    buffer = io.BytesIO()
    if fmt == JPEG:
        image.save(buffer, "JPEG", quality=quality)
    else:
        image.save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _check_encoding(fmt: str, quality: int) -> None:
    if fmt not in CONTENT_TYPES:
        raise InvalidParameter("accept", f"Images are rendered as JPEG or PNG, not {fmt!r}.")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise InvalidParameter("quality", "The quality must be a whole number from 1 to 100.")


def check_rendering(instance: Instance, frames: Sequence[int], *, viewport: Viewport | None = None) -> None:
    """Refuse, before any decoding, what the index already shows cannot be rendered: no image, frames that do not
    exist, a viewport source region outside the image."""
    if not renderable(instance):
        raise NotRenderable("This instance has no image to render (it is a report, a document or another non-image object).")
    if not frames:
        raise InvalidParameter("frame", "Name at least one frame.")
    for frame in frames:
        if not 1 <= frame <= instance.number_of_frames:
            raise FrameOutOfRange(frame, instance.number_of_frames)
    if viewport is not None:
        source_span(viewport.sx, viewport.sw, instance.columns, "sx")
        source_span(viewport.sy, viewport.sh, instance.rows, "sy")
