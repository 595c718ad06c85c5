"""The worklist's server time at 100,000 studies on PostgreSQL, against the bare SQL of the same page.

    .venv/bin/python -m bench.worklist --database-url postgres://postgres@127.0.0.1:5432/medarchive_worklist_bench
    .venv/bin/python -m bench.worklist --database-url ... --studies 20000 --repeat 20     # a quicker look
    .venv/bin/python -m bench.worklist --database-url ... --refill                        # drop and fill again

Fills the database (migrated first) with the index rows of `--studies` studies — five institutions of different
sizes, realistic names, dates over twelve years with a few undated, the usual modality mix, and shares into the
reading institution (study, patient and personal shares, some revoked or expired) — with bulk_create, as
bench.bulk_index does for QIDO-RS: the worklist reads only the index. A filled database is reused when it holds the
same number of studies (the fill is seeded, so it is the same archive).

Then, for each scenario, it requests the worklist through Django's test Client, logged in as a receiving user of the
second-largest institution (a real session, the whole middleware stack, the template rendered), `--repeat` times
after a warm-up, and reports the median and p95 of the in-process server time (and the median CPU time the Python
side used, which a busy machine disturbs less than the wall time); as the reference, the page's own
SELECT (captured from one request) is run bare on the same connection as often, and its plan is kept
(EXPLAIN ANALYZE). Prints a table and writes var/bench/results-worklist-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

SEED = 20261125
INSTITUTIONS = [  # name, slug, share of the studies
    ("Bench General Hospital", "bench-general", 0.40),
    ("Bench Imaging Centre", "bench-imaging", 0.25),  # the reader's
    ("Bench Clinic North", "bench-north", 0.15),
    ("Bench Heart Institute", "bench-heart", 0.12),
    ("Bench Orthopaedics", "bench-ortho", 0.08),
]
READER_SLUG = "bench-imaging"
READER = "bench-reader"
# One string per list reads better than a literal of 130 quoted names.
FAMILY = (  # noqa: SIM905
    "MUELLER SCHMIDT SCHNEIDER FISCHER WEBER MEYER WAGNER BECKER SCHULZ HOFFMANN SMITH JOHNSON WILLIAMS BROWN JONES GARCIA "
    "MILLER DAVIS RODRIGUEZ MARTINEZ HERNANDEZ LOPEZ GONZALEZ WILSON ANDERSON THOMAS TAYLOR MOORE JACKSON MARTIN LEE "
    "PEREZ THOMPSON WHITE HARRIS SANCHEZ CLARK RAMIREZ LEWIS ROBINSON WALKER YOUNG ALLEN KING WRIGHT SCOTT TORRES NGUYEN "
    "HILL FLORES GREEN ADAMS NELSON BAKER HALL RIVERA CAMPBELL MITCHELL CARTER ROBERTS ROSSI RUSSO FERRARI ESPOSITO "
    "BIANCHI ROMANO COLOMBO RICCI MARINO GRECO DUBOIS DURAND LEROY MOREAU SIMON LAURENT LEFEBVRE MICHEL DAVID BERTRAND "
    "NOWAK KOWALSKI WISNIEWSKI WOJCIK KOWALCZYK JANSEN DEVRIES VANDENBERG BAKKER VISSER SMIT MEIJER DEJONG MULDER "
    "ANDERSSON JOHANSSON KARLSSON NILSSON ERIKSSON LARSSON OLSSON PERSSON SVENSSON GUSTAFSSON YILMAZ KAYA DEMIR SAHIN "
    "CELIK YILDIZ OKAFOR ADEYEMI MENSAH TANAKA SUZUKI WATANABE KIM PARK CHOI SILVA SANTOS OLIVEIRA SOUZA PEREIRA COSTA"
).split()
GIVEN = (  # noqa: SIM905
    "ANNA MARIA EMMA SOPHIA LEA HANNA MIA LENA LAURA JULIA SARA CLARA PAUL LUKAS JONAS FELIX MAX LEON ELIAS NOAH BEN "
    "JOHN JAMES ROBERT MICHAEL WILLIAM DAVID RICHARD JOSEPH THOMAS CHARLES MARY PATRICIA JENNIFER LINDA ELIZABETH "
    "BARBARA SUSAN JESSICA KAREN NANCY LISA GIULIA FRANCESCO MARCO LUCA CHIARA CAMILLE LOUIS CHLOE HUGO PIOTR KATARZYNA "
    "SVEN ASTRID INGRID OLOF MEHMET AYSE EMRE ZEYNEP CHIDI NGOZI KWAME AMA HIROSHI YUKI MINJUN SEOYEON JOAO ANA PEDRO"
).split()
# modality, weight, descriptions, (series min, max), (instances per series min, max)
MODALITIES = [
    ("CT", 25, ["CT THORAX", "CT ABDOMEN PELVIS W CONTRAST", "CT HEAD WO CONTRAST", "CT ANGIO CHEST", "CT SPINE L"], (2, 6), (80, 400)),
    ("MR", 18, ["MRI BRAIN", "MRI KNEE RIGHT", "MRI L-SPINE", "MRI PROSTATE", "MRI SHOULDER LEFT"], (4, 12), (20, 200)),
    ("CR", 14, ["XR CHEST PA", "XR HAND LEFT", "XR PELVIS AP"], (1, 2), (1, 3)),
    ("DX", 12, ["XR CHEST PA AND LAT", "XR KNEE 2 VIEWS", "XR FOOT RIGHT"], (1, 2), (1, 4)),
    ("US", 12, ["US ABDOMEN", "US THYROID", "US OBSTETRIC"], (1, 3), (5, 60)),
    ("MG", 6, ["MAMMO SCREENING BILATERAL", "MAMMO DIAGNOSTIC"], (1, 2), (4, 8)),
    ("PT\\CT", 3, ["PET-CT WHOLE BODY FDG"], (3, 6), (200, 500)),
    ("NM", 2, ["NM BONE SCAN", "NM THYROID"], (1, 3), (1, 120)),
    ("XA", 3, ["CORONARY ANGIOGRAPHY", "CEREBRAL ANGIOGRAPHY"], (2, 10), (30, 120)),
    ("RF", 2, ["FLUORO SWALLOW", "FLUORO BARIUM ENEMA"], (1, 4), (5, 40)),
    ("CT\\SR", 3, ["CT CARDIAC CALCIUM SCORE", "CT COLONOGRAPHY"], (2, 5), (60, 300)),
]
FIRST_DAY, LAST_DAY = date(2014, 1, 1), date(2026, 11, 20)
BATCH = 5000


def _setup(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("MEDARCHIVE_TESTING", "1")  # the plain static files storage and a development key
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medarchive.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def _study_day(rng: random.Random) -> date | None:
    if rng.random() < 0.005:
        return None  # StudyDate is type 2: some senders leave it empty
    span = (LAST_DAY - FIRST_DAY).days
    # Archives grow: more studies in recent years.
    return FIRST_DAY + timedelta(days=int(span * rng.random() ** 0.6))


def fill(studies: int) -> dict:
    """Write the archive's index rows; returns what was written."""
    from django.db import connection, transaction

    from images.models import Patient, Share, Study
    from subscribers import services
    from subscribers.access import OPERATOR

    rng = random.Random(SEED)
    started = time.perf_counter()
    institutions = []
    for name, slug, _ in INSTITUTIONS:
        institution, _ = services.create_institution(actor=OPERATOR, name=name, slug=slug)
        institutions.append(institution)
    reader_institution = next(i for i in institutions if i.slug == READER_SLUG)
    membership, _ = services.add_member(
        actor=OPERATOR, institution=reader_institution, username=READER, roles=["receive"], password="bench-reader-not-secret-1"
    )
    reader = membership.user
    sender, _ = services.add_member(actor=OPERATOR, institution=institutions[0], username="bench-sender", roles=["receive", "admin"])

    weights = [m[1] for m in MODALITIES]
    received_field = Study._meta.get_field("received_at")
    written = {"patients": 0, "studies": 0}
    uid_root = "1.2.826.0.1.3680043.10.1190"
    for index, institution in enumerate(institutions):
        count = round(studies * INSTITUTIONS[index][2]) if index < len(institutions) - 1 else studies - written["studies"]
        patients = [
            Patient(
                institution=institution,
                patient_id=f"{institution.slug[6:9].upper()}{n:07d}",
                patient_name=(name := f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}"),
                patient_name_search=name.upper(),
                patient_birth_date=date(1930, 1, 1) + timedelta(days=rng.randrange(365 * 90)),
                patient_sex=rng.choice("FM"),
            )
            for n in range(max(1, int(count * 0.55)))
        ]
        with transaction.atomic():
            patients = Patient.objects.bulk_create(patients, batch_size=BATCH)
        written["patients"] += len(patients)
        rows = []
        for n in range(count):
            modality, _, descriptions, series_range, per_series = rng.choices(MODALITIES, weights)[0]
            day = _study_day(rng)
            series = rng.randint(*series_range)
            received = datetime.combine(day or LAST_DAY, datetime.min.time(), tzinfo=UTC) + timedelta(minutes=rng.randrange(60 * 72))
            rows.append(
                Study(
                    institution=institution,
                    # Some patients have several studies: the first quarter of the patients gets half of them.
                    patient=patients[rng.randrange(len(patients) // 4 or 1) if rng.random() < 0.5 else rng.randrange(len(patients))],
                    study_instance_uid=f"{uid_root}.{index + 1}.{n + 1}",
                    study_date=day,
                    study_time=None,
                    accession_number=f"A{index + 1}{n:08d}",
                    study_id=str(n % 10000),
                    study_description=rng.choice(descriptions),
                    referring_physician_name=f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}",
                    modalities_in_study=modality,
                    number_of_series=series,
                    number_of_instances=series * rng.randint(*per_series),
                    size_bytes=0,
                    received_at=received,
                    last_received_at=received,
                )
            )
        received_field.auto_now_add = False  # keep the arrival times written above
        try:
            for start in range(0, len(rows), BATCH):
                with transaction.atomic():
                    Study.objects.bulk_create(rows[start : start + BATCH])
        finally:
            received_field.auto_now_add = True
        written["studies"] += len(rows)

    # Shares into the reading institution: single studies, whole patients, to the reader personally; some ended.
    now = datetime.now(UTC)
    others = [i for i in institutions if i.pk != reader_institution.pk]
    shares = []
    for owner in others:
        ids = list(Study.objects.filter(institution=owner).values_list("pk", "patient_id"))
        for pk, _ in rng.sample(ids, min(len(ids), studies // 200)):
            shares.append(Share(owner=owner, study_id=pk, with_institution=reader_institution, created_by=sender.user))
        for _, patient_id in rng.sample(ids, min(len(ids), studies // 2000)):
            shares.append(Share(owner=owner, patient_id=patient_id, with_institution=reader_institution, created_by=sender.user))
        for pk, _ in rng.sample(ids, min(len(ids), studies // 2000)):
            shares.append(Share(owner=owner, study_id=pk, with_user=reader, created_by=sender.user))
        for pk, _ in rng.sample(ids, min(len(ids), studies // 1000)):
            ended = Share(owner=owner, study_id=pk, with_institution=reader_institution, created_by=sender.user)
            if rng.random() < 0.5:
                ended.revoked_at = now - timedelta(days=1)
            else:
                ended.expires_at = now - timedelta(days=1)
            shares.append(ended)
    Share.objects.bulk_create(shares, batch_size=BATCH)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {**written, "shares": len(shares), "seconds": round(time.perf_counter() - started, 1), "reader": reader.username}


def prepare(studies: int, refill: bool) -> dict:
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0, interactive=False)
    from images.models import Study

    present = Study.objects.count()
    if present == studies and not refill:
        return {"reused": True, "studies": present}
    if present:
        # Only a database this benchmark filled (its institutions' slugs) is emptied.
        from subscribers.models import Institution

        slugs = {slug for _, slug, _ in INSTITUTIONS}
        if set(Institution.objects.values_list("slug", flat=True)) - slugs:
            sys.exit("refusing to empty a database that holds institutions this benchmark did not create")
        call_command("flush", verbosity=0, interactive=False)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"reused": False, **fill(studies)}


def _quantiles(samples: list[float]) -> dict:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median_ms": round(statistics.median(ordered) * 1000, 2), "p95_ms": round(p95 * 1000, 2)}


def scenarios() -> list[tuple[str, dict]]:
    """(name, query parameters) of each page measured; the deep cursor is computed from the data."""
    from images import worklist
    from images.models import Study
    from subscribers.access import principal_for_user
    from subscribers.models import User

    reader = User.objects.get(username=READER)
    principal = principal_for_user(reader, None)
    from images import selectors

    visible = selectors.studies_visible_to(principal).alias(worklist_key=worklist.SORTS["-study_date"].key())
    ordered = visible.order_by(*worklist.SORTS["-study_date"].ordering())
    deep_position = min(20_000, ordered.count() - 100)
    deep = ordered[deep_position]  # setup only: what a reader reaches after paging far down
    cursor = worklist.Cursor("-study_date", deep.study_date or worklist.NO_DATE, deep.pk).encode()
    family = Study.objects.filter(institution=principal.institution).select_related("patient").first().patient.patient_name.split("^")[0]
    return [
        ("first page", {}),
        (f"deep page (after row {deep_position:,})", {"after": cursor}),
        (f"patient name {family[:4]}*", {"patient_name": f"{family[:4]}*"}),
        ("patient name *ANNA*", {"patient_name": "*ANNA*"}),
        ("patient ID exact", {"patient_id": Study.objects.filter(institution=principal.institution).first().patient.patient_id}),
        ("accession number exact", {"accession_number": Study.objects.filter(institution=principal.institution).last().accession_number}),
        ("study date range (one month)", {"date_from": "2019-03-01", "date_to": "2019-03-31"}),
        ("modality MG", {"modality": "MG"}),
        ("shared with me", {"shared": "1"}),
        ("sort by patient name", {"sort": "patient_name"}),
        ("sort by received, oldest first", {"sort": "received_at"}),
        ("100 per page", {"per_page": "100"}),
        # Worst cases: nothing matches a condition no index can serve, so every visible row is read.
        ("no match: description", {"description": "no such description"}),
        ("no match: modality SEG", {"modality": "SEG"}),
    ]


def measure(repeat: int) -> list[dict]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from subscribers.models import User

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(User.objects.get(username=READER), backend="django.contrib.auth.backends.ModelBackend")
    results = []
    for name, params in scenarios():
        with CaptureQueriesContext(connection) as captured:
            response = client.get("/studies/", params)
        queries = list(captured.captured_queries)  # the next request clears the log
        if response.status_code != 200:
            raise SystemExit(f"{name}: HTTP {response.status_code}")
        rows = response.content.decode().count('data-testid="worklist-row"')
        page_sql = next(q["sql"] for q in queries if 'FROM "images_study"' in q["sql"] and "LIMIT" in q["sql"])
        for _ in range(3):  # warm-up
            client.get("/studies/", params)
        server, cpu = [], []
        for _ in range(repeat):
            started, started_cpu = time.perf_counter(), time.process_time()
            client.get("/studies/", params)
            server.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
        bare = []
        with connection.cursor() as cursor:
            for _ in range(3 + repeat):
                started = time.perf_counter()
                cursor.execute(page_sql)
                cursor.fetchall()
                bare.append(time.perf_counter() - started)
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + page_sql)
            plan = [line for (line,) in cursor.fetchall()]
        result = {
            "scenario": name,
            "params": {k: v for k, v in params.items() if k != "after"},
            "rows": rows,
            "queries_per_request": len(queries),
            "server": _quantiles(server),
            "python_cpu": _quantiles(cpu),
            "bare_sql": _quantiles(bare[3:]),
            "plan": plan,
        }
        results.append(result)
        print(
            f"{name:<38} {rows:>4} rows  server {result['server']['median_ms']:>7.2f} ms (p95 {result['server']['p95_ms']:>7.2f},"
            f" Python CPU {result['python_cpu']['median_ms']:>6.2f})"
            f"  bare SQL {result['bare_sql']['median_ms']:>6.2f} ms (p95 {result['bare_sql']['p95_ms']:>6.2f})"
            f"  {len(queries)} queries",
            flush=True,
        )
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="a PostgreSQL database this benchmark may fill (and empty with --refill)")
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=50, help="timed requests per scenario (after 3 warm-ups)")
    parser.add_argument("--refill", action="store_true", help="empty the database and fill it again")
    args = parser.parse_args(argv)
    if not args.database_url.startswith(("postgres://", "postgresql://")):
        parser.error("the worklist benchmark runs on PostgreSQL")
    _setup(args.database_url)
    from django.db import connection

    prepared = prepare(args.studies, args.refill)
    print(json.dumps({"prepared": prepared}), flush=True)
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server_version = cursor.fetchone()[0]
    results = measure(args.repeat)
    out = Path(__file__).resolve().parent.parent / "var" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"results-worklist-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(
        json.dumps(
            {"studies": args.studies, "repeat": args.repeat, "postgresql": server_version, "prepared": prepared, "results": results},
            indent=2,
        )
    )
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
