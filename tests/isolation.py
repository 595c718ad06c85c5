"""Tools for the tenant-isolation sweep: every URL pattern, filled with another institution's identifiers.

The patterns are discovered from the resolver, so endpoints added by later work are swept without
new tests. Each app contributes the objects an institution owns through `OWNED_OBJECT_BUILDERS`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from django.contrib import admin
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.exceptions import Resolver404

from subscribers import services
from subscribers.access import OPERATOR
from tests.factories import ALL_ROLES, DeviceFactory, member


@dataclass
class OwnedWorld:
    """Everything one institution owns, and the text markers that betray it in a response."""

    institution: object
    ints: set[int] = field(default_factory=set)
    strings: set[str] = field(default_factory=set)
    uids: set[str] = field(default_factory=set)
    # UIDs by level, for route parameters named after the level ("study", "series", "instance").
    uids_by_level: dict[str, set[str]] = field(default_factory=dict)
    markers: set[str] = field(default_factory=set)

    def add(self, obj, *markers: str) -> None:
        self.ints.add(obj.pk)
        self.markers.update(m for m in markers if m)


def build_subscribers_world(world: OwnedWorld) -> None:
    inst = world.institution
    admin_membership = member(inst, "zz-alpha-admin", ALL_ROLES)
    world.add(admin_membership, "zz-alpha-admin")
    world.add(admin_membership.user)
    other = member(inst, "zz-alpha-clinician", ["receive"])
    world.add(other, "zz-alpha-clinician")
    world.add(other.user)
    token, _ = services.issue_token(actor=OPERATOR, membership=other, name="zz-alpha-token-name")
    world.add(token, "zz-alpha-token-name", token.prefix)
    world.strings.add(token.prefix)
    ae, _ = services.register_ae(actor=OPERATOR, institution=inst, ae_title="ZZALPHAAE", host="192.0.2.10", port=4242, can_receive=True)
    world.add(ae, "ZZALPHAAE")
    device = DeviceFactory(institution=inst, name="zz-alpha-device")
    world.add(device, "zz-alpha-device")
    world.add(inst, inst.name)
    world.strings.add(inst.slug)


def build_images_world(world: OwnedWorld) -> None:
    from images.ingest import ingest_instance
    from subscribers.access import Principal
    from subscribers.models import Role
    from tests.dicom_files import synth_bytes

    sender = Principal(kind="operator", institution=world.institution, roles=frozenset({Role.REGISTER}), is_provider_staff=True)
    result = ingest_instance(
        principal=sender,
        data=synth_bytes("CT", rows=16, cols=16, patient_name="Zzalpha^Patient", patient_id="ZZALPHA-PID", accession_number="ZZALPHA-ACC"),
        source="test",
    )
    instance = result.instance
    world.uids.update({instance.study.study_instance_uid, instance.series.series_instance_uid, instance.sop_instance_uid})
    world.uids_by_level.setdefault("study", set()).add(instance.study.study_instance_uid)
    world.uids_by_level.setdefault("series", set()).add(instance.series.series_instance_uid)
    world.uids_by_level.setdefault("instance", set()).add(instance.sop_instance_uid)
    world.markers.update({"Zzalpha^Patient", "ZZALPHA-PID", "ZZALPHA-ACC", instance.study.study_instance_uid, instance.sop_instance_uid})
    for obj in (instance, instance.series, instance.study, instance.study.patient):
        world.ints.add(obj.pk)


def build_backup_world(world: OwnedWorld) -> None:
    """A backup contract of the institution (with its rounds), an object of backup and a finished run."""
    from django.utils import timezone

    from backup import services as backup_services
    from backup.models import BackupObject, BackupRun

    today = timezone.localdate()
    contract = backup_services.propose_contract(
        principal=OPERATOR,
        institution=world.institution,
        terms={"mode": "all_at_time", "schedule_time": "02:00", "period_start": today.isoformat(), "accounting_points": "10", "rate": "5"},
        title="zz-alpha-contract",
        message="zz-alpha-contract-message",
    )
    world.add(contract, "zz-alpha-contract", "zz-alpha-contract-message")
    world.ints.update(contract.rounds.values_list("pk", flat=True))
    backup_object = BackupObject.objects.create(contract=contract, kind=BackupObject.Kind.ALL, label="zz-alpha-backup-object")
    world.add(backup_object, "zz-alpha-backup-object")
    run = BackupRun.objects.create(
        contract=contract, kind=BackupRun.Kind.BACKUP, status=BackupRun.Status.DONE, message="zz-alpha-run-message"
    )
    world.add(run, "zz-alpha-run-message")


def build_hardcopy_world(world: OwnedWorld) -> None:
    from hardcopy import services as hardcopy_services
    from images.models import Instance
    from subscribers.access import Principal
    from subscribers.models import Role

    inst = world.institution
    printer, _ = hardcopy_services.register_printer(
        actor=OPERATOR, institution=inst, name="zz-alpha-printer", output="hot_folder", hot_folder="/srv/zz-alpha-hot"
    )
    world.add(printer, "zz-alpha-printer", "/srv/zz-alpha-hot")
    film_format = hardcopy_services.save_film_format(actor=OPERATOR, institution=inst, name="zz-alpha-format", rows=2, columns=2)
    world.add(film_format, "zz-alpha-format")
    printing = Principal(kind="operator", institution=inst, roles=frozenset({Role.PRINT}))
    instance = Instance.objects.filter(institution=inst).first()
    if instance is not None:
        job = hardcopy_services.create_print_job(
            actor=printing, fmt=hardcopy_services.format_dict(rows=1, columns=1), uids=[instance.sop_instance_uid], printer=printer
        )
        world.add(job)


# Later apps append their builders here (images: patients, studies, series, instances with UIDs; ...).
OWNED_OBJECT_BUILDERS: list[Callable[[OwnedWorld], None]] = [build_subscribers_world, build_images_world, build_backup_world]


def build_share_world(world: OwnedWorld) -> None:
    """A share of the world's study with a receiving institution: its id fills the study page's revoke URL."""
    from images.models import Study
    from images.sharing.services import share
    from subscribers.access import Principal
    from subscribers.models import Role
    from tests.factories import InstitutionFactory

    study = Study.objects.get(institution=world.institution, study_instance_uid__in=world.uids_by_level["study"])
    owner = Principal(kind="operator", institution=world.institution, roles=frozenset({Role.ADMIN}))
    receiver = InstitutionFactory(name="Zz Receiving Clinic", slug="zz-receiver")
    given = share(principal=owner, study=study, with_institution=receiver)
    world.ints.add(given.pk)


OWNED_OBJECT_BUILDERS.append(build_share_world)


def build_billing_world(world: OwnedWorld) -> None:
    """An accepted backup contract of the world's institution and its issued invoice for a month that is over."""
    from datetime import date

    from backup.models import BackupMode
    from billing.periods import Period
    from billing.services import issue_invoice
    from tests.billing.builders import accepted_contract, at, backup_object

    contract = accepted_contract(
        world.institution, mode=BackupMode.PER_PATIENT, points="1", rate="2", period_start=date(2025, 1, 1), accepted_at=at(2025, 1, 2)
    )
    backup_object(contract, "Zzalpha billing object", created_at=at(2025, 1, 3))
    invoice, _ = issue_invoice(actor=OPERATOR, institution=world.institution, period=Period(date(2025, 2, 1)), today=date(2025, 3, 5))
    world.add(invoice, invoice.number, "Zzalpha billing object")
    world.ints.add(contract.pk)


