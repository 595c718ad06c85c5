"""Push delivery of a job's products: C-STORE to the receiving AE title the job names (a PACS or workstation the
institution registered with receive rights), as a Storage SCU calling with the archive's own AE title.

Each product goes in its stored transfer syntax when the receiver accepts it, else converted losslessly to one it
accepts (the same choice the C-MOVE SCP makes, images.dimse.retrieve). The outcome is kept on the job (delivered_at, or
delivery_error in words) and audited; a failure raises DeliveryFailed so that the calling task can retry.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone
from pynetdicom import AE
from pynetdicom.status import STATUS_FAILURE, STATUS_SUCCESS, STATUS_WARNING, STORAGE_SERVICE_CLASS_STATUS

from images.dimse.retrieve import accepted_syntaxes, choose_syntax, prepare, proposed_contexts
from images.models import Instance
from images.transcode import AS_STORED
from subscribers import audit
from subscribers.models import ApplicationEntity, AuditEvent

from .models import Delivery, ProcessingJob, ProcessingProduct

logger = logging.getLogger(__name__)

ACSE_TIMEOUT = 30
DIMSE_TIMEOUT = 120
NETWORK_TIMEOUT = 120
CONNECT_TIMEOUT = 10


class DeliveryFailed(Exception):
    """The products did not all reach the receiver; `reason` says why, for the portal and the audit trail."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class DeliveryResult:
    destination: str
    sent: int = 0
    converted: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # SOP Instance UID -> reason

    @property
    def ok(self) -> bool:
        return not self.failed


def associate(local: AE, host: str, port: int, **kwargs):
    """local.associate(...), asked a second time when the first ended without an A-ASSOCIATE-AC or -RJ although the
    peer is reachable: a peer that rejects and closes at once is now and then seen as an abort, which would hide its
    reason."""
    assoc = local.associate(host, port, **kwargs)
    if assoc.is_established or assoc.is_rejected or not _reachable(host, port):
        return assoc
    return local.associate(host, port, **kwargs)


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError:
        return False
    return True


def association_failure(assoc, host: str, port: int, *, what: str = "PACS") -> str:
    """Why an association to host:port was not established, in words: the A-ASSOCIATE-RJ's reason, the connection's
    error, or an abort (a peer that is not a DICOM node, or one that dropped us)."""
    where = f"{what} at {host}:{port}"
    if assoc.is_rejected:
        primitive = assoc.acceptor.primitive
        return f"{where} refused the association: {primitive.reason_str} ({primitive.result_str}, {primitive.source_str})"
    # pynetdicom keeps a failed connect's error to its log; ask the socket ourselves to say which it was.
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as error:
        return f"{where} could not be reached: {error.strerror or error}"
    return f"{where} did not accept the association (it aborted or did not answer as a DICOM node)"


def _status_category(status: int | None) -> str:
    if status is None:
        return STATUS_FAILURE
    return STORAGE_SERVICE_CLASS_STATUS.get(status, (STATUS_FAILURE,))[0]


def receiver_problem(job: ProcessingJob, ae: ApplicationEntity | None) -> str:
    """Why ae cannot be this job's push destination, or '' when it can."""
    if ae is None:
        return "No receiving AE title is set for this job."
    if ae.institution_id != job.institution_id:
        return f"AE title {ae.ae_title} is not registered to {job.institution}."
    if not ae.is_active:
        return f"AE title {ae} has been deactivated."
    if not ae.can_receive:
        return f"AE title {ae} is not registered as a receiver."
    return ""


def product_instances(job: ProcessingJob) -> list[Instance]:
    """The archived instances the job produced, series by series."""
    products = (
        ProcessingProduct.objects.filter(job=job, instance__isnull=False)
        .select_related("instance__study")
        .order_by("series_instance_uid", "instance__instance_number", "pk")
    )
    return [product.instance for product in products]


