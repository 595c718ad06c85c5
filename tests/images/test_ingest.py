"""The one ingest service: real files of every modality stored byte-identical, indexed with imaging conditions;
bad input refused with nothing changed."""

import hashlib

import pytest
from django.core.files.storage import storages
from pydicom.uid import generate_uid

from images.errors import ConflictingInstance, InvalidDataset, NotAuthorized, NotDicom, StorageFailed, TooLarge
from images.ingest import ingest_instance
from images.ingest import service as ingest_service
from images.models import ArchivePolicy, Instance, Patient, Series, Study
from subscribers.models import AuditEvent
from tests.dicom_files import BUNDLED, COMPRESSED, TRUNCATED, bundled_bytes, make_dataset, rle_compressed, synth_bytes, to_bytes
from tests.factories import member, principal_of
from tests.storage_backends import archive_names, s3_endpoint, use_s3_archive  # noqa: F401 (fixture)


@pytest.fixture(autouse=True, params=["local", "s3"])
def archive_backend(request, settings):
    """Every test here runs on the local folder and on an S3-compatible server over HTTP."""
    if request.param == "s3":
        use_s3_archive(settings, request.getfixturevalue("s3_endpoint"))
    return request.param


def _nothing_stored(tmp_path):
    assert Instance.objects.count() == 0 and Study.objects.count() == 0 and Patient.objects.count() == 0
    assert archive_names() == []


@pytest.mark.parametrize("modality", ["CT", "MR", "PT", "DX", "CR", "US"])
def test_synthesized_image_of_each_modality_is_indexed_with_its_conditions(principal_a, modality):
    data = synth_bytes(modality, rows=32, cols=32)
    result = ingest_instance(principal=principal_a, data=data, source="test")
    instance = Instance.objects.select_related("series", "study__patient").get(pk=result.instance.pk)
    assert result.status == "stored"
    assert instance.series.modality == modality and instance.study.modalities_in_study == modality
    assert instance.study.patient.patient_name == "Doe^Jane" and instance.rows == 32
    expected = {
        "CT": {"KVP": 120.0, "ConvolutionKernel": "B30f", "CTDIvol": 8.5, "SliceThickness": 1.25},
        "MR": {"MagneticFieldStrength": 3.0, "RepetitionTime": 2000.0, "EchoTime": 30.0, "SequenceName": "*tse2d1_15"},
        "PT": {"Radiopharmaceutical": "Fluorodeoxyglucose", "RadionuclideTotalDose": 370000000.0, "RadionuclideHalfLife": 6586.2},
        "DX": {"KVP": 80.0, "ExposureIndex": 1250.0, "ViewPosition": "PA"},
        "CR": {"KVP": 80.0, "Exposure": 4, "ViewPosition": "PA"},
        "US": {"TransducerData": "C5-1", "TransducerFrequency": 3500},
    }[modality]
    assert {k: instance.conditions.get(k) for k in expected} == expected
    assert instance.conditions["Manufacturer"] == "medarchive tests" and instance.conditions["PixelSpacing"] == [0.7, 0.7]
    assert instance.series.conditions == instance.conditions
    # Imaging conditions are queryable in the index.
    key = next(iter(expected))
    assert Series.objects.filter(**{f"conditions__{key}": expected[key]}).count() == 1


@pytest.mark.parametrize("name", [*BUNDLED.values(), *COMPRESSED.values()])
def test_real_file_is_kept_byte_identical_whatever_its_transfer_syntax(principal_a, name):
    data = bundled_bytes(name)
    result = ingest_instance(principal=principal_a, data=data, source="test")
    with storages["archive"].open(result.instance.storage_name) as fh:
        kept = fh.read()
    assert kept == data
    assert result.instance.sha256 == hashlib.sha256(data).hexdigest()
    assert result.instance.metadata["0020000D"]["Value"][0] == result.instance.study.study_instance_uid
    assert "7FE00010" not in result.instance.metadata


def test_multiframe_and_rle_compressed_images_are_stored(principal_a):
    multi = ingest_instance(principal=principal_a, data=synth_bytes("CT", frames=4), source="test").instance
    rle = ingest_instance(principal=principal_a, data=to_bytes(rle_compressed(make_dataset("MR"))), source="test").instance
    assert multi.number_of_frames == 4
    assert rle.transfer_syntax_uid == "1.2.840.10008.1.2.5"


def test_counts_and_sizes_follow_the_instances(principal_a):
    study_uid, series_uid = generate_uid(), generate_uid()
    sizes = []
    for i in range(3):
        data = synth_bytes("CT", study_uid=study_uid, series_uid=series_uid, instance_number=i + 1)
        sizes.append(len(data))
        ingest_instance(principal=principal_a, data=data, source="test")
    ingest_instance(principal=principal_a, data=synth_bytes("MR", study_uid=study_uid, series_number=2), source="test")
    study = Study.objects.get(study_instance_uid=study_uid)
    assert (study.number_of_series, study.number_of_instances) == (2, 4)
    assert study.modalities_in_study == "CT\\MR"
    assert Series.objects.get(series_instance_uid=series_uid).size_bytes == sum(sizes)


