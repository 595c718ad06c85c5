"""The mode recommendation (backup/recommend.py) on constructed archives: index rows with chosen sizes and dates."""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from backup.recommend import BACKUP_DEFAULT_POINTS, LARGE_BYTES, MANY_PATIENTS, facts_of, months_between, recommend
from images.models import Instance, Patient, Series, Study

GiB = 1024**3
_serial = itertools.count(1)


def archive(institution, *, patients: int, bytes_per_patient: int, days_ago: int, sites=("",), studies_per_patient: int = 1) -> None:
    """Index rows for patients x studies with one series and one instance each, received days_ago (no files needed)."""
    received = timezone.now() - timedelta(days=days_ago)
    batch = next(_serial)
    patient_rows = Patient.objects.bulk_create(
        Patient(institution=institution, patient_id=f"B{batch}-P{i}", patient_name=f"Test^{i}") for i in range(patients)
    )
    Patient.objects.filter(pk__in=[p.pk for p in patient_rows]).update(created_at=received)
    per_study = bytes_per_patient // studies_per_patient
    studies = Study.objects.bulk_create(
        Study(institution=institution, patient=p, study_instance_uid=f"1.2.9.{batch}.{p.pk}.{s}", size_bytes=per_study)
        for p in patient_rows
        for s in range(studies_per_patient)
    )
    series = Series.objects.bulk_create(
        Series(
            institution=institution,
            study=st,
            series_instance_uid=f"{st.study_instance_uid}.1",
            acquiring_institution_name=sites[i % len(sites)],
        )
        for i, st in enumerate(studies)
    )
    Instance.objects.bulk_create(
        Instance(
            institution=institution,
            study_id=se.study_id,
            series=se,
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            sop_instance_uid=f"{se.series_instance_uid}.1",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            size_bytes=per_study,
            sha256=f"{se.pk:064d}",
            storage_name=f"test/{batch}/{se.pk}.dcm",
        )
        for se in series
    )
    Study.objects.filter(pk__in=[s.pk for s in studies]).update(received_at=received, last_received_at=received)
    Series.objects.filter(pk__in=[s.pk for s in series]).update(received_at=received)
    Instance.objects.filter(series__in=series).update(received_at=received)


def by_mode(recommendation) -> dict:
    return {e.mode: e for e in recommendation.estimates}


# --- Which mode, and why ----------------------------------------------------------------------------------------


def test_empty_archive_starts_with_all_at_a_set_time(inst_a):
    result = recommend(institution=inst_a, period_start=timezone.localdate())
    assert result.mode == "all_at_time"
    assert "No images yet" in result.reason
    assert [e.sets for e in result.estimates] == [0, 0, 0, 0]


