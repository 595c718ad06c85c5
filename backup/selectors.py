"""Read queries of the backup app, scoped to the caller: provider staff see every contract, an institution's
admins see their own institution's, everyone else none."""

from __future__ import annotations

from django.db.models import QuerySet

from subscribers.access import NotVisible, Principal
from subscribers.models import Role

from .models import BackupObject, BackupRun, BackupSet, Contract, ContractRound


def contracts_visible_to(principal: Principal) -> QuerySet[Contract]:
    queryset = Contract.objects.select_related("institution", "created_by")
    if principal.is_provider_staff:
        return queryset
    if principal.institution is None or not principal.has_role(Role.ADMIN):
        return queryset.none()
    return queryset.filter(institution=principal.institution)


def get_contract(principal: Principal, pk) -> Contract:
    """The contract with this pk if the caller may see it; NotVisible (404) otherwise."""
    try:
        return contracts_visible_to(principal).get(pk=pk)
    except (Contract.DoesNotExist, ValueError, TypeError):
        raise NotVisible() from None


def rounds_of(contract: Contract) -> QuerySet[ContractRound]:
    """Every round of a contract the caller already got through `get_contract`, oldest first."""
    return contract.rounds.select_related("user").order_by("number")


def objects_of(contract: Contract) -> QuerySet[BackupObject]:
    return contract.backup_objects.order_by("kind", "label", "id")


def runs_of(contract: Contract) -> QuerySet[BackupRun]:
    return contract.runs.select_related("requested_by").order_by("-created_at", "-id")


# --- Runs and sets (the backup engine's portal pages, backup/views/runs.py) ---------------------------------------------


def get_run(principal: Principal, pk) -> BackupRun:
    """A run of a contract the caller may see; NotVisible (404) otherwise."""
    try:
        return BackupRun.objects.select_related("contract__institution", "requested_by").get(
            pk=pk, contract__in=contracts_visible_to(principal).values("pk")
        )
    except (BackupRun.DoesNotExist, ValueError, TypeError):
        raise NotVisible() from None


def sets_of(contract: Contract) -> QuerySet[BackupSet]:
    return contract.sets.select_related("backup_object").order_by("-created_at", "-id")
