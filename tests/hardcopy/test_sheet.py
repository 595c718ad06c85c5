"""The film sheet renderer: a real CT series on a 3x4 14x17 sheet, checked with poppler (pdfinfo, pdftoppm, pdftotext)."""

import io

import numpy as np
import pytest
from PIL import Image

from hardcopy import sheet, tiles
from images.ingest import ingest_instance
from tests.dicom_files import BUNDLED, bundled_bytes
from tests.hardcopy.conftest import pdf_image_arrays, pdf_images, pdf_page_size_pt, pdf_raster, pdf_text, windowed

FORMAT = {
    "name": "CT 3x4 soft tissue",
    "film_size": "14INX17IN",
    "orientation": "PORTRAIT",
    "rows": 3,
    "columns": 4,
    "window_center": 40.0,
    "window_width": 400.0,
    "magnification_type": "CUBIC",
    "border_density": "BLACK",
    "dpi": 300,
    "show_patient": True,
    "show_study": True,
    "show_institution": True,
    "show_numbers": True,
    "show_orientation": True,
    "show_ruler": True,
    "show_conditions": True,
}
RASTER_DPI = 100


def _render(ct_series, tmp_path, fmt=FORMAT):
    tile_list = [tiles.render_tile(instance, 1, fmt) for instance in ct_series]
    path = tmp_path / "sheet.pdf"
    path.write_bytes(sheet.compose_pdf(fmt, tile_list))
    return path


def _crop(page, box, inset=0.2):
    """The inner part of a box (inches) of the rasterized page, away from the edges and the orientation letters."""
    x0, x1 = box.x + inset * box.width, box.x + (1 - inset) * box.width
    y0, y1 = box.y + inset * box.height, box.y + (1 - inset) * box.height
    return page[round(y0 * RASTER_DPI) : round(y1 * RASTER_DPI), round(x0 * RASTER_DPI) : round(x1 * RASTER_DPI)]


def _crop_source(array, inset=0.2):
    rows, cols = array.shape
    return array[round(inset * rows) : round((1 - inset) * rows), round(inset * cols) : round((1 - inset) * cols)]


def test_ct_series_on_3x4_sheet_has_the_film_size_and_each_image_in_its_tile(ct_series, tmp_path):
    path = _render(ct_series, tmp_path)
    assert pdf_page_size_pt(path) == pytest.approx((14 * 72, 17 * 72), abs=0.5)
    page = pdf_raster(path, tmp_path, RASTER_DPI)
    assert page.shape == (17 * RASTER_DPI, 14 * RASTER_DPI)
    shape = sheet.geometry(FORMAT)
    # Rows top to bottom, columns left to right.
    assert shape.cells[1].x > shape.cells[0].x and shape.cells[4].y > shape.cells[0].y and shape.cells[4].x == shape.cells[0].x
    for index, instance in enumerate(ct_series):
        _, box = sheet.fitted(tiles.render_tile(instance, 1, FORMAT).image, shape.images[index], 300)
        shown = _crop(page, box)
        source = _crop_source(windowed(instance, 40, 400))
        assert shown.mean() == pytest.approx(source.mean(), abs=6), f"tile {index}"
        assert shown.std() == pytest.approx(source.std(), rel=0.15), f"tile {index}"
        # The picture itself, not only its statistics: pixel by pixel it follows the source frame.
        resized = np.asarray(Image.fromarray(shown.astype(np.uint8)).resize(source.shape[::-1], Image.Resampling.BILINEAR), dtype=float)
        assert np.corrcoef(resized.ravel(), source.ravel())[0, 1] > 0.9, f"tile {index}"
    for index in (10, 11):  # empty tiles stay blank: the black film
        cell = shape.cells[index]
        region = page[
            round(cell.y * RASTER_DPI) : round((cell.y + cell.height) * RASTER_DPI),
            round(cell.x * RASTER_DPI) : round((cell.x + cell.width) * RASTER_DPI),
        ]
        assert region.max() == 0


def test_sheet_carries_annotations_and_imaging_conditions_as_text(ct_series, tmp_path):
    text = pdf_text(_render(ct_series, tmp_path))
    assert text.count("Filmer, Fiona") == 10 and text.count("FILM-01") == 10
    assert "born 1970-01-01" in text and "2026-11-02 Chest CT" in text and "Synthetic Site" in text
    for number in range(1, 11):
        assert f"Se 1 Im {number} " in text
    flat = " ".join(text.split())
    assert "120 kV · 250 mA · 500 ms · 125 mAs · kernel B30f · slice 1.25 mm" in flat and "CTDIvol 8.5 mGy" in flat
    assert "2 cm" in text  # ruler: 128 px x 0.7 mm = 89.6 mm field, 40 % of it holds a 2 cm bar
    # Axial slice: patient's right on the image's left, anterior at the top.
    for letter in "RLAP":
        assert f"\n{letter}" in "\n" + "\n".join(w for line in text.splitlines() for w in line.split())