def send_instances(instances: list[Instance], ae: ApplicationEntity) -> DeliveryResult:
    """C-STORE each instance to ae over one association; raises DeliveryFailed when no association is established."""
    result = DeliveryResult(destination=str(ae))
    if not instances:
        return result
    local = AE(ae_title=settings.DICOM_AET)
    local.acse_timeout, local.dimse_timeout, local.network_timeout = ACSE_TIMEOUT, DIMSE_TIMEOUT, NETWORK_TIMEOUT
    local.connection_timeout = CONNECT_TIMEOUT
    assoc = associate(local, ae.host, ae.port, contexts=proposed_contexts(instances), ae_title=ae.ae_title)
    if not assoc.is_established:
        raise DeliveryFailed(association_failure(assoc, ae.host, ae.port))
    try:
        for instance in instances:
            target = choose_syntax(instance.transfer_syntax_uid, accepted_syntaxes(assoc, instance.sop_class_uid))
            dataset, reason = prepare(instance, target)
            if reason:
                result.failed[instance.sop_instance_uid] = reason
                continue
            if not assoc.is_established:
                result.failed[instance.sop_instance_uid] = "the receiver ended the association"
                continue
            response = assoc.send_c_store(dataset)
            status = int(response.Status) if "Status" in response else None
            category = _status_category(status)
            if category in (STATUS_SUCCESS, STATUS_WARNING):
                result.sent += 1
                result.converted += target != AS_STORED
            else:
                result.failed[instance.sop_instance_uid] = (
                    f"the receiver answered 0x{status:04X}" if status is not None else "the C-STORE was not answered"
                )
    finally:
        if assoc.is_established:
            assoc.release()
    return result


def _summary(result: DeliveryResult) -> str:
    reasons: dict[str, int] = {}
    for reason in result.failed.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    why = "; ".join(f"{count} × {reason}" for reason, count in reasons.items())
    return f"{len(result.failed)} of {result.sent + len(result.failed)} product instance(s) not delivered to {result.destination}: {why}"


def deliver(job: ProcessingJob) -> DeliveryResult | None:
    """Push the job's products to its push_ae; None for a pull job, or one already delivered.

    Records delivered_at (and clears delivery_error) or delivery_error on the job, audits either, and raises
    DeliveryFailed on failure so the caller's task retries; sending again is harmless (a C-STORE of an instance the
    receiver has is answered as stored).
    """
    job = ProcessingJob.objects.select_related("institution", "push_ae").get(pk=job.pk)
    if job.delivery != Delivery.PUSH or job.delivered_at is not None:
        return None
    ae = job.push_ae
    problem = receiver_problem(job, ae)
    instances = product_instances(job) if not problem else []
    try:
        if problem:
            raise DeliveryFailed(problem)
        result = send_instances(instances, ae)
        if not result.ok:
            raise DeliveryFailed(_summary(result))
    except DeliveryFailed as failure:
        _record(job, ae, error=failure.reason, instances=len(instances))
        raise
    except Exception as error:  # the receiver broke the protocol in a way pynetdicom raised on
        logger.exception("delivery of job %s to %s failed", job.pk, ae)
        reason = f"Delivery to {ae} failed: {error}"
        _record(job, ae, error=reason, instances=len(instances))
        raise DeliveryFailed(reason) from error
    _record(job, ae, error="", instances=len(instances), result=result)
    return result


def _record(job: ProcessingJob, ae, *, error: str, instances: int, result: DeliveryResult | None = None) -> None:
    now = timezone.now()
    if error:
        ProcessingJob.objects.filter(pk=job.pk).update(delivery_error=error[:2000])
    else:
        ProcessingJob.objects.filter(pk=job.pk).update(delivered_at=now, delivery_error="")
    job.refresh_from_db(fields=["delivered_at", "delivery_error"])
    detail = {"destination": str(ae) if ae else "", "instances": instances}
    if result is not None:
        detail.update(sent=result.sent, converted=result.converted)
    if error:
        detail["reason"] = error
    audit.record(
        action="software.job.delivered" if not error else "software.job.delivery_failed",
        outcome=AuditEvent.Outcome.SUCCESS if not error else AuditEvent.Outcome.FAILURE,
        institution=job.institution,
        actor="server (push delivery)",
        obj=job,
        **detail,
    )