OWNED_OBJECT_BUILDERS.append(build_billing_world)

_PARAM = re.compile(r"<(?:(?P<conv>[^>:]+):)?(?P<name>[^>]+)>")
_REGEX_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>[^)]*\)")


@dataclass(frozen=True)
class Route:
    template: str  # e.g. "manage/tokens/{pk}/revoke/"
    params: tuple[tuple[str, str], ...]  # (name, converter)
    name: str


def iter_routes(patterns=None, prefix: str = "") -> Iterator[Route]:
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        pattern = str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from iter_routes(entry.url_patterns, prefix + _to_template(pattern))
        elif isinstance(entry, URLPattern):
            template = prefix + _to_template(pattern)
            params = tuple(
                (m.group("name"), m.group("conv") or "str") for m in re.finditer(r"\{(?P<name>\w+)(?::(?P<conv>\w+))?\}", template)
            )
            yield Route(re.sub(r"\{(\w+):\w+\}", r"{\1}", template), params, entry.name or "")


def _to_template(pattern: str) -> str:
    if pattern.startswith("^") or pattern.endswith("$") or "(?P<" in pattern:
        pattern = pattern.lstrip("^").rstrip("$").replace("\\Z", "")
        pattern = _REGEX_GROUP.sub(lambda m: "{{{}:regex}}".format(m.group("name")), pattern)
        pattern = pattern.replace("\\.", ".").replace("\\/", "/")
        if re.search(r"[()\[\]*+?|\\]", pattern):
            return pattern  # a regex we cannot fill; skipped when it does not resolve
        return pattern
    return _PARAM.sub(lambda m: "{{{}:{}}}".format(m.group("name"), m.group("conv") or "str"), pattern)


