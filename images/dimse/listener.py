"""The DICOM listener: a pynetdicom AE accepting every storage SOP class, Verification and Query/Retrieve (Patient Root
and Study Root FIND, MOVE, GET), gated by AE title.

`start_listener()` starts it in background threads and returns the server (the dicom_listener
command and the tests both use it); each association runs in a thread of its own.
"""

from __future__ import annotations

import copy

from pydicom.uid import UID, AllTransferSyntaxes
from pynetdicom import AE, DEFAULT_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from .association import on_association_ended, on_association_requested
from .query import handle_find
from .retrieve import handle_get, handle_move
from .storage import handle_echo, handle_store

# Every transfer syntax pydicom knows (uncompressed, deflated, JPEG, JPEG-LS, JPEG 2000, HTJ2K, RLE,
# MPEG/H.264/HEVC video) except JPIP referenced, where the pixel data stays on someone else's server
# (PS3.5 A.6): the archive would keep a link, not the image. The archive keeps what arrives and never
# transcodes on receipt, so a compressed object is accepted exactly as the modality compressed it.
STORAGE_TRANSFER_SYNTAXES = [UID(ts) for ts in AllTransferSyntaxes if not ts.name.startswith("JPIP")]

# Seconds an association may stay silent before we abort it. pynetdicom counts from the last PDU received
# and checks right after answering each C-STORE, so this must also exceed the slowest ingest of the
# largest object (DICOM_MAX_INSTANCE_BYTES), during which the sender is silent, waiting for our answer.
NETWORK_TIMEOUT = 120
ACSE_TIMEOUT = 30
DIMSE_TIMEOUT = 60
# Largest PDU we accept. Bigger PDUs mean fewer Python-level round trips per object; pynetdicom holds
# one whole PDU in memory per association while decoding it, so this bounds memory per association.
MAXIMUM_PDU_SIZE = 1024 * 1024
DEFAULT_MAXIMUM_ASSOCIATIONS = 32
QUERY_RETRIEVE_SOP_CLASSES = (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
)


class _SupportedContext(PresentationContext):
    """A supported presentation context that is cheap to copy.

    pynetdicom deep-copies the server's supported contexts for every association; for ~170 storage
    classes x ~40 transfer syntaxes that re-validates ~7,000 UIDs, about 0.1 s per association.
    Negotiation only reads them, and UIDs are immutable strings, so a shallow copy is a faithful one.
    """

    def __deepcopy__(self, memo):
        return copy.copy(self)


def _context(abstract_syntax: str, transfer_syntaxes: list[str], *, either_role: bool = False) -> PresentationContext:
    context = _SupportedContext()
    context.abstract_syntax = abstract_syntax
    context.transfer_syntax = transfer_syntaxes
    if either_role:
        # SCP/SCU role selection (PS3.7 D.3.3.4): a C-GET caller proposes the Storage SCP role for itself, so that our
        # C-STORE sub-operations go back over its association; a caller proposing no roles stays the SCU.
        context.scu_role = context.scp_role = True
    return context


def supported_contexts() -> list[PresentationContext]:
    # An acceptor may support any number of contexts; the 128 limit is on what one requestor proposes (PS3.8 9.3.2.2).
    storage = [_context(cx.abstract_syntax, STORAGE_TRANSFER_SYNTAXES, either_role=True) for cx in AllStoragePresentationContexts]
    query_retrieve = [_context(sop_class, DEFAULT_TRANSFER_SYNTAXES) for sop_class in QUERY_RETRIEVE_SOP_CLASSES]
    return [*storage, _context(Verification, DEFAULT_TRANSFER_SYNTAXES), *query_retrieve]


def event_handlers(*, require_called_aet: bool) -> list:
    return [
        (evt.EVT_REQUESTED, on_association_requested, [require_called_aet]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store),
        (evt.EVT_C_FIND, handle_find),
        (evt.EVT_C_MOVE, handle_move),
        (evt.EVT_C_GET, handle_get),
        (evt.EVT_RELEASED, on_association_ended),
        (evt.EVT_ABORTED, on_association_ended),
        (evt.EVT_REJECTED, on_association_ended),
    ]


def build_ae(*, ae_title: str, maximum_associations: int = DEFAULT_MAXIMUM_ASSOCIATIONS) -> AE:
    ae = AE(ae_title=ae_title)
    ae.maximum_pdu_size = MAXIMUM_PDU_SIZE
    ae.maximum_associations = maximum_associations
    ae.acse_timeout = ACSE_TIMEOUT
    ae.dimse_timeout = DIMSE_TIMEOUT
    ae.network_timeout = NETWORK_TIMEOUT
    return ae


def start_listener(
    *,
    host: str,
    port: int,
    ae_title: str,
    require_called_aet: bool = True,
    maximum_associations: int = DEFAULT_MAXIMUM_ASSOCIATIONS,
) -> ThreadedAssociationServer:
    """Listen on (host, port) in background threads; stop with `server.shutdown()` (see the dicom_listener command)."""
    # Received data sets go to a temporary file as they arrive instead of into memory (storage._received).
    # This is a process-wide pynetdicom switch; every C-STORE SCP of ours handles both ways.
    _config.STORE_RECV_CHUNKED_DATASET = True
    ae = build_ae(ae_title=ae_title, maximum_associations=maximum_associations)
    return ae.start_server(
        (host, port),
        block=False,
        evt_handlers=event_handlers(require_called_aet=require_called_aet),
        contexts=supported_contexts(),
    )
