"""A subscriber's PACS as a polling source, over DICOM: C-FIND at study level (and at series level for what the PACS
cannot match itself), then C-GET of each new study over the same kind of association (no route back needed), or C-MOVE
to the archive's own listener.

We call with the archive's AE title (settings.DICOM_AET) and the source's AE title as the called one. Every answer is
checked: a status outside the standard's, an identifier without a valid Study Instance UID, or an aborted association
fails the poll with the reason.
"""

from __future__ import annotations

import logging
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, StoragePresentationContexts, build_context, build_role, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from ..delivery import CONNECT_TIMEOUT, associate, association_failure
from .base import FetchFailed, FoundStudy, PollFailed, Retrieved
from .query import STUDY, Answer, UnsupportedKey, check_series, check_study, study_keys, unsupported

logger = logging.getLogger(__name__)

ACSE_TIMEOUT = 15
DIMSE_TIMEOUT = 120
NETWORK_TIMEOUT = 120
UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
PENDING = (0xFF00, 0xFF01)
SUCCESS = 0x0000
WARNING = 0xB000
STORED = 0x0000
OUT_OF_RESOURCES = 0xA700
# Study-level keys asked back in every C-FIND (empty: return the value), besides the source's own match keys.
RETURN_KEYS = ("StudyInstanceUID", "StudyDate", "StudyDescription", "PatientID", "ModalitiesInStudy", "NumberOfStudyRelatedInstances")
# What the archive accepts from a C-GET: every uncompressed syntax, and the compressed ones it keeps as they come.
GET_TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]


def _valid_uid(value) -> bool:
    text = str(value or "")
    return 0 < len(text) <= 64 and bool(UID_RE.match(text))


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value)


def _values(ds: Dataset, keyword: str) -> list[str]:
    value = ds.get(keyword)
    if value is None:
        return []
    if isinstance(value, str | bytes):
        return [str(value)] if value else []
    return [str(v) for v in value]


def _answer(ds: Dataset) -> Answer:
    return {element.keyword: _values(ds, element.keyword) for element in ds if element.keyword}


def _comment(status: Dataset) -> str:
    comment = status.get("ErrorComment", "")
    return f": {comment}" if comment else ""


