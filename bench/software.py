"""Software benchmark: de-identification of the benchmark corpus through processing jobs on a real Celery worker, in
instances/s, against plain loops doing the same edits on the same files in the same run; an MPR and a MIP of a
300-slice series, in seconds.

    .venv/bin/python -m bench.software                       # 4 studies (1,000 instances) of the 2,000-instance corpus
    .venv/bin/python -m bench.software --studies 8 --slices 300 --runs 5

A private medarchive (SQLite and archive under var/bench/software/, a filesystem broker) and one `celery worker
--pool=solo` started here. Every loop reads each file with pydicom and applies the de-identification processor's own
edits (the same code the job runs: so "the same edits"); they differ in how the product is kept:

- plain: written with pydicom's save_as to a temporary folder, left in the page cache (nothing is made durable);
- durable: written the way the archive writes a file (images.storage.durable_write: a temporary name, fsync, rename,
  fsync of the folder), into a scratch folder: the durability a job's product gets, without the archive's index;
- ingest: stored through the one ingest service (hash, parse and validate, durable write, index), with one
  IngestCache, into a separate institution: everything a job does to keep a product, without the job.

The job path adds the job machinery to that: submitting (licence, selection, items), the broker, reading each source
from the archive, progress, the job's products table and its audit events. The loops and the jobs alternate `--runs`
times; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "var" / "bench" / "software"
QUEUE = "bench-software"


def environment() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "CELERY_QUEUE", "ARCHIVE_ROOT")}
    env.update(
        MEDARCHIVE_TESTING="1",
        MEDARCHIVE_VAR_DIR=str(WORK),
        DATABASE_URL=f"sqlite:///{WORK / 'db.sqlite3'}",
        DJANGO_SETTINGS_MODULE="medarchive.settings",
        CELERY_BROKER_DIR=str(WORK / "broker"),
        CELERY_QUEUE=QUEUE,
        ARCHIVE_ROOT=str(WORK / "archive"),
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    return env


def setup_django() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "broker").mkdir(parents=True)
    os.environ.update(environment())
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def start_worker():
    from bench import processes

    argv = [sys.executable, "-m", "celery", "-A", "medarchive", "worker", "--pool=solo", "--concurrency=1", "-Q", QUEUE]
    argv += ["--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "WARNING"]
    return processes.start(argv, log=WORK / "worker.log", env=environment(), cwd=WORK / "broker")


def wait_for_jobs(job_ids: list[int], *, timeout: float, worker) -> list:
    from software.models import ProcessingJob

    deadline = time.monotonic() + timeout
    while True:
        jobs = list(ProcessingJob.objects.filter(pk__in=job_ids).order_by("pk"))
        if all(job.is_finished for job in jobs):
            return jobs
        if worker.poll() is not None or time.monotonic() > deadline:
            from bench.processes import tail

            raise RuntimeError(f"jobs {job_ids} not finished (worker exit {worker.returncode}):\n{tail(WORK / 'worker.log')}")
        time.sleep(0.25)


def _deid_context(run: int):
    from software.processors import registry
    from software.processors.base import ProcessingContext

    processor = registry.get("deidentify")
    # A job id of its own per run and loop, so no loop finds the products of another already stored.
    context = ProcessingContext(
        job_id=-run, processor=processor, parameters=processor.defaults(), created_at=datetime.now(UTC), secret=b"bench"
    )
    return processor, context


def plain_deidentify(paths: list[Path], run: int = 1) -> float:
    """The same edits without the job machinery: pydicom reads, the processor's deidentify(), pydicom writes (no fsync)."""
    from pydicom import dcmread

    processor, context = _deid_context(run)
    with tempfile.TemporaryDirectory(dir=WORK) as out:
        started = time.perf_counter()
        for number, path in enumerate(paths):
            product = processor.deidentify(dcmread(path), context.parameters, context)
            product.save_as(Path(out) / f"{number}.dcm", enforce_file_format=True)
        return time.perf_counter() - started


def durable_deidentify(paths: list[Path], run: int = 1) -> float:
    """The same edits, each product serialized and written as the archive writes a file (fsync of file and folder)."""
    from django.core.files.storage import FileSystemStorage
    from pydicom import dcmread

    from images.storage import durable_write
    from software.processors.derived import part10

    processor, context = _deid_context(run)
    with tempfile.TemporaryDirectory(dir=WORK) as out:
        storage = FileSystemStorage(location=out)
        started = time.perf_counter()
        for number, path in enumerate(paths):
            product = processor.deidentify(dcmread(path), context.parameters, context)
            durable_write(f"{number // 50}/{number}.dcm", part10(product, product.file_meta.TransferSyntaxUID), storage=storage)
        return time.perf_counter() - started


def ingest_deidentify(paths: list[Path], principal, run: int = 1) -> float:
    """The same edits, each product stored through the one ingest service (hash, validate, durable write, index)."""
    from pydicom import dcmread

    from images.ingest import IngestCache, ingest_instance
    from software.processors.derived import part10

    processor, context = _deid_context(1000 + run)
    cache = IngestCache()
    started = time.perf_counter()
    for path in paths:
        product = processor.deidentify(dcmread(path), context.parameters, context)
        data = part10(product, product.file_meta.TransferSyntaxUID)
        ingest_instance(principal=principal, data=data, source="bench", cache=cache)
    return time.perf_counter() - started


