"""manage.py enforce_storage_conditions: the nightly run on demand, or a dry run listing what it would do."""

from datetime import date
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from pydicom.uid import JPEG2000Lossless

from images.ingest import ingest_instance
from images.models import Instance, StorageSnapshot, Study
from images.storage_conditions.services import place_legal_hold, save_storage_condition
from subscribers.models import AuditEvent
from tests.dicom_files import synth_bytes


def store(principal, **kwargs) -> Instance:
    return ingest_instance(principal=principal, data=synth_bytes("CT", rows=128, cols=128, **kwargs), source="test").instance


def enforce(*args) -> str:
    out = StringIO()
    call_command("enforce_storage_conditions", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def archive(principal_a, principal_b, inst_a):
    """inst_a: one study past a 10-year retention, one held past it, one recent; inst_b: one past it, no conditions."""
    old = store(principal_a, patient_id="OLD", study_date=date(2005, 6, 1))
    held = store(principal_a, patient_id="HELD", study_date=date(2005, 6, 1))
    recent = store(principal_a, patient_id="NEW")
    store(principal_b, patient_id="B-OLD", study_date=date(2005, 6, 1))
    save_storage_condition(
        principal=principal_a,
        institution=inst_a,
        retention_years=10,
        retention_from="study_date",
        at_retention_end="delete",
        compression=JPEG2000Lossless,
        immutable=False,
        required_backup_copies=1,
    )
    place_legal_hold(principal=principal_a, institution=inst_a, patient_id="HELD", reason="Case 1")
    return {"old": old, "held": held, "recent": recent}


def test_dry_run_prints_what_it_would_do_and_changes_nothing(archive, django_capture_on_commit_callbacks):
    before = sorted(Instance.objects.values_list("sha256", "storage_name"))
    events = AuditEvent.objects.count()

    with django_capture_on_commit_callbacks(execute=True):
        out = enforce("--dry-run")

    assert f"would delete study {archive['old'].study.study_instance_uid}: retention ended on 2015-06-01" in out
    assert f"kept study {archive['held'].study.study_instance_uid}: past retention, but under a legal hold" in out
    assert "alpha: dry run, would delete 1 study; would compress 2 instances" in out and "1 due for deletion but kept" in out
    assert "beta: dry run, would delete 0 studies; would compress 0 instances" in out
    assert sorted(Instance.objects.values_list("sha256", "storage_name")) == before
    assert (Study.objects.count(), StorageSnapshot.objects.count(), AuditEvent.objects.count()) == (4, 0, events)


def test_the_run_for_one_institution_deletes_compresses_and_records_its_state(archive, inst_b, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        out = enforce("--institution", "alpha")

    assert f"deleted study {archive['old'].study.study_instance_uid} (1 instances" in out
    assert (
        "alpha: deleted 1 study" in out and "compressed 2 instances" in out and "1 due for deletion but kept (legal hold or refusal)" in out
    )
    assert "now 2 instances" in out and "2 lacking backup copies" in out and "beta" not in out
    assert not Study.objects.filter(pk=archive["old"].study_id).exists()
    assert Study.objects.filter(institution=inst_b).count() == 1
    assert set(Instance.objects.filter(study__institution__slug="alpha").values_list("transfer_syntax_uid", flat=True)) == {
        JPEG2000Lossless
    }
    snapshot = StorageSnapshot.objects.get()
    assert (snapshot.trigger, snapshot.studies_deleted, snapshot.instances_compressed, snapshot.studies_held) == ("command", 1, 2, 1)
    assert AuditEvent.objects.get(action="study.delete").actor == "operator (command line)"


def test_an_unknown_institution_is_an_error(archive):
    with pytest.raises(CommandError, match="no institution with slug 'nowhere'"):
        enforce("--institution", "nowhere")
    assert StorageSnapshot.objects.count() == 0
