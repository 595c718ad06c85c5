"""Runs on the contract page: start a backup, a verification or a restore, follow its progress, download a restore zip.

Institution admins act on their own institution's contracts, provider staff on every institution's; contracts and
runs are looked up through `backup.selectors`, so another institution's are 404. The engine (backup.engine.run)
refuses what may not run and says why; that sentence becomes the page's message and nothing is queued.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from subscribers import audit
from subscribers.decorators import admin_required
from subscribers.models import Role

from .. import selectors
from ..engine import restore as restoring
from ..engine import run as runs
from ..engine.errors import BackupError
from ..models import BackupRun


def _back_to_contract(contract):
    return redirect(reverse("backup-contract", args=[contract.pk]) + "#runs-title")


def _started(request, run: BackupRun, what: str) -> None:
    messages.success(request, f"{what} {run.pk} is queued; its progress shows below.")


@admin_required
@require_POST
def start_backup(request, pk):
    contract = selectors.get_contract(request.principal, pk)
    object_id = request.POST.get("object")
    try:
        run = runs.request_backup(contract=contract, principal=request.principal, object_ids=[object_id] if object_id else None)
    except (BackupError, ValueError) as refusal:
        messages.error(request, f"No backup started: {getattr(refusal, 'message', 'that object of backup is not known')}.")
    else:
        _started(request, run, "Backup")
    return _back_to_contract(contract)


@admin_required
@require_POST
def start_verify(request, pk):
    contract = selectors.get_contract(request.principal, pk)
    set_id = request.POST.get("set")
    try:
        run = runs.request_verify(contract=contract, principal=request.principal, set_ids=[set_id] if set_id else None)
    except (BackupError, ValueError) as refusal:
        messages.error(request, f"No verification started: {getattr(refusal, 'message', 'that set is not known')}.")
    else:
        _started(request, run, "Verification")
    return _back_to_contract(contract)


@admin_required
@require_POST
def start_restore(request, pk):
    contract = selectors.get_contract(request.principal, pk)
    data = request.POST
    try:
        run = runs.request_restore(
            contract=contract,
            principal=request.principal,
            scope=data.get("scope", ""),
            value=data.get("value", ""),
            set_id=data.get("set") or None,
            destination=data.get("destination", "archive"),
        )
    except BackupError as refusal:
        messages.error(request, f"No restore started: {refusal.message}.")
    else:
        _started(request, run, "Restore")
    return _back_to_contract(contract)


def _progress(run: BackupRun, principal) -> dict:
    return {
        "id": run.pk,
        "kind": run.kind,
        "status": run.status,
        "status_display": run.get_status_display(),
        "active": run.status in BackupRun.ACTIVE,
        "percent": run.percent,
        "files_done": run.files_done,
        "files_total": run.files_total,
        "bytes_done": run.bytes_done,
        "bytes_total": run.bytes_total,
        "message": run.message,
        "heartbeat_at": run.heartbeat_at.isoformat() if run.heartbeat_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "download_url": reverse("backup-run-download", args=[run.pk]) if _may_download(run, principal) else None,
    }


def _may_download(run: BackupRun, principal) -> bool:
    """A restore zip holds patient data: only the owning institution's admins download it (provider staff may start
    one for them, as they may restore into the archive, but do not read patient data)."""
    return bool(
        run.kind == BackupRun.Kind.RESTORE
        and run.status == BackupRun.Status.DONE
        and (run.result or {}).get("export")
        and principal.institution_id == run.contract.institution_id
        and principal.has_role(Role.ADMIN)
    )


@admin_required
@require_GET
def run_progress(request, run_id):
    run = selectors.get_run(request.principal, run_id)
    response = JsonResponse(_progress(run, request.principal))
    response["Cache-Control"] = "no-store"
    return response


@admin_required
@require_GET
def run_detail(request, run_id):
    run = selectors.get_run(request.principal, run_id)
    set_ids = (run.result or {}).get("damaged_sets") or (run.result or {}).get("sets") or []
    sets = selectors.sets_of(run.contract).filter(pk__in=set_ids if isinstance(set_ids, list) else [])
    return render(
        request,
        "backup/runs/detail.html",
        {"run": run, "contract": run.contract, "sets": sets[:100], "may_download": _may_download(run, request.principal)},
    )


@admin_required
@require_GET
def run_download(request, run_id):
    run = selectors.get_run(request.principal, run_id)
    if not _may_download(run, request.principal):
        raise Http404()
    handle = restoring.open_export(run)
    if handle is None:
        raise Http404()
    audit.record(
        action="backup.restore.download",
        request=request,
        institution=run.contract.institution,
        obj=run,
        contract=run.contract_id,
        export=run.result.get("export"),
    )
    filename = f"restore-{run.contract.institution.slug}-{run.pk}.zip"
    return FileResponse(handle, as_attachment=True, filename=filename, content_type="application/zip")
