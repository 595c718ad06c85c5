"""The storage-condition pages: an institution admin edits the conditions and legal holds and sees the data stored and
the runs; a clinician gets 403; another institution's rows are 404; provider staff see every institution's state."""

from datetime import date

import pytest
from django.urls import reverse

from images.ingest import ingest_instance
from images.models import LegalHold, StorageCondition, StorageSnapshot, Study
from images.storage_conditions import enforcement
from images.storage_conditions.services import place_legal_hold, save_storage_condition
from subscribers.models import AuditEvent
from tests.conftest import login
from tests.dicom_files import synth_bytes

VALID = {
    "retention_years": "10",
    "retention_from": "study_date",
    "at_retention_end": "delete",
    "compression": "1.2.840.10008.1.2.4.90",
    "required_backup_copies": "2",
}


def store(principal, **kwargs):
    return ingest_instance(principal=principal, data=synth_bytes("CT", rows=32, cols=32, **kwargs), source="test").instance


def condition(principal, modality="", **values):
    values = {"retention_from": "study_date", "at_retention_end": "keep_flag", "compression": "", "required_backup_copies": 0, **values}
    return save_storage_condition(principal=principal, institution=principal.institution, modality=modality, **values)


def snapshot_values(institution):
    return list(StorageCondition.objects.filter(institution=institution).order_by("modality").values())


@pytest.fixture
def admin_client(client, admin_a):
    return login(client, admin_a.user)


# --- Conditions ------------------------------------------------------------------------------------------------------


def test_admin_sets_the_default_and_a_modality_row_from_the_portal(admin_client, inst_a):
    saved = admin_client.post(reverse("storage-condition-default"), {**VALID, "immutable": "on"})
    added = admin_client.post(
        reverse("storage-condition-add"), {**VALID, "modality": "mr", "retention_years": "30", "compression": "", "immutable": "on"}
    )

    assert saved.status_code == added.status_code == 302
    rows = {c.modality: c for c in StorageCondition.objects.filter(institution=inst_a)}
    assert (rows[""].retention_years, rows[""].compression, rows[""].immutable, rows[""].required_backup_copies) == (
        10,
        "1.2.840.10008.1.2.4.90",
        True,
        2,
    )
    assert (rows["MR"].retention_years, rows["MR"].compression) == (30, "")
    assert [e.action for e in AuditEvent.objects.filter(action__startswith="storage_condition").order_by("id")] == [
        "storage_condition.create"
    ] * 2
    page = admin_client.get(reverse("storage-conditions")).content.decode()
    assert "10 years from the study date" in page and "JPEG 2000 lossless" in page and "30 years" in page and "Immutable" in page


def test_editing_a_row_changes_it_and_audits_old_and_new_values(admin_client, principal_a):
    ct = condition(principal_a, "CT", retention_years=5)

    response = admin_client.post(reverse("storage-condition-edit", args=[ct.pk]), {**VALID, "retention_years": "8"})

    assert response.status_code == 302
    ct.refresh_from_db()
    assert (ct.modality, ct.retention_years, ct.at_retention_end) == ("CT", 8, "delete")
    event = AuditEvent.objects.get(action="storage_condition.update")
    assert event.detail["changes"]["retention_years"] == [5, 8] and event.detail["modality"] == "CT" and event.actor == "admin_a"


@pytest.mark.parametrize(
    "change, field",
    [
        ({"retention_years": "0"}, "retention_years"),
        ({"retention_years": "ten"}, "retention_years"),
        ({"retention_from": "birthday"}, "retention_from"),
        ({"compression": "1.2.840.10008.1.2.4.50"}, "compression"),
        ({"required_backup_copies": "11"}, "required_backup_copies"),
        ({"required_backup_copies": ""}, "required_backup_copies"),
    ],
)
def test_invalid_values_are_a_form_error_and_change_nothing(admin_client, principal_a, inst_a, change, field):
    condition(principal_a, retention_years=7)
    before = snapshot_values(inst_a)

    response = admin_client.post(reverse("storage-condition-default"), {**VALID, **change})

    assert response.status_code == 200
    assert field in response.context["form"].errors
    assert snapshot_values(inst_a) == before
    assert not AuditEvent.objects.filter(action="storage_condition.update").exists()


