"""The Query/Retrieve SCP's C-MOVE and C-GET (PS3.4 C.4.2, C.4.3): the matching instances the caller may see, sent by
C-STORE sub-operations to a receiving AE registered to the caller's institution (C-MOVE) or back over the caller's own
association (C-GET).

Each instance goes in its stored transfer syntax when the receiver accepted it, else converted by images.transcode to
one it did accept; one that can go in neither is a failed sub-operation. pynetdicom (3.0.4) performs the sub-operations
and keeps their counts from what a handler yields: (C-MOVE only) the destination, the number of sub-operations, then a
data set per sub-operation; it sends the pending responses and the final status (0x0000 all sent, 0xB000 some failed or
warned, 0xA702 all failed).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import Verification
from pynetdicom.status import STATUS_FAILURE, STATUS_SUCCESS, STATUS_WARNING, STORAGE_SERVICE_CLASS_STATUS

from subscribers.access import Principal
from subscribers.models import ApplicationEntity, AuditEvent, Role

from .. import query, selectors
from ..models import Instance
from ..storage import open_instance
from ..transcode import AS_STORED, PRODUCIBLE, SPOOL_BYTES, CannotTranscode, transcode
from .association import state_of
from .query import (
    CANCEL,
    IDENTIFIER_DOES_NOT_MATCH,
    NOT_AUTHORIZED,
    PENDING,
    UNABLE_TO_COUNT,
    UNABLE_TO_PROCESS,
    UNIQUE_KEYS,
    Identifier,
    Refusal,
    Report,
    keep_alive,
    read_identifier,
    require_role,
    unique_keys,
)

logger = logging.getLogger("images.dimse")

# Number of Remaining/Completed/Failed Sub-operations are US (PS3.7 E.1-1): a retrieve can count no more.
MAX_SUB_OPERATIONS = 0xFFFF
MAX_CONTEXTS = 128  # presentation contexts one association may propose (PS3.8 9.3.2.2: odd IDs 1 to 255)
FAILED_UIDS_AUDITED = 100


# --- Which instances --------------------------------------------------------------------------------------------


def retrieve_params(identifier: Identifier) -> dict[str, str]:
    """The unique keys to match (PS3.4 C.4.2.2.1): the retrieve level's is required, those above it are optional;
    each a single value or a list of UIDs, never a wildcard. Other keys are not matched: a retrieve names objects."""
    level = identifier.level
    required = UNIQUE_KEYS[level]
    if not identifier.values.get(required):
        raise Refusal(IDENTIFIER_DOES_NOT_MATCH, f"{required} is required to retrieve at the {level} level.", keyword=required)
    params = {}
    for keyword in unique_keys(identifier):
        value = identifier.values.get(keyword, "")
        if "*" in value or "?" in value:
            raise Refusal(UNABLE_TO_PROCESS, f"{keyword}: wildcards cannot name objects to retrieve.", keyword=keyword)
        if value:
            params[keyword] = value
    return params


def instances_to_send(principal: Principal, identifier: Identifier) -> list[Instance]:
    """The visible instances the identifier names, study by study in series and instance order.

    An instance the caller's institution holds and that is also shared with it goes once, from its own copy.
    """
    rows = selectors.instances_visible_to(principal).select_related("study").defer("metadata", "conditions")
    rows = query.apply(rows, "instance", retrieve_params(identifier))
    rows = rows.order_by("study_id", "series__series_number", "series_id", "instance_number", "pk")
    found = list(rows[: MAX_SUB_OPERATIONS + 1])
    chosen: dict[str, Instance] = {}
    for instance in found:
        kept = chosen.get(instance.sop_instance_uid)
        if kept is None or (kept.institution_id != principal.institution_id and instance.institution_id == principal.institution_id):
            chosen[instance.sop_instance_uid] = instance
    if len(chosen) > MAX_SUB_OPERATIONS:
        raise Refusal(UNABLE_TO_COUNT, "More than 65535 instances match; retrieve fewer at a time.")
    return list(chosen.values())


def find_destination(principal: Principal, title: str) -> ApplicationEntity | None:
    """The receiving AE registered to the caller's institution under title, whose host and port we send to (a C-MOVE
    names its destination by AE title only, PS3.4 C.4.2: the address is the SCP's configuration); None when there is
    none (0xA801).

    One title registered for several hosts: the caller's own registration when it moves to itself, else the oldest.
    """
    if not title or principal.institution is None:
        return None
    candidates = list(
        ApplicationEntity.objects.filter(institution=principal.institution, ae_title=title, can_receive=True, is_active=True).order_by("pk")
    )
    own = principal.application_entity
    return next((ae for ae in candidates if own is not None and ae.pk == own.pk), candidates[0] if candidates else None)


# --- In which transfer syntax -----------------------------------------------------------------------------------


def proposed_contexts(instances: list[Instance]) -> list[PresentationContext]:
    """For a C-MOVE's sub-association, per SOP class: one context offering Explicit and Implicit VR Little Endian (the
    latter every DICOM AE supports, PS3.5 10.1) for what must be converted; and one context per stored transfer
    syntax, so that what the destination accepts goes as stored. The fallbacks first when there are more than 128."""
    stored: dict[str, set[str]] = {}
    for instance in instances:
        stored.setdefault(instance.sop_class_uid, set()).add(instance.transfer_syntax_uid)
    fallbacks = [build_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]) for sop_class in stored]
    as_stored = [build_context(sop_class, [syntax]) for sop_class, syntaxes in stored.items() for syntax in sorted(syntaxes)]
    return (fallbacks + as_stored)[:MAX_CONTEXTS]


def accepted_syntaxes(assoc, sop_class_uid: str) -> set[UID]:
    """Transfer syntaxes the receiver accepted for sop_class_uid with us as the Storage SCU."""
    return {UID(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts if cx.abstract_syntax == sop_class_uid and cx.as_scu}


def _carries(stored: UID, syntax: UID) -> bool:
    """Whether pynetdicom can send data stored in `stored` over a context of `syntax` as it is: the same syntax, or
    both uncompressed in one byte order (it re-encodes explicit as implicit VR, and deflates)."""
    if stored == syntax:
        return True
    try:
        return not stored.is_compressed and not syntax.is_compressed and stored.is_little_endian == syntax.is_little_endian
    except ValueError:  # not a transfer syntax pydicom knows
        return False


def choose_syntax(stored: str, accepted: set[UID]) -> str | None:
    """AS_STORED when the receiver takes the stored syntax; else a syntax to convert to that it takes (Explicit VR Little
    Endian first, from which pynetdicom makes any uncompressed little endian); None when there is none."""
    stored = UID(stored)
    if any(_carries(stored, syntax) for syntax in accepted):
        return AS_STORED
    if any(_carries(ExplicitVRLittleEndian, syntax) for syntax in accepted):
        return ExplicitVRLittleEndian
    return next((target for target in PRODUCIBLE if target in accepted), None)


def unsendable(instance: Instance) -> Dataset:
    """What to yield for an instance that cannot go: pynetdicom's send_c_store refuses a data set without a transfer
    syntax, and counts the sub-operation as failed with the instance's UID in the Failed SOP Instance UID List."""
    identifier = Dataset()
    identifier.SOPClassUID = instance.sop_class_uid
    identifier.SOPInstanceUID = instance.sop_instance_uid
    return identifier


