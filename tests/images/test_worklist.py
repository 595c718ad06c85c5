"""The worklist (/studies/, and / for receiving users): filters, sorts, keyset pages, rows and their links, bad input.

Most tests write index rows straight into the database (the worklist reads only the index, as QIDO-RS does); one
ingests real DICOM files to show that what the ingest stores is found the same way.
"""

from __future__ import annotations

import itertools
import re
from datetime import date, timedelta
from html import unescape

import pytest
from django.utils import timezone
from pydicom.uid import generate_uid

from images import worklist
from images.ingest import ingest_instance
from images.models import Patient, Study
from images.sharing.services import share
from images.viewer import study_viewer_url
from subscribers.models import AuditEvent
from tests.conftest import login
from tests.dicom_files import synth_bytes
from tests.factories import InstitutionFactory, member

URL = "/studies/"
_numbers = itertools.count(1)


def make_study(
    institution,
    *,
    patient_name: str = "DOE^JANE",
    patient_id: str = "",
    study_date: date | None = date(2026, 3, 10),
    modalities: str = "CT",
    description: str = "CT chest",
    accession: str = "",
    series: int = 2,
    instances: int = 120,
    received_at=None,
) -> Study:
    """The index rows the ingest would write for a study (patient included), without files."""
    number = next(_numbers)
    patient, _ = Patient.objects.get_or_create(
        institution=institution,
        patient_id=patient_id or f"PID-{number:05d}",
        issuer_of_patient_id="",
        defaults={"patient_name": patient_name, "patient_name_search": patient_name.upper()},
    )
    study = Study.objects.create(
        institution=institution,
        patient=patient,
        study_instance_uid=generate_uid(),
        study_date=study_date,
        accession_number=accession or f"ACC{number:05d}",
        study_description=description,
        modalities_in_study=modalities,
        number_of_series=series,
        number_of_instances=instances,
    )
    if received_at is not None:
        Study.objects.filter(pk=study.pk).update(received_at=received_at)
        study.refresh_from_db()
    return study


def rows(response) -> list[str]:
    """Study UIDs of the worklist's rows, in order."""
    return re.findall(r'data-testid="worklist-row" data-study-uid="([^"]+)"', response.content.decode())


def names(response) -> list[str]:
    return [unescape(n) for n in re.findall(r'data-testid="patient-name"[^>]*>([^<]*)</span>', response.content.decode())]


def link(response, testid: str) -> str | None:
    found = re.search(rf'href="([^"]+)" data-testid="{testid}"', response.content.decode())
    return unescape(found.group(1)) if found else None


@pytest.fixture
def reader(client, clinician_a):
    return login(client, clinician_a.user)


@pytest.fixture
def reader_b(inst_b):
    return member(inst_b, "reader_b", ["receive"])


# --- What is listed -------------------------------------------------------------------------------------------------


def test_lists_own_and_shared_studies_with_who_shared_them_and_never_other_tenants_studies(reader, inst_a, inst_b, admin_b):
    from tests.factories import principal_of

    own = make_study(inst_a, patient_name="OWN^OLIVIA")
    shared = make_study(inst_b, patient_name="SHARED^SAM")
    hidden = make_study(inst_b, patient_name="UNSHAREDXYZ^HUGO")
    share(principal=principal_of(admin_b), study=shared, with_institution=inst_a)
    response = reader.get(URL)
    assert response.status_code == 200
    assert set(rows(response)) == {own.study_instance_uid, shared.study_instance_uid}
    body = response.content.decode()
    assert "UNSHAREDXYZ" not in body.upper() and hidden.study_instance_uid not in body
    shared_row = body[body.index(f'data-study-uid="{shared.study_instance_uid}"') :].split("</tr>")[0]
    assert "Shared by Beta Clinic" in shared_row
    own_row = body[body.index(f'data-study-uid="{own.study_instance_uid}"') :].split("</tr>")[0]
    assert "Shared by" not in own_row


def test_a_share_with_one_user_shows_for_that_user_only(client, inst_a, inst_b, admin_a, reader_b):
    from tests.factories import principal_of

    study = make_study(inst_a, patient_name="PERSONAL^PAT")
    share(principal=principal_of(admin_a), study=study, with_user=reader_b.user)
    colleague = member(inst_b, "colleague_b", ["receive"])
    login(client, reader_b.user)
    assert rows(client.get(URL, {"shared": "1"})) == [study.study_instance_uid]
    login(client, colleague.user)
    assert rows(client.get(URL)) == []


