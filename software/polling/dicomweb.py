"""A subscriber's archive as a polling source over DICOMweb (PS3.18): QIDO-RS for the studies, and their series when
the endpoint cannot match a key itself, then WADO-RS of each new study in the transfer syntax the archive keeps it in.

dicomweb-client speaks the protocol; the credentials are HTTP basic (a user name and password) or a bearer token (the
secret alone). The secret is never written into a reason, a log line or the audit trail.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from urllib.parse import urlsplit

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.datadict import keyword_for_tag

from .base import FetchFailed, FoundStudy, PollFailed, Retrieved
from .query import Answer, UnsupportedKey, check_series, check_study, study_keys, unsupported

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10
READ_TIMEOUT = 120
STUDY_FIELDS = ("StudyInstanceUID", "StudyDate", "StudyDescription", "PatientID", "ModalitiesInStudy", "NumberOfStudyRelatedInstances")
# PS3.18 8.7.3.5.2: "*" asks for each instance in the transfer syntax the origin server has it in.
AS_STORED = (("application/dicom", "*"),)


def _answer(item: dict) -> Answer:
    """A DICOM JSON object (PS3.18 F.2) as keyword -> values; person names as their alphabetic form."""
    if not isinstance(item, dict):
        raise TypeError("not a DICOM JSON object")
    answer = {}
    for tag, element in item.items():
        keyword = keyword_for_tag(int(tag, 16)) if len(tag) == 8 else ""
        if not keyword or not isinstance(element, dict):
            continue
        values = []
        for value in element.get("Value") or []:
            if isinstance(value, dict):
                value = value.get("Alphabetic", "")
            values.append(str(value))
        answer[keyword] = values
    return answer


class DicomwebEndpoint:
    """A DICOMweb service at url (the base under which /studies is found)."""

    def __init__(self, *, url: str, username: str = "", secret: str = ""):
        self.url = url.rstrip("/")
        session = requests.Session()
        if username:
            session.auth = (username, secret)
        elif secret:
            session.headers["Authorization"] = f"Bearer {secret}"
        self.client = DICOMwebClient(url=self.url, session=session, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
        self.client.set_http_retry_params(retry=False)  # the poll's own backoff retries an unreachable source

    @property
    def where(self) -> str:
        parts = urlsplit(self.url)
        return f"DICOMweb endpoint {parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"

    def _failure(self, error: Exception, doing: str) -> str:
        if isinstance(error, requests.HTTPError) and error.response is not None:
            status = error.response.status_code
            if status in (401, 403):
                return f"{self.where} refused our credentials for {doing} (HTTP {status}); check the source's user name and secret."
            return f"{self.where} answered {doing} with HTTP {status} {error.response.reason or ''}".rstrip()
        if isinstance(error, requests.Timeout):
            return f"{self.where} did not answer {doing} in time."
        if isinstance(error, requests.ConnectionError):
            return f"{self.where} could not be reached: {_root_cause(error)}"
        return f"{self.where} answered {doing} with something that is not DICOMweb ({type(error).__name__})."

    def find_studies(self, query: dict[str, str], window: str) -> list[FoundStudy]:
        filters = dict(study_keys(query))
        if window:
            filters["StudyDate"] = window
        try:
            items = self.client.search_for_studies(search_filters=filters, fields=list(STUDY_FIELDS), get_remaining=True)
            answers = [_answer(item) for item in items or []]
        except (requests.RequestException, ValueError, TypeError, KeyError) as error:
            raise PollFailed(self._failure(error, "the study search (QIDO-RS)")) from None
        found = []
        try:
            for answer in answers:
                uid = (answer.get("StudyInstanceUID") or [""])[0]
                if not uid:
                    raise PollFailed(f"{self.where} answered the study search with a study without a Study Instance UID.")
                needs_series = check_study(answer, query, window)
                if needs_series is None:
                    continue
                study = FoundStudy(
                    study_instance_uid=uid,
                    study_date=(answer.get("StudyDate") or [""])[0],
                    study_description=(answer.get("StudyDescription") or [""])[0],
                    patient_id=(answer.get("PatientID") or [""])[0],
                    modalities=answer.get("ModalitiesInStudy") or [],
                )
                if needs_series and not self._any_series_matches(study, needs_series):
                    continue
                found.append(study)
        except UnsupportedKey as missing:
            raise PollFailed(unsupported(self.where, missing.keyword)) from None
        return found

    def _any_series_matches(self, study: FoundStudy, keys: dict[str, str]) -> bool:
        try:
            items = self.client.search_for_series(
                study_instance_uid=study.study_instance_uid, search_filters=dict(keys), fields=["Modality", *keys]
            )
            answers = [_answer(item) for item in items or []]
        except (requests.RequestException, ValueError, TypeError, KeyError) as error:
            raise PollFailed(self._failure(error, "the series search (QIDO-RS)")) from None
        return any(check_series(answer, keys) for answer in answers)

    def get_study(self, study_instance_uid: str, folder: Path) -> Retrieved:
        """WADO-RS of the whole study, one Part 10 file per instance in the transfer syntax the endpoint keeps it in."""
        folder.mkdir(parents=True, exist_ok=True)
        retrieved = Retrieved()
        try:
            for dataset in self.client.iter_study(study_instance_uid, media_types=AS_STORED):
                target = folder / f"{len(retrieved.files):06d}.dcm"
                buffer = io.BytesIO()
                dataset.save_as(buffer, enforce_file_format=True)
                target.write_bytes(buffer.getvalue())
                retrieved.files.append(target)
                retrieved.completed += 1
        except requests.ConnectionError as error:
            raise PollFailed(self._failure(error, "the study retrieval (WADO-RS)")) from None
        except (requests.RequestException, ValueError, TypeError, KeyError, AttributeError) as error:
            raise FetchFailed(self._failure(error, f"the retrieval of study {study_instance_uid} (WADO-RS)")) from None
        return retrieved


def _root_cause(error: Exception) -> str:
    """The innermost reason of a connection error (refused, name not resolved), without the URL and its details."""
    cause = error
    while cause.__cause__ is not None or (cause.args and isinstance(cause.args[0], Exception)):
        cause = cause.__cause__ or cause.args[0]
    text = str(getattr(cause, "strerror", None) or cause)
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    if "Name or service not known" in text or "nodename nor servname" in text or "Temporary failure in name resolution" in text:
        return "host name not found"
    return text.split(": ", 1)[-1][:200]
