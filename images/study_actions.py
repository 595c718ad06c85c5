"""Actions other apps offer on the study page (print a film sheet, run processing...), without images importing them.

An app above images registers a StudyAction in its AppConfig.ready(); the study page shows the actions whose
role the caller holds, linking to `reverse(url_name, kwargs={"study_uid": uid})`. Actions that only make sense
for the owner's own images (printing, processing) say `own_only`.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import reverse


@dataclass(frozen=True)
class StudyAction:
    title: str
    url_name: str
    role: str
    own_only: bool = True
    order: int = 50

    def url(self, study_instance_uid: str) -> str:
        return reverse(self.url_name, kwargs={"study_uid": study_instance_uid})


_ACTIONS: dict[str, StudyAction] = {}


def register(action: StudyAction) -> None:
    _ACTIONS[action.url_name] = action


def actions_for(principal, study) -> list[dict]:
    """[{"title", "url", "url_name"}] of the actions the caller may take on this study."""
    own = principal.institution_id == study.institution_id
    return [
        {"title": a.title, "url": a.url(study.study_instance_uid), "url_name": a.url_name}
        for a in sorted(_ACTIONS.values(), key=lambda a: (a.order, a.title))
        if principal.has_role(a.role) and (own or not a.own_only)
    ]
