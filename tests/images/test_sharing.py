"""Sharing studies with receiving institutions and users: visible while the share lasts, gone when revoked or expired."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from pydicom.uid import generate_uid

from images import selectors
from images.ingest import ingest_instance
from images.sharing.services import revoke, share
from subscribers.access import NotVisible, RoleRequired
from subscribers.models import AuditEvent, Notification
from tests.dicom_files import synth_bytes
from tests.factories import InstitutionFactory, member, principal_of


@pytest.fixture
def study_a(principal_a):
    return ingest_instance(principal=principal_a, data=synth_bytes("CT", patient_id="P-A1"), source="test").instance.study


@pytest.fixture
def reader_b(inst_b):
    return member(inst_b, "reader_b", ["receive"])


def _uids(principal):
    return set(selectors.studies_visible_to(principal).values_list("study_instance_uid", flat=True))


def test_shared_study_appears_for_the_receiving_institution_until_revoked(principal_a, study_a, inst_b, reader_b):
    reader = principal_of(reader_b)
    assert study_a.study_instance_uid not in _uids(reader)
    given = share(principal=principal_a, study=study_a, with_institution=inst_b)
    visible = selectors.studies_visible_to(reader).get(study_instance_uid=study_a.study_instance_uid)
    assert visible.is_shared and selectors.shared_by(visible) == "Alpha Hospital"
    assert selectors.get_study(reader, study_a.study_instance_uid).pk == study_a.pk
    assert Notification.objects.filter(user=reader_b.user, text__contains="Alpha Hospital shared").exists()
    revoke(principal=principal_a, share=given)
    assert study_a.study_instance_uid not in _uids(reader)
    with pytest.raises(NotVisible):
        selectors.get_study(reader, study_a.study_instance_uid)
    actions = list(AuditEvent.objects.filter(action__startswith="share.").values_list("action", flat=True))
    assert sorted(actions) == ["share.create", "share.revoke"]


def test_expired_share_shows_nothing(principal_a, study_a, inst_b, reader_b):
    given = share(principal=principal_a, study=study_a, with_institution=inst_b, expires_at=timezone.now() + timedelta(hours=1))
    assert study_a.study_instance_uid in _uids(principal_of(reader_b))
    type(given).objects.filter(pk=given.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert study_a.study_instance_uid not in _uids(principal_of(reader_b))


def test_patient_share_covers_studies_that_arrive_later(principal_a, study_a, inst_b, reader_b):
    share(principal=principal_a, patient=study_a.patient, with_institution=inst_b)
    later = ingest_instance(principal=principal_a, data=synth_bytes("MR", patient_id="P-A1"), source="test").instance.study
    other = ingest_instance(principal=principal_a, data=synth_bytes("MR", patient_id="P-OTHER"), source="test").instance.study
    uids = _uids(principal_of(reader_b))
    assert {study_a.study_instance_uid, later.study_instance_uid} <= uids
    assert other.study_instance_uid not in uids


def test_share_with_one_user_is_seen_by_that_user_only(principal_a, study_a, inst_b, reader_b):
    colleague = member(inst_b, "colleague_b", ["receive"])
    share(principal=principal_a, study=study_a, with_user=reader_b.user)
    assert study_a.study_instance_uid in _uids(principal_of(reader_b))
    assert study_a.study_instance_uid not in _uids(principal_of(colleague))


def test_members_without_receive_role_and_third_institutions_see_nothing(principal_a, study_a, inst_b):
    share(principal=principal_a, study=study_a, with_institution=inst_b)
    tech_b = principal_of(member(inst_b, "tech_b", ["register"]))
    third = principal_of(member(InstitutionFactory(slug="gamma"), "reader_c", ["receive"]))
    assert study_a.study_instance_uid not in _uids(tech_b)
    assert study_a.study_instance_uid not in _uids(third)


def test_only_the_owner_may_share_and_revoke(principal_a, principal_b, study_a, inst_b, admin_b):
    with pytest.raises(NotVisible):
        share(principal=principal_b, study=study_a, with_institution=InstitutionFactory(slug="gamma"))
    given = share(principal=principal_a, study=study_a, with_institution=inst_b)
    with pytest.raises(NotVisible):
        revoke(principal=principal_b, share=given)
    technician = principal_of(member(study_a.institution, "tech_a", ["register"]))
    with pytest.raises(RoleRequired):
        share(principal=technician, study=study_a, with_institution=inst_b)


def test_bad_shares_are_refused(principal_a, study_a, inst_a, inst_b):
    with pytest.raises(ValidationError, match="own institution"):
        share(principal=principal_a, study=study_a, with_institution=inst_a)
    with pytest.raises(ValidationError, match="future"):
        share(principal=principal_a, study=study_a, with_institution=inst_b, expires_at=timezone.now() - timedelta(days=1))


def test_sharing_twice_keeps_one_share(principal_a, study_a, inst_b):
    first = share(principal=principal_a, study=study_a, with_institution=inst_b)
    again = share(principal=principal_a, study=study_a, with_institution=inst_b)
    assert first.pk == again.pk


def test_same_uid_owned_and_shared_resolves_to_the_callers_own_copy(principal_a, principal_b, inst_b):
    uid = generate_uid()
    mine_a = ingest_instance(principal=principal_a, data=synth_bytes("CT", study_uid=uid), source="t").instance.study
    mine_b = ingest_instance(principal=principal_b, data=synth_bytes("CT", study_uid=uid), source="t").instance.study
    share(principal=principal_a, study=mine_a, with_institution=inst_b)
    assert selectors.get_study(principal_b, uid).pk == mine_b.pk


def test_a_device_credential_cannot_search_the_archive(principal_a, study_a, inst_a, client):
    from subscribers import services
    from subscribers.access import OPERATOR

    _, raw = services.register_device(actor=OPERATOR, institution=inst_a, name="film printer", kind="film_printer")
    response = client.get("/dicomweb/studies", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200 and response.json() == []
    assert client.get(f"/dicomweb/studies/{study_a.study_instance_uid}/series", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 404
