"""Film sizes, layouts and the other DICOM Basic Film Box vocabularies (PS3.3 C.13.3, C.13.5), shared by every printer."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import ValidationError

MM_PER_INCH = 25.4

# DICOM Film Size ID (PS3.3 C.13.3) -> (label, width, height in inches, portrait).
FILM_SIZES: dict[str, tuple[str, float, float]] = {
    "8INX10IN": ("8 x 10 in", 8.0, 10.0),
    "10INX12IN": ("10 x 12 in", 10.0, 12.0),
    "11INX14IN": ("11 x 14 in", 11.0, 14.0),
    "14INX17IN": ("14 x 17 in", 14.0, 17.0),
    "A4": ("A4", 210 / MM_PER_INCH, 297 / MM_PER_INCH),
    "A3": ("A3", 297 / MM_PER_INCH, 420 / MM_PER_INCH),
    "8_5INX11IN": ("Letter (8.5 x 11 in)", 8.5, 11.0),
}
FILM_SIZE_CHOICES = [(key, label) for key, (label, _, _) in FILM_SIZES.items()]

PORTRAIT, LANDSCAPE = "PORTRAIT", "LANDSCAPE"
ORIENTATION_CHOICES = [(PORTRAIT, "Portrait"), (LANDSCAPE, "Landscape")]
MEDIUM_CHOICES = [("BLUE FILM", "Blue film"), ("CLEAR FILM", "Clear film"), ("PAPER", "Paper")]
MAGNIFICATION_CHOICES = [("CUBIC", "Cubic"), ("BILINEAR", "Bilinear"), ("REPLICATE", "Replicate"), ("NONE", "None")]
DENSITY_CHOICES = [("BLACK", "Black"), ("WHITE", "White")]

MAX_ROWS, MAX_COLUMNS, MAX_TILES = 6, 6, 30


@dataclass(frozen=True)
class Layout:
    rows: int
    columns: int

    @property
    def tiles(self) -> int:
        return self.rows * self.columns

    def dicom_display_format(self) -> str:
        # PS3.3 C.13.5.1: STANDARD\C,R — columns first.
        return f"STANDARD\\{self.columns},{self.rows}"

    def __str__(self):
        return f"{self.rows}x{self.columns}"


def check_layout(rows: int, columns: int) -> Layout:
    if not (1 <= rows <= MAX_ROWS and 1 <= columns <= MAX_COLUMNS and rows * columns <= MAX_TILES):
        raise ValidationError(
            f"Layout {rows}x{columns} is not printable: use 1 to {MAX_ROWS} rows and 1 to {MAX_COLUMNS} columns, "
            f"at most {MAX_TILES} images a sheet.",
            code="layout_invalid",
        )
    return Layout(rows, columns)


def parse_layout(text: str) -> Layout:
    """'3x4' (rows x columns) -> Layout; a clear error naming the text otherwise."""
    parts = (text or "").lower().replace("×", "x").split("x")
    try:
        rows, columns = (int(p) for p in parts)
    except ValueError:
        raise ValidationError(f"Layout {text!r} is not ROWSxCOLUMNS, e.g. 3x4.", code="layout_invalid") from None
    return check_layout(rows, columns)


def check_film_size(film_size: str) -> str:
    if film_size not in FILM_SIZES:
        raise ValidationError(f"Unknown film size {film_size!r}; use one of {', '.join(FILM_SIZES)}.", code="film_size_invalid")
    return film_size


def film_inches(film_size: str, orientation: str) -> tuple[float, float]:
    """Width and height of the film as it lies on the page, in inches."""
    _, width, height = FILM_SIZES[check_film_size(film_size)]
    return (height, width) if orientation == LANDSCAPE else (width, height)