def test_same_bytes_twice_are_stored_once(principal_a, tmp_path):
    data = synth_bytes("CT")
    first = ingest_instance(principal=principal_a, data=data, source="test")
    again = ingest_instance(principal=principal_a, data=data, source="test")
    assert (first.status, again.status) == ("stored", "already_stored")
    assert again.instance.pk == first.instance.pk
    assert Instance.objects.count() == 1 and Study.objects.get().number_of_instances == 1
    assert len(archive_names()) == 1


def test_different_bytes_under_a_known_uid_are_refused_as_conflict(principal_a, tmp_path):
    uid = generate_uid()
    first = ingest_instance(principal=principal_a, data=synth_bytes("CT", sop_uid=uid, seed=1), source="test")
    with pytest.raises(ConflictingInstance) as refusal:
        ingest_instance(principal=principal_a, data=synth_bytes("CT", sop_uid=uid, seed=2), source="test")
    assert refusal.value.dicom_status == 0x0111 and refusal.value.http_status == 409
    assert Instance.objects.get().sha256 == first.instance.sha256
    assert len(archive_names()) == 1
    assert AuditEvent.objects.filter(action="instance.conflict").count() == 1
    assert AuditEvent.objects.filter(action="instance.refused", detail__code="conflict").count() == 1


def test_keep_newest_policy_replaces_the_object_and_its_file(principal_a, inst_a, tmp_path, django_capture_on_commit_callbacks):
    ArchivePolicy.objects.create(institution=inst_a, on_conflict="keep_newest")
    uid, study_uid, series_uid = generate_uid(), generate_uid(), generate_uid()
    old = ingest_instance(
        principal=principal_a, data=synth_bytes("CT", sop_uid=uid, study_uid=study_uid, series_uid=series_uid, seed=1), source="t"
    )
    new_bytes = synth_bytes("CT", sop_uid=uid, study_uid=study_uid, series_uid=series_uid, seed=2)
    with django_capture_on_commit_callbacks(execute=True):
        new = ingest_instance(principal=principal_a, data=new_bytes, source="t")
    assert new.status == "replaced" and new.instance.pk == old.instance.pk
    assert Instance.objects.get().sha256 == hashlib.sha256(new_bytes).hexdigest()
    assert archive_names() == [new.instance.storage_name]
    assert Study.objects.get().number_of_instances == 1


def test_same_uid_from_two_institutions_gives_two_separate_records(principal_a, principal_b):
    data = synth_bytes("CT")
    a = ingest_instance(principal=principal_a, data=data, source="test").instance
    b = ingest_instance(principal=principal_b, data=data, source="test").instance
    assert a.pk != b.pk and a.study_id != b.study_id and a.study.patient_id != b.study.patient_id
    assert a.storage_name != b.storage_name


def _without(keyword):
    ds = make_dataset("CT")
    delattr(ds, keyword)
    return to_bytes(ds)


def _with_uid(value):
    ds = make_dataset("CT")
    ds.SeriesInstanceUID = value
    return to_bytes(ds)


