"""Research collections: where an institution's de-identified products go.

Each requesting institution gets one research Institution of its own (a separate tenant: "<name> — research", slug
"<slug>-research"). De-identified objects are ingested there under their new patient IDs and UIDs, so the research
collection has its own patients and studies; the one access gate then keeps the two apart. A research user is a member
of the research institution only, and nothing there names or links to the originals. The user who ran the job becomes a
member of the research institution (receive role), to look at and download what they made; their institution's admin
adds further research users there as in any institution.
"""

from __future__ import annotations

from django.db import transaction
from django.utils.text import slugify

from subscribers import audit
from subscribers.models import Institution, Membership, User

from ..models import ResearchCollection


def _free_slug(base: str) -> str:
    slug = slugify(base)[:55] or "research"
    candidate, n = slug, 2
    while Institution.objects.filter(slug=candidate).exists():
        candidate = f"{slug[:52]}-{n}"
        n += 1
    return candidate


@transaction.atomic
def research_institution_for(institution: Institution, *, member: User | None = None) -> Institution:
    """The institution's research collection (made on first use), with `member` given access to it."""
    Institution.objects.select_for_update().filter(pk=institution.pk).first()  # one collection even under concurrent jobs
    collection = ResearchCollection.objects.select_related("research_institution").filter(institution=institution).first()
    if collection is None:
        research = Institution.objects.create(
            name=f"{institution.name} — research"[:200],
            slug=_free_slug(f"{institution.slug}-research"),
            contact_email=institution.contact_email,
        )
        collection = ResearchCollection.objects.create(institution=institution, research_institution=research)
        audit.record(
            action="research_collection.create",
            institution=institution,
            actor="processing server",
            obj=collection,
            research_institution=research.slug,
        )
    research = collection.research_institution
    if member is not None and member.pk:
        membership, created = Membership.objects.get_or_create(user=member, institution=research, defaults={"can_receive": True})
        if created:
            audit.record(action="member.add", institution=research, actor="processing server", obj=membership, roles=["receive"])
    return research