def test_rows_show_the_patient_readably_and_link_to_viewer_study_page_and_download(reader, inst_a):
    study = make_study(inst_a, patient_name="DOE^JANE^MARIE", patient_id="PAT-77", modalities="CT\\SR", series=3, instances=245)
    body = reader.get(URL).content.decode()
    assert "DOE, JANE MARIE" in body and "PAT-77" in body
    assert '<span class="tag">CT</span><span class="tag">SR</span>' in body
    assert "3 / 245" in body
    assert f'href="{study_viewer_url(study.study_instance_uid)}"'.replace("&", "&amp;") in body
    assert f'href="/studies/{study.study_instance_uid}/"' in body
    assert f'href="/studies/{study.study_instance_uid}/download.zip"' in body


def test_dates_are_machine_readable_time_elements_with_a_readable_fallback(reader, inst_a):
    make_study(inst_a, study_date=date(2026, 3, 10))
    make_study(inst_a, study_date=None, patient_name="UNDATED^UMA")
    body = reader.get(URL).content.decode()
    assert '<time datetime="2026-03-10">10 Mar 2026</time>' in body
    assert "no date" in body
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[^"]*[+-]\d\d:\d\d"', body)  # received, with its offset
    assert "js/locale-dates.js" in body


def test_an_ingested_study_is_found_by_name_and_id(reader, principal_a):
    stored = ingest_instance(
        principal=principal_a, data=synth_bytes("MR", patient_name="Müller^Jürgen", patient_id="MR-1"), source="test"
    ).instance.study
    assert rows(reader.get(URL, {"patient_name": "müller, j"})) == [stored.study_instance_uid]
    assert rows(reader.get(URL, {"patient_id": "MR-1"})) == [stored.study_instance_uid]
    assert rows(reader.get(URL, {"modality": "mr"})) == [stored.study_instance_uid]


# --- Filters --------------------------------------------------------------------------------------------------------


@pytest.fixture
def people(inst_a):
    return {
        name: make_study(inst_a, patient_name=name) for name in ("DOE^JANE", "DOE^JOHN", "DOERING^ANNA", "SMITH^JANE", "O'NEIL^JANE", "DOE")
    }


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("doe", {"DOE^JANE", "DOE^JOHN", "DOERING^ANNA", "DOE"}),  # no wildcard: the start of the name
        ("Doe^J*", {"DOE^JANE", "DOE^JOHN"}),
        ("doe, jane", {"DOE^JANE"}),  # the readable form works too
        ("*jane", {"DOE^JANE", "SMITH^JANE", "O'NEIL^JANE"}),
        ("d?e^*", {"DOE^JANE", "DOE^JOHN"}),
        ("*RING*", {"DOERING^ANNA"}),
        ("o'neil", {"O'NEIL^JANE"}),
        ("zz*", set()),
    ],
)
def test_patient_name_matches_dicom_wildcards_in_any_case(reader, people, typed, expected):
    response = reader.get(URL, {"patient_name": typed})
    assert response.status_code == 200
    assert set(rows(response)) == {people[name].study_instance_uid for name in expected}


def test_filters_by_patient_id_accession_modality_description_and_shared(reader, inst_a, inst_b, admin_b):
    from tests.factories import principal_of

    ct = make_study(inst_a, patient_id="H-1001", accession="A-555", modalities="CT", description="CT Thorax with contrast")
    mr = make_study(inst_a, patient_id="H-1002", accession="A-556", modalities="MR\\SR", description="MRI brain")
    us = make_study(inst_a, patient_id="X-9", accession="B-1", modalities="US", description="Abdomen")
    foreign = make_study(inst_b, patient_id="H-1003", modalities="CT", description="CT Thorax")
    share(principal=principal_of(admin_b), study=foreign, with_institution=inst_a)

    def uids(**params):
        response = reader.get(URL, params)
        assert response.status_code == 200, response.content.decode()[:500]
        return set(rows(response))

    assert uids(patient_id="H-1001") == {ct.study_instance_uid}
    assert uids(patient_id="H-100*") == {ct.study_instance_uid, mr.study_instance_uid, foreign.study_instance_uid}
    assert uids(patient_id="h-1001") == set()  # IDs are exact, as in DICOM
    assert uids(accession_number="A-55?") == {ct.study_instance_uid, mr.study_instance_uid}
    assert uids(modality="sr") == {mr.study_instance_uid}
    assert uids(modality="CT") == {ct.study_instance_uid, foreign.study_instance_uid}
    assert uids(description="thorax") == {ct.study_instance_uid, foreign.study_instance_uid}
    assert uids(description="ct*contrast") == {ct.study_instance_uid}
    assert uids(shared="1") == {foreign.study_instance_uid}
    assert uids(shared="1", modality="US") == set()
    assert uids(patient_id="H-100*", modality="CT", shared="1") == {foreign.study_instance_uid}
    assert us.study_instance_uid in uids()


