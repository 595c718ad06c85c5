"""The study page (images/views/study.py) and its share dialog and revoke buttons (images/views/share.py), through the
portal with a logged-in session: what each kind of caller sees, what a share or revocation changes, and what a refused
one leaves unchanged."""

import re
from datetime import date, timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from pydicom.uid import BasicTextSRStorage, generate_uid

from images.ingest import IngestCache, ingest_instance
from images.models import Share
from images.sharing.services import revoke, share
from images.viewer import study_viewer_url
from subscribers.models import AuditEvent, Notification
from tests.conftest import login
from tests.dicom_files import make_dataset, series, to_bytes
from tests.factories import InstitutionFactory, member, principal_of


@pytest.fixture(autouse=True)
def _cache_in_memory(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "test-study-page"}}
    cache.clear()


@pytest.fixture
def store(principal_a):
    def store(blobs, principal=principal_a):
        ingest_cache = IngestCache()
        return [ingest_instance(principal=principal, data=data, source="test", cache=ingest_cache).instance for data in blobs]

    return store


@pytest.fixture
def study_a(store):
    """A CT series of 2 and an MR series of 1, patient Doe^Jane, owned by Alpha Hospital."""
    study_uid = generate_uid()
    store(series("CT", 2, study_uid=study_uid, series_number=1, accession_number="ACC-STUDY-PAGE"))
    return store(series("MR", 1, study_uid=study_uid, series_number=2, accession_number="ACC-STUDY-PAGE"))[0].study


@pytest.fixture
def reader_b(inst_b):
    return member(inst_b, "reader_b", ["receive"])


@pytest.fixture
def inst_c(db):
    return InstitutionFactory(name="Gamma Imaging", slug="gamma")


def page_url(study) -> str:
    return f"/studies/{study.study_instance_uid}/"


def share_url(study) -> str:
    return f"/studies/{study.study_instance_uid}/share/"


def revoke_url(study, given) -> str:
    return f"/studies/{study.study_instance_uid}/shares/{given.pk}/revoke/"


def text_of(response) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode()))


# --- What the page shows ------------------------------------------------------------------------------------------------


def test_owner_sees_patient_and_study_header_series_conditions_viewer_and_downloads(client, admin_a, study_a):
    login(client, admin_a.user)
    response = client.get(page_url(study_a))
    assert response.status_code == 200
    html, text = response.content.decode(), text_of(response)
    for shown in ("Doe, Jane", "PAT-001", "Female", "ACC-STUDY-PAGE", "Referrer, Rita", "Synthetic study", "Alpha Hospital", "2 / 3"):
        assert shown in text, shown
    assert "Doe^Jane" not in html  # the DICOM form is shown readably
    # Imaging conditions per series, with units.
    assert "Peak kilovoltage 120 kV" in text and "CTDIvol 8.5 mGy" in text
    assert "Field strength 3 T" in text and "Echo time (TE) 30 ms" in text
    # Lazy thumbnails from the DICOMweb thumbnail endpoint, one per series.
    thumbnails = re.findall(r'<img src="([^"]+/thumbnail\?[^"]*)" loading="lazy"', html)
    assert len(thumbnails) == 2
    assert study_viewer_url(study_a.study_instance_uid).replace("&", "&amp;") in html
    assert f"/studies/{study_a.study_instance_uid}/download.zip" in html
    assert html.count("/download.zip") == 3  # the study and each of its two series
    assert "Shared by" not in text


