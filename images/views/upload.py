"""Browser upload: the page to choose files, folders and zips, and the endpoint its script posts each file to.

The endpoint answers JSON to the page's script (one file per request, so each has its own
progress bar) and a plain result page to a form posted without JavaScript.
"""

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from subscribers.audit import client_address
from subscribers.decorators import role_required
from subscribers.models import Role

from ..errors import IngestRefused, NotAuthorized
from ..ingest import bulk

SOURCE = "upload"
# A zip's answer lists at most this many refused entries (the counts cover all of them).
MAX_LISTED_REFUSALS = 500


@require_GET
@role_required(Role.REGISTER)
def upload_page(request):
    return render(request, "images/upload.html", {"max_instance_bytes": bulk.max_instance_bytes()})


@require_POST
def upload_file(request):
    wants_json = "application/json" in request.headers.get("Accept", "")
    principal = request.principal
    if not principal.is_authenticated:
        if wants_json:
            return JsonResponse(
                _refused("", "Your session has ended: log in again, then send the file again.", "not_authenticated"), status=401
            )
        return redirect_to_login(reverse("upload"))
    uploads = request.FILES.getlist("file")
    if not uploads:
        body = _refused("", "No file was sent: choose a file first.", "no_file")
        return (
            JsonResponse(body, status=400) if wants_json else render(request, "images/upload_result.html", {"answers": [body]}, status=400)
        )
    address = client_address(request)
    answers = []
    for uploaded in uploads:
        # The page's script sends the path inside a chosen folder; it is shown, never used as a path.
        name = (request.POST.get("name", "") if len(uploads) == 1 else "")[:500] or uploaded.name
        try:
            answers.append(_ingest(principal, uploaded, name, address))
        except NotAuthorized as refusal:
            if wants_json:
                return JsonResponse(_refused(name, refusal.reason, refusal.code), status=refusal.http_status)
            raise PermissionDenied(refusal.reason) from None
    if wants_json:
        body, status = answers[0]
        return JsonResponse(body, status=status)
    accepted = [status for _, status in answers if status == 200]
    status = 200 if accepted else answers[0][1]
    return render(request, "images/upload_result.html", {"answers": [body for body, _ in answers]}, status=status)


def _ingest(principal, uploaded, name: str, address: str) -> tuple[dict, int]:
    # Django keeps uploads over FILE_UPLOAD_MAX_MEMORY_SIZE in a temporary file: read it there, never into memory.
    source = {"path": uploaded.temporary_file_path()} if hasattr(uploaded, "temporary_file_path") else {"fileobj": uploaded}
    if bulk.looks_like_zip(name, **source):
        try:
            outcomes = bulk.ingest_zip(principal=principal, source=SOURCE, address=address, **source)
        except NotAuthorized:
            raise
        except IngestRefused as refusal:
            return {**_refused(name, refusal.reason, refusal.code), "kind": "zip"}, refusal.http_status
        return _zip_answer(name, outcomes)
    outcome = bulk.ingest_file(principal=principal, name=name, source=SOURCE, address=address, **source)
    return {**outcome.as_dict(), "kind": "file"}, outcome.http_status if outcome.refused else 200


def _refused(name: str, reason: str, code: str) -> dict:
    return {"name": name, "status": "refused", "reason": reason, "code": code, "sop_instance_uid": "", "study_instance_uid": ""}


def _zip_answer(name: str, outcomes: list[bulk.FileOutcome]) -> tuple[dict, int]:
    counts = bulk.count_outcomes(outcomes)
    refused = [o for o in outcomes if o.refused]
    studies = sorted({o.study_instance_uid for o in outcomes if not o.refused})
    summary = f"{len(outcomes)} file{'s' if len(outcomes) != 1 else ''}: " + ", ".join(
        f"{n} {status.replace('_', ' ')}" for status, n in counts.items() if n
    )
    body = {
        "name": name,
        "kind": "zip",
        "status": "stored" if counts["stored"] or counts["replaced"] else "already_stored" if counts["already_stored"] else "refused",
        "reason": "",
        "code": "",
        "summary": summary,
        "counts": counts,
        "sop_instance_uid": "",
        "study_instance_uid": studies[0] if len(studies) == 1 else "",
        "studies": studies[:100],
        "refused": [{"name": o.name, "reason": o.reason, "code": o.code} for o in refused[:MAX_LISTED_REFUSALS]],
        "refused_not_listed": max(0, len(refused) - MAX_LISTED_REFUSALS),
    }
    if body["status"] != "refused":
        return body, 200
    body["reason"] = (
        f"Nothing in this zip could be stored. {refused[0].reason}" if len(refused) == 1 else "Nothing in this zip could be stored."
    )
    body["code"] = refused[0].code if len({o.code for o in refused}) == 1 else "refused"
    statuses = {o.http_status for o in refused}
    return body, statuses.pop() if len(statuses) == 1 else 400