def admin_model_pairs() -> list[tuple[str, str]]:
    return [(m._meta.app_label, m._meta.model_name) for m in admin.site._registry]


def candidate_values(name: str, conv: str, world: OwnedWorld) -> list[str]:
    lname = name.lower()
    if lname == "app_label":
        return sorted({a for a, _ in admin_model_pairs()})
    if lname == "model_name":
        return sorted({m for _, m in admin_model_pairs()})
    for level in ("study", "series", "instance"):
        if lname in (level, f"{level}_uid", f"{level}_instance_uid") and world.uids_by_level.get(level):
            return sorted(world.uids_by_level[level])
    if lname == "frames":
        return ["1"]
    if lname == "tag":
        return ["00100010", "7FE00010"]
    if "uid" in lname:
        return sorted(world.uids) or ["1.2.3"]
    if conv == "int" or lname in ("pk", "id", "object_id") or lname.endswith("_id") or lname.endswith("_pk"):
        return [str(v) for v in sorted(world.ints)]
    if conv == "slug" or "slug" in lname:
        return [world.institution.slug]
    return sorted(world.strings | world.uids | {str(v) for v in world.ints})


def concrete_urls(route: Route, world: OwnedWorld, limit: int = 60) -> Iterator[str]:
    if not route.params:
        yield "/" + route.template
        return
    choices = [candidate_values(name, conv, world) for name, conv in route.params]
    for combo in itertools.islice(itertools.product(*choices), limit):
        url = "/" + route.template.format(**{name: value for (name, _), value in zip(route.params, combo, strict=True)})
        try:
            resolve(url.split("?")[0])
        except Resolver404:
            continue
        yield url


def body_of(response, limit: int = 2_000_000) -> str:
    """The text of a response; a streaming one is read to its end (the test client closes it then)."""
    if getattr(response, "streaming", False):
        chunks, size = [], 0
        for chunk in response.streaming_content:
            if size <= limit:
                chunks.append(chunk if isinstance(chunk, bytes) else chunk.encode())
                size += len(chunks[-1])
        data = b"".join(chunks)
    else:
        data = response.content
    return data.decode("utf-8", errors="replace")


OWNED_OBJECT_BUILDERS.append(build_hardcopy_world)


def build_storage_conditions_world(world: OwnedWorld) -> None:
    """The institution's storage conditions (default and a CT row), a legal hold on its patient, and a run's snapshot."""
    from images.models import Patient
    from images.storage_conditions import enforcement
    from images.storage_conditions.services import place_legal_hold, save_storage_condition
    from subscribers.access import Principal
    from subscribers.models import Role

    inst = world.institution
    admin = Principal(kind="operator", institution=inst, roles=frozenset({Role.ADMIN}))
    values = {"retention_from": "study_date", "at_retention_end": "keep_flag", "compression": "", "required_backup_copies": 1}
    for modality, years in (("", 10), ("CT", 15)):
        world.add(save_storage_condition(principal=admin, institution=inst, modality=modality, retention_years=years, **values))
    patient = Patient.objects.filter(institution=inst).first()
    if patient is not None:
        hold = place_legal_hold(principal=admin, institution=inst, patient_id=patient.patient_id, reason="zz-alpha-hold-reason")
        world.add(hold, "zz-alpha-hold-reason")
    report = enforcement.enforce(institution=inst, trigger="zz-alpha-trigger")
    world.add(report.snapshot, "zz-alpha-trigger")


OWNED_OBJECT_BUILDERS.append(build_storage_conditions_world)


def build_backup_runs_world(world: OwnedWorld) -> None:
    """An accepted contract with a real backup (objects, a verified set, blobs) and a restore exported as a zip: the
    ids fill the run, progress and download URLs; the zip holds the world's patient name."""
    from datetime import timedelta
    from decimal import Decimal

    from django.utils import timezone

    from backup.engine import run as backup_runs
    from backup.models import Contract

    contract = Contract.objects.create(
        institution=world.institution,
        title="zz-alpha-runs-contract",
        status=Contract.Status.ACCEPTED,
        awaiting="",
        mode="per_patient",
        period_start=timezone.localdate() - timedelta(days=1),
        accounting_points=Decimal("1"),
        rate=Decimal("1"),
    )
    world.add(contract, "zz-alpha-runs-contract")
    backup = backup_runs.request_backup(contract=contract, principal=OPERATOR, enqueue=False)
    backup_runs.execute(backup.pk)
    world.add(backup)
    world.ints.update(contract.sets.values_list("pk", flat=True))
    world.ints.update(contract.backup_objects.values_list("pk", flat=True))
    export = backup_runs.request_restore(contract=contract, principal=OPERATOR, scope="all", destination="zip", enqueue=False)
    backup_runs.execute(export.pk)
    world.add(export)