def test_date_range_includes_both_ends_and_leaves_undated_studies_out(reader, inst_a):
    studies = {day: make_study(inst_a, study_date=date(2026, 1, day)) for day in (1, 10, 20, 31)}
    undated = make_study(inst_a, study_date=None)

    def uids(**params):
        return set(rows(reader.get(URL, params)))

    assert uids(date_from="2026-01-10", date_to="2026-01-20") == {studies[10].study_instance_uid, studies[20].study_instance_uid}
    assert uids(date_from="2026-01-20") == {studies[20].study_instance_uid, studies[31].study_instance_uid}
    assert uids(date_to="20260101") == {studies[1].study_instance_uid}  # DICOM's form, typed by hand
    assert undated.study_instance_uid in uids()


def test_no_match_says_so_with_a_link_that_clears_the_filters_but_keeps_the_order(reader, inst_a):
    make_study(inst_a, patient_name="DOE^JANE")
    response = reader.get(URL, {"patient_name": "nobody", "sort": "patient_name"})
    body = response.content.decode()
    assert response.status_code == 200 and rows(response) == []
    assert "No studies match these filters" in body
    assert link(response, "clear-filters") == "/studies/?sort=patient_name"


def test_an_empty_archive_says_where_studies_come_from_and_offers_the_upload_to_registering_users(client, clinician_a, admin_a):
    login(client, clinician_a.user)
    body = client.get(URL).content.decode()
    assert "No studies yet" in body and 'href="/upload/"' not in body
    login(client, admin_a.user)
    body = client.get(URL).content.decode()
    assert "No studies yet" in body and 'href="/upload/"' in body


# --- Sorting and keyset pages ---------------------------------------------------------------------------------------


def _expected_order(studies: list[Study], sort: str) -> list[str]:
    order = worklist.SORTS[sort]
    ordered = sorted(studies, key=lambda s: (order.value_of(s), s.pk), reverse=order.descending)
    return [s.study_instance_uid for s in ordered]


@pytest.fixture
def crowded(inst_a, inst_b, admin_b):
    """60 studies with many equal sort keys: 30 on one day, 8 without a date, names repeated, 12 shared in."""
    from tests.factories import principal_of

    start = timezone.now() - timedelta(days=1)
    studies = []
    for i in range(48):
        day = date(2026, 5, 1) if i % 2 else (None if i % 6 == 0 else date(2026, 4, 1) + timedelta(days=i % 5))
        studies.append(make_study(inst_a, patient_name=["DOE^JANE", "ROE^RICK", "POE^EDGAR"][i % 3], study_date=day, received_at=start))
    for i in range(12):
        foreign = make_study(inst_b, patient_name="ZED^ZOE", study_date=date(2026, 5, 1), received_at=start + timedelta(minutes=i % 2))
        share(principal=principal_of(admin_b), study=foreign, with_institution=inst_a)
        studies.append(foreign)
    for study in studies:
        study.refresh_from_db()
    return studies


def _walk(client, url: str, testid: str) -> list[list[str]]:
    pages = []
    while url:
        response = client.get(url)
        assert response.status_code == 200
        pages.append(rows(response))
        url = link(response, testid)
        assert len(pages) < 10, "paging does not end"
    return pages


