"""Who is on the other end of an association: the gate at A-ASSOCIATE-RQ, and the bookkeeping when it ends.

The calling AE title and the peer's address are checked once, when the association is requested
(PS3.8 7.1.1); a caller the access gate does not know is rejected there, before any data flows.
The principal found is kept on the association for every C-STORE that follows.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from dataclasses import dataclass, field

from django.db import connections
from pynetdicom import evt

from subscribers import audit
from subscribers.access import AuthenticationFailed, Principal, principal_for_ae
from subscribers.models import AuditEvent

from ..ingest import IngestCache, IngestResult, record_batch

logger = logging.getLogger("images.dimse")

SOURCE = "c-store"
_STATE_ATTRIBUTE = "medarchive_state"

# PS3.8 9.3.4 A-ASSOCIATE-RJ: (result, source, reason/diagnostic).
REJECT_CALLING_AE = (0x01, 0x01, 0x03)  # rejected-permanent, DICOM UL service-user, calling-AE-title-not-recognized
REJECT_CALLED_AE = (0x01, 0x01, 0x07)  # rejected-permanent, DICOM UL service-user, called-AE-title-not-recognized
REJECT_TRANSIENT = (0x02, 0x01, 0x01)  # rejected-transient, DICOM UL service-user, no-reason-given (we failed, not the caller)


@dataclass
class AssociationState:
    """What one accepted association has done so far; lives on the pynetdicom Association."""

    principal: Principal
    calling_ae_title: str
    peer: str
    started: float = field(default_factory=time.monotonic)
    results: list[IngestResult] = field(default_factory=list)
    refused: int = 0
    ended: bool = False
    cache: IngestCache = field(default_factory=IngestCache, repr=False)  # index rows seen on this association
    _first_of: dict = field(default_factory=dict, repr=False)

    def add(self, result: IngestResult) -> None:
        # record_batch counts entries and collects study UIDs; keeping one result per (status, study) and
        # repeating it keeps a 5,000-image association from holding 5,000 instances' metadata until release.
        key = (result.status, result.instance.study_id)
        self.results.append(self._first_of.setdefault(key, result))

    def label(self) -> str:
        institution = self.principal.institution
        return f"{self.calling_ae_title}@{self.peer} ({institution.name if institution else 'no institution'})"


def state_of(assoc) -> AssociationState | None:
    return getattr(assoc, _STATE_ATTRIBUTE, None)


def peer_address(assoc) -> str:
    """The peer's IP address as the access gate compares it (an IPv4-mapped IPv6 address as plain IPv4)."""
    address = assoc.requestor.address
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address
    return str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)


def on_association_requested(event, require_called_aet: bool) -> None:
    """EVT_REQUESTED: accept only a registered calling AE title from its allowed host, calling us by our title."""
    assoc = event.assoc
    request = assoc.requestor.primitive
    calling = (request.calling_ae_title or "").strip()
    called = (request.called_ae_title or "").strip()
    peer = peer_address(assoc)
    try:
        principal = principal_for_ae(calling, peer)
    except AuthenticationFailed as failure:
        _reject(
            assoc,
            REJECT_CALLING_AE,
            calling=calling,
            called=called,
            peer=peer,
            reason=failure.reason,
            code=failure.code,
            institution=failure.institution,
        )
        return
    except Exception:
        logger.exception("association from %s@%s: the access gate failed; rejecting (transient)", calling, peer)
        _reject(
            assoc,
            REJECT_TRANSIENT,
            calling=calling,
            called=called,
            peer=peer,
            reason="The archive could not check the caller.",
            code="error",
        )
        return
    own_title = assoc.acceptor.ae_title.strip()
    if require_called_aet and called != own_title:
        reason = f"Called AE title {called!r} is not this archive's ({own_title!r})."
        _reject(
            assoc,
            REJECT_CALLED_AE,
            calling=calling,
            called=called,
            peer=peer,
            reason=reason,
            code="called_ae_wrong",
            institution=principal.institution,
        )
        return
    setattr(assoc, _STATE_ATTRIBUTE, AssociationState(principal=principal, calling_ae_title=calling, peer=peer))


def _reject(
    assoc, rejection: tuple[int, int, int], *, calling: str, called: str, peer: str, reason: str, code: str, institution=None
) -> None:
    # The same steps as pynetdicom's own rejections (ACSE._negotiate_as_acceptor): answer first, so the
    # caller is not kept waiting on the database, then wait in kill() until the A-ASSOCIATE-RJ has gone out.
    assoc.acse.send_reject(*rejection)
    logger.warning("association from %s@%s to %s rejected: %s", calling, peer, called, reason)
    try:
        audit.record(
            action="dicom.association_refused",
            outcome=AuditEvent.Outcome.DENIED,
            institution=institution,
            actor=f"AE {calling}"[:200],
            address=peer,
            reason=reason,
            code=code,
            calling_ae_title=calling,
            called_ae_title=called,
        )
    except Exception:
        logger.exception("could not audit the rejected association from %s@%s", calling, peer)
    evt.trigger(assoc, evt.EVT_REJECTED, {})
    assoc.kill()


def on_association_ended(event) -> None:
    """EVT_RELEASED, EVT_ABORTED, EVT_REJECTED: one audit event and one log line per association; free the DB connection."""
    assoc = event.assoc
    state = state_of(assoc)
    try:
        _discard_partial_dataset(assoc)
        if state is not None and not state.ended:
            state.ended = True
            how = event.event.name.removeprefix("EVT_").lower()
            if event.event == evt.EVT_REJECTED:  # by pynetdicom after our gate let it pass: too many associations
                how += f" ({assoc.acceptor.primitive.reason_str})"
            _finish(state, how=how)
    finally:
        # pynetdicom runs each association in its own thread, and Django keeps one connection per thread.
        if threading.current_thread() is assoc:
            connections.close_all()


def _discard_partial_dataset(assoc) -> None:
    """Delete the temporary file of a data set cut off by an abort.

    pynetdicom (3.0.4) writes a C-STORE data set to a NamedTemporaryFile(delete=False) as it arrives
    and deletes it only after our handler has run; a sender that drops mid-object would leave it
    behind, up to DICOM_MAX_INSTANCE_BYTES each time.
    """
    message = getattr(assoc.dimse, "message", None)
    partial = getattr(message, "_data_set_file", None)
    if partial is None:
        return
    try:
        partial.close()
        os.unlink(partial.name)
    except OSError:
        pass


def _finish(state: AssociationState, *, how: str) -> None:
    counts = {"stored": 0, "already_stored": 0, "replaced": 0}
    for result in state.results:
        counts[result.status] += 1
    logger.info(
        "association from %s %s after %.1f s: %d stored, %d already stored, %d replaced, %d refused",
        state.label(),
        how,
        time.monotonic() - state.started,
        counts["stored"],
        counts["already_stored"],
        counts["replaced"],
        state.refused,
    )
    try:
        record_batch(state.principal, state.results, source=SOURCE, address=state.peer, refused=state.refused)
    except Exception:
        logger.exception("could not audit the association from %s", state.label())
