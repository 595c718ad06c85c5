"""The runs panel of the contract page (templates/backup/_runs.html): what the backup engine adds to the context."""

from django import template

from backup import selectors
from backup.models import BackupRun, BackupSet

register = template.Library()


@register.simple_tag(takes_context=True)
def runs_panel(context, contract):
    """Sets to restore from, the contract's latest sets, whether a run may start now and why not."""
    principal = context.get("principal")
    sets = list(selectors.sets_of(contract)[:20])
    active = contract.runs.filter(status__in=BackupRun.ACTIVE).first()
    verified = list(selectors.sets_of(contract).filter(status=BackupSet.Status.VERIFIED)[:50])
    restorable = contract.runs_allowed or contract.status == contract.Status.TERMINATED
    if contract.status == contract.Status.TERMINATED:
        blocked = "This contract is terminated: no backups start; its verified sets can still be restored."
    elif not contract.runs_allowed:
        blocked = f"This contract is {contract.get_status_display().lower()}: no runs start."
    elif active is not None:
        blocked = f"{active.get_kind_display()} {active.pk} is {active.get_status_display().lower()}; the next run can start when it ends."
    else:
        blocked = ""
    return {
        "sets": sets,
        "verified_sets": verified,
        "blocked": blocked,
        "busy": active is not None,
        "restorable": restorable,
        "may_download": bool(principal and principal.institution_id == contract.institution_id and principal.has_role("admin")),
    }