def test_weakening_immutable_conditions_is_a_form_error(admin_client, principal_a, inst_a):
    condition(principal_a, retention_years=10, immutable=True)
    before = snapshot_values(inst_a)

    response = admin_client.post(reverse("storage-condition-default"), {**VALID, "retention_years": "5", "immutable": "on"})

    assert response.status_code == 200 and "cannot be shortened below 10 years" in response.content.decode()
    assert snapshot_values(inst_a) == before


def test_a_second_row_for_the_same_modality_is_a_form_error(admin_client, principal_a, inst_a):
    condition(principal_a, "CT", retention_years=5)

    response = admin_client.post(reverse("storage-condition-add"), {**VALID, "modality": "ct"})

    assert response.status_code == 200 and "already" in str(response.context["form"].errors["modality"])
    assert StorageCondition.objects.filter(institution=inst_a).count() == 1


def test_a_modality_row_is_removed_and_the_default_cannot_be(admin_client, principal_a, inst_a):
    default = condition(principal_a, retention_years=5)
    ct = condition(principal_a, "CT", retention_years=7)

    admin_client.post(reverse("storage-condition-remove", args=[ct.pk]))
    refused = admin_client.post(reverse("storage-condition-remove", args=[default.pk]), follow=True)

    assert list(StorageCondition.objects.filter(institution=inst_a).values_list("modality", flat=True)) == [""]
    assert "cannot be removed" in refused.content.decode()
    assert AuditEvent.objects.filter(action="storage_condition.remove").count() == 1


# --- Legal holds -----------------------------------------------------------------------------------------------------


def test_admin_places_holds_by_patient_id_and_study_uid_and_lifts_one_with_a_reason(admin_client, principal_a, inst_a):
    study = store(principal_a, patient_id="PAT-H1").study
    store(principal_a, patient_id="PAT-H2")

    by_study = admin_client.post(reverse("storage-hold-place"), {"study_instance_uid": study.study_instance_uid, "reason": "Case 7"})
    by_patient = admin_client.post(reverse("storage-hold-place"), {"patient_id": "PAT-H2", "reason": "Subpoena 12"})

    assert by_study.status_code == by_patient.status_code == 302
    holds = {h.subject: h for h in LegalHold.objects.filter(institution=inst_a)}
    assert set(holds) == {f"study {study.study_instance_uid}", "patient PAT-H2"}
    page = admin_client.get(reverse("storage-conditions")).content.decode()
    assert "Case 7" in page and "Subpoena 12" in page

    lifted = admin_client.post(reverse("storage-hold-lift", args=[holds["patient PAT-H2"].pk]), {"reason": "Case closed"})

    assert lifted.status_code == 302
    hold = LegalHold.objects.get(pk=holds["patient PAT-H2"].pk)
    assert (hold.is_active, hold.lifted_by_name, hold.lift_reason) == (False, "admin_a", "Case closed")
    assert [e.action for e in AuditEvent.objects.filter(action__startswith="legal_hold").order_by("id")] == ["legal_hold.place"] * 2 + [
        "legal_hold.lift"
    ]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"patient_id": "NOBODY", "reason": "Case 7"}, "No patient with ID NOBODY"),
        ({"study_instance_uid": "1.2.3.4", "reason": "Case 7"}, "No study 1.2.3.4"),
        ({"patient_id": "PAT-1", "study_instance_uid": "1.2.3.4", "reason": "Case 7"}, "either a patient ID or a study instance UID"),
        ({"reason": "Case 7"}, "either a patient ID or a study instance UID"),
        ({"patient_id": "PAT-1", "reason": ""}, "This field is required"),
    ],
)
def test_a_hold_that_names_nothing_known_is_a_form_error(admin_client, principal_a, data, message):
    store(principal_a, patient_id="PAT-1")

    response = admin_client.post(reverse("storage-hold-place"), data)

    assert response.status_code == 200 and message in response.content.decode()
    assert LegalHold.objects.count() == 0