def prepare(instance: Instance, target: str | None) -> tuple[Dataset, str]:
    """The data set to send (its stored bytes, or converted to target), or an unsendable one and the reason."""
    if target is None:
        return unsendable(instance), "the receiver accepts none of the transfer syntaxes it can be sent in"
    try:
        with open_instance(instance.storage_name) as stored:
            if target == AS_STORED:
                return dcmread(stored), ""
            with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, dir=settings.FILE_UPLOAD_TEMP_DIR) as converted:
                transcode(stored, target=target, out=converted)
                converted.seek(0)
                return dcmread(converted), ""
    except CannotTranscode as error:
        return unsendable(instance), error.reason
    except Exception:
        logger.exception("instance %s (%s) could not be read for sending", instance.sop_instance_uid, instance.storage_name)
        return unsendable(instance), "it could not be read from the archive's storage"


# --- The sub-operations -----------------------------------------------------------------------------------------


class SubOperations:
    """The association the C-STOREs go over, and the status of each C-STORE response in the order they arrive."""

    def __init__(self, assoc=None):
        self.assoc = assoc
        self.statuses: list[int] = []

    def on_accepted(self, event) -> None:
        # EVT_ACCEPTED runs before pynetdicom's associate() returns, so the contexts are known before the first yield.
        self.assoc = event.assoc

    def on_received(self, event) -> None:
        # EVT_DIMSE_RECV runs before send_c_store() gets the response, so the status is here when the handler resumes.
        if isinstance(event.message, C_STORE_RSP):
            self.statuses.append(int(event.message.command_set.Status))


