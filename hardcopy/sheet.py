"""A film sheet composed with WeasyPrint: the page at the film's physical size, each image at the printer's resolution.

Used alike by the server (PDF download, preview) and by the print agent on the device side, which fetches the rendered
images over HTTP and composes the same sheet. Images are placed as lossless PNG (grayscale stays one channel); the
annotations and imaging conditions are text in the PDF.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from django.template.loader import render_to_string
from PIL import Image, ImageDraw
from weasyprint import HTML
from weasyprint.urls import URLFetcher, URLFetcherResponse

from . import films

MARGIN_IN = 0.25
GAP_IN = 0.08
TILE_SCHEME = "medarchive-tile:"
RESAMPLING = {
    "REPLICATE": Image.Resampling.NEAREST,
    "NONE": Image.Resampling.NEAREST,
    "BILINEAR": Image.Resampling.BILINEAR,
    "CUBIC": Image.Resampling.BICUBIC,
}
RULER_MM = (10, 20, 50, 100, 200, 500)


@dataclass
class Tile:
    """One image on the sheet, rendered after the VOI (8-bit, mode L or RGB), and its annotations (plain JSON)."""

    image: Image.Image
    annotations: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Box:
    x: float  # inches from the page's left and top edges
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Geometry:
    page_width: float
    page_height: float
    cells: list[Box]
    images: list[Box]  # the area each tile's image is fitted into
    font_pt: float
    top_lines: int
    bottom_lines: int


def geometry(fmt: dict) -> Geometry:
    """Where each tile goes on the sheet, in inches: rows top to bottom, columns left to right."""
    width, height = films.film_inches(fmt["film_size"], fmt["orientation"])
    layout = films.check_layout(int(fmt["rows"]), int(fmt["columns"]))
    cell_w = (width - 2 * MARGIN_IN - (layout.columns - 1) * GAP_IN) / layout.columns
    cell_h = (height - 2 * MARGIN_IN - (layout.rows - 1) * GAP_IN) / layout.rows
    top = int(fmt.get("show_patient", True)) + int(fmt.get("show_study", True)) + int(fmt.get("show_institution", True))
    # The imaging conditions get two lines.
    bottom = int(fmt.get("show_numbers", True)) + 2 * int(fmt.get("show_conditions", True)) + int(fmt.get("show_ruler", True))
    font_pt = max(4.0, min(8.0, cell_h * 72 / 30, cell_w * 72 / 24))
    line = font_pt * 1.3 / 72
    cells, images = [], []
    for index in range(layout.tiles):
        row, column = divmod(index, layout.columns)
        cell = Box(MARGIN_IN + column * (cell_w + GAP_IN), MARGIN_IN + row * (cell_h + GAP_IN), cell_w, cell_h)
        cells.append(cell)
        images.append(Box(cell.x, cell.y + top * line, cell.width, cell.height - (top + bottom) * line))
    return Geometry(width, height, cells, images, font_pt, top, bottom)


def fitted(image: Image.Image, box: Box, dpi: int, magnification: str = "CUBIC") -> tuple[Image.Image, Box]:
    """The image resampled to the printer's resolution to fill box with its aspect kept, and where it lies (centred)."""
    scale = min(box.width * dpi / image.width, box.height * dpi / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if size != image.size:
        image = image.resize(size, RESAMPLING.get(magnification, Image.Resampling.BICUBIC))
    width, height = size[0] / dpi, size[1] / dpi
    return image, Box(box.x + (box.width - width) / 2, box.y + (box.height - height) / 2, width, height)


def ruler(annotations: dict, image_width_px: int, shown_width_in: float) -> dict | None:
    """A bar of a round length in the patient (from PixelSpacing), scaled to the film."""
    spacing = annotations.get("pixel_spacing_mm")
    if not spacing or not image_width_px:
        return None
    field_mm = spacing * image_width_px
    fitting = [mm for mm in RULER_MM if mm <= 0.4 * field_mm]
    if not fitting:
        return None
    mm = fitting[-1]
    label = f"{mm // 10} cm" if mm % 10 == 0 else f"{mm} mm"
    return {"label": label, "width_in": mm * shown_width_in / field_mm}


class _TileFetcher(URLFetcher):
    """Serves the sheet's own images to WeasyPrint and nothing else: a sheet never reaches the network."""

    def __init__(self, images: dict[str, bytes]):
        super().__init__()
        self.images = images

    def fetch(self, url, headers=None):
        if url in self.images:
            return URLFetcherResponse(url, body=self.images[url], headers={"Content-Type": "image/png"})
        raise ValueError(f"The sheet refers to {url!r}, which is not one of its images.")


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    # Lossless whatever the level; 1 is the fastest to write.
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def compose_pdf(fmt: dict, tiles: list[Tile | None]) -> bytes:
    """The sheet as a one-page PDF (copies are the printer's business). Empty tiles (None or missing) stay blank."""
    shape = geometry(fmt)
    if len(tiles) > len(shape.cells):
        raise ValueError(f"{len(tiles)} images do not fit a {fmt['rows']}x{fmt['columns']} sheet of {len(shape.cells)} tiles.")
    dpi = int(fmt.get("dpi") or 300)
    images: dict[str, bytes] = {}
    placed = []
    for index, tile in enumerate(tiles):
        if tile is None:
            continue
        image, box = fitted(tile.image, shape.images[index], dpi, fmt.get("magnification_type", "CUBIC"))
        url = f"{TILE_SCHEME}{index}"
        images[url] = _png(image)
        placed.append(
            {"url": url, "box": box, "lines": _lines(fmt, shape, index, tile, box), "markers": _markers(fmt, tile, box, shape.font_pt)}
        )
    dark = fmt.get("border_density", "BLACK") == "BLACK"
    html = render_to_string(
        "hardcopy/sheet.html",
        {
            "fmt": fmt,
            "geometry": shape,
            "placed": placed,
            "background": "#000" if dark else "#fff",
            "ink": "#fff" if dark else "#000",
            "line_in": shape.font_pt * 1.3 / 72,
        },
    )
    return HTML(string=html, url_fetcher=_TileFetcher(images), base_url="medarchive-tile:/").write_pdf()


def _lines(fmt: dict, shape: Geometry, index: int, tile: Tile, box: Box) -> list[dict]:
    """The annotation lines above and below a tile's image, each with its place on the sheet."""
    notes, cell, image_area = tile.annotations, shape.cells[index], shape.images[index]
    line = shape.font_pt * 1.3 / 72
    top, bottom = [], []
    if fmt.get("show_patient", True):
        born = f" · born {notes['birth_date']}" if notes.get("birth_date") else ""
        top.append({"text": f"{notes.get('patient_name', '')} · ID {notes.get('patient_id', '')}{born}"})
    if fmt.get("show_study", True):
        top.append({"text": f"{notes.get('study_date', '')} {notes.get('study_description', '')}".strip()})
    if fmt.get("show_institution", True):
        top.append({"text": notes.get("institution", "")})
    if fmt.get("show_numbers", True):
        frame = f" fr {notes['frame']}" if notes.get("number_of_frames", 1) > 1 else ""
        series = notes.get("series_description", "")
        bottom.append({"text": f"Se {notes.get('series_number', '')} Im {notes.get('instance_number', '')}{frame} {series}".strip()})
    if fmt.get("show_conditions", True):
        conditions = " · ".join(f"{c['label']} {c['display']}".strip() for c in notes.get("conditions", []))
        bottom.append({"text": conditions, "lines": 2})
    if fmt.get("show_ruler", True):
        bottom.append({"ruler": ruler(notes, tile.image.width, box.width)})
    y = cell.y
    for item in top:
        item.update(x=cell.x, y=y, width=cell.width, height=line)
        y += line
    y = image_area.y + image_area.height
    for item in bottom:
        lines = item.get("lines", 1)
        item.update(x=cell.x, y=y, width=cell.width, height=lines * line, wrap=lines > 1)
        y += lines * line
    return top + bottom


def _markers(fmt: dict, tile: Tile, box: Box, font_pt: float) -> list[dict]:
    """Orientation letters at the middle of each edge of the image, inside it."""
    markers = tile.annotations.get("markers") or {}
    if not fmt.get("show_orientation", True) or not markers:
        return []
    pad, size = 0.03, font_pt / 72
    middle_x, middle_y = box.x + box.width / 2 - size / 2, box.y + box.height / 2 - size / 2
    places = {
        "left": (box.x + pad, middle_y),
        "right": (box.x + box.width - pad - size * 1.5, middle_y),
        "top": (middle_x, box.y + pad),
        "bottom": (middle_x, box.y + box.height - pad - size * 1.2),
    }
    return [{"text": markers[side], "style": f"left: {x:.4f}in; top: {y:.4f}in"} for side, (x, y) in places.items() if markers.get(side)]


def compose_preview(fmt: dict, tiles: list[Tile | None], dpi: int = 30) -> bytes:
    """A small PNG of the sheet's layout and images for the portal (the PDF carries the annotations)."""
    shape = geometry(fmt)
    dark = fmt.get("border_density", "BLACK") == "BLACK"
    sheet = Image.new("L", (round(shape.page_width * dpi), round(shape.page_height * dpi)), 0 if dark else 255)
    draw = ImageDraw.Draw(sheet)
    for index, cell in enumerate(shape.cells):
        draw.rectangle([cell.x * dpi, cell.y * dpi, (cell.x + cell.width) * dpi, (cell.y + cell.height) * dpi], outline=80 if dark else 180)
        tile = tiles[index] if index < len(tiles) else None
        if tile is None:
            continue
        image, box = fitted(tile.image.convert("L"), shape.images[index], dpi)
        sheet.paste(image, (round(box.x * dpi), round(box.y * dpi)))
    return _png(sheet)
