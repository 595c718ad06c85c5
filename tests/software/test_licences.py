"""Licences and the catalogue: validity, quotas and seats, grant_licence, requests, downloads with their checksums."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from software.errors import LicenceRefused
from software.models import Licence, LicenceRequest, Software
from software.services import catalogue, jobs, licences
from subscribers.access import OPERATOR
from subscribers.models import AuditEvent, Notification
from tests.conftest import login
from tests.factories import member, principal_of
from tests.software.conftest import builtin_software


def submit(principal, series_uid):
    return jobs.submit_job(principal=principal, processor_id="mip", parameters={}, uids=[series_uid], queue=False)


def test_an_exhausted_licence_refuses_with_the_reason_after_its_quota(principal_a, ct_series, license_a):
    license_a("mip", usage_quota=2)
    uid = ct_series[0].series.series_instance_uid
    submit(principal_a, uid)
    submit(principal_a, uid)
    with pytest.raises(LicenceRefused, match="exhausted: all 2 uses have been used") as refused:
        submit(principal_a, uid)
    assert refused.value.code == "licence_exhausted"
    assert Licence.objects.get(institution=principal_a.institution, software__processor_id="mip").used_count == 2


def test_a_licence_not_yet_valid_or_expired_refuses_saying_when(principal_a, inst_a, ct_series):
    software = builtin_software("mip")
    today = timezone.localdate()
    licences.grant_licence(actor=OPERATOR, institution=inst_a, software=software, valid_from=today + timedelta(days=3))
    with pytest.raises(LicenceRefused, match=f"starts on {(today + timedelta(days=3)).isoformat()}"):
        submit(principal_a, ct_series[0].series.series_instance_uid)
    Licence.objects.filter(institution=inst_a).update(valid_from=date(2020, 1, 1), valid_until=today - timedelta(days=1))
    with pytest.raises(LicenceRefused, match=f"expired on {(today - timedelta(days=1)).isoformat()}"):
        submit(principal_a, ct_series[0].series.series_instance_uid)


def test_seats_count_distinct_users(inst_a, ct_series, license_a):
    license_a("mip", seats=1)
    first, second = member(inst_a, "runner1", ["software"]), member(inst_a, "runner2", ["software"])
    uid = ct_series[0].series.series_instance_uid
    submit(principal_of(first), uid)
    submit(principal_of(first), uid)
    with pytest.raises(LicenceRefused, match="All 1 seats"):
        submit(principal_of(second), uid)


def test_grant_licence_command_is_idempotent_and_updates_terms(inst_a, capsys):
    call_command("grant_licence", "--institution", "alpha", "--software", "mip")
    call_command("grant_licence", "--institution", "alpha", "--software", "mip")
    out = capsys.readouterr().out.splitlines()
    assert "granted" in out[0] and "unchanged" in out[1]
    call_command("grant_licence", "--institution", "alpha", "--software", "mip", "--until", "2030-12-31", "--quota", "100")
    assert "updated" in capsys.readouterr().out
    licence = Licence.objects.get()
    assert (licence.valid_until, licence.usage_quota) == (date(2030, 12, 31), 100)
    assert AuditEvent.objects.filter(action__in=["licence.grant", "licence.update"]).count() == 2
    with pytest.raises(CommandError, match="no institution with slug 'nowhere'"):
        call_command("grant_licence", "--institution", "nowhere", "--software", "mip")
    with pytest.raises(CommandError, match="no software with id 999"):
        call_command("grant_licence", "--institution", "alpha", "--software", "999")


def test_a_licence_request_reaches_provider_staff_and_a_grant_settles_it(principal_a, admin_a, staff_user):
    software = builtin_software("mpr")
    request, created = licences.request_licence(principal=principal_a, software=software, message="For research")
    again, created_again = licences.request_licence(principal=principal_a, software=software)
    assert created and not created_again and again.pk == request.pk
    assert Notification.objects.filter(user=staff_user, text__contains="asks for a licence for Multiplanar reformat").exists()
    licences.grant_licence(actor=OPERATOR, institution=principal_a.institution, software=software)
    request.refresh_from_db()
    assert request.status == LicenceRequest.Status.GRANTED
    assert Notification.objects.filter(user=admin_a.user, text__contains="now has a licence for Multiplanar reformat").exists()


@pytest.fixture
def viewer_software(staff_user, client):
    """A downloadable software with one artifact, uploaded by provider staff through the portal."""
    login(client, staff_user)
    response = client.post(
        "/software/register/",
        {"name": "Viewer", "vendor": "ACME", "intended_use": "Viewing images", "kind": "downloadable", "processor_id": ""},
    )
    assert response.status_code == 302, response.content
    software = Software.objects.get(name="Viewer")
    from django.core.files.uploadedfile import SimpleUploadedFile

    artifact = SimpleUploadedFile("viewer-setup.exe", b"MZ" + bytes(range(256)) * 100)
    response = client.post(
        f"/software/{software.pk}/versions/",
        {"version": "2.1", "platform": "windows-x86_64", "release_notes": "Faster", "artifact": artifact},
    )
    assert response.status_code == 302, response.content
    client.logout()
    return software


def test_licensed_user_sees_the_checksum_and_downloads_the_artifact_audited(client, admin_a, inst_a, viewer_software):
    import hashlib

    expected = b"MZ" + bytes(range(256)) * 100
    version = viewer_software.versions.get()
    assert version.sha256 == hashlib.sha256(expected).hexdigest()
    licences.grant_licence(actor=OPERATOR, institution=inst_a, software=viewer_software, usage_quota=5)
    login(client, admin_a.user)
    page = client.get(f"/software/{viewer_software.pk}/")
    assert version.sha256 in page.content.decode()
    response = client.get(f"/software/versions/{version.pk}/download")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == expected
    assert response["X-Checksum-SHA256"] == version.sha256
    assert 'filename="viewer-setup.exe"' in response["Content-Disposition"]
    event = AuditEvent.objects.get(action="software.download", outcome="success")
    assert event.user == admin_a.user and event.detail["sha256"] == version.sha256
    assert Licence.objects.get(institution=inst_a, software=viewer_software).used_count == 1


def test_an_unlicensed_user_is_refused_the_download_with_the_reason(client, admin_a, viewer_software):
    login(client, admin_a.user)
    version = viewer_software.versions.get()
    response = client.get(f"/software/versions/{version.pk}/download")
    assert response.status_code == 403
    assert "no licence for Viewer" in response.content.decode()
    assert AuditEvent.objects.filter(action="licence.refused", detail__purpose="download").exists()


def test_an_artifact_whose_checksum_no_longer_matches_is_refused_and_alerts_staff_and_admins(
    client, admin_a, inst_a, staff_user, viewer_software, _software_storage_in_tmp
):
    licences.grant_licence(actor=OPERATOR, institution=inst_a, software=viewer_software)
    version = viewer_software.versions.get()
    path = _software_storage_in_tmp / version.storage_name
    path.write_bytes(path.read_bytes()[:-1] + b"X")  # one byte changed at rest
    login(client, admin_a.user)
    response = client.get(f"/software/versions/{version.pk}/download")
    assert response.status_code == 409
    assert "no longer matches its SHA-256" in response.content.decode()
    assert Notification.objects.filter(user=staff_user, text__startswith="Integrity alert").exists()
    assert Notification.objects.filter(user=admin_a.user, text__startswith="Integrity alert").exists()
    assert AuditEvent.objects.filter(action="software.download", outcome="failure").exists()
    assert Licence.objects.get(institution=inst_a, software=viewer_software).used_count == 0


def test_catalogue_shows_each_software_licensed_or_not_for_the_callers_institution(client, admin_a, inst_a):
    licences.grant_licence(actor=OPERATOR, institution=inst_a, software=builtin_software("mip"))
    builtin_software("mpr")
    login(client, admin_a.user)
    page = client.get("/software/").content.decode()
    assert page.count('data-testid="licensed"') == 1
    assert page.count('data-testid="not-licensed"') == 1


def test_registering_software_is_for_provider_staff_only(client, admin_a):
    login(client, admin_a.user)
    response = client.post("/software/register/", {"name": "X", "vendor": "Y", "intended_use": "Z", "kind": "downloadable"})
    assert response.status_code == 403
    assert not Software.objects.exists()
    with pytest.raises(Exception, match="provider staff"):
        catalogue.register_software(actor=principal_of(admin_a), name="X", vendor="Y", intended_use="Z", kind="downloadable")
