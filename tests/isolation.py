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


# Later apps append their builders here (images: patients, studies, series, instances with UIDs; ...).
OWNED_OBJECT_BUILDERS: list[Callable[[OwnedWorld], None]] = [build_subscribers_world, build_images_world]


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