def test_thumbnails_on_the_page_are_images_the_browser_may_cache(client, admin_a, study_a):
    login(client, admin_a.user)
    html = client.get(page_url(study_a)).content.decode()
    url = re.search(r'<img src="([^"]+/thumbnail\?[^"]*)"', html).group(1).replace("&amp;", "&")
    first = client.get(url, HTTP_ACCEPT="image/avif,image/webp,image/apng,image/*,*/*;q=0.8")
    assert first.status_code == 200 and first["Content-Type"] == "image/jpeg" and first.content[:2] == b"\xff\xd8"
    assert first["ETag"] and "max-age=" in first["Cache-Control"] and "private" in first["Cache-Control"]
    again = client.get(url, HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304


def test_series_without_images_shows_a_placeholder_instead_of_a_broken_thumbnail(client, admin_a, store):
    ds = make_dataset("OT")
    for keyword in ("PixelData", "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored"):
        delattr(ds, keyword)
    del ds.HighBit, ds.PixelRepresentation
    ds.Modality = "SR"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
    [instance] = store([to_bytes(ds)])
    login(client, admin_a.user)
    response = client.get(page_url(instance.study))
    assert response.status_code == 200
    assert "/thumbnail" not in response.content.decode() and "No image" in text_of(response)


def test_viewing_the_page_is_audited(client, clinician_a, study_a):
    login(client, clinician_a.user)
    client.get(page_url(study_a))
    event = AuditEvent.objects.get(action="study.view")
    assert (event.actor, event.object_id) == ("clinician_a", study_a.study_instance_uid)


def test_page_queries_do_not_grow_with_the_number_of_series(client, admin_a, store):
    def queries_for(number_of_series):
        study_uid = generate_uid()
        for n in range(number_of_series):
            store(series("CT", 1, study_uid=study_uid, series_number=n + 1))
        with CaptureQueriesContext(connection) as captured:
            assert client.get(f"/studies/{study_uid}/").status_code == 200
        return len(captured)

    login(client, admin_a.user)
    assert queries_for(1) == queries_for(6)


def test_no_script_share_link_renders_the_dialog_open_in_the_page(client, admin_a, study_a):
    login(client, admin_a.user)
    closed = client.get(page_url(study_a)).content.decode()
    assert re.search(r'<dialog id="share-dialog"[^>]*>', closed).group(0).endswith('aria-labelledby="share-dialog-title">')
    opened = client.get(page_url(study_a) + "?share=1").content.decode()
    assert re.search(r'<dialog id="share-dialog"[^>]*\bopen>', opened)


# --- Who sees what ------------------------------------------------------------------------------------------------------


def test_other_institution_gets_not_found_for_an_unshared_study(client, admin_b, study_a):
    login(client, admin_b.user)
    response = client.get(page_url(study_a))
    assert response.status_code == 404
    assert "Doe" not in response.content.decode() and "ACC-STUDY-PAGE" not in response.content.decode()
    assert not AuditEvent.objects.filter(action="study.view").exists()


def test_receiver_sees_shared_by_badge_and_neither_shares_nor_dialog_nor_audit_trail(client, principal_a, inst_b, reader_b, study_a):
    share(principal=principal_a, study=study_a, with_institution=inst_b)
    login(client, reader_b.user)
    response = client.get(page_url(study_a))
    assert response.status_code == 200
    html, text = response.content.decode(), text_of(response)
    assert "Shared by Alpha Hospital" in text
    assert 'id="share-dialog"' not in html and 'id="shares"' not in html and "Audit trail" not in text


def test_member_without_receive_or_admin_role_sees_shares_but_cannot_share(client, inst_a, inst_b, inst_c, principal_a, study_a):
    technologist = member(inst_a, "tech_a", ["register"])
    share(principal=principal_a, study=study_a, with_institution=inst_b)
    login(client, technologist.user)
    html = client.get(page_url(study_a)).content.decode()
    assert "Beta Clinic" in html and 'id="share-dialog"' not in html and "Revoke" not in html
    response = client.post(share_url(study_a), {"recipient_kind": "institution", "institution": "gamma"})
    assert response.status_code == 403
    assert Share.objects.count() == 1


def test_audit_trail_is_shown_to_the_owner_admins_only(client, admin_a, clinician_a, principal_a, inst_b, study_a):
    share(principal=principal_a, study=study_a, with_institution=inst_b)
    login(client, clinician_a.user)
    assert "Audit trail" not in text_of(client.get(page_url(study_a)))
    login(client, admin_a.user)
    response = client.get(page_url(study_a))
    trail = re.search(r'<table class="audit" data-testid="audit-trail">.*?</table>', response.content.decode(), re.S).group(0)
    assert "share.create" in trail and "study.view" in trail and "clinician_a" in trail


def test_audit_trail_shows_nothing_of_another_study(client, admin_a, store, study_a):
    other = store(series("CT", 1, patient_id="OTHER"))[0].study
    login(client, admin_a.user)
    client.get(page_url(other))
    response = client.get(page_url(study_a))
    assert other.study_instance_uid not in response.content.decode()


# --- Sharing through the dialog -----------------------------------------------------------------------------------------


def test_sharing_with_an_institution_through_the_form_shares_audits_and_notifies(client, admin_a, inst_b, reader_b, study_a):
    login(client, admin_a.user)
    response = client.post(share_url(study_a), {"recipient_kind": "institution", "institution": "Beta Clinic"}, follow=True)
    assert response.redirect_chain[-1][0].endswith(page_url(study_a) + "#shares")
    assert "now shared with Beta Clinic" in text_of(response)
    given = Share.objects.get()
    assert (given.study_id, given.with_institution_id, given.expires_at, given.created_by_id) == (
        study_a.pk,
        inst_b.pk,
        None,
        admin_a.user.pk,
    )
    assert AuditEvent.objects.filter(action="share.create", object_id=study_a.study_instance_uid).count() == 1
    assert Notification.objects.filter(user=reader_b.user, text__contains="Alpha Hospital shared").exists()
    assert re.search(r'data-testid="share-row">.*?Beta Clinic.*?Active', response.content.decode(), re.S)


def test_sharing_with_a_user_of_another_institution_until_a_day(client, admin_a, reader_b, study_a):
    login(client, admin_a.user)
    until = timezone.localdate() + timedelta(days=7)
    response = client.post(share_url(study_a), {"recipient_kind": "user", "username": "reader_b", "expires_on": until.isoformat()})
    assert response.status_code == 302
    given = Share.objects.get()
    assert given.with_user_id == reader_b.user_id and given.with_institution_id is None
    assert timezone.localtime(given.expires_at).date() == until + timedelta(days=1)
    assert timezone.localtime(given.expires_at).time().isoformat() == "00:00:00"


def test_sharing_every_study_of_the_patient(client, admin_a, inst_b, study_a):
    login(client, admin_a.user)
    client.post(share_url(study_a), {"recipient_kind": "institution", "institution": "beta", "whole_patient": "on"})
    given = Share.objects.get()
    assert given.patient_id == study_a.patient_id and given.study_id is None


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"recipient_kind": "institution", "institution": "Nowhere Clinic"}, "No institution is called “Nowhere Clinic”"),
        ({"recipient_kind": "institution", "institution": ""}, "Enter the institution to share with."),
        ({"recipient_kind": "institution", "institution": "alpha"}, "A study is already visible to its own institution."),
        ({"recipient_kind": "institution", "institution": "beta", "expires_on": "2001-01-01"}, "The expiry must be in the future."),
        ({"recipient_kind": "institution", "institution": "beta", "expires_on": "not a date"}, "Enter a valid date."),
        ({"recipient_kind": "user", "username": "nobody-here"}, "No active user is called “nobody-here”."),
        ({"recipient_kind": "user", "username": "clinician_a"}, "clinician_a does not work for another institution"),
        ({"recipient_kind": "someone"}, "Select a valid choice."),
    ],
)
def test_refused_share_says_why_keeps_the_dialog_open_and_changes_nothing(client, admin_a, clinician_a, inst_b, study_a, form, message):
    login(client, admin_a.user)
    before = AuditEvent.objects.exclude(action="study.view").count()
    response = client.post(share_url(study_a), form)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert re.search(r'<dialog id="share-dialog"[^>]*\bopen>', response.content.decode())
    assert Share.objects.count() == 0 and Notification.objects.count() == 0
    assert AuditEvent.objects.exclude(action="study.view").count() == before