def mip_series(slices: int, principal) -> tuple[str, list]:
    """A 512 x 512 CT series of `slices` slices (the corpus's chest phantom), stored in the archive."""
    import numpy as np
    from pydicom.uid import generate_uid

    from bench.corpus import ct_slice
    from images.ingest import IngestCache, ingest_instance
    from images.synthetic import make_dataset, to_bytes

    rng = np.random.default_rng(5)
    study_uid, series_uid, frame = generate_uid(), generate_uid(), generate_uid()
    cache = IngestCache()
    pixels = []
    for index in range(slices):
        ds = make_dataset(
            "CT", rows=8, cols=8, patient_id="BENCH-MIP", study_uid=study_uid, series_uid=series_uid, instance_number=index + 1
        )
        image = ct_slice(index / max(slices - 1, 1) * 2 - 1, rng)
        ds.Rows, ds.Columns = image.shape
        ds.PixelData = image.astype(np.uint16).tobytes()
        ds.ImagePositionPatient = [-200.0, -200.0, index * 1.0]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceThickness = ds.SpacingBetweenSlices = 1.0
        ds.FrameOfReferenceUID = frame
        pixels.append(image)
        ingest_instance(principal=principal, data=to_bytes(ds), source="bench", cache=cache)
    return series_uid, pixels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=int, default=2000, help="instances of the corpus to take studies from (bench.corpus)")
    parser.add_argument("--studies", type=int, default=4, help="studies of the corpus to de-identify (250 instances each)")
    parser.add_argument("--slices", type=int, default=300, help="slices of the series projected (MIP)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each de-identification path and of the MIP (median)")
    parser.add_argument("--mpr-runs", type=int, default=1, help="MPR jobs on the 300-slice series (0: none)")
    args = parser.parse_args()
    setup_django()

    from bench import processes
    from bench.corpus import ensure_corpus
    from images.ingest import IngestCache, ingest_instance
    from images.models import Study
    from software.services import catalogue, jobs, licences
    from subscribers.access import OPERATOR, Principal
    from subscribers.models import Institution, Role

    corpus = ensure_corpus(args.corpus, log=lambda text: print(text, file=sys.stderr))
    chosen = sorted({i.study_instance_uid for i in corpus.instances})[: args.studies]
    paths = [i.path for i in corpus.instances if i.study_instance_uid in chosen]
    institution = Institution.objects.create(name="Bench Hospital", slug="bench")
    runner = Principal(kind="operator", institution=institution, roles=frozenset({Role.REGISTER, Role.SOFTWARE}))
    reference = Institution.objects.create(name="Bench reference loop", slug="bench-reference")
    reference_principal = Principal(kind="operator", institution=reference, roles=frozenset({Role.REGISTER}))
    for processor_id in ("deidentify", "mip", "mpr"):
        software = catalogue.ensure_processor_software(actor=OPERATOR, processor_id=processor_id)
        licences.grant_licence(actor=OPERATOR, institution=institution, software=software)
    print(f"ingesting {len(paths)} instances of {len(chosen)} studies...", file=sys.stderr)
    cache = IngestCache()
    for path in paths:
        ingest_instance(principal=runner, path=path, source="bench", cache=cache)
    series_uid, volume = mip_series(args.slices, runner)

    worker = start_worker()
    try:
        # A first small job warms the worker up (imports, the plugin registry) and is not counted.
        warm = jobs.submit_job(principal=runner, processor_id="mip", parameters={}, uids=[series_uid])
        wait_for_jobs([warm.pk], timeout=600, worker=worker)

        plain, durable, ingested, through_jobs, inside = [], [], [], [], []
        study_uids = list(
            Study.objects.filter(institution=institution, study_instance_uid__in=chosen).values_list("study_instance_uid", flat=True)
        )
        for run in range(1, args.runs + 1):
            os.sync()
            print(f"run {run}: plain pydicom loop...", file=sys.stderr)
            plain.append(plain_deidentify(paths, run))
            os.sync()
            print(f"run {run}: loop with durable writes...", file=sys.stderr)
            durable.append(durable_deidentify(paths, run))
            print(f"run {run}: loop through the ingest service...", file=sys.stderr)
            ingested.append(ingest_deidentify(paths, reference_principal, run))
            os.sync()
            print(f"run {run}: de-identification jobs on the worker...", file=sys.stderr)
            started = time.perf_counter()
            submitted = [jobs.submit_job(principal=runner, processor_id="deidentify", parameters={}, uids=[uid]).pk for uid in study_uids]
            done = wait_for_jobs(submitted, timeout=3600, worker=worker)
            through_jobs.append(time.perf_counter() - started)
            assert all(job.status == "succeeded" for job in done), [(job.pk, job.status, job.error) for job in done]
            products = sum(job.products.count() for job in done)
            assert products == len(paths), (products, len(paths))
            inside.append(sum(job.duration_seconds for job in done))

        mip_walls, mip_inside = [], []
        for _ in range(args.runs):
            started = time.perf_counter()
            job = jobs.submit_job(principal=runner, processor_id="mip", parameters={}, uids=[series_uid])
            [job] = wait_for_jobs([job.pk], timeout=600, worker=worker)
            mip_walls.append(time.perf_counter() - started)
            assert job.status == "succeeded", job.error
            mip_inside.append(job.duration_seconds)
        mpr_walls, mpr_inside, mpr_products = [], [], 0
        for _ in range(args.mpr_runs):
            print("MPR job...", file=sys.stderr)
            started = time.perf_counter()
            job = jobs.submit_job(principal=runner, processor_id="mpr", parameters={}, uids=[series_uid])
            [job] = wait_for_jobs([job.pk], timeout=3600, worker=worker)
            mpr_walls.append(time.perf_counter() - started)
            assert job.status == "succeeded", job.error
            mpr_inside.append(job.duration_seconds)
            mpr_products = job.products.count()
    finally:
        processes.stop(worker)
    mpr_processor = mpr_processor_seconds(series_uid, institution) if args.mpr_runs else None

    import numpy as np

    started = time.perf_counter()
    np.stack(volume).max(axis=0)
    numpy_only = time.perf_counter() - started

    count = len(paths)
    median = statistics.median
    result = {
        "at": datetime.now(UTC).isoformat(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "instances": count,
        "runs": args.runs,
        "plain_seconds": plain,
        "durable_seconds": durable,
        "ingest_seconds": ingested,
        "jobs_seconds": through_jobs,
        "jobs_inside_worker_seconds": inside,
        "plain_instances_per_second": count / median(plain),
        "durable_instances_per_second": count / median(durable),
        "ingest_instances_per_second": count / median(ingested),
        "jobs_instances_per_second": count / median(through_jobs),
        "overhead_vs_plain": median(through_jobs) / median(plain) - 1,
        "overhead_vs_durable": median(through_jobs) / median(durable) - 1,
        "overhead_vs_ingest": median(through_jobs) / median(ingested) - 1,
        "mip_slices": args.slices,
        "mip_wall_seconds": mip_walls,
        "mip_inside_worker_seconds": mip_inside,
        "mip_numpy_max_seconds": numpy_only,
        "mpr_products": mpr_products,
        "mpr_wall_seconds": mpr_walls,
        "mpr_inside_worker_seconds": mpr_inside,
        "mpr_processor_seconds": mpr_processor,
    }
    out = ROOT / "var" / "bench" / f"results-software-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2))
    rows = [
        ("plain pydicom loop (read, same edits, write to the page cache: nothing durable)", median(plain)),
        ("loop writing each product durably (fsync of file and folder, as the archive)", median(durable)),
        ("loop storing each product through the ingest service (no job)", median(ingested)),
        ("jobs on the worker (submit to last job finished)", median(through_jobs)),
        ("of which inside the worker (jobs' start to end)", median(inside)),
    ]
    print(f"De-identification of {count} instances (512 x 512, {len(chosen)} studies), PS3.15 Basic Profile, median of {args.runs}:")
    print("| path | seconds | instances/s |")
    print("| --- | --- | --- |")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.1f} | {count / seconds:.1f} |")
    for label, key in (("plain loop", "plain"), ("durable loop", "durable"), ("ingest loop", "ingest")):
        print(f"jobs over the {label}: {100 * result[f'overhead_vs_{key}']:.0f} %")
    print("(goal: the job machinery costs under 20 %)")
    print(f"MIP of a {args.slices}-slice 512 x 512 CT series, median of {args.runs}:")
    print(f"  submit to finished: {median(mip_walls):.2f} s; inside the worker: {median(mip_inside):.2f} s")
    print(f"  numpy max over the same slices in memory: {numpy_only:.3f} s")
    if mpr_walls:
        print(f"MPR (coronal and sagittal, step 1: {mpr_products} images) of the same series, median of {args.mpr_runs}:")
        print(f"  submit to finished: {median(mpr_walls):.2f} s; inside the worker: {median(mpr_inside):.2f} s")
        print(f"  the processor alone (in memory, no ingest): {mpr_processor:.2f} s")
    print(f"details: {out}")


def mpr_processor_seconds(series_uid: str, institution) -> float:
    """The MPR processor on the series already in memory: making the products, without storing them."""
    import io

    from pydicom import dcmread

    from images.models import Instance
    from images.storage import open_instance
    from software.processors import registry
    from software.processors.base import ProcessingContext, WorkItem

    sources = []
    for instance in Instance.objects.filter(institution=institution, series__series_instance_uid=series_uid):
        with open_instance(instance.storage_name) as fh:
            sources.append(dcmread(io.BytesIO(fh.read())))
    processor = registry.get("mpr")
    context = ProcessingContext(
        job_id=0, processor=processor, parameters=processor.defaults(), created_at=datetime.now(UTC), secret=b"bench"
    )
    started = time.perf_counter()
    processor.process(WorkItem("bench", sources), context.parameters, context)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
