"""Attribute matching shared by QIDO-RS and C-FIND (PS3.4 C.2.2.2): exact, wildcard, ranges, UID lists, modalities."""

from datetime import date

import pytest
from pydicom.uid import generate_uid

from images import query, selectors
from images.ingest import ingest_instance
from tests.dicom_files import synth_bytes


@pytest.fixture
def archive(principal_a):
    made = {}
    for name, pid, day, modality, acc in [
        ("Doe^Jane", "P1", date(2026, 1, 5), "CT", "A100"),
        ("Doe^John", "P2", date(2026, 2, 10), "MR", "A200"),
        ("Smith^Anna", "P3", date(2026, 3, 15), "CT", "B300"),
    ]:
        uid = generate_uid()
        ingest_instance(
            principal=principal_a,
            data=synth_bytes(
                modality, rows=8, cols=8, patient_name=name, patient_id=pid, study_date=day, study_uid=uid, accession_number=acc
            ),
            source="t",
        )
        made[pid] = uid
    # A second series of another modality in P1's study.
    ingest_instance(principal=principal_a, data=synth_bytes("PT", rows=8, cols=8, patient_id="P1", study_uid=made["P1"]), source="t")
    return made


def _pids(principal, **params):
    qs = query.apply(selectors.studies_visible_to(principal), "study", params)
    return sorted(qs.values_list("patient__patient_id", flat=True))


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"PatientID": "P2"}, ["P2"]),
        ({"00100020": "P2"}, ["P2"]),
        ({"PatientName": "doe*"}, ["P1", "P2"]),
        ({"PatientName": "*ANNA"}, ["P3"]),
        ({"PatientName": "Doe^J?hn"}, ["P2"]),
        ({"PatientName": "*o*"}, ["P1", "P2"]),
        ({"StudyDate": "20260210"}, ["P2"]),
        ({"StudyDate": "20260201-20260331"}, ["P2", "P3"]),
        ({"StudyDate": "-20260131"}, ["P1"]),
        ({"StudyDate": "20260301-"}, ["P3"]),
        ({"ModalitiesInStudy": "PT"}, ["P1"]),
        ({"ModalitiesInStudy": "CT"}, ["P1", "P3"]),
        ({"ModalitiesInStudy": "MR\\PT"}, ["P1", "P2"]),
        ({"AccessionNumber": "A*"}, ["P1", "P2"]),
        ({"PatientID": "", "StudyDescription": "*"}, ["P1", "P2", "P3"]),
    ],
)
def test_study_matching(principal_a, archive, params, expected):
    assert _pids(principal_a, **params) == expected


def test_uid_list_matches_each(principal_a, archive):
    assert _pids(principal_a, StudyInstanceUID=f"{archive['P1']}\\{archive['P3']}") == ["P1", "P3"]


def test_fuzzy_name_matching_is_off_by_default(principal_a, archive):
    assert _pids(principal_a, PatientName="oh") == []
    qs = query.apply(selectors.studies_visible_to(principal_a), "study", {"PatientName": "oh"}, fuzzy=True)
    assert list(qs.values_list("patient__patient_id", flat=True)) == ["P2"]


def test_series_level_matches_series_and_study_attributes(principal_a, archive):
    qs = query.apply(selectors.series_visible_to(principal_a), "series", {"Modality": "PT", "PatientID": "P1"})
    assert qs.count() == 1


@pytest.mark.parametrize(
    "params, parameter",
    [
        ({"StudyDate": "2026-01-05"}, "StudyDate"),
        ({"StudyDate": "20261301"}, "StudyDate"),
        ({"StudyInstanceUID": "1.2.abc"}, "StudyInstanceUID"),
        ({"NotAnAttribute": "x"}, "NotAnAttribute"),
        ({"SOPInstanceUID": "1.2.3"}, "SOPInstanceUID"),  # not a study-level key
        ({"ModalitiesInStudy": "C T"}, "ModalitiesInStudy"),
    ],
)
def test_malformed_queries_name_the_parameter(principal_a, archive, params, parameter):
    with pytest.raises(query.QueryError) as error:
        query.apply(selectors.studies_visible_to(principal_a), "study", params)
    assert error.value.parameter == parameter


def test_queries_never_reach_another_institutions_studies(principal_a, principal_b, archive):
    assert _pids(principal_b, PatientName="*") == []