OWNED_OBJECT_BUILDERS.append(build_backup_runs_world)


def build_software_world(world: OwnedWorld) -> None:
    """Licences of the institution, a licence request, a MIP job with its product and a de-identification job whose
    products went to the institution's research collection."""
    from images.models import Study
    from software.services import catalogue, jobs, licences, runner
    from subscribers.access import Principal
    from subscribers.models import Role

    inst = world.institution
    for processor_id in ("mip", "deidentify"):
        software = catalogue.ensure_processor_software(actor=OPERATOR, processor_id=processor_id)
        licence, _ = licences.grant_licence(actor=OPERATOR, institution=inst, software=software)
        world.add(licence)
    requester = member(inst, "zz-alpha-runner", ["software"])
    runner_principal = Principal(kind="user", user=requester.user, institution=inst, membership=requester, roles=frozenset({Role.SOFTWARE}))
    request, _ = licences.request_licence(
        principal=runner_principal,
        software=catalogue.ensure_processor_software(actor=OPERATOR, processor_id="mpr"),
        message="zz-alpha-request",
    )
    world.add(request, "zz-alpha-request")
    study = Study.objects.filter(institution=inst).order_by("pk").first()
    for processor_id in ("mip", "deidentify"):
        job = jobs.submit_job(
            principal=runner_principal, processor_id=processor_id, parameters={}, uids=[study.study_instance_uid], queue=False
        )
        job = runner.run_job(job.pk)
        world.add(job)
        world.ints.update(job.items.values_list("pk", flat=True))
        for product in job.products.all():
            world.add(product, product.sop_instance_uid, product.series_instance_uid)
            world.uids.update({product.sop_instance_uid, product.series_instance_uid})
            if product.institution_id != inst.pk:
                world.markers.add(product.study_instance_uid)


OWNED_OBJECT_BUILDERS.append(build_software_world)


def build_polling_world(world: OwnedWorld) -> None:
    """A polling source of the institution (after a failed poll, so it has a run and a last error) and a polled study."""
    from software.models import PolledStudy, PollRun
    from software.polling import services as polling
    from software.services import catalogue, licences

    inst = world.institution
    software = catalogue.ensure_processor_software(actor=OPERATOR, processor_id="mip")
    licences.grant_licence(actor=OPERATOR, institution=inst, software=software)
    source = polling.add_poll_source(
        principal=OPERATOR,
        institution=inst,
        source=polling.SourceSettings(
            name="zz-alpha-poll-source",
            kind="dicomweb",
            url="https://zz-alpha-pacs.example.org/dicom-web",
            secret="zz-alpha-poll-secret",
            processor_id="mip",
            parameters={},
            query={"Modality": "CT"},
        ),
    )
    run = PollRun.objects.create(source=source, status=PollRun.Status.FAILED, error="zz-alpha-poll-error")
    polled = PolledStudy.objects.create(source=source, study_instance_uid="1.2.826.0.1.3680043.8.498.99", error="zz-alpha-polled")
    world.add(source, "zz-alpha-poll-source", "zz-alpha-pacs.example.org", "zz-alpha-poll-secret")
    world.add(run, "zz-alpha-poll-error")
    world.add(polled, "zz-alpha-polled")


OWNED_OBJECT_BUILDERS.append(build_polling_world)


def build_saved_queries_world(world: OwnedWorld) -> None:
    """A saved query of the institution (software/services/saved_queries.py)."""
    from software.services import saved_queries
    from subscribers.access import Principal
    from subscribers.models import Role

    inst = world.institution
    principal = Principal(kind="operator", institution=inst, roles=frozenset({Role.SOFTWARE}))
    saved = saved_queries.save_query(
        principal=principal, name="zz-alpha-saved-query", match={"PatientName": "ZZALPHAQUERY*"}, max_age_days=30
    )
    world.add(saved, "zz-alpha-saved-query", "ZZALPHAQUERY")


OWNED_OBJECT_BUILDERS.append(build_saved_queries_world)
