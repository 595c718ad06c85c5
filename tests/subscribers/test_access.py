"""The access gate: tokens, AE titles, session users and their active institution."""

from datetime import timedelta

import pytest
from django.utils import timezone

from subscribers import services
from subscribers.access import AuthenticationFailed, NotVisible, principal_for_ae, principal_for_token
from subscribers.models import ApiToken, AuditEvent, Institution
from tests.factories import ApplicationEntityFactory


def test_token_authenticates_as_its_member_with_roles(principal_a, admin_a):
    token, raw = services.issue_token(actor=principal_a, membership=admin_a, name="script")
    p = principal_for_token(raw)
    assert p.kind == "token" and p.user == admin_a.user and p.institution == admin_a.institution
    assert p.has_role("register") and not p.is_provider_staff
    assert ApiToken.objects.get(pk=token.pk).last_used_at is not None
    assert token.token_hash != raw and raw not in str(ApiToken.objects.filter(pk=token.pk).values().get())


@pytest.mark.parametrize(
    "spoil, code",
    [
        (lambda t: ApiToken.objects.filter(pk=t.pk).update(revoked_at=timezone.now()), "token_revoked"),
        (lambda t: ApiToken.objects.filter(pk=t.pk).update(expires_at=timezone.now() - timedelta(seconds=1)), "token_expired"),
        (lambda t: Institution.objects.filter(pk=t.institution_id).update(status="suspended"), "institution_suspended"),
        (lambda t: t.membership.__class__.objects.filter(pk=t.membership_id).update(is_active=False), "membership_inactive"),
    ],
)
def test_spoiled_token_is_refused_with_reason(principal_a, admin_a, spoil, code):
    token, raw = services.issue_token(actor=principal_a, membership=admin_a, name="script")
    spoil(token)
    with pytest.raises(AuthenticationFailed) as failure:
        principal_for_token(raw)
    assert failure.value.code == code


def test_unknown_token_is_refused(db):
    with pytest.raises(AuthenticationFailed) as failure:
        principal_for_token("mda_deadbeef_notarealtoken")
    assert failure.value.code == "token_unknown"


def test_ae_title_is_accepted_only_from_its_host(inst_a):
    ApplicationEntityFactory(institution=inst_a, ae_title="CT01", host="127.0.0.1")
    assert principal_for_ae("CT01", "127.0.0.1").institution == inst_a
    with pytest.raises(AuthenticationFailed) as wrong_host:
        principal_for_ae("CT01", "127.0.0.2")
    assert wrong_host.value.code == "ae_wrong_host"
    with pytest.raises(AuthenticationFailed) as unknown:
        principal_for_ae("NOBODY", "127.0.0.1")
    assert unknown.value.code == "ae_unknown"


def test_ae_title_of_suspended_institution_is_refused(inst_a):
    ApplicationEntityFactory(institution=inst_a, ae_title="CT01", host="127.0.0.1")
    inst_a.status = "suspended"
    inst_a.save()
    with pytest.raises(AuthenticationFailed) as failure:
        principal_for_ae("CT01", "127.0.0.1")
    assert failure.value.code == "institution_suspended"


def test_admin_of_one_institution_cannot_issue_tokens_in_another(principal_a, admin_b):
    with pytest.raises(NotVisible):
        services.issue_token(actor=principal_a, membership=admin_b, name="sneaky")
    assert not ApiToken.objects.exists()


def test_audit_events_cannot_be_changed(principal_a, admin_a):
    services.issue_token(actor=principal_a, membership=admin_a, name="script")
    event = AuditEvent.objects.get(action="token.create")
    event.action = "nothing.happened"
    with pytest.raises(Exception, match="append-only"):
        event.save()
    with pytest.raises(Exception, match="append-only"):
        event.delete()


def test_admin_cannot_pull_a_user_of_another_institution_into_theirs(principal_a, admin_b):
    from django.core.exceptions import ValidationError

    from subscribers.models import Membership

    with pytest.raises(ValidationError, match="taken"):
        services.add_member(actor=principal_a, institution=principal_a.institution, username=admin_b.user.username, roles=["receive"])
    assert not Membership.objects.filter(user=admin_b.user, institution=principal_a.institution).exists()


def test_database_itself_refuses_to_rewrite_audit_events(principal_a, admin_a):
    from django.db import connection, transaction

    if connection.vendor != "postgresql":
        pytest.skip("the trigger is PostgreSQL's; SQLite relies on the model guard tested above")
    services.issue_token(actor=principal_a, membership=admin_a, name="script")
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(action="token.create").update(action="nothing")
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(action="token.create").delete()


def test_api_me_answers_for_a_token_and_refuses_a_revoked_one(client, principal_a, admin_a):
    token, raw = services.issue_token(actor=principal_a, membership=admin_a, name="script")
    ok = client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert ok.status_code == 200 and ok.json()["institution"]["slug"] == "alpha" and "register" in ok.json()["roles"]
    services.revoke_token(actor=principal_a, token=token)
    refused = client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert refused.status_code == 401 and refused.json()["code"] == "token_revoked"
    assert AuditEvent.objects.filter(action="token.refused", detail__code="token_revoked").exists()
    assert client.get("/api/v1/me").status_code == 401
