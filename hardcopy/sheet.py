"""A film sheet composed with WeasyPrint: the page at the film's physical size, each image at the printer's resolution.

Used alike by the server (PDF download, preview) and by the print agent on the device side, which fetches the rendered
images over HTTP and composes the same sheet. Images are placed as lossless PNG (grayscale stays one channel); the
annotations and imaging conditions are text in the PDF.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field

from django.template.loader import render_to_string
from PIL import Image, ImageDraw
from weasyprint import HTML
from weasyprint.images import RasterImage
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
# PNG is lossless at every level; 1 is the fastest to write, and its rows go into the PDF as they are (see _PlacedPng).
PNG_COMPRESS_LEVEL = 1
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Tile:
    """One image on the sheet, rendered after the VOI (8-bit, mode L or RGB), and its annotations (plain JSON).

    png holds the image's PNG bytes when it arrived encoded (the print agent's tiles, already at the printer's
    resolution): placed in the PDF as they are, without decoding or encoding them again."""

    image: Image.Image
    annotations: dict = field(default_factory=dict)
    png: bytes | None = None


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


def print_size(image: Image.Image, fmt: dict) -> Image.Image:
    """The image resampled as the sheet of fmt places it: every tile of a layout has the same image area."""
    return fitted(image, geometry(fmt).images[0], int(fmt.get("dpi") or 300), fmt.get("magnification_type", "CUBIC"))[0]


def ruler(annotations: dict, shown_width_in: float) -> dict | None:
    """A bar of a round length in the patient (the image's width in mm, from PixelSpacing), scaled to the film."""
    field_mm = annotations.get("field_width_mm")
    if not field_mm:
        return None
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


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _png_rows(data: bytes) -> bytes | None:
    """The compressed rows (IDAT) of an 8-bit grayscale or RGB, non-interlaced PNG without transparency; None for any
    other PNG. PDF 32000-1 7.4.4.4: a FlateDecode stream with a PNG predictor holds exactly these bytes."""
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    _, _, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if depth != 8 or colour not in (0, 2) or interlace:  # 0: grayscale, 2: RGB
        return None
    rows, at = [], 8
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        if kind == b"tRNS" or at + 12 + length > len(data):  # transparency, or a chunk cut short
            return None
        if kind == b"IDAT":
            rows.append(data[at + 8 : at + 8 + length])
        at += 12 + length  # length, type, data, CRC
    return b"".join(rows) or None


class _PlacedPng(RasterImage):
    """A PNG that WeasyPrint places as it is. WeasyPrint would decode every PNG and compress its rows again at zlib's
    default level, which took most of the time of a 300 dpi sheet; the PNG's own compressed rows serve unchanged.

    Built on WeasyPrint's RasterImage as pinned in requirements.txt (70.0). test_sheet.py checks the embedded pixels;
    a later WeasyPrint that stops asking _get_png_data for the rows keeps sheets right, only slower (bench.hardcopy)."""

    def __init__(self, data: bytes, rows: bytes, image_id: str):
        super().__init__(Image.open(io.BytesIO(data)), image_id, data, orientation="none")
        self._rows = rows

    def _get_png_data(self, pillow_image):  # WeasyPrint calls it for the image stream of an 8-bit L or RGB image
        return self._rows


def compose_pdf(fmt: dict, tiles: list[Tile | None]) -> bytes:
    """The sheet as a one-page PDF (copies are the printer's business). Empty tiles (None or missing) stay blank."""
    shape = geometry(fmt)
    if len(tiles) > len(shape.cells):
        raise ValueError(f"{len(tiles)} images do not fit a {fmt['rows']}x{fmt['columns']} sheet of {len(shape.cells)} tiles.")
    dpi = int(fmt.get("dpi") or 300)
    images: dict[str, bytes] = {}
    # WeasyPrint looks each image up in its cache by URL before it fetches one.
    cache: dict[str, RasterImage] = {}
    placed = []
    for index, tile in enumerate(tiles):
        if tile is None:
            continue
        image, box = fitted(tile.image, shape.images[index], dpi, fmt.get("magnification_type", "CUBIC"))
        url = f"{TILE_SCHEME}{index}"
        images[url] = tile.png if tile.png and image is tile.image else png(image)
        rows = _png_rows(images[url])
        if rows is not None:
            cache[url] = _PlacedPng(images[url], rows, image_id=f"tile{index}")
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
    return HTML(string=html, url_fetcher=_TileFetcher(images), base_url="medarchive-tile:/").write_pdf(cache=cache)


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
        bottom.append({"ruler": ruler(notes, box.width)})
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
    return png(sheet)
