"""manage.py seed_demo beyond the subscribers: demo studies to find, open and share, and accepted backup contracts; safe to run again."""

import io

from django.core.management import call_command

from images.models import Instance, Series, Share, Study
from images.selectors import studies_visible_to
from subscribers.access import principal_for_user
from subscribers.models import AuditEvent, User


def seed() -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_demo_studies_are_ingested_with_their_conditions_and_one_is_shared(db, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    out = seed()
    assert "CT chest with contrast (60 images)" in out
    ct = Study.objects.get(study_description="CT chest with contrast")
    assert ct.number_of_series == 2 and ct.number_of_instances == 60
    axial = Series.objects.get(study=ct, series_number=1)
    assert axial.number_of_instances == 48 and axial.conditions["KVP"] == 120
    modalities = set(Series.objects.values_list("modality", flat=True))
    assert {"CT", "MR", "CR", "DX", "PT", "US"} <= modalities
    clinician = User.objects.get(username="general-clinician")
    visible = studies_visible_to(principal_for_user(clinician, None))
    shared = [s for s in visible if s.is_shared]
    assert [s.study_description for s in shared] == ["PET/CT whole body"]
    assert AuditEvent.objects.filter(action__startswith="share").exists()

    from backup.models import Contract

    assert sorted(Contract.objects.filter(status="accepted").values_list("mode", flat=True)) == ["all_at_time", "per_examination"]
    from billing.tariffs import current_terms

    for contract in Contract.objects.all():  # proposed from the demo tariffs
        tariff = current_terms(contract.mode)
        assert (contract.accounting_points, contract.rate, contract.currency) == (tariff.accounting_points, tariff.rate, tariff.currency)
    from billing.models import Invoice

    invoices = Invoice.objects.filter(institution__slug__in=["demo-general", "demo-imaging"])
    assert invoices.count() == 2 and all(invoice.total > 0 for invoice in invoices)  # last month, a full month each
    from software.models import Licence

    assert Licence.objects.filter(institution__slug="demo-general").exists()

    counts = (Study.objects.count(), Instance.objects.count(), Share.objects.count())
    assert "images)" not in seed()
    assert (Study.objects.count(), Instance.objects.count(), Share.objects.count()) == counts
