"""Running a processing job on the image-processing server (the Celery worker, or the `process --inline` command).

Item by item: load the source objects from the archive, let the processor check and process them, and ingest the
products through the one ingest service. An item the processor cannot handle fails with the reason and the others go
on. Cancellation, the job's time limit and its memory limit are checked all along; a job that is cancelled, runs past a
limit or meets an unexpected error ends with every product it had made removed again, so the archive never holds half a
product.

Items are committed in batches (`ProductBatch`): the processing happens outside any transaction, then the products of
up to BATCH_ITEMS items (or of BATCH_SECONDS of work, or BATCH_BYTES of pixels) are ingested in one transaction that
also marks those items done and moves the job's progress on. A batch is all in the archive or none of it, so an item's
products are too; the portal's progress moves once a batch. One IngestCache serves the whole job, so the products'
patient, study and series rows are looked up once, not once a product.

Retries are safe: product UIDs and bytes are derived from the job (processors/base.py), finished items are skipped, and
the ingest service stores an object it already holds once.
"""

from __future__ import annotations

import io
import logging
import os
import resource
import signal
import threading
import time

from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian

from images.errors import StorageFailed
from images.ingest.service import IngestCache, ingest_instance
from images.models import Instance, Patient, Series, Study
from images.storage import delete_quietly, open_instance
from subscribers import audit
from subscribers.access import Principal
from subscribers.models import Role
from subscribers.services import notify

from ..models import Delivery, ProcessingItem, ProcessingJob, ProcessingProduct
from ..processors import registry
from ..processors.base import ProcessingContext, ProcessorError, WorkItem
from ..processors.derived import part10
from .research import research_institution_for

logger = logging.getLogger(__name__)
# Decoded pixels are held as float64 by most filters: about 8 bytes per stored sample, plus the stored copy.
MEMORY_PER_SAMPLE = 12
CANCEL_CHECK_SECONDS = 1.0
# A batch of items is committed when it holds this many items, this much work (seconds since its first item) or this
# many bytes of product pixels (held in memory until then), whichever comes first. An item is never split.
BATCH_ITEMS = 64
BATCH_SECONDS = 1.0
BATCH_BYTES = 64 * 1024 * 1024
UIDS_PER_QUERY = 900  # under SQLite's smallest limit of bound parameters (999)


class JobStopped(Exception):
    """The job must end now: cancelled, or past a limit. `status` is the job's final status."""

    def __init__(self, reason: str, *, status: str = ProcessingJob.Status.FAILED):
        super().__init__(reason)
        self.reason = reason
        self.status = status


class TransientFailure(Exception):
    """The database or storage failed for a moment: the task is retried (finished items stay done)."""


TRANSIENT = (OperationalError, InterfaceError, StorageFailed)


class Limits:
    """The job's time limit (a deadline from its start, enforced with SIGALRM where possible and at every checkpoint),
    its memory limit (RLIMIT_AS in a worker process), and cancellation (looked up at most once a second)."""

    def __init__(self, job: ProcessingJob, *, enforce_memory: bool):
        self.job = job
        self.enforce_memory = enforce_memory
        started = job.started_at or timezone.now()
        elapsed = (timezone.now() - started).total_seconds()
        self.deadline = time.monotonic() + max(job.time_limit_seconds - elapsed, 0.001)
        self.last_cancel_check = 0.0
        self._previous_alarm = None
        self._previous_rlimit = None

    def check(self) -> None:
        if time.monotonic() >= self.deadline:
            raise JobStopped(f"The job ran past its time limit of {self.job.time_limit_seconds} s and was stopped.")
        now = time.monotonic()
        if now - self.last_cancel_check >= CANCEL_CHECK_SECONDS:
            self.last_cancel_check = now
            if ProcessingJob.objects.filter(pk=self.job.pk, cancel_requested_at__isnull=False).exists():
                raise JobStopped("The job was cancelled.", status=ProcessingJob.Status.CANCELLED)

    def _on_alarm(self, signum, frame):
        raise JobStopped(f"The job ran past its time limit of {self.job.time_limit_seconds} s and was stopped.")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous_alarm = signal.signal(signal.SIGALRM, self._on_alarm)
            signal.setitimer(signal.ITIMER_REAL, max(self.deadline - time.monotonic(), 0.001))
        if self.enforce_memory:
            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            wanted = _address_space_bytes() + self.job.memory_limit_mb * 1024 * 1024
            if hard != resource.RLIM_INFINITY:
                wanted = min(wanted, hard)
            self._previous_rlimit = (soft, hard)
            resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))
        return self

    def __exit__(self, *exc):
        if self._previous_alarm is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous_alarm)
        if self._previous_rlimit is not None:
            resource.setrlimit(resource.RLIMIT_AS, self._previous_rlimit)
        return False


