import pytest

from images.templatetags.dicom import readable_person_name


@pytest.mark.parametrize(
    ("pn", "shown"),
    [
        ("DOE^JOHN", "DOE, JOHN"),
        ("Doe^John^Q^Dr.^Jr", "Doe, Dr. John Q, Jr"),
        ("Anonymous", "Anonymous"),
        ("^^^^", ""),
        ("Yamada^Tarou=山田^太郎=やまだ^たろう", "Yamada, Tarou"),
        ("", ""),
        (None, ""),
    ],
)
def test_person_names_are_shown_family_first_with_a_comma(pn, shown):
    assert readable_person_name(pn) == shown
