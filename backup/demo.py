"""Demo backup contracts: one accepted contract per demo institution, negotiated through the services.

`seed_contracts(stdout, institutions, staff_user)` is a seed_demo step: provider staff propose, the institution's
admin accepts. The first institution gets 'all at a set time' (nightly at 02:00), the second 'per examination'.
Safe to run again: an institution that already has an accepted contract is left alone.

The demo contracts start on the first day of last month, as if negotiated then (the acceptance, the rounds and
the objects of backup are dated that day), so billing has a full month to invoice straight away. Only the demo
does this; real contracts are dated when they are made.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

from django.utils import timezone

from subscribers.access import Principal, principal_for_user
from subscribers.models import Institution, Membership, Role

from . import services
from .models import BackupMode, Contract, Coverage
from .recommend import add_months, default_currency, default_points, default_rate

DEMO_MODES = (BackupMode.ALL_AT_TIME, BackupMode.PER_EXAMINATION)


def _institution_admin(institution: Institution) -> Principal:
    """An admin of the institution to accept for it (the operator acting as its admin when it has none)."""
    membership = (
        Membership.objects.filter(institution=institution, is_admin=True, is_active=True, user__is_active=True)
        .select_related("user")
        .order_by("pk")
        .first()
    )
    if membership is not None:
        return principal_for_user(membership.user, institution.pk)
    return Principal(kind="operator", institution=institution, roles=frozenset({Role.ADMIN}))


def seed_contracts(stdout, institutions, staff_user) -> list[Contract]:
    """One accepted contract per institution (a mapping slug -> Institution, or an iterable), in DEMO_MODES order."""
    items = list(institutions.values() if hasattr(institutions, "values") else institutions)
    staff = principal_for_user(staff_user, None)
    today = timezone.localdate()
    start = (today.replace(day=1) - timedelta(days=1)).replace(day=1)  # the first day of last month
    contracts = []
    for institution, mode in zip(items, DEMO_MODES * (len(items) // len(DEMO_MODES) + 1), strict=False):
        existing = Contract.objects.filter(institution=institution, status=Contract.Status.ACCEPTED).first()
        if existing is not None:
            stdout.write(f"{institution.name} already has an accepted backup contract ({existing})\n")
            contracts.append(existing)
            continue
        terms = {
            "mode": mode,
            "coverage": Coverage.ALL,
            "coverage_items": [],
            "schedule_time": time(2, 0) if mode == BackupMode.ALL_AT_TIME else None,
            "quiet_minutes": 30,
            "period_start": start,
            "period_end": add_months(start, 12) - timedelta(days=1),
            "accounting_points": default_points(mode),
            "rate": default_rate(mode),
            "currency": default_currency(mode),
            "target": "backup",
        }
        contract = services.propose_contract(
            principal=staff,
            institution=institution,
            terms=terms,
            title=f"Demo backup: {BackupMode(mode).label.lower()}",
            message="Demo terms.",
        )
        services.accept_contract(principal=_institution_admin(institution), contract=contract, message="Agreed (demo).")
        _date_back(contract, start)
        contract.refresh_from_db()
        stdout.write(f"accepted backup contract for {institution.name}: {contract}\n")
        contracts.append(contract)
    return contracts


def _date_back(contract: Contract, start) -> None:
    """Date the demo negotiation and the objects of backup on the contract's first day."""
    from .engine.objects import refresh_objects

    moment = timezone.make_aware(datetime.combine(start, time(9, 0)))
    Contract.objects.filter(pk=contract.pk).update(created_at=moment, accepted_at=moment)
    contract.rounds.update(created_at=moment)
    refresh_objects(contract)
    contract.backup_objects.update(created_at=moment)