def test_sharing_with_a_suspended_institution_is_refused(client, admin_a, inst_b, study_a):
    inst_b.status = "suspended"
    inst_b.save()
    login(client, admin_a.user)
    response = client.post(share_url(study_a), {"recipient_kind": "institution", "institution": "beta"})
    assert response.status_code == 400 and "suspended" in response.content.decode()
    assert Share.objects.count() == 0


def test_double_submission_shares_once_and_says_nothing_changed(client, admin_a, inst_b, reader_b, study_a):
    login(client, admin_a.user)
    form = {"recipient_kind": "institution", "institution": "beta"}
    client.post(share_url(study_a), form)
    response = client.post(share_url(study_a), form, follow=True)
    assert "already shared with Beta Clinic" in text_of(response) and "nothing changed" in text_of(response)
    assert Share.objects.count() == 1
    assert AuditEvent.objects.filter(action__startswith="share.").count() == 1
    assert Notification.objects.filter(user=reader_b.user).count() == 1


def test_sharing_again_with_another_expiry_changes_only_the_expiry(client, admin_a, inst_b, study_a):
    login(client, admin_a.user)
    client.post(share_url(study_a), {"recipient_kind": "institution", "institution": "beta"})
    until = date.today() + timedelta(days=3)
    response = client.post(
        share_url(study_a), {"recipient_kind": "institution", "institution": "beta", "expires_on": until.isoformat()}, follow=True
    )
    assert "the share now lasts until" in text_of(response)
    given = Share.objects.get()
    assert given.expires_at is not None
    assert AuditEvent.objects.filter(action="share.extend").count() == 1


