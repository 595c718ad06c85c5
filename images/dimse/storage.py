"""The Storage SCP (C-STORE, PS3.4 Annex B) and Verification SCP (C-ECHO, PS3.4 Annex A).

Each C-STORE goes through the one ingest service with the bytes exactly as they arrived: the
data set in its negotiated transfer syntax behind a Part 10 header. Nothing is decoded or re-encoded here.
"""

from __future__ import annotations

import logging

from django.db import DatabaseError, close_old_connections
from pydicom.dataset import Dataset

from ..errors import IngestRefused, NotAuthorized
from ..ingest import ingest_instance
from .association import SOURCE, state_of

logger = logging.getLogger("images.dimse")

SUCCESS = 0x0000
# PS3.4 B.2.3 gives a storage SCP three kinds of failure. Trouble on our side that may pass (database,
# disk) is "Refused: Out of Resources", so senders retry later; anything else unexpected is "Error: Cannot
# understand" in the range pynetdicom itself uses for a failing handler. ErrorComment says it is our fault.
OUT_OF_RESOURCES = 0xA700
UNEXPECTED_FAILURE = 0xC211
ERROR_COMMENT_LENGTH = 64  # (0000,0902) Error Comment is LO: at most 64 characters, no backslash (PS3.5 6.2)


def handle_echo(event) -> int:
    """C-ECHO: an association that got past the gate is verified."""
    return SUCCESS


def handle_store(event) -> int | Dataset:
    """C-STORE: store one instance for the association's institution; a refusal carries its reason in ErrorComment."""
    state = state_of(event.assoc)
    if state is None:  # the gate did not let this association in; never store for nobody
        return failure(NotAuthorized.dicom_status, "This association was not accepted by the archive.")
    try:
        result = ingest_instance(
            principal=state.principal, source=SOURCE, address=state.peer, audit_refusals=True, cache=state.cache, **_received(event)
        )
    except IngestRefused as refusal:
        state.refused += 1
        logger.info("C-STORE from %s refused (0x%04X): %s", state.label(), refusal.dicom_status, refusal.reason)
        return failure(refusal.dicom_status, refusal.reason)
    except DatabaseError:
        state.refused += 1
        logger.exception("C-STORE from %s: database error", state.label())
        close_old_connections()  # a broken connection is reopened for the association's next C-STORE
        return failure(OUT_OF_RESOURCES, "The archive's database is unavailable; nothing was kept. Try again later.")
    except Exception:
        state.refused += 1
        logger.exception("C-STORE from %s: unexpected error", state.label())
        return failure(UNEXPECTED_FAILURE, "The archive failed to process this object; nothing was kept.")
    state.add(result)
    return SUCCESS


def _received(event) -> dict:
    """The object as received, for ingest_instance: a path to it, or its bytes.

    With pynetdicom's STORE_RECV_CHUNKED_DATASET (the listener sets it) the data set was written to a
    temporary Part 10 file as its P-DATA fragments arrived, so an object of a gigabyte is never held in
    memory. Without it, the same preamble and file meta are put in front of the received bytes, so both
    ways keep identical files.
    """
    path = event.dataset_path  # None when the data set was received in memory
    if path:
        return {"path": path}
    return {"data": event.encoded_dataset(include_meta=True)}


def failure(status: int, comment: str) -> Dataset:
    response = Dataset()
    response.Status = status
    text = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in comment)
    response.ErrorComment = text if len(text) <= ERROR_COMMENT_LENGTH else text[: ERROR_COMMENT_LENGTH - 3] + "..."
    return response