@pytest.mark.parametrize("sort", list(worklist.SORTS))
def test_keyset_pages_with_equal_and_missing_keys_neither_skip_nor_repeat_rows_both_ways(reader, crowded, sort):
    expected = _expected_order(crowded, sort)
    forward = _walk(reader, f"{URL}?sort={sort}", "next-page")
    assert [len(p) for p in forward] == [25, 25, 10]
    assert list(itertools.chain(*forward)) == expected

    # From the last page back with "Previous": the same pages, in reverse.
    last_page_url = None
    response = reader.get(f"{URL}?sort={sort}")
    while link(response, "next-page"):
        last_page_url = link(response, "next-page")
        response = reader.get(last_page_url)
    backward = _walk(reader, last_page_url, "previous-page")
    assert backward == forward[::-1]


def test_undated_studies_count_as_the_oldest_in_both_directions(reader, inst_a):
    old = make_study(inst_a, study_date=date(2001, 1, 1))
    new = make_study(inst_a, study_date=date(2026, 1, 1))
    undated = make_study(inst_a, study_date=None)
    assert rows(reader.get(URL)) == [new.study_instance_uid, old.study_instance_uid, undated.study_instance_uid]
    assert rows(reader.get(URL, {"sort": "study_date"})) == [undated.study_instance_uid, old.study_instance_uid, new.study_instance_uid]


def test_patient_name_sort_ignores_case_and_the_column_header_turns_it_around(reader, inst_a):
    for name in ("beta^b", "ALPHA^A", "Gamma^G"):
        make_study(inst_a, patient_name=name)
    response = reader.get(URL, {"sort": "patient_name"})
    assert names(response) == ["ALPHA, A", "beta, b", "Gamma, G"]
    body = response.content.decode()
    assert 'aria-sort="ascending"><a class="sort is-sorted" href="/studies/?sort=-patient_name"' in body
    assert names(reader.get(URL, {"sort": "-patient_name"})) == ["Gamma, G", "beta, b", "ALPHA, A"]


def test_received_sort_puts_the_newest_arrival_first(reader, inst_a):
    now = timezone.now()
    late = make_study(inst_a, study_date=date(2000, 1, 1), received_at=now)
    early = make_study(inst_a, study_date=date(2026, 1, 1), received_at=now - timedelta(hours=3))
    assert rows(reader.get(URL, {"sort": "-received_at"})) == [late.study_instance_uid, early.study_instance_uid]
    assert rows(reader.get(URL, {"sort": "received_at"})) == [early.study_instance_uid, late.study_instance_uid]


def test_page_size_comes_from_the_url_and_the_pages_keep_the_filters(reader, crowded):
    response = reader.get(URL, {"per_page": "50", "patient_name": "doe"})
    assert len(rows(response)) == 16  # 48 / 3 studies of DOE^JANE
    response = reader.get(URL, {"per_page": "50"})
    assert len(rows(response)) == 50
    following = link(response, "next-page")
    assert "per_page=50" in following
    assert len(rows(reader.get(following))) == 10


def test_a_bookmarked_page_keeps_its_rows_when_newer_studies_arrive(reader, crowded, inst_a):
    second = link(reader.get(URL), "next-page")
    before = rows(reader.get(second))
    make_study(inst_a, study_date=date(2030, 1, 1))  # lands on the first page
    assert rows(reader.get(second)) == before


@pytest.mark.parametrize("count", [5, 60])
def test_queries_per_page_do_not_grow_with_the_number_of_studies(
    client, clinician_a, inst_a, inst_b, admin_b, count, django_assert_num_queries
):
    from tests.factories import principal_of

    for i in range(count):
        study = make_study(inst_b if i % 3 == 0 else inst_a, patient_name=f"PATIENT^{i:03d}", study_date=date(2026, 1, 1 + i % 28))
        if study.institution_id == inst_b.pk:
            share(principal=principal_of(admin_b), study=study, with_institution=inst_a)
    login(client, clinician_a.user)
    # Session, user, membership, the page's rows, the audit event, the menu's memberships and unread notifications.
    with django_assert_num_queries(7):
        first = client.get(URL, {"per_page": "25"})
    assert len(rows(first)) == min(count, 25)
    last = rows(first)[-1]
    cursor = worklist.Cursor(
        "-study_date", Study.objects.get(study_instance_uid=last).study_date, Study.objects.get(study_instance_uid=last).pk
    )
    with django_assert_num_queries(7):
        following = client.get(URL, {"per_page": "25", "after": cursor.encode()})
    assert following.status_code == 200


