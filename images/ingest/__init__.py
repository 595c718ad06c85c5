"""Ingest: one service that validates, stores durably and indexes every object, whichever way it came in."""

from .service import IngestCache, IngestResult, check_may_register, ingest_instance, record_batch, record_refusal

__all__ = ["IngestCache", "IngestResult", "check_may_register", "ingest_instance", "record_batch", "record_refusal"]