@dataclass
class Delivery:
    """What a retrieve delivered, for its audit event."""

    matched: int = 0
    completed: int = 0
    warning: int = 0
    converted: int = 0
    failed: list[str] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    studies: dict[str, None] = field(default_factory=dict)  # ordered set of study UIDs with something delivered
    cancelled: bool = False

    def count(self, instance: Instance, status: int | None, *, converted: bool, reason: str) -> None:
        category = STORAGE_SERVICE_CLASS_STATUS.get(status, (STATUS_FAILURE,))[0] if status is not None else STATUS_FAILURE
        if category not in (STATUS_SUCCESS, STATUS_WARNING):
            self.failed.append(instance.sop_instance_uid)
            why = reason or (f"the receiver answered 0x{status:04X}" if status is not None else "the C-STORE was not answered")
            self.reasons[why] = self.reasons.get(why, 0) + 1
            return
        if category == STATUS_WARNING:
            self.warning += 1
        else:
            self.completed += 1
        self.converted += converted
        self.studies[instance.study.study_instance_uid] = None

    @property
    def counted(self) -> int:
        return self.completed + self.warning + len(self.failed)

    def detail(self) -> dict:
        return {
            "matched": self.matched,
            "completed": self.completed,
            "warning": self.warning,
            "failed": len(self.failed),
            "converted": self.converted,
            "studies": list(self.studies),
            "failed_instances": self.failed[:FAILED_UIDS_AUDITED],
            "failure_reasons": self.reasons,
            **({"cancelled": True} if self.cancelled else {}),
        }

    def summary(self) -> str:
        text = f"{self.matched} matched, {self.completed} sent, {self.warning} with warnings, {len(self.failed)} failed"
        return text + (" (cancelled)" if self.cancelled else "")


def send(event, instances: list[Instance], link: SubOperations, delivery: Delivery) -> Iterator[tuple[int, Dataset | None]]:
    """One pending yield per instance, in the syntax its receiver accepts; C-CANCEL stops before the next one."""
    for instance in instances:
        if event.is_cancelled:
            delivery.cancelled = True
            yield CANCEL, None
            return
        keep_alive(event.assoc)
        target = choose_syntax(instance.transfer_syntax_uid, accepted_syntaxes(link.assoc, instance.sop_class_uid))
        dataset, reason = prepare(instance, target)
        if reason:
            logger.warning("instance %s cannot be sent: %s", instance.sop_instance_uid, reason)
        answered = len(link.statuses)
        yield PENDING, dataset
        status = link.statuses[answered] if len(link.statuses) > answered else None
        delivery.count(instance, status, converted=target not in (None, AS_STORED), reason=reason)


def _match(event, report: Report, *roles: str) -> tuple[Refusal | None, list[Instance]]:
    """The instances to send, or the refusal to answer with (already in the report)."""
    principal = report.state.principal
    try:
        identifier = read_identifier(event)
        report.describe(identifier)
        require_role(principal, *roles)
        return None, instances_to_send(principal, identifier)
    except query.QueryError as error:
        refusal = Refusal(UNABLE_TO_PROCESS, str(error), keyword=error.parameter)
    except Refusal as raised:
        refusal = raised
    except DatabaseError:
        logger.exception("%s from %s: database error", report.action, report.state.label())
        close_old_connections()
        refusal = Refusal(UNABLE_TO_COUNT, "The archive's database is unavailable. Try again later.")
    report.refused(refusal)
    return refusal, []


