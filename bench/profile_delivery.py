"""Where medarchive's delivery time goes: QIDO-RS searches, the start of a WADO-RS retrieve and rendered frames, run
in-process (Django's test client, the whole middleware stack) on a prepared archive, stage by stage.

    DJANGO_SETTINGS_MODULE=medarchive.settings DATABASE_URL=... python -m bench.profile_delivery --token T --plan FILE

FILE is JSON: {"qido": {kind: [query string, ...]}, "wado": [study UID, ...], "rendered": [[study, series, sop], ...]}
(any part may be left out). bench.delivery runs this against its benchmark database with the server's environment;
it prints one JSON object.

Stages are timed by wrapping the project's own functions from outside (nothing in images/ or subscribers/ changes),
with exclusive accounting: a stage's time excludes the stages it calls, and every SQL statement is its own stage
("SQL: driver + PostgreSQL", timed by connection.execute_wrapper), so the stages add up to the request. What no stage
covers (middleware, DRF, URL routing, building the response) is "other". The cyclic garbage collector's pauses are
measured apart (gc.callbacks): they fall inside whichever stage allocated. A WADO-RS retrieve is timed to its first
byte (the view returns a streaming response; the parts are produced while it is sent), which is what the index costs;
the bytes themselves are profiled by bench.delivery under py-spy. For QIDO-RS the search statement is also run under
EXPLAIN (ANALYZE, BUFFERS), and for WADO-RS the pixel-description query is compared with one that projects the nine
attributes it needs in SQL instead of decoding each instance's whole DICOM JSON in Python.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import statistics
import sys
import time
from collections import Counter

PIXEL_KEYS = ["00280002", "00280004", "00280008", "00280010", "00280011", "00280100", "00280101", "00280103", "00282110"]
# What a WADO-RS retrieve reads of each instance: the name of its bytes, its syntax, its UIDs and its place in the order.
RETRIEVE_COLUMNS = [
    "storage_name", "transfer_syntax_uid", "sop_instance_uid", "instance_number", "rows", "columns", "number_of_frames",
    "bits_allocated", "photometric_interpretation", "series__series_instance_uid", "series__series_number",
]  # fmt: skip
TEXT_KEYS = {"00280004", "00282110"}  # Photometric Interpretation, Lossy Image Compression: strings; the rest numbers

COMMON_STAGES = [
    ("subscribers.middleware", "principal_for_token", "token check (ORM)"),
    ("subscribers.audit", "record", "audit event (ORM)"),
    ("images.selectors", "studies_visible_to", "visibility scope (ORM)"),
    ("django.db.models.sql.compiler", "SQLCompiler.as_sql", "ORM: compile SQL"),
    ("django.db.models.sql.compiler", "SQLInsertCompiler.as_sql", "ORM: compile SQL"),
    ("django.db.models.sql.compiler", "SQLUpdateCompiler.as_sql", "ORM: compile SQL"),
    ("django.db.models.query", "QuerySet._fetch_all", "ORM: rows to objects"),
]
STAGES = {
    "qido": [
        ("images.query", "apply", "matching (query.apply)"),
        ("images.dicomweb.qido", "Answer.result", "results to DICOM JSON (Answer.result)"),
        ("images.dicomweb.responses", "DicomJSONRenderer.render", "JSON rendering"),
    ],
    "wado": [
        ("images.selectors", "get_study", "get study (ORM)"),
        ("images.retrieve", "find_instances", "find instances: metadata JSON decode, pixel descriptions"),
        ("images.retrieve", "plan", "plan transfer syntaxes"),
    ],
    "rendered": [
        ("images.dicomweb.rendered", "_target", "find instance (ORM)"),
        ("images.rendering", "check_rendering", "check rendering"),
        ("images.rendering.render", "render_image", "read + decode + VOI (render_image)"),
        ("images.rendering.render", "encode", "JPEG encode (Pillow)"),
    ],
}
SQL = "SQL: driver + PostgreSQL"
WARMUP = 6
OTHER = "other: middleware, DRF, routing, response"


class Stages:
    """Exclusive wall time per stage label (one thread: the test client's)."""

    def __init__(self):
        self.seconds: Counter = Counter()
        self.calls: Counter = Counter()
        self.stack: list[list] = []
        self.undo: list = []

    def enter(self, label: str) -> None:
        now = time.perf_counter()
        if self.stack:
            self.seconds[self.stack[-1][0]] += now - self.stack[-1][1]
        self.stack.append([label, now])
        self.calls[label] += 1

    def leave(self) -> None:
        now = time.perf_counter()
        label, started = self.stack.pop()
        self.seconds[label] += now - started
        if self.stack:
            self.stack[-1][1] = now

    def wrap(self, module_name: str, attribute: str, label: str) -> None:
        owner = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = owner.__dict__[name] if name in getattr(owner, "__dict__", {}) else getattr(owner, name)
        stages = self

        def timed(*args, **kwargs):
            stages.enter(label)
            try:
                return original(*args, **kwargs)
            finally:
                stages.leave()

        setattr(owner, name, timed)
        self.undo.append((owner, name, original))

    def unwrap(self) -> None:
        for owner, name, original in reversed(self.undo):
            setattr(owner, name, original)
        self.undo.clear()

    def sql(self, execute, sql, params, many, context):
        self.enter(SQL)
        try:
            return execute(sql, params, many, context)
        finally:
            self.leave()

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


class GcTimer:
    """gc.callbacks: the time the cyclic garbage collector takes, and its collections per generation."""

    def __init__(self):
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase, info):
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections[info["generation"]] += 1

    def __enter__(self):
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self)


