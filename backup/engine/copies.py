"""Study.backup_copies: on how many backup targets every current instance of a study is held in a verified set.

A target holds an instance when the latest verified set of some object on that target names the same SOP Instance
with the same SHA-256. Recounted for the studies of each set verified or damaged, and for studies that received
instances lately (whose new instances no target holds yet). The storage conditions compare it with the number of
copies the institution requires.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from django.core.exceptions import FieldDoesNotExist
from django.utils import timezone

from images.models import Instance, Study

from ..models import BackupSet, BackupSetFile

CHUNK = 500


def tracked() -> bool:
    try:
        Study._meta.get_field("backup_copies")
    except FieldDoesNotExist:
        return False
    return True


def _latest_verified_sets(institution_id: int) -> dict[int, str]:
    """{set id: target} of the newest verified set of each object and target of the institution's contracts."""
    newest: dict[tuple[int, str], tuple] = {}
    rows = BackupSet.objects.filter(contract__institution_id=institution_id, status=BackupSet.Status.VERIFIED).values_list(
        "pk", "backup_object_id", "target", "verified_at"
    )
    for pk, object_id, target, verified_at in rows:
        key = (object_id, target)
        if key not in newest or (verified_at, pk) > newest[key]:
            newest[key] = (verified_at, pk)
    return {pk: target for (_, target), (_, pk) in newest.items()}


def recount(study_ids) -> int:
    """Recount backup_copies of these studies; returns how many changed."""
    if not tracked():
        return 0
    study_ids = sorted(set(study_ids))
    changed = 0
    by_institution: dict[int, list[int]] = defaultdict(list)
    for pk, institution_id in Study.objects.filter(pk__in=study_ids).values_list("pk", "institution_id"):
        by_institution[institution_id].append(pk)
    for institution_id, ids in by_institution.items():
        sets = _latest_verified_sets(institution_id)
        for start in range(0, len(ids), CHUNK):
            changed += _recount_chunk(ids[start : start + CHUNK], sets)
    return changed


def _recount_chunk(ids: list[int], sets: dict[int, str]) -> int:
    current: dict[str, set[tuple[str, str]]] = defaultdict(set)
    uid_of: dict[int, str] = {}
    for study_id, study_uid, sop, sha in Instance.objects.filter(study_id__in=ids).values_list(
        "study_id", "study__study_instance_uid", "sop_instance_uid", "sha256"
    ):
        current[study_uid].add((sop, sha))
        uid_of[study_id] = study_uid
    held: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)  # (target, study uid) -> {(sop, sha)}
    if sets and current:
        entries = BackupSetFile.objects.filter(backup_set_id__in=list(sets), study_instance_uid__in=list(current)).values_list(
            "backup_set_id", "study_instance_uid", "sop_instance_uid", "blob__sha256"
        )
        for set_id, study_uid, sop, sha in entries:
            held[(sets[set_id], study_uid)].add((sop, sha))
    targets = set(sets.values())
    counts: dict[int, int] = {}
    for study_id in ids:
        uid = uid_of.get(study_id)
        instances = current.get(uid) if uid else None
        counts[study_id] = sum(1 for target in targets if instances and instances <= held.get((target, uid), set()))
    before = dict(Study.objects.filter(pk__in=ids).values_list("pk", "backup_copies"))
    by_value: dict[int, list[int]] = defaultdict(list)
    for study_id, count in counts.items():
        if before.get(study_id) != count:
            by_value[count].append(study_id)
    for count, study_ids in by_value.items():
        Study.objects.filter(pk__in=study_ids).update(backup_copies=count)
    return sum(len(v) for v in by_value.values())


def recount_after_backup(study_ids, changed_ids) -> int:
    """After a set was verified: recount the studies whose files were written, and those counted on fewer targets than
    exist (a set may now hold them with files already in the target); the rest cannot have changed."""
    if not tracked():
        return 0
    targets = BackupSet.objects.filter(status=BackupSet.Status.VERIFIED).values("target").distinct().count()
    wanted = set(changed_ids)
    study_ids = sorted(set(study_ids) - wanted)
    for start in range(0, len(study_ids), CHUNK):
        chunk = study_ids[start : start + CHUNK]
        wanted.update(Study.objects.filter(pk__in=chunk, backup_copies__lt=targets).values_list("pk", flat=True))
    return recount(wanted)


def recount_recently_received(institution_id: int, *, minutes: int = 5) -> int:
    """Studies that received instances lately may hold instances no target has yet: recount those that had copies."""
    if not tracked():
        return 0
    since = timezone.now() - timedelta(minutes=minutes)
    ids = Study.objects.filter(institution_id=institution_id, last_received_at__gte=since, backup_copies__gt=0).values_list("pk", flat=True)
    return recount(list(ids))