def _address_space_bytes() -> int:
    """The process's current virtual size (the memory limit is this plus the job's allowance)."""
    try:
        with open(f"/proc/{os.getpid()}/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def products_principal(institution) -> Principal:
    """The processing server storing a job's products for the institution (its own archive, or its research collection)."""
    return Principal(kind="operator", institution=institution, roles=frozenset({Role.REGISTER}))


# --- Running --------------------------------------------------------------------------------------------------------


def run_job(job_id: int, *, in_worker: bool = False) -> ProcessingJob:
    """Run (or resume) a job to its end. Raises TransientFailure for the task to retry; every other failure ends the job."""
    with transaction.atomic():
        job = ProcessingJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.is_finished:
            return job
        if job.cancel_requested_at is not None:
            _finish_stopped(job, JobStopped("The job was cancelled before it started.", status=ProcessingJob.Status.CANCELLED))
            return job
        job.status = ProcessingJob.Status.RUNNING
        job.started_at = job.started_at or timezone.now()
        job.attempts = F("attempts") + 1
        job.save(update_fields=["status", "started_at", "attempts"])
    job.refresh_from_db()
    processor = registry.get(job.processor_id)
    batch = None
    try:
        if processor is None:
            broken = registry.unavailable().get(job.processor_id)
            raise JobStopped(
                f"The processing type {job.processor_id!r} is not available on this server" + (f": {broken.reason}" if broken else ".")
            )
        target = job.institution
        if processor.research_products:
            target = research_institution_for(job.institution, member=job.requested_by)
        context = ProcessingContext(
            job_id=job.pk,
            processor=processor,
            parameters=job.parameters,
            created_at=job.created_at,
            secret=settings.SECRET_KEY.encode(),
        )
        batch = ProductBatch(job, target)
        with Limits(job, enforce_memory=in_worker) as limits:
            context._check = limits.check
            pending = list(job.items.filter(status=ProcessingItem.Status.PENDING).order_by("position"))
            for start in range(0, len(pending), BATCH_ITEMS):
                chunk = pending[start : start + BATCH_ITEMS]
                rows = _source_rows(job, [uid for item in chunk for uid in item.source_uids])
                for item in chunk:
                    limits.check()
                    context.item_position = item.position
                    _run_item(job, item, processor, context, batch, rows)
                    if batch.is_due():
                        batch.commit()
            batch.commit()
    except JobStopped as stop:
        _finish_stopped(job, stop, discarded=_discard(batch))
        return job
    except TRANSIENT as error:
        raise TransientFailure(str(error)) from error
    except MemoryError:
        stop = JobStopped(f"The job ran past its memory limit of {job.memory_limit_mb} MB and was stopped.")
        _finish_stopped(job, stop, discarded=_discard(batch))
        return job
    except Exception as error:
        if type(error).__name__ == "SoftTimeLimitExceeded":
            stop = JobStopped(f"The job ran past its time limit of {job.time_limit_seconds} s and was stopped.")
            _finish_stopped(job, stop, discarded=_discard(batch))
            return job
        logger.exception("processing job %s failed", job.pk)
        _finish_stopped(job, JobStopped(f"The processing failed: {type(error).__name__}: {error}"), discarded=_discard(batch))
        return job
    _finish(job)
    return job


def _source_rows(job: ProcessingJob, uids: list[str]) -> dict[str, Instance]:
    """The index rows of source instances (only what loading needs: not their DICOM JSON), a few queries for many items."""
    rows = {}
    for start in range(0, len(uids), UIDS_PER_QUERY):
        found = Instance.objects.filter(institution=job.institution, sop_instance_uid__in=uids[start : start + UIDS_PER_QUERY])
        rows.update((i.sop_instance_uid, i) for i in found.only("sop_instance_uid", "storage_name", "rows", "columns", "number_of_frames"))
    return rows


def _load(job: ProcessingJob, item: ProcessingItem, rows: dict[str, Instance]) -> list:
    instances = {uid: rows[uid] for uid in item.source_uids if uid in rows}
    missing = [uid for uid in item.source_uids if uid not in instances]
    if missing:
        raise ProcessorError(f"{len(missing)} of the item's images are no longer in the archive.")
    samples = sum((i.rows or 0) * (i.columns or 0) * (i.number_of_frames or 1) for i in instances.values())
    needed_mb = samples * MEMORY_PER_SAMPLE / (1024 * 1024)
    if needed_mb > job.memory_limit_mb:
        raise JobStopped(f"The job would need about {needed_mb:,.0f} MB, more than its memory limit of {job.memory_limit_mb} MB.")
    datasets = []
    for uid in item.source_uids:
        with open_instance(instances[uid].storage_name) as fh:
            datasets.append(dcmread(io.BytesIO(fh.read())))  # in memory: products may deep-copy it
    return datasets


def _run_item(job, item, processor, context, batch: ProductBatch, rows: dict[str, Instance]) -> None:
    """Process one item (outside any transaction) and hand its products, or the reason it failed, to the batch."""
    try:
        sources = _load(job, item, rows)
        work = WorkItem(item.label, sources)
        processor.check(work)
        products = processor.process(work, job.parameters, context)
        if not products:
            raise ProcessorError("The processing type made nothing of these images.")
    except ProcessorError as refusal:
        batch.add_failed(item, str(refusal))
        return
    batch.add_done(item, products)


class ProductBatch:
    """Items processed since the last commit, with their products (data sets, in memory) or their failure reason.

    `commit` ingests all the products and records the items and the job's progress in one transaction: on any error
    nothing of the batch is in the index, the files it wrote are removed again, and its items stay pending (a retried
    task processes them again and, the products being the same bytes, stores each once).
    """

    def __init__(self, job: ProcessingJob, target):
        self.job = job
        self.target = target
        self.principal = products_principal(target)
        self.cache = IngestCache()  # the job's products share a few series: their rows are looked up once
        self._clear()

    def _clear(self) -> None:
        self.done: list[tuple[ProcessingItem, list]] = []
        self.failed: list[tuple[ProcessingItem, str]] = []
        self.bytes = 0
        self.started = None

    def __len__(self) -> int:
        return len(self.done) + len(self.failed)

    def _added(self) -> None:
        if self.started is None:
            self.started = time.monotonic()

    def add_done(self, item: ProcessingItem, products: list) -> None:
        self._added()
        self.done.append((item, products))
        self.bytes += sum(len(getattr(ds, "PixelData", b"") or b"") for ds in products)

    def add_failed(self, item: ProcessingItem, reason: str) -> None:
        self._added()
        self.failed.append((item, reason))

    def is_due(self) -> bool:
        if not len(self):
            return False
        return len(self) >= BATCH_ITEMS or self.bytes >= BATCH_BYTES or time.monotonic() - self.started >= BATCH_SECONDS

    def discard(self) -> int:
        """Drop what is not committed (the job stops); the number of products dropped."""
        dropped = sum(len(products) for _, products in self.done)
        self._clear()
        return dropped

    def commit(self) -> None:
        if not len(self):
            return
        job, written = self.job, []
        try:
            with transaction.atomic():
                records = []
                for item, products in self.done:
                    for ds in products:
                        meta = getattr(ds, "file_meta", None)
                        syntax = meta.TransferSyntaxUID if meta is not None and "TransferSyntaxUID" in meta else ExplicitVRLittleEndian
                        result = ingest_instance(
                            principal=self.principal, data=part10(ds, syntax), source="processing", audit_refusals=False, cache=self.cache
                        )
                        written.append(result.instance.storage_name)
                        if result.status == "stored":
                            # Within the batch's transaction the new rows are already there for the next product of the
                            # series (the ingest service itself remembers them only once committed).
                            self.cache.remember(result.instance.study.patient, result.instance.study, result.instance.series)
                        records.append(
                            ProcessingProduct(
                                job=job,
                                item=item,
                                institution=self.target,
                                instance=result.instance,
                                study_instance_uid=result.instance.study.study_instance_uid,
                                series_instance_uid=ds.SeriesInstanceUID,
                                sop_instance_uid=result.instance.sop_instance_uid,
                            )
                        )
                # A retry after a lost acknowledgement finds the products it recorded: those rows stay as they are.
                ProcessingProduct.objects.bulk_create(records, ignore_conflicts=True)
                now = timezone.now()
                ProcessingItem.objects.filter(pk__in=[item.pk for item, _ in self.done]).update(
                    status=ProcessingItem.Status.DONE, error="", finished_at=now
                )
                for item, reason in self.failed:
                    ProcessingItem.objects.filter(pk=item.pk).update(
                        status=ProcessingItem.Status.FAILED, error=reason[:2000], finished_at=now
                    )
                ProcessingJob.objects.filter(pk=job.pk).update(
                    progress_done=F("progress_done") + len(self),
                    instances_processed=F("instances_processed") + sum(len(item.source_uids) for item, _ in self.done),
                )
        except BaseException:
            self.cache.clear()  # it may name rows of the rolled-back transaction
            _remove_unindexed(written)
            raise  # the batch stays as it was: a stopping job counts its products as discarded
        self._clear()


def _discard(batch: ProductBatch | None) -> int:
    return batch.discard() if batch is not None else 0


def _remove_unindexed(names: list[str]) -> None:
    """After a rolled-back batch: delete the files it wrote that no committed index row points at."""
    try:
        indexed = set(Instance.objects.filter(storage_name__in=names).values_list("storage_name", flat=True)) if names else set()
    except TRANSIENT:
        return  # the database is away: the files stay (a retry writes the very same ones)
    for name in names:
        if name not in indexed:
            delete_quietly(name)


# --- Ending ---------------------------------------------------------------------------------------------------------


def _finish(job: ProcessingJob) -> None:
    counts = _item_counts(job)
    done, failed = counts.get(ProcessingItem.Status.DONE, 0), counts.get(ProcessingItem.Status.FAILED, 0)
    if failed == 0:
        status = ProcessingJob.Status.SUCCEEDED
    elif done:
        status = ProcessingJob.Status.PARTIAL
    else:
        status = ProcessingJob.Status.FAILED
    error = ""
    if failed:
        first = job.items.filter(status=ProcessingItem.Status.FAILED).order_by("position").first()
        error = f"{failed} of {done + failed} items failed; the first: {first.error}"
    ProcessingJob.objects.filter(pk=job.pk).update(status=status, finished_at=timezone.now(), error=error[:5000])
    job.refresh_from_db()
    audit.record(
        action="processing.job.finish",
        institution=job.institution,
        actor="processing server",
        obj=job,
        outcome="success" if status != ProcessingJob.Status.FAILED else "failure",
        status=status,
        items_done=done,
        items_failed=failed,
        instances_processed=job.instances_processed,
        products=job.products.count(),
    )
    if job.delivery == Delivery.PUSH and done:
        _deliver(job)
    _tell_requester(job)


def _item_counts(job: ProcessingJob) -> dict:
    counts = {}
    for status in job.items.values_list("status", flat=True):
        counts[status] = counts.get(status, 0) + 1
    return counts


def _finish_stopped(job: ProcessingJob, stop: JobStopped, *, discarded: int = 0) -> None:
    """End a job that did not complete: remove every product it made, record why, tell the requester.

    discarded: products made but never stored (their batch was not committed), counted in the removal's audit event.
    """
    removed = remove_products(job, discarded=discarded)
    ProcessingJob.objects.filter(pk=job.pk).update(status=stop.status, finished_at=timezone.now(), error=stop.reason[:5000])
    job.refresh_from_db()
    audit.record(
        action="processing.job.finish",
        institution=job.institution,
        actor="processing server",
        obj=job,
        outcome="failure",
        status=job.status,
        reason=stop.reason,
        products_removed=removed,
    )
    _tell_requester(job)


def fail_job(job_id: int, reason: str) -> None:
    """End a job the worker gave up on (retries exhausted)."""
    job = ProcessingJob.objects.filter(pk=job_id).first()
    if job is not None and not job.is_finished:
        _finish_stopped(job, JobStopped(reason))


def _tell_requester(job: ProcessingJob) -> None:
    if job.requested_by is None:
        return
    text = f"Processing job {job.pk} ({job.processor_name} {job.processor_version}) {job.get_status_display().lower()}"
    if job.progress_total:
        text += f": {job.items.filter(status=ProcessingItem.Status.DONE).count()} of {job.progress_total} done"
    notify(
        users=[job.requested_by], institution=job.institution, text=text + ".", link=reverse("processing-job", kwargs={"job_id": job.pk})
    )


def _deliver(job: ProcessingJob) -> None:
    """Push the products by C-STORE (software/delivery.py). A failure is recorded on the job (by deliver) and handed to
    the delivery task, which retries with backoff; it never fails the job, whose products are in the archive."""
    try:
        from software.delivery import deliver
    except ImportError as error:
        ProcessingJob.objects.filter(pk=job.pk).update(delivery_error=f"Push delivery is not available on this server ({error}).")
        return
    try:
        deliver(job)
    except Exception as error:
        logger.warning("delivery of processing job %s failed: %s", job.pk, error)
        job.refresh_from_db()
        if not job.delivery_error:
            ProcessingJob.objects.filter(pk=job.pk).update(delivery_error=f"{type(error).__name__}: {error}"[:5000])
        try:
            from software.polling.tasks import deliver_job

            deliver_job.apply_async(args=[job.pk], countdown=60)
        except Exception as retry_error:  # no retrying task, or no broker: the failure stays recorded on the job
            logger.warning("could not queue a retry of the delivery of job %s: %s", job.pk, retry_error)
    job.refresh_from_db()


def remove_products(job: ProcessingJob, *, discarded: int = 0) -> int:
    """Take a job's products out of the archive again: their instances, the series (and research studies and patients)
    they leave empty, then their files once committed. The source images are never touched.

    discarded: products the job made but never stored; the audit event counts them beside the removed ones.
    """
    names = []
    with transaction.atomic():
        products = list(job.products.select_related("instance"))
        instance_ids = [p.instance_id for p in products if p.instance_id]
        instances = list(Instance.objects.select_for_update().filter(pk__in=instance_ids))
        for instance in instances:
            names.append(instance.storage_name)
            Series.objects.filter(pk=instance.series_id).update(
                number_of_instances=F("number_of_instances") - 1, size_bytes=F("size_bytes") - instance.size_bytes
            )
            Study.objects.filter(pk=instance.study_id).update(
                number_of_instances=F("number_of_instances") - 1, size_bytes=F("size_bytes") - instance.size_bytes
            )
        series_ids = {i.series_id for i in instances}
        study_ids = {i.study_id for i in instances}
        Instance.objects.filter(pk__in=[i.pk for i in instances]).delete()
        job.products.all().delete()
        for series in Series.objects.filter(pk__in=series_ids):
            if not series.instances.exists():
                series.delete()
        for study in Study.objects.filter(pk__in=study_ids):
            remaining = sorted({m for m in study.series.values_list("modality", flat=True) if m})
            if not study.instances.exists():
                patient_id = study.patient_id
                study.delete()
                if not Study.objects.filter(patient_id=patient_id).exists():
                    Patient.objects.filter(pk=patient_id).delete()
            else:
                Study.objects.filter(pk=study.pk).update(number_of_series=study.series.count(), modalities_in_study="\\".join(remaining))
        ProcessingItem.objects.filter(job=job, status=ProcessingItem.Status.DONE).update(
            status=ProcessingItem.Status.FAILED, error="Its products were removed: the job did not complete."
        )
        if instances or discarded:
            audit.record(
                action="processing.products.remove",
                institution=job.institution,
                actor="processing server",
                obj=job,
                instances=len(instances),
                discarded=discarded,
            )
        transaction.on_commit(lambda: [delete_quietly(name) for name in names])
    return len(names)