# --- Bad input ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"after": "not-a-cursor"},
        {"after": "W10"},  # base64 of "[]"
        {"after": "WyJ4Il0"},  # base64 of '["x"]'
        {"before": "WyItc3R1ZHlfZGF0ZSIsIjIwMjYtMTMtMDEiLDVd"},  # a month 13
        {"after": worklist.Cursor("patient_name", "DOE", 3).encode()},  # another sort's cursor
        {"after": "x" * 2000},
        {"after": worklist.Cursor("patient_name", "DOE\x00", 3).encode(), "sort": "patient_name"},  # a NUL PostgreSQL refuses
        {"after": worklist.Cursor("-study_date", date(2026, 1, 1), 1).encode(), "before": "abc"},
    ],
)
def test_a_damaged_page_link_is_a_400_that_says_so_and_links_to_the_first_page(reader, inst_a, params):
    make_study(inst_a)
    response = reader.get(URL, {"patient_name": "doe", **params})
    assert response.status_code == 400
    body = response.content.decode()
    assert 'data-testid="link-error"' in body and "first page" in body
    assert 'href="/studies/?patient_name=doe' in body
    assert not AuditEvent.objects.filter(action="worklist.search").exists()


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"date_from": "2026-13-01"}, "date_from", "Enter a valid date"),
        ({"date_from": "2026-02-01", "date_to": "2026-01-01"}, "date_to", "before its start"),
        ({"modality": "C T!"}, "modality", "is not a modality code"),
        ({"patient_name": "X" * 65}, "patient_name", "at most 64 characters"),
        ({"patient_id": "A\x00"}, "patient_id", "Null characters are not allowed"),
    ],
)
def test_unusable_filters_are_marked_on_their_field_and_list_nothing(reader, inst_a, params, field, message):
    make_study(inst_a)
    response = reader.get(URL, params)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert field in response.context["form"].errors
    assert rows(response) == []


@pytest.mark.parametrize(
    ("params", "what"), [({"per_page": "1000"}, "page size"), ({"per_page": "abc"}, "page size"), ({"sort": "id"}, "order")]
)
def test_an_unknown_page_size_or_order_falls_back_to_the_default_and_says_so(reader, crowded, params, what):
    response = reader.get(URL, params)
    assert response.status_code == 200
    assert len(rows(response)) == 25
    assert rows(response) == _expected_order(crowded, "-study_date")[:25]
    assert f"The {what}" in response.content.decode()
    following = link(response, "next-page")
    assert "per_page" not in following and "sort" not in following  # the links carry what was shown
    assert rows(reader.get(following)) == _expected_order(crowded, "-study_date")[25:50]


# --- Home, audit ----------------------------------------------------------------------------------------------------


def test_home_is_the_worklist_for_receiving_users_and_the_cards_for_others(client, clinician_a, inst_a):
    make_study(inst_a, patient_name="HOME^HANNA")
    login(client, clinician_a.user)
    response = client.get("/")
    assert response.status_code == 200 and "Hanna" in response.content.decode().title()
    assert link(response, "clear-filters") is None and 'data-testid="worklist"' in response.content.decode()
    tech = member(inst_a, "tech_a", ["register"])
    login(client, tech.user)
    body = client.get("/").content.decode()
    assert 'class="cards"' in body and 'data-testid="worklist"' not in body


def test_each_listing_is_audited_with_its_query_and_count(reader, inst_a, clinician_a):
    make_study(inst_a)
    make_study(inst_a)
    reader.get(URL, {"modality": "CT", "sort": "patient_name"})
    event = AuditEvent.objects.get(action="worklist.search")
    assert event.user == clinician_a.user and event.institution == inst_a
    assert event.detail["query"] == {"modality": "CT", "sort": "patient_name"} and event.detail["results"] == 2


def test_a_third_institution_sees_none_of_it(client, inst_a, inst_b, admin_a):
    from tests.factories import principal_of

    study = make_study(inst_a, patient_name="PRIVQX^PIA")
    share(principal=principal_of(admin_a), study=study, with_institution=inst_b)
    third = member(InstitutionFactory(name="Gamma Centre", slug="gamma"), "reader_c", ["receive"])
    login(client, third.user)
    for params in ({}, {"shared": "1"}, {"patient_name": "private"}):
        response = client.get(URL, params)
        assert rows(response) == [] and "PRIVQX" not in response.content.decode().upper()