def test_images_are_lossless_grayscale_at_the_printer_resolution(ct_series, tmp_path):
    embedded = pdf_images(_render(ct_series, tmp_path))
    assert len(embedded) == 10
    for image in embedded:
        assert image["color"] == "gray" and image["enc"] != "jpeg"
        assert int(image["x-ppi"]) == pytest.approx(300, abs=2)


def test_embedded_images_are_the_rendered_frames_at_printer_resolution_pixel_for_pixel(ct_series, tmp_path):
    path = _render(ct_series, tmp_path)
    embedded = pdf_image_arrays(path, tmp_path)
    assert len(embedded) == 10
    for instance, stored in zip(ct_series, embedded, strict=True):
        expected = np.asarray(sheet.print_size(tiles.render_tile(instance, 1, FORMAT).image, FORMAT))
        assert stored.shape == expected.shape and stored.shape[0] > 128 * 5  # 128 px enlarged to about 3 in at 300 dpi
        assert np.array_equal(stored, expected)


def test_tiles_that_arrive_as_png_at_print_size_go_into_the_pdf_unchanged(principal_a, ct_series, tmp_path):
    """What the print agent does: grayscale and colour PNGs from the server, placed without decoding them again."""
    colour = ingest_instance(principal=principal_a, data=bundled_bytes(BUNDLED["US"]), source="test").instance
    fmt = {**FORMAT, "window_center": None, "window_width": None, "rows": 1, "columns": 2}
    pngs = [tiles.print_png(ct_series[0], 1, fmt), tiles.print_png(colour, 1, fmt)]
    placed = [sheet.Tile(image=Image.open(io.BytesIO(data)), png=data) for data in pngs]
    path = tmp_path / "agent.pdf"
    path.write_bytes(sheet.compose_pdf(fmt, placed))
    assert [image["color"] for image in pdf_images(path)] == ["gray", "rgb"]
    for data, stored in zip(pngs, pdf_image_arrays(path, tmp_path), strict=True):
        assert np.array_equal(stored, np.asarray(Image.open(io.BytesIO(data))))
    # The same sheet composed from the decoded images, as the server does, has the same pixels.
    server = tmp_path / "server.pdf"
    server.write_bytes(sheet.compose_pdf(fmt, [sheet.Tile(image=Image.open(io.BytesIO(data))) for data in pngs]))
    assert np.array_equal(pdf_raster(path, tmp_path, 50), pdf_raster(server, tmp_path, 50))


def test_image_own_voi_is_used_without_a_window(ct_series, tmp_path):
    fmt = {**FORMAT, "window_center": None, "window_width": None, "rows": 1, "columns": 1}
    path = tmp_path / "one.pdf"
    path.write_bytes(sheet.compose_pdf(fmt, [tiles.render_tile(ct_series[0], 1, fmt)]))
    page = pdf_raster(path, tmp_path, RASTER_DPI)
    _, box = sheet.fitted(tiles.render_tile(ct_series[0], 1, fmt).image, sheet.geometry(fmt).images[0], 300)
    # The synthesized CT carries Window Center/Width 40/400 itself.
    assert _crop(page, box).mean() == pytest.approx(_crop_source(windowed(ct_series[0], 40, 400)).mean(), abs=6)


def test_more_images_than_tiles_is_refused(ct_series):
    fmt = {**FORMAT, "rows": 1, "columns": 2}
    with pytest.raises(ValueError, match="3 images do not fit a 1x2 sheet"):
        sheet.compose_pdf(fmt, [tiles.render_tile(i, 1, fmt) for i in ct_series[:3]])


def test_landscape_a4_page_size(ct_series, tmp_path):
    fmt = {**FORMAT, "film_size": "A4", "orientation": "LANDSCAPE", "rows": 1, "columns": 2}
    path = tmp_path / "a4.pdf"
    path.write_bytes(sheet.compose_pdf(fmt, [tiles.render_tile(ct_series[0], 1, fmt)]))
    assert pdf_page_size_pt(path) == pytest.approx((297 / 25.4 * 72, 210 / 25.4 * 72), abs=0.5)
    assert np.isfinite(pdf_raster(path, tmp_path, 20)).all()