def test_lifting_needs_a_reason_and_a_lifted_hold_stays_lifted(admin_client, principal_a, inst_a):
    store(principal_a, patient_id="PAT-1")
    hold = place_legal_hold(principal=principal_a, institution=inst_a, patient_id="PAT-1", reason="Case 7")

    without = admin_client.post(reverse("storage-hold-lift", args=[hold.pk]), {"reason": ""})
    assert without.status_code == 200 and LegalHold.objects.get().is_active

    admin_client.post(reverse("storage-hold-lift", args=[hold.pk]), {"reason": "Case closed"})
    again = admin_client.post(reverse("storage-hold-lift", args=[hold.pk]), {"reason": "Once more"})
    assert again.status_code == 200 and LegalHold.objects.get().lift_reason == "Case closed"


# --- Isolation and roles ---------------------------------------------------------------------------------------------


@pytest.fixture
def foreign(principal_b, inst_b):
    """inst_b's rows: a condition, a hold and a study past retention."""
    ct = condition(principal_b, "CT", retention_years=5)
    study = store(principal_b, patient_id="PAT-B", study_date=date(2001, 1, 1)).study
    hold = place_legal_hold(principal=principal_b, institution=inst_b, patient_id="PAT-B", reason="Beta case")
    return {"condition": ct, "hold": hold, "study": study}


def test_another_institutions_conditions_holds_and_studies_are_404(admin_client, foreign, inst_b):
    before = (snapshot_values(inst_b), list(LegalHold.objects.values()), Study.objects.count())
    urls = [
        ("get", reverse("storage-condition-edit", args=[foreign["condition"].pk]), {}),
        ("post", reverse("storage-condition-edit", args=[foreign["condition"].pk]), VALID),
        ("post", reverse("storage-condition-remove", args=[foreign["condition"].pk]), {}),
        ("get", reverse("storage-hold-lift", args=[foreign["hold"].pk]), {}),
        ("post", reverse("storage-hold-lift", args=[foreign["hold"].pk]), {"reason": "mine now"}),
        ("get", reverse("storage-study-delete", args=[foreign["study"].study_instance_uid]), {}),
        ("post", reverse("storage-study-delete", args=[foreign["study"].study_instance_uid]), {"reason": "gone"}),
    ]
    for method, url, data in urls:
        assert getattr(admin_client, method)(url, data).status_code == 404, url
    # A hold on inst_b's patient ID from inst_a names nothing inst_a knows.
    response = admin_client.post(reverse("storage-hold-place"), {"patient_id": "PAT-B", "reason": "fishing"})
    assert "No patient with ID PAT-B" in response.content.decode()
    for url in (reverse("storage-conditions"), reverse("storage-holds"), reverse("storage-past-retention")):
        page = admin_client.get(url).content.decode()
        assert "Beta case" not in page and "PAT-B" not in page
    assert (snapshot_values(inst_b), list(LegalHold.objects.values()), Study.objects.count()) == before


def test_a_clinician_gets_403_on_every_page(client, clinician_a, principal_a, inst_a):
    ct = condition(principal_a, "CT", retention_years=5)
    study = store(principal_a, patient_id="PAT-1").study
    hold = place_legal_hold(principal=principal_a, institution=inst_a, patient_id="PAT-1", reason="Case 7")
    login(client, clinician_a.user)
    urls = [
        reverse("storage-conditions"),
        reverse("storage-condition-default"),
        reverse("storage-condition-add"),
        reverse("storage-condition-edit", args=[ct.pk]),
        reverse("storage-condition-remove", args=[ct.pk]),
        reverse("storage-holds"),
        reverse("storage-hold-place"),
        reverse("storage-hold-lift", args=[hold.pk]),
        reverse("storage-past-retention"),
        reverse("storage-study-delete", args=[study.study_instance_uid]),
        reverse("storage-provider"),
    ]
    for url in urls:
        if "/remove/" not in url:  # POST only: a GET is 405 for everyone
            assert client.get(url).status_code == 403, url
        assert client.post(url, {**VALID, "reason": "x", "patient_id": "PAT-1"}).status_code == 403, url
    assert StorageCondition.objects.get().retention_years == 5 and LegalHold.objects.get().is_active and Study.objects.count() == 1


def test_the_navigation_offers_the_pages_to_admins_and_provider_staff_only(client, admin_client, clinician_a, staff_user):
    admin_home = admin_client.get(reverse("home")).content.decode()
    assert reverse("storage-conditions") in admin_home and reverse("storage-provider") not in admin_home
    login(client, clinician_a.user)
    assert reverse("storage-conditions") not in client.get(reverse("home")).content.decode()
    login(client, staff_user)
    assert reverse("storage-provider") in client.get(reverse("home")).content.decode()