def test_small_slowly_growing_archive_gets_all_at_a_set_time(inst_a):
    archive(inst_a, patients=40, bytes_per_patient=GiB // 4, days_ago=400)  # 10 GiB, old
    archive(inst_a, patients=2, bytes_per_patient=GiB // 4, days_ago=10)  # +5 % in 90 days
    result = recommend(institution=inst_a, period_start=timezone.localdate())
    assert result.mode == "all_at_time"
    assert result.reason.startswith("Small (")
    assert "slowly growing (+5 % in 90 days)" in result.reason


def test_large_archive_with_many_patients_gets_per_examination(inst_a):
    archive(inst_a, patients=MANY_PATIENTS, bytes_per_patient=LARGE_BYTES // MANY_PATIENTS + 1, days_ago=300)
    archive(inst_a, patients=50, bytes_per_patient=GiB, days_ago=5)
    result = recommend(institution=inst_a, period_start=timezone.localdate())
    assert result.mode == "per_examination"
    assert "Large (" in result.reason and f"{MANY_PATIENTS + 50:,} patients" in result.reason
    estimate = by_mode(result)["per_examination"]
    assert estimate.recommended and estimate.objects > MANY_PATIENTS


def test_images_from_several_acquiring_institutions_get_per_institution(inst_a):
    archive(inst_a, patients=30, bytes_per_patient=GiB, days_ago=200, sites=("North Wing", "South Wing", "Day Clinic"))
    archive(inst_a, patients=30, bytes_per_patient=GiB, days_ago=20, sites=("North Wing",))  # fast growth, 60 GiB: not small
    result = recommend(institution=inst_a, period_start=timezone.localdate())
    assert result.mode == "per_institution"
    assert "3 acquiring institutions" in result.reason
    assert by_mode(result)["per_institution"].objects == 3


def test_mid_sized_fast_growing_archive_of_one_site_gets_per_patient(inst_a):
    archive(inst_a, patients=100, bytes_per_patient=GiB // 2, days_ago=200)  # 50 GiB
    archive(inst_a, patients=40, bytes_per_patient=GiB // 2, days_ago=30)  # +40 %
    result = recommend(institution=inst_a, period_start=timezone.localdate())
    assert result.mode == "per_patient"
    assert "+40 % in 90 days" in result.reason


def test_the_contract_period_decides_whether_the_archive_stays_small(inst_a):
    archive(inst_a, patients=40, bytes_per_patient=GiB, days_ago=300)  # 40 GiB
    archive(inst_a, patients=4, bytes_per_patient=GiB - 1, days_ago=10)  # +4 GiB in 90 days: +10 %, slowly
    start = date(2030, 1, 1)
    quarter = recommend(institution=inst_a, period_start=start, period_end=date(2030, 3, 31))
    two_years = recommend(institution=inst_a, period_start=start, period_end=date(2031, 12, 31))
    assert quarter.mode == "all_at_time"  # about 48 GiB by the end of the quarter
    assert two_years.mode != "all_at_time"  # about 76 GiB by the end of two years
    assert quarter.end_bytes < 50 * GiB < two_years.end_bytes


def test_images_received_before_the_90_day_window_are_not_growth(inst_a):
    archive(inst_a, patients=3, bytes_per_patient=1000, days_ago=91)
    archive(inst_a, patients=1, bytes_per_patient=500, days_ago=89)
    facts = facts_of(inst_a)
    assert (facts.bytes, facts.recent_bytes, facts.instances, facts.recent_instances) == (3500, 500, 4, 1)
    assert (facts.patients, facts.recent_patients, facts.studies, facts.recent_studies) == (4, 1, 4, 1)


def test_other_institutions_data_does_not_count(inst_a, inst_b):
    archive(inst_b, patients=10, bytes_per_patient=GiB, days_ago=10)
    assert facts_of(inst_a).instances == 0
    assert recommend(institution=inst_a, period_start=timezone.localdate()).mode == "all_at_time"


# --- Volume and charge per mode ------------------------------------------------------------------------------------


def test_volume_per_period_is_todays_data_plus_growth_projected_over_the_period(inst_a):
    archive(inst_a, patients=9, bytes_per_patient=GiB, days_ago=200)
    archive(inst_a, patients=1, bytes_per_patient=GiB, days_ago=30)  # 1 GiB per 90 days
    result = recommend(institution=inst_a, period_start=date(2030, 1, 1), period_end=date(2030, 6, 29))  # 180 days
    assert result.days == 180
    assert result.growth_bytes == 2 * GiB
    assert result.end_bytes == 12 * GiB
    estimates = by_mode(result)
    assert {e.volume_bytes for e in estimates.values()} == {12 * GiB}
    assert estimates["all_at_time"].objects == 1 and estimates["all_at_time"].set_bytes == 12 * GiB
    # Per patient and per examination: ten patients (one study each) now, two more projected by the end.
    assert estimates["per_patient"].objects == 12 and estimates["per_examination"].objects == 12
    assert estimates["per_examination"].set_bytes == GiB


def test_charge_is_points_times_months_times_rate_with_the_proposed_terms_for_the_proposed_mode(inst_a, settings):
    settings.BACKUP_DEFAULT_POINTS = {"all_at_time": "8", "per_institution": "11", "per_patient": "15", "per_examination": "19"}
    result = recommend(
        institution=inst_a,
        period_start=date(2030, 1, 1),
        period_end=date(2030, 12, 31),
        terms={"mode": "per_patient", "accounting_points": "14.50", "rate": "2.2500", "currency": "CHF"},
    )
    assert result.months == Decimal("12.00")
    charges = {e.mode: (e.points, e.charge, e.currency, e.proposed) for e in result.estimates}
    assert charges == {
        "all_at_time": (Decimal("8"), Decimal("216.00"), "CHF", False),
        "per_institution": (Decimal("11"), Decimal("297.00"), "CHF", False),
        "per_patient": (Decimal("14.50"), Decimal("391.50"), "CHF", True),
        "per_examination": (Decimal("19"), Decimal("513.00"), "CHF", False),
    }


def test_without_terms_every_mode_uses_the_default_points_and_rate(inst_a):
    result = recommend(institution=inst_a, period_start=date(2030, 1, 1), period_end=date(2030, 3, 31))
    assert result.months == Decimal("3.00")
    for e in result.estimates:
        assert e.points == BACKUP_DEFAULT_POINTS[e.mode]
        assert e.charge == (e.points * 3 * e.rate).quantize(Decimal("0.01"))


def test_open_ended_contract_is_estimated_per_year(inst_a):
    result = recommend(institution=inst_a, period_start=date(2030, 5, 17), period_end=None, terms={"rate": "1", "mode": "all_at_time"})
    assert (result.months, result.days) == (Decimal("12"), 365)
    assert "open-ended" in result.period_text
    assert by_mode(result)["all_at_time"].charge == Decimal("120.00")


@pytest.mark.parametrize(
    ("start", "end", "months"),
    [
        (date(2026, 1, 1), date(2026, 12, 31), "12.00"),
        (date(2026, 1, 15), date(2026, 4, 14), "3.00"),
        (date(2026, 1, 31), date(2026, 2, 27), "1.00"),
        (date(2026, 1, 1), date(2026, 1, 16), "0.52"),
        (date(2024, 2, 29), date(2025, 2, 27), "12.00"),
    ],
)
def test_months_of_a_period_count_calendar_months_inclusive(start, end, months):
    assert months_between(start, end) == Decimal(months)