class DicomNode:
    """A PACS we call as a Query/Retrieve SCU, at ae_title@host:port."""

    def __init__(self, *, ae_title: str, host: str, port: int, calling_ae_title: str | None = None):
        self.ae_title, self.host, self.port = ae_title, host, int(port)
        self.calling_ae_title = calling_ae_title or settings.DICOM_AET

    @property
    def where(self) -> str:
        return f"PACS at {self.host}:{self.port}"

    @contextmanager
    def _associate(self, contexts, *, ext_neg=None, handlers=None):
        """An established association, released after the work (aborted when the work failed half-way)."""
        local = AE(ae_title=self.calling_ae_title)
        local.acse_timeout, local.dimse_timeout, local.network_timeout = ACSE_TIMEOUT, DIMSE_TIMEOUT, NETWORK_TIMEOUT
        local.connection_timeout = CONNECT_TIMEOUT
        assoc = associate(local, self.host, self.port, contexts=contexts, ae_title=self.ae_title, ext_neg=ext_neg, evt_handlers=handlers)
        if not assoc.is_established:
            raise PollFailed(association_failure(assoc, self.host, self.port, what="PACS"))
        try:
            yield assoc
        except (RuntimeError, OSError) as error:  # pynetdicom's own complaint about the exchange (an association gone)
            if assoc.is_established:
                assoc.abort()
            raise PollFailed(f"{self.where} broke off the exchange: {error}") from error
        except BaseException:
            if assoc.is_established:
                assoc.abort()
            raise
        if assoc.is_established:
            assoc.release()

    # --- C-FIND -----------------------------------------------------------------------------------------------------

    def find_studies(self, query: dict[str, str], window: str) -> list[FoundStudy]:
        """The studies matching query and the StudyDate window; raises PollFailed when the PACS cannot be asked."""
        with self._associate([build_context(StudyRootQueryRetrieveInformationModelFind)]) as assoc:
            identifier = Dataset()
            identifier.QueryRetrieveLevel = STUDY
            for keyword in RETURN_KEYS:
                setattr(identifier, keyword, "")
            identifier.StudyDate = window
            for keyword, value in study_keys(query).items():
                setattr(identifier, keyword, value)
            found, to_check = [], []
            try:
                for answer in self._find(assoc, identifier):
                    if not _valid_uid(answer.get("StudyInstanceUID")):
                        raise PollFailed(f"{self.where} answered a C-FIND with a study without a valid Study Instance UID.")
                    needs_series = check_study(_answer(answer), query, window)
                    if needs_series is None:
                        continue
                    study = FoundStudy(
                        study_instance_uid=str(answer.StudyInstanceUID),
                        study_date=_text(answer, "StudyDate"),
                        study_description=_text(answer, "StudyDescription"),
                        patient_id=_text(answer, "PatientID"),
                        modalities=_values(answer, "ModalitiesInStudy"),
                        number_of_instances=_int(answer.get("NumberOfStudyRelatedInstances")),
                    )
                    (to_check if needs_series else found).append((study, needs_series))
                for study, keys in to_check:
                    if self._any_series_matches(assoc, study, keys):
                        found.append((study, keys))
            except UnsupportedKey as missing:
                raise PollFailed(unsupported(self.where, missing.keyword)) from None
            return [study for study, _ in found]

    def _any_series_matches(self, assoc, study: FoundStudy, keys: dict[str, str]) -> bool:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "SERIES"
        identifier.StudyInstanceUID = study.study_instance_uid
        identifier.SeriesInstanceUID = ""
        identifier.Modality = ""
        for keyword, value in keys.items():
            setattr(identifier, keyword, value)
        modalities, matched = set(), False
        for answer in self._find(assoc, identifier):
            if check_series(_answer(answer), keys):
                matched = True
                modalities.update(_values(answer, "Modality"))
        if modalities and not study.modalities:
            study.modalities = sorted(modalities)
        return matched

    def _find(self, assoc, identifier: Dataset):
        for status, answer in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
            code = status.get("Status") if status else None
            if code is None:
                raise PollFailed(f"{self.where} stopped answering the C-FIND (the association was aborted or timed out).")
            code = int(code)
            if code in PENDING:
                if answer is None:
                    raise PollFailed(f"{self.where} answered a C-FIND with an identifier that could not be decoded.")
                yield answer
            elif code == SUCCESS:
                return
            else:
                raise PollFailed(f"{self.where} refused the C-FIND with status 0x{code:04X}{_comment(status)}")

    # --- C-GET ------------------------------------------------------------------------------------------------------

    def get_study(self, study_instance_uid: str, folder: Path) -> Retrieved:
        """C-GET the study into folder, one Part 10 file per instance as the PACS sent it."""
        folder.mkdir(parents=True, exist_ok=True)
        retrieved = Retrieved(files=[])

        def on_store(event):
            target = folder / f"{len(retrieved.files):06d}.dcm"
            try:
                path = getattr(event, "dataset_path", None)  # when the listener's chunked receiving is on in this process
                if path:
                    shutil.copyfile(path, target)
                else:
                    target.write_bytes(event.encoded_dataset(include_meta=True))
            except Exception:
                logger.exception("C-GET from %s: could not keep a received instance", self.where)
                return OUT_OF_RESOURCES
            retrieved.files.append(target)
            return STORED

        storage = [build_context(cx.abstract_syntax, GET_TRANSFER_SYNTAXES) for cx in StoragePresentationContexts]
        roles = [build_role(cx.abstract_syntax, scp_role=True) for cx in storage]
        contexts = [build_context(StudyRootQueryRetrieveInformationModelGet), *storage]
        with self._associate(contexts, ext_neg=roles, handlers=[(evt.EVT_C_STORE, on_store)]) as assoc:
            identifier = Dataset()
            identifier.QueryRetrieveLevel = STUDY
            identifier.StudyInstanceUID = study_instance_uid
            self._retrieve(assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet), retrieved, "C-GET")
        return retrieved

    # --- C-MOVE -----------------------------------------------------------------------------------------------------

    def move_study(self, study_instance_uid: str, destination: str) -> Retrieved:
        """C-MOVE the study to destination (the archive's own listener, which the PACS must know by that AE title)."""
        retrieved = Retrieved(files=[])
        with self._associate([build_context(StudyRootQueryRetrieveInformationModelMove)]) as assoc:
            identifier = Dataset()
            identifier.QueryRetrieveLevel = STUDY
            identifier.StudyInstanceUID = study_instance_uid
            responses = assoc.send_c_move(identifier, destination, StudyRootQueryRetrieveInformationModelMove)
            self._retrieve(responses, retrieved, "C-MOVE")
        return retrieved

    def _retrieve(self, responses, retrieved: Retrieved, what: str) -> None:
        final = None
        for status, _identifier in responses:
            code = status.get("Status") if status else None
            if code is None:
                raise FetchFailed(f"{self.where} stopped answering the {what} (the association was aborted or timed out).")
            if int(code) not in PENDING:
                final = status
        if final is None:
            raise FetchFailed(f"{self.where} ended the {what} without a final status.")
        code = int(final.Status)
        retrieved.completed = _int(final.get("NumberOfCompletedSuboperations")) or 0
        retrieved.failed = _int(final.get("NumberOfFailedSuboperations")) or 0
        retrieved.warning = _int(final.get("NumberOfWarningSuboperations")) or 0
        if code == SUCCESS:
            return
        if code == WARNING or (code & 0xF000) == 0xB000:
            raise FetchFailed(
                f"{self.where}: {retrieved.failed} of {retrieved.completed + retrieved.failed + retrieved.warning} instance(s) "
                f"of the study failed in the {what} (status 0x{code:04X}{_comment(final)})"
            )
        raise FetchFailed(f"{self.where} refused the {what} with status 0x{code:04X}{_comment(final)}")


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