# --- State, runs, past retention -------------------------------------------------------------------------------------


def test_the_page_shows_the_latest_state_and_the_history_of_runs(admin_client, principal_a, inst_a, django_assert_max_num_queries):
    store(principal_a, patient_id="PAT-1", study_date=date(2001, 1, 1))
    store(principal_a, patient_id="PAT-2")
    condition(principal_a, retention_years=10, at_retention_end="keep_flag", required_backup_copies=1)
    for n in range(5):
        place_legal_hold(principal=principal_a, institution=inst_a, patient_id="PAT-2", reason=f"Case {n}")
    for _ in range(3):
        enforcement.enforce(institution=inst_a, trigger="test")

    with django_assert_max_num_queries(15):
        page = admin_client.get(reverse("storage-conditions"))

    state = page.context["latest"]
    assert (state.studies, state.instances, state.studies_flagged, state.studies_held, state.studies_lacking_backup_copies) == (
        2,
        2,
        1,
        1,
        2,
    )
    assert len(page.context["runs"]) == 3
    assert page.content.decode().count("<td>test</td>") == 3


def test_admin_deletes_a_flagged_study_from_the_past_retention_list(admin_client, principal_a, inst_a, django_capture_on_commit_callbacks):
    old = store(principal_a, patient_id="PAT-OLD", study_date=date(2001, 1, 1))
    store(principal_a, patient_id="PAT-NEW")
    condition(principal_a, retention_years=10, at_retention_end="keep_flag")

    listed = admin_client.get(reverse("storage-past-retention")).content.decode()
    assert "PAT-OLD" in listed and "PAT-NEW" not in listed
    no_reason = admin_client.post(reverse("storage-study-delete", args=[old.study.study_instance_uid]), {"reason": ""})
    assert no_reason.status_code == 200 and Study.objects.count() == 2
    with django_capture_on_commit_callbacks(execute=True):
        deleted = admin_client.post(
            reverse("storage-study-delete", args=[old.study.study_instance_uid]), {"reason": "Reviewed, not needed"}
        )

    assert deleted.status_code == 302
    assert list(Study.objects.values_list("patient__patient_id", flat=True)) == ["PAT-NEW"]
    assert AuditEvent.objects.get(action="study.delete").detail["reason"] == "Reviewed, not needed"


def test_the_delete_page_says_why_an_immutable_study_cannot_go_and_the_post_changes_nothing(admin_client, principal_a):
    recent = store(principal_a, patient_id="PAT-1", study_date=date(2024, 5, 1))
    condition(principal_a, retention_years=10, immutable=True)
    url = reverse("storage-study-delete", args=[recent.study.study_instance_uid])

    shown = admin_client.get(url).content.decode()
    refused = admin_client.post(url, {"reason": "please"})

    assert "immutable and its retention ends on 2034-05-01" in shown
    assert refused.status_code == 200 and "cannot be deleted" in refused.content.decode()
    assert Study.objects.count() == 1


def test_provider_staff_see_every_institutions_state_and_admins_do_not(
    client, staff_user, admin_a, principal_a, principal_b, inst_a, inst_b
):
    store(principal_a, patient_id="PAT-1")
    store(principal_b, patient_id="PAT-B1")
    store(principal_b, patient_id="PAT-B2")
    enforcement.enforce(institution=inst_a, trigger="test")
    enforcement.enforce(institution=inst_b, trigger="test")
    login(client, staff_user)

    page = client.get(reverse("storage-provider"))

    assert page.status_code == 200
    figures = {row["institution"].slug: row["snapshot"].instances for row in page.context["rows"]}
    assert figures == {"alpha": 1, "beta": 2} and page.context["totals"]["instances"] == 3
    body = page.content.decode()
    assert "Alpha Hospital" in body and "Beta Clinic" in body and "PAT-B1" not in body  # figures, no patient data
    assert StorageSnapshot.objects.count() == 2
    login(client, admin_a.user)
    assert client.get(reverse("storage-provider")).status_code == 403