def test_receiver_cannot_pass_a_shared_study_on(client, principal_a, inst_b, inst_c, admin_b, study_a):
    share(principal=principal_a, study=study_a, with_institution=inst_b)
    login(client, admin_b.user)
    response = client.post(share_url(study_a), {"recipient_kind": "institution", "institution": "gamma"})
    assert response.status_code == 404
    assert Share.objects.count() == 1


def test_other_institution_cannot_share_an_unshared_study(client, admin_b, inst_c, study_a):
    login(client, admin_b.user)
    assert client.post(share_url(study_a), {"recipient_kind": "institution", "institution": "gamma"}).status_code == 404
    assert Share.objects.count() == 0


def test_share_url_takes_only_posts(client, admin_a, study_a):
    login(client, admin_a.user)
    assert client.get(share_url(study_a)).status_code == 405


# --- Revoking -----------------------------------------------------------------------------------------------------------


def test_revoking_through_the_page_hides_the_study_from_the_receiver(client, admin_a, principal_a, inst_b, reader_b, study_a):
    given = share(principal=principal_a, study=study_a, with_institution=inst_b)
    login(client, reader_b.user)
    assert client.get(page_url(study_a)).status_code == 200
    login(client, admin_a.user)
    response = client.post(revoke_url(study_a, given), follow=True)
    assert "Revoked: Beta Clinic no longer sees this study." in text_of(response)
    given.refresh_from_db()
    assert given.revoked_at is not None and given.revoked_by_id == admin_a.user.pk
    assert AuditEvent.objects.filter(action="share.revoke").count() == 1
    login(client, reader_b.user)
    assert client.get(page_url(study_a)).status_code == 404


def test_revoking_twice_says_it_was_already_revoked(client, admin_a, principal_a, inst_b, study_a):
    given = share(principal=principal_a, study=study_a, with_institution=inst_b)
    login(client, admin_a.user)
    client.post(revoke_url(study_a, given))
    response = client.post(revoke_url(study_a, given), follow=True)
    assert "already revoked: nothing changed" in text_of(response)
    assert AuditEvent.objects.filter(action="share.revoke").count() == 1


def test_receiver_and_third_institution_cannot_revoke(client, admin_b, principal_a, inst_b, inst_c, study_a):
    given = share(principal=principal_a, study=study_a, with_institution=inst_b)
    login(client, admin_b.user)
    assert client.post(revoke_url(study_a, given)).status_code == 404
    admin_c = member(inst_c, "admin_c")
    login(client, admin_c.user)
    assert client.post(revoke_url(study_a, given)).status_code == 404
    given.refresh_from_db()
    assert given.revoked_at is None


def test_a_share_of_another_study_cannot_be_revoked_through_this_one(client, admin_a, principal_a, inst_b, store, study_a):
    other = store(series("CT", 1, patient_id="OTHER"))[0].study
    given = share(principal=principal_a, study=other, with_institution=inst_b)
    login(client, admin_a.user)
    assert client.post(revoke_url(study_a, given)).status_code == 404
    given.refresh_from_db()
    assert given.revoked_at is None


def test_expired_and_revoked_shares_are_listed_with_their_state_and_no_revoke_button(client, admin_a, principal_a, inst_b, inst_c, study_a):
    expired = share(principal=principal_a, study=study_a, with_institution=inst_b, expires_at=timezone.now() + timedelta(hours=1))
    Share.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    revoked = share(principal=principal_a, study=study_a, with_institution=inst_c)
    revoke(principal=principal_of(admin_a), share=revoked)
    login(client, admin_a.user)
    html = client.get(page_url(study_a)).content.decode()
    assert "Expired" in html and "Revoked " in html
    assert f"/shares/{expired.pk}/revoke/" in html  # an expired share can still be revoked for good
    assert f"/shares/{revoked.pk}/revoke/" not in html