class StatementLog:
    """connection.execute_wrapper keeping each statement's text (as sent, parameters bound) and time."""

    def __init__(self):
        self.statements: list[tuple[str, float]] = []

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            cursor = context["cursor"]
            try:
                text = cursor.cursor._query.query.decode() if getattr(cursor.cursor, "_query", None) else sql
            except (AttributeError, UnicodeDecodeError):
                text = sql
            self.statements.append((text, time.perf_counter() - started))


def timed_requests(kind: str, client, paths: list[str], headers: dict) -> dict:
    """Each path once (after one warm-up request), stage by stage; medians and means per request."""
    from django.db import connection

    stages = Stages()
    for module_name, attribute, label in COMMON_STAGES + STAGES[kind]:
        stages.wrap(module_name, attribute, label)
    statements = StatementLog()
    try:
        # Warm: imports, caches, and six runs of each statement, so psycopg has prepared them where it prepares at all.
        for _ in range(WARMUP):
            _get(client, paths[0], headers)
        stages.reset()
        walls, statement_counts = [], []
        collector = GcTimer()
        for path in paths:
            log = StatementLog()
            with connection.execute_wrapper(stages.sql), connection.execute_wrapper(log), collector:
                started = time.perf_counter()
                stages.enter(OTHER)
                try:
                    _get(client, path, headers)
                finally:
                    stages.leave()
                walls.append(time.perf_counter() - started)
            statement_counts.append(len(log.statements))
            if not statements.statements:
                statements = log
    finally:
        stages.unwrap()
    n = len(paths)
    return {
        "requests": n,
        "wall_ms_median": round(1000 * statistics.median(walls), 2),
        "wall_ms_mean": round(1000 * statistics.mean(walls), 2),
        "statements": statistics.median(statement_counts),
        "stages_ms_mean": {label: round(1000 * seconds / n, 2) for label, seconds in stages.seconds.most_common()},
        "gc_ms_mean": round(1000 * collector.seconds / n, 2),
        "gc_collections_per_request": [round(c / n, 2) for c in collector.collections],
        "statements_of_first_request": [{"ms": round(1000 * s, 2), "sql": text[:240]} for text, s in statements.statements],
        "_statements": statements.statements,
    }


def _get(client, path: str, headers: dict):
    response = client.get(path, **headers)
    if response.status_code != 200:
        raise RuntimeError(f"GET {path}: HTTP {response.status_code} {getattr(response, 'content', b'')[:300]!r}")
    return response


def explain(sql: str) -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
        return [row[0] for row in cursor.fetchall()]


def search_statement(statements: list[tuple[str, float]]) -> str | None:
    """The search itself: the slowest SELECT on the study table."""
    studies = [(sql, s) for sql, s in statements if sql.lstrip().upper().startswith("SELECT") and 'FROM "images_study"' in sql]
    return max(studies, key=lambda item: item[1])[0] if studies else None