@pytest.mark.parametrize(
    "data, error, says",
    [
        (b"this is not a DICOM file at all" * 10, NotDicom, "not a DICOM file"),
        (b"", NotDicom, "not a DICOM file"),
        (bundled_bytes(TRUNCATED), NotDicom, "truncated"),
        (synth_bytes("CT")[:-500], NotDicom, "truncated"),
        (synth_bytes("CT")[:1200], InvalidDataset, "no pixel data"),
        (_without("SOPInstanceUID"), InvalidDataset, "SOPInstanceUID is missing"),
        (_without("StudyInstanceUID"), InvalidDataset, "StudyInstanceUID is missing"),
        (_with_uid("1.2.3.04"), InvalidDataset, "not a valid UID"),
        (_with_uid("1.2.3." + "9" * 70), InvalidDataset, "not a valid UID"),
        (_with_uid("../../etc/passwd"), InvalidDataset, "not a valid UID"),
        (_with_uid("1.2/../3"), InvalidDataset, "not a valid UID"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(principal_a, tmp_path, data, error, says):
    with pytest.raises(error) as refusal:
        ingest_instance(principal=principal_a, data=data, source="test")
    assert says in refusal.value.reason
    _nothing_stored(tmp_path)
    event = AuditEvent.objects.get(action="instance.refused")
    assert event.detail["code"] == error.code and event.outcome == "failure"


def test_object_over_the_size_limit_is_refused(principal_a, settings, tmp_path):
    settings.DICOM_MAX_INSTANCE_BYTES = 4000
    with pytest.raises(TooLarge) as refusal:
        ingest_instance(principal=principal_a, data=synth_bytes("CT"), source="test")
    assert "at most 4,000 bytes" in refusal.value.reason and refusal.value.http_status == 413
    _nothing_stored(tmp_path)


def test_member_without_register_role_is_refused(inst_a, tmp_path):
    clinician = principal_of(member(inst_a, "reader", ["receive"]))
    with pytest.raises(NotAuthorized) as refusal:
        ingest_instance(principal=clinician, data=synth_bytes("CT"), source="test")
    assert "Register images" in refusal.value.reason
    _nothing_stored(tmp_path)
    assert AuditEvent.objects.get(action="instance.refused").outcome == "denied"


def test_suspended_institution_cannot_send(admin_a, inst_a, tmp_path):
    inst_a.status = "suspended"
    inst_a.save()
    with pytest.raises(NotAuthorized):
        ingest_instance(principal=principal_of(admin_a), data=synth_bytes("CT"), source="test")
    _nothing_stored(tmp_path)


def test_crash_between_writing_bytes_and_indexing_leaves_nothing_and_retry_succeeds(principal_a, tmp_path, monkeypatch):
    data = synth_bytes("CT")
    real_index = ingest_service._index

    def crash(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(ingest_service, "_index", crash)
    with pytest.raises(RuntimeError):
        ingest_instance(principal=principal_a, data=data, source="test")
    _nothing_stored(tmp_path)
    monkeypatch.setattr(ingest_service, "_index", real_index)
    result = ingest_instance(principal=principal_a, data=data, source="test")
    assert result.status == "stored"
    with storages["archive"].open(result.instance.storage_name) as fh:
        assert fh.read() == data


def test_unwritable_storage_is_a_clear_refusal(principal_a, tmp_path, settings, archive_backend):
    if archive_backend == "local":
        root = tmp_path / "archive"
        root.parent.mkdir(parents=True, exist_ok=True)
        root.write_text("a file where the archive folder should be")
    else:
        archive = settings.STORAGES["archive"]
        settings.STORAGES = {
            **settings.STORAGES,
            "archive": {**archive, "OPTIONS": {**archive["OPTIONS"], "bucket_name": "no-such-bucket"}},
        }
    with pytest.raises(StorageFailed) as refusal:
        ingest_instance(principal=principal_a, data=synth_bytes("CT"), source="test")
    assert "could not store" in refusal.value.reason
    assert Instance.objects.count() == 0


def test_same_dataset_under_another_file_meta_is_already_stored(principal_a):
    """A modality sends by C-STORE, a script sends the same object by STOW-RS: file meta differs, content does not."""
    import pydicom

    from images.ingest.validation import as_part10

    original = synth_bytes("CT")
    ds = pydicom.dcmread(__import__("io").BytesIO(original))
    buffer = __import__("io").BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    dataset_bytes = buffer.getvalue()[original.index(b"DICM") + 4 :]
    # Re-wrap the same dataset with another implementation's file meta (what the listener does).
    offset = ingest_service._dataset_offset(original)
    rewrapped = as_part10(
        original[offset:],
        transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
    )
    assert rewrapped != original and dataset_bytes
    first = ingest_instance(principal=principal_a, data=original, source="stow-rs")
    again = ingest_instance(principal=principal_a, data=rewrapped, source="c-store")
    assert (first.status, again.status) == ("stored", "already_stored")
    assert len(archive_names()) == 1


def test_a_batch_cache_indexes_a_series_with_fewer_queries_and_the_same_rows(
    principal_a, django_assert_max_num_queries, django_capture_on_commit_callbacks
):
    from images.ingest import IngestCache

    study_uid, series_uid = generate_uid(), generate_uid()
    cache = IngestCache()
    with django_capture_on_commit_callbacks(execute=True):
        ingest_instance(principal=principal_a, data=synth_bytes("CT", study_uid=study_uid, series_uid=series_uid), source="t", cache=cache)
    assert cache, "the first instance's rows are remembered after commit"
    data = synth_bytes("CT", study_uid=study_uid, series_uid=series_uid, instance_number=2)
    with django_assert_max_num_queries(8):
        ingest_instance(principal=principal_a, data=data, source="t", cache=cache)
    study = Study.objects.get(study_instance_uid=study_uid)
    assert (study.number_of_series, study.number_of_instances) == (1, 2)


@pytest.mark.django_db(transaction=True)
def test_a_stale_batch_cache_falls_back_to_the_database(inst_a, admin_a):
    """Real commits (no test transaction): the stale foreign key fails at commit and the ingest indexes again."""
    from images.ingest import IngestCache

    principal = principal_of(admin_a)
    study_uid, series_uid = generate_uid(), generate_uid()
    cache = IngestCache()
    first = ingest_instance(
        principal=principal, data=synth_bytes("CT", study_uid=study_uid, series_uid=series_uid), source="t", cache=cache
    )
    assert cache
    # Another process removes the study meanwhile (retention, say): the cached rows no longer exist.
    Instance.objects.filter(pk=first.instance.pk).delete()
    Series.objects.filter(series_instance_uid=series_uid).delete()
    Study.objects.filter(study_instance_uid=study_uid).delete()
    data = synth_bytes("CT", study_uid=study_uid, series_uid=series_uid, instance_number=2)
    again = ingest_instance(principal=principal, data=data, source="t", cache=cache)
    assert again.status == "stored"
    assert Study.objects.get(study_instance_uid=study_uid).number_of_instances == 1
    assert Instance.objects.get().study.study_instance_uid == study_uid
