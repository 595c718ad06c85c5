"""The portal's polling pages: an institution's admins see their sources' state, last polls, failures and last error,
add one and turn it off; other institutions get 404, members without the admin role 403; secrets are never shown."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from software.models import PollRun, PollSource
from software.polling import services
from software.polling.services import SourceSettings
from subscribers.access import OPERATOR
from subscribers.models import AuditEvent
from tests.conftest import login
from tests.factories import ApplicationEntityFactory

pytestmark = pytest.mark.django_db


def add_source(inst, name="Site PACS", **overrides) -> PollSource:
    values = {
        "name": name,
        "kind": "dicom",
        "ae_title": "SITEPACS",
        "host": "10.0.0.5",
        "port": 104,
        "processor_id": "mip",
        "parameters": {},
        "query": {"Modality": "CT"},
        **overrides,
    }
    return services.add_poll_source(principal=OPERATOR, institution=inst, source=SourceSettings(**values))


@pytest.fixture
def failing_source(inst_a, license_a):
    source = add_source(inst_a)
    PollRun.objects.create(
        source=source, status="failed", finished_at=timezone.now(), error="PACS at 10.0.0.5:104 could not be reached: No route to host"
    )
    PollRun.objects.create(source=source, status="done", found=3, fetched=2, processed=2, failed=0, finished_at=timezone.now())
    PollSource.objects.filter(pk=source.pk).update(
        failures=2,
        last_error="PACS at 10.0.0.5:104 could not be reached: No route to host",
        last_polled_at=timezone.now(),
        next_poll_at=timezone.now() + timedelta(minutes=240),
    )
    return source


def test_admin_sees_each_source_with_its_state_failures_and_last_error(client, admin_a, failing_source):
    login(client, admin_a.user)

    listing = client.get(reverse("poll-sources"))
    detail = client.get(reverse("poll-source", args=[failing_source.pk]))

    assert listing.status_code == 200
    text = listing.content.decode()
    assert "Site PACS" in text and "Failing (2×)" in text and "No route to host" in text
    assert detail.status_code == 200
    page = detail.content.decode()
    assert "The last 2 poll(s) failed: PACS at 10.0.0.5:104 could not be reached: No route to host" in page
    assert page.count('data-testid="poll-run-') == 2
    assert "<code>ModalitiesInStudy=CT</code>" in page


def test_list_costs_the_same_queries_for_one_source_or_many(client, admin_a, inst_a, license_a, django_assert_max_num_queries):
    for n in range(5):
        add_source(inst_a, name=f"PACS {n}", host=f"10.0.0.{n + 1}")
    login(client, admin_a.user)
    client.get(reverse("poll-sources"))  # warm the session and the processor registry
    with django_assert_max_num_queries(8):
        response = client.get(reverse("poll-sources"))
    assert response.content.decode().count('data-testid="poll-source-') == 5


def test_other_institution_gets_404_for_every_page_and_action_of_a_source(client, admin_b, failing_source):
    login(client, admin_b.user)

    assert client.get(reverse("poll-source", args=[failing_source.pk])).status_code == 404
    assert client.post(reverse("poll-source-set-active", args=[failing_source.pk]), {"active": "0"}).status_code == 404
    assert client.post(reverse("poll-source-poll-now", args=[failing_source.pk])).status_code == 404
    assert "Site PACS" not in client.get(reverse("poll-sources")).content.decode()
    failing_source.refresh_from_db()
    assert failing_source.is_active


def test_members_without_the_admin_role_are_refused(client, clinician_a, failing_source):
    login(client, clinician_a.user)
    assert client.get(reverse("poll-sources")).status_code == 403
    assert client.get(reverse("poll-source", args=[failing_source.pk])).status_code == 403


def test_provider_staff_see_the_sources_of_every_institution(client, staff_user, inst_b, failing_source):
    login(client, staff_user)
    text = client.get(reverse("poll-sources")).content.decode()
    assert "Site PACS" in text and "Alpha Hospital" in text


def test_admin_turns_a_source_off_and_on_and_asks_for_a_poll_now(client, admin_a, failing_source):
    login(client, admin_a.user)

    response = client.post(reverse("poll-source-set-active", args=[failing_source.pk]), {"active": "0"})
    assert response.status_code == 302
    failing_source.refresh_from_db()
    assert not failing_source.is_active
    assert client.post(reverse("poll-source-poll-now", args=[failing_source.pk]), follow=True).status_code == 200
    failing_source.refresh_from_db()
    assert failing_source.next_poll_at > timezone.now()  # refused while off: the schedule is unchanged

    client.post(reverse("poll-source-set-active", args=[failing_source.pk]), {"active": "1"})
    failing_source.refresh_from_db()
    assert failing_source.is_active and failing_source.failures == 0 and failing_source.next_poll_at <= timezone.now()
    actions = list(
        AuditEvent.objects.filter(object_id=str(failing_source.pk), action__startswith="software.poll_source.").values_list(
            "action", flat=True
        )
    )
    assert sorted(actions) == ["software.poll_source.create", "software.poll_source.disable", "software.poll_source.enable"]


def test_admin_adds_a_dicom_source_with_push_delivery(client, admin_a, inst_a, license_a):
    receiver = ApplicationEntityFactory(institution=inst_a, ae_title="WORKSTN", host="10.0.0.9", port=104, can_receive=True)
    login(client, admin_a.user)

    response = client.post(
        reverse("poll-source-add"),
        {
            "name": "Radiology PACS",
            "kind": "dicom",
            "ae_title": "RADPACS",
            "host": "10.0.0.5",
            "port": "104",
            "retrieve": "c-get",
            "modality": "CT",
            "study_description": "*CHEST*",
            "max_age_days": "7",
            "processor_id": "mip",
            "parameters": "slab_thickness_mm=10",
            "every_minutes": "15",
            "delivery": "push",
            "push_ae": str(receiver.pk),
        },
    )

    source = PollSource.objects.get(institution=inst_a)
    assert response.status_code == 302 and response["Location"] == reverse("poll-source", args=[source.pk])
    assert (source.ae_title, source.host, source.port, source.every_minutes, source.max_age_days) == ("RADPACS", "10.0.0.5", 104, 15, 7)
    assert source.query == {"ModalitiesInStudy": "CT", "StudyDescription": "*CHEST*"}
    assert source.parameters == {"slab_thickness_mm": 10}
    assert (source.delivery, source.push_ae) == ("push", receiver)
    assert source.next_poll_at <= timezone.now()


def test_add_form_shows_what_is_wrong_and_saves_nothing(client, admin_a, license_a):
    login(client, admin_a.user)

    response = client.post(
        reverse("poll-source-add"),
        {
            "kind": "dicom",
            "ae_title": "BAD\\TITLE",
            "host": "10.0.0.5",
            "port": "104",
            "retrieve": "c-get",
            "processor_id": "mip",
            "parameters": "slab_thickness_mm=-5",
            "every_minutes": "15",
            "delivery": "pull",
        },
    )

    assert response.status_code == 200
    assert "An AE title is 1 to 16 printable ASCII characters" in response.content.decode()
    assert not PollSource.objects.exists()


def test_a_dicomweb_secret_is_never_shown_back(client, admin_a, inst_a, license_a):
    source = add_source(inst_a, kind="dicomweb", url="https://pacs.example.org/dicom-web", secret="tok-5ecret-value-XYZ")
    login(client, admin_a.user)

    pages = [client.get(reverse("poll-sources")), client.get(reverse("poll-source", args=[source.pk]))]

    assert all(page.status_code == 200 for page in pages)
    assert not any("tok-5ecret-value-XYZ" in page.content.decode() for page in pages)
    assert "with a bearer token" in pages[1].content.decode()
    event = AuditEvent.objects.get(action="software.poll_source.create")
    assert "tok-5ecret-value-XYZ" not in str(event.detail) and event.detail["has_secret"] is True