def pixel_description_queries(token: str, study_uids: list[str]) -> dict:
    """find_instances (whole metadata JSON decoded per instance) vs the same descriptions from nine keys projected in SQL."""
    from django.db.models.fields.json import KT

    from images import retrieve
    from images.transcode import PixelDescription
    from subscribers.access import principal_for_token

    principal = principal_for_token(token)
    found = {
        "instances": 0,
        "find_instances_ms": [],
        "rows_only_ms": [],
        "rows_minimal_ms": [],
        "projected_ms": [],
        "same_descriptions": True,
    }
    for uid in study_uids:
        started = time.perf_counter()
        _, instances = retrieve.find_instances(principal, study_uid=uid)
        found["find_instances_ms"].append(1000 * (time.perf_counter() - started))
        started = time.perf_counter()  # the first of its two queries alone: what describing from columns would cost
        list(retrieve.visible_instances(principal, study_uid=uid)[1].defer("metadata"))
        found["rows_only_ms"].append(1000 * (time.perf_counter() - started))
        started = time.perf_counter()  # ... and with only the columns a retrieve uses (no JSON column decoded at all)
        list(retrieve.visible_instances(principal, study_uid=uid)[1].only(*RETRIEVE_COLUMNS))
        found["rows_minimal_ms"].append(1000 * (time.perf_counter() - started))
        started = time.perf_counter()
        _, queryset = retrieve.visible_instances(principal, study_uid=uid)
        rows = list(queryset.defer("metadata"))
        projected = queryset.values_list("pk", "transfer_syntax_uid", *[KT(f"metadata__{key}__Value__0") for key in PIXEL_KEYS])
        descriptions = {}
        for pk, syntax, *values in projected:
            metadata = {
                key: {"Value": [value if key in TEXT_KEYS else _number(value)]}
                for key, value in zip(PIXEL_KEYS, values, strict=True)
                if value is not None
            }
            descriptions[pk] = PixelDescription.of_metadata(syntax, metadata)
        for row in rows:
            row.pixel_description = descriptions[row.pk]
        found["projected_ms"].append(1000 * (time.perf_counter() - started))
        found["instances"] += len(rows)
        if [i.pixel_description for i in instances] != [r.pixel_description for r in rows]:
            found["same_descriptions"] = False
    for key in ("find_instances_ms", "rows_only_ms", "rows_minimal_ms", "projected_ms"):
        found[key] = round(statistics.median(found[key]), 2)
    found["instances_per_study"] = found.pop("instances") // max(1, len(study_uids))
    return found


def _number(value):
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--token", required=True, help="bearer token of the caller")
    parser.add_argument(
        "--plan", required=True, help="JSON file: {qido: {kind: [query]}, wado: [study UID], rendered: [[study, series, sop]]}"
    )
    parser.add_argument("--no-explain", action="store_true", help="leave out EXPLAIN ANALYZE")
    parser.add_argument(
        "--gc-freeze", action="store_true", help="gc.collect() and gc.freeze() after a first request, as a server could after start-up"
    )
    args = parser.parse_args(argv)
    import django

    django.setup()
    from django.test import Client

    with open(args.plan) as f:
        plan = json.load(f)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {args.token}")
    if args.gc_freeze:
        for query in list(plan.get("qido", {}).values())[:1]:
            _get(client, f"/dicomweb/studies?{query[0]}", {"HTTP_ACCEPT": "application/dicom+json"})
        gc.collect()
        gc.freeze()
    out: dict = {"gc_tracked_objects": len(gc.get_objects()), "gc_frozen_objects": gc.get_freeze_count()}
    for kind, queries in plan.get("qido", {}).items():
        paths = [f"/dicomweb/studies?{query}" for query in queries]
        result = timed_requests("qido", client, paths, {"HTTP_ACCEPT": "application/dicom+json"})
        search = search_statement(result.pop("_statements"))
        if search and not args.no_explain:
            result["search_sql"] = search
            result["explain"] = explain(search)
        out.setdefault("qido", {})[kind] = result
    if plan.get("wado"):
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
        paths = [f"/dicomweb/studies/{uid}" for uid in plan["wado"]]
        result = timed_requests("wado", client, paths, {"HTTP_ACCEPT": accept})
        result.pop("_statements")
        result["note"] = "to the first byte: the view returns a streaming response; the parts are read while it is sent"
        result["pixel_descriptions"] = pixel_description_queries(args.token, plan["wado"])
        out["wado"] = result
    if plan.get("rendered"):
        paths = [f"/dicomweb/studies/{s}/series/{se}/instances/{i}/rendered" for s, se, i in plan["rendered"]]
        result = timed_requests("rendered", client, paths, {"HTTP_ACCEPT": "image/jpeg"})
        result.pop("_statements")
        out["rendered"] = result
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
