"""De-identification per PS3.15 Annex E (Basic Profile, with the retain-dates and clean-descriptors options)."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from software.processors.base import ProcessorError
from software.processors.derived import part10
from tests.dicom_files import make_dataset
from tests.software.dicom_checks import run_processor

# Attributes PS3.15 Table E.1-1 has the Basic Profile remove (X, or X/Z, X/D, X/Z/D: removable in these images),
# written out here from the standard independently of the table the processor uses.
REMOVED = {
    "PatientAddress": "1 Hospital Road",
    "PatientTelephoneNumbers": "555-0101",
    "OtherPatientIDs": "OTHER-77",
    "OtherPatientNames": "Roe^Jane",
    "PatientBirthName": "Doe^Janet",
    "PatientMotherBirthName": "Moe^Mary",
    "MilitaryRank": "Captain",
    "EthnicGroup": "Group",
    "Occupation": "Welder",
    "PatientAge": "056Y",
    "PatientSize": "1.7",
    "PatientWeight": "70",
    "MedicalRecordLocator": "MRL-9",
    "AdditionalPatientHistory": "History of Doe",
    "PatientComments": "Comment",
    "PatientBirthTime": "101010",
    "CountryOfResidence": "Nowhere",
    "RegionOfResidence": "North",
    "PatientReligiousPreference": "None",
    "IssuerOfPatientID": "HOSPITAL-A",
    "InstitutionName": "St Example",
    "InstitutionAddress": "2 Clinic Street",
    "InstitutionalDepartmentName": "Radiology",
    "ReferringPhysicianAddress": "3 Referrer Lane",
    "ReferringPhysicianTelephoneNumbers": "555-0202",
    "PhysiciansOfRecord": "Record^Rob",
    "PerformingPhysicianName": "Perform^Pat",
    "NameOfPhysiciansReadingStudy": "Reader^Ray",
    "OperatorsName": "Operator^Olga",
    "StationName": "CTSTATION1",
    "DeviceSerialNumber": "SN-12345",
    "StudyDescription": "CT chest",
    "SeriesDescription": "Axial 1mm",
    "ProtocolName": "Chest protocol",
    "ImageComments": "Seen by Dr Who",
    "DerivationDescription": "nothing",
    "AdmittingDiagnosesDescription": "Cough",
    "PerformedProcedureStepDescription": "CT chest",
    "PerformedProcedureStepID": "PPS-1",
    "RequestingPhysician": "Request^Rick",
    "SeriesDate": "20260102",
    "AcquisitionDate": "20260102",
    "InstanceCreationDate": "20260102",
}
# Z: kept empty (Type 2).
EMPTIED = ("AccessionNumber", "StudyID", "ReferringPhysicianName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime")


def identified_series(count: int = 2) -> list[Dataset]:
    first = make_dataset("CT", rows=16, cols=16, patient_id="PAT-4711", patient_name="Doe^Jane", accession_number="ACC-99")
    sources = [first]
    for n in range(2, count + 1):
        sources.append(
            make_dataset(
                "CT",
                rows=16,
                cols=16,
                patient_id="PAT-4711",
                patient_name="Doe^Jane",
                accession_number="ACC-99",
                study_uid=first.StudyInstanceUID,
                series_uid=first.SeriesInstanceUID,
                instance_number=n,
            )
        )
    frame_of_reference = "1.2.826.0.1.3680043.2.1125.77.1"
    for ds in sources:
        for keyword, value in REMOVED.items():
            setattr(ds, keyword, value)
        ds.FrameOfReferenceUID = frame_of_reference
        ds.add_new(0x00091010, "LO", "private secret Doe")
        ds.add_new(0x00090010, "LO", "ACME")
        ref = Dataset()
        ref.ReferencedSOPClassUID = first.SOPClassUID
        ref.ReferencedSOPInstanceUID = first.SOPInstanceUID
        ds.ReferencedImageSequence = Sequence([ref])
        ds.StudyDescription = "CT chest for Doe 2026-01-02 PAT-4711"
    return sources


def test_basic_profile_leaves_none_of_the_removed_attributes_and_empties_the_type_2_ones():
    sources = identified_series()
    for product in run_processor("deidentify", sources):
        present = sorted(k for k in REMOVED if k in product)
        assert present == [], f"still there: {present}"
        for keyword in EMPTIED:
            assert keyword in product and product[keyword].value in (None, ""), keyword
        assert not any(element.tag.is_private for element in product.iterall())
        assert product.PatientIdentityRemoved == "YES"
        assert product.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert product.LongitudinalTemporalInformationModified == "REMOVED"


def test_no_original_identifier_or_uid_is_left_anywhere_in_the_bytes():
    sources = identified_series()
    originals = {"Doe", "PAT-4711", "ACC-99", "St Example", "SN-12345", sources[0].StudyInstanceUID, sources[0].SeriesInstanceUID}
    originals |= {ds.SOPInstanceUID for ds in sources} | {"1.2.826.0.1.3680043.2.1125.77.1"}
    for product in run_processor("deidentify", sources):
        data = part10(product)
        assert [o for o in originals if o.encode() in data] == []


def test_pixels_are_kept_exactly():
    sources = identified_series()
    for source, product in zip(sources, run_processor("deidentify", sources), strict=True):
        assert np.array_equal(product.pixel_array, source.pixel_array)


def test_uids_are_replaced_consistently_within_a_job_and_differently_in_another():
    sources = identified_series(3)
    products = run_processor("deidentify", sources, job_id=41)
    assert len({p.StudyInstanceUID for p in products}) == 1
    assert len({p.SeriesInstanceUID for p in products}) == 1
    assert len({p.FrameOfReferenceUID for p in products}) == 1
    assert len({p.SOPInstanceUID for p in products}) == 3
    assert len({p.PatientID for p in products}) == 1 and products[0].PatientID != "PAT-4711"
    # A reference to the first image points at its de-identified copy.
    assert {p.ReferencedImageSequence[0].ReferencedSOPInstanceUID for p in products} == {products[0].SOPInstanceUID}
    again = run_processor("deidentify", sources, job_id=41)
    assert [p.SOPInstanceUID for p in again] == [p.SOPInstanceUID for p in products]
    other = run_processor("deidentify", sources, job_id=42)
    assert other[0].StudyInstanceUID != products[0].StudyInstanceUID
    assert other[0].PatientID != products[0].PatientID


def test_retain_dates_keeps_the_study_dates_but_not_the_birth_date():
    [product] = run_processor("deidentify", identified_series(1), {"retain_dates": True})
    assert product.StudyDate == "20261102"
    assert product.SeriesDate == "20260102"
    assert product.PatientBirthDate in (None, "")
    assert product.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert "113106" in {item.CodeValue for item in product.DeidentificationMethodCodeSequence}


def test_clean_descriptors_keeps_descriptions_without_names_ids_and_dates():
    [product] = run_processor("deidentify", identified_series(1), {"clean_descriptors": True})
    assert product.StudyDescription == "CT chest for"
    assert product.SeriesDescription == "Axial 1mm"
    assert "ImageComments" in product and "Who" in product.ImageComments
    assert "113105" in {item.CodeValue for item in product.DeidentificationMethodCodeSequence}


def test_an_image_with_burned_in_annotation_is_refused():
    source = identified_series(1)[0]
    source.BurnedInAnnotation = "YES"
    with pytest.raises(ProcessorError, match="burned-in annotation"):
        run_processor("deidentify", [source])