def _finish(report: Report, delivery: Delivery, *, to: str) -> None:
    report.detail.update(delivery.detail())
    unsent = delivery.matched - delivery.counted
    if unsent and not delivery.cancelled:
        report.detail.setdefault("reason", "the association ended before every instance was sent")
    if report.outcome == AuditEvent.Outcome.SUCCESS and (delivery.failed or delivery.cancelled or unsent):
        report.outcome = AuditEvent.Outcome.FAILURE
    if len(delivery.studies) == 1:
        report.object_type, report.object_id = "images.study", next(iter(delivery.studies))
    report.record(f"{delivery.summary()}, to {to}")


# --- The handlers -------------------------------------------------------------------------------------------------


def handle_move(event) -> Iterator:
    """EVT_C_MOVE: yields the destination's (host, port, options), the number of sub-operations, then a data set each."""
    state = state_of(event.assoc)
    if state is None:  # the gate did not let this association in
        yield None, None
        return
    report = Report(action="dicom.move", state=state)
    delivery = Delivery()
    title = (event.move_destination or "").strip()
    report.detail["destination"] = title
    link = SubOperations()
    try:
        destination = find_destination(state.principal, title)
        if destination is None:
            report.outcome = AuditEvent.Outcome.DENIED
            report.detail["reason"] = "not a receiving AE title registered to the caller's institution"
            yield None, None  # pynetdicom answers 0xA801, Move Destination Unknown
            return
        report.detail["destination"] = str(destination)
        refusal, instances = _match(event, report, Role.REGISTER, Role.RECEIVE)
        if refusal is not None:
            # pynetdicom lets a C-MOVE handler answer a failure only once it has associated with the destination:
            # that association proposes Verification only, carries nothing and is released at once.
            yield destination.host, destination.port, {"contexts": [build_context(Verification)]}
            yield 1
            yield refusal.response(), None
            return
        delivery.matched = len(instances)
        handlers = [(evt.EVT_ACCEPTED, link.on_accepted), (evt.EVT_DIMSE_RECV, link.on_received)]
        yield destination.host, destination.port, {"contexts": proposed_contexts(instances), "evt_handlers": handlers}
        yield len(instances)  # with none, pynetdicom answers success without associating
        yield from send(event, instances, link, delivery)
    except DatabaseError:
        # Only finding the destination gets here; pynetdicom answers 0xC514 (unable to process) to the exception.
        logger.exception("C-MOVE from %s: database error", state.label())
        close_old_connections()
        report.outcome = AuditEvent.Outcome.FAILURE
        raise
    finally:
        if delivery.matched and (link.assoc is None or not link.assoc.accepted_contexts):
            # pynetdicom answered 0xA801 without resuming us
            report.detail["reason"] = "the destination could not be reached or accepted none of the proposed contexts"
        _finish(report, delivery, to=report.detail["destination"] or "no destination")


def handle_get(event) -> Iterator:
    """EVT_C_GET: yields the number of sub-operations, then a data set each, sent back over the caller's association
    in the storage contexts it proposed with the SCP role (PS3.4 C.4.3.1)."""
    state = state_of(event.assoc)
    if state is None:
        yield 1
        yield Refusal(NOT_AUTHORIZED, "This association was not accepted by the archive.").response(), None
        return
    report = Report(action="dicom.get", state=state)
    report.detail["destination"] = f"{state.calling_ae_title}@{state.peer}"
    delivery = Delivery()
    try:
        # The caller receives the images itself: that takes the receive role (can_receive).
        refusal, instances = _match(event, report, Role.RECEIVE)
        if refusal is not None:
            yield 1  # pynetdicom answers a C-GET handler's failure only after a number of sub-operations
            yield refusal.response(), None
            return
        delivery.matched = len(instances)
        yield len(instances)
        link = SubOperations(event.assoc)
        event.assoc.bind(evt.EVT_DIMSE_RECV, link.on_received)
        try:
            yield from send(event, instances, link, delivery)
        finally:
            event.assoc.unbind(evt.EVT_DIMSE_RECV, link.on_received)
    finally:
        _finish(report, delivery, to=report.detail["destination"])


__all__ = ["handle_get", "handle_move"]
