"""Contract pages: the list, a contract with its history and answers, proposing and counter-proposing.

Institution admins see their institution's contracts; provider staff see every institution's and propose new
ones. Contracts are looked up through `backup.selectors`, so another institution's contract is 404; services make
every change, and their refusals become form errors or a message on the contract page, with nothing changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Count, Max
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_date
from django.views.decorators.http import require_POST

from images import selectors as image_selectors
from images.templatetags.dicom import readable_person_name
from subscribers import selectors as subscriber_selectors
from subscribers.access import Principal
from subscribers.decorators import admin_required, provider_staff_required
from subscribers.forms import add_service_error
from subscribers.models import Institution

from .. import recommend as recommending
from .. import selectors, services
from ..models import BackupMode, Contract, Coverage
from ..services.contracts import NEGOTIATING
from ..services.terms import TERM_FIELDS, TERM_LABELS, backup_targets, changed_terms, snapshot, terms_of
from .forms import AnswerForm, CounterForm, ProposeForm

Party = Contract.Party
# Refusals that mean "not your move now": shown on the contract page rather than on a form.
TURN_ERRORS = {"not_negotiating", "not_your_turn", "stale_round"}


def _posted(request):
    return request.POST if request.method == "POST" else None


def _party_of_viewer(principal: Principal) -> str:
    return Party.PROVIDER if principal.is_provider_staff else Party.INSTITUTION


# --- Showing terms -------------------------------------------------------------------------------------------


class ItemLabels:
    """Readable names of chosen patients and studies, for callers allowed to see them; numbers for everyone else.

    Provider staff do not read patient data, so they see 'patient 12'; the institution's admins see the name.
    """

    def __init__(self, principal: Principal, snapshots: list[dict]):
        wanted = {Coverage.PATIENTS: set(), Coverage.STUDIES: set()}
        for terms in snapshots:
            if terms.get("coverage") in wanted:
                wanted[terms["coverage"]].update(int(i) for i in terms.get("coverage_items") or [])
        self.patients = {
            p.pk: f"{readable_person_name(p.patient_name) or 'unnamed'} ({p.patient_id})"
            for p in image_selectors.patients_visible_to(principal).filter(pk__in=wanted[Coverage.PATIENTS])
        }
        self.studies = {
            s.pk: " ".join(
                part for part in (f"{s.study_date:%Y-%m-%d}" if s.study_date else "", s.study_description, s.accession_number) if part
            )
            or s.study_instance_uid
            for s in image_selectors.studies_visible_to(principal).filter(pk__in=wanted[Coverage.STUDIES])
        }

    def of(self, coverage: str, item) -> str:
        if coverage == Coverage.PATIENTS:
            return self.patients.get(int(item)) or f"patient {item}"
        if coverage == Coverage.STUDIES:
            return self.studies.get(int(item)) or f"study {item}"
        return str(item)


def show_term(name: str, terms: dict, labels: ItemLabels) -> str:
    value = terms.get(name)
    if name == "mode":
        return BackupMode(value).label if value in BackupMode.values else str(value)
    if name == "coverage":
        return Coverage(value).label if value in Coverage.values else str(value)
    if name == "coverage_items":
        return "; ".join(labels.of(terms.get("coverage"), item) for item in value) if value else "—"
    if name == "period_end":
        return value or "open-ended"
    if name == "schedule_time":
        return value or "—"
    if name == "quiet_minutes":
        return f"{value} min"
    if name == "rate":
        return f"{value} {terms.get('currency', '')}".strip()
    return "—" if value in (None, "") else str(value)


@dataclass
class TermRow:
    name: str
    label: str
    value: str
    before: str = ""
    changed: bool = False


def term_rows(terms: dict, labels: ItemLabels, previous: dict | None = None) -> list[TermRow]:
    changed = set(changed_terms(previous, terms)) if previous is not None else set()
    return [
        TermRow(
            name,
            TERM_LABELS[name],
            show_term(name, terms, labels),
            before=show_term(name, previous, labels) if name in changed else "",
            changed=name in changed,
        )
        for name in TERM_FIELDS
    ]


@dataclass
class RoundView:
    round: object
    changes: list[TermRow]  # the terms that differ from the previous round (all of them for the first)
    first: bool


def history(rounds, labels: ItemLabels) -> list[RoundView]:
    views, previous = [], None
    for r in rounds:
        rows = term_rows(r.terms, labels, previous)
        views.append(RoundView(r, rows if previous is None else [row for row in rows if row.changed], previous is None))
        previous = r.terms
    return views


# --- Recommendation beside a form -------------------------------------------------------------------------------


def _as_date(value) -> date | None:
    if isinstance(value, date):
        return value
    try:
        return parse_date(str(value or "").strip())
    except ValueError:
        return None


def recommendation_for(institution, raw: dict):
    """The recommendation for the terms being edited (raw form values or typed terms); the period defaults to a year."""
    if institution is None:
        return None
    start = _as_date(raw.get("period_start")) or timezone.localdate()
    return recommending.recommend(
        institution=institution,
        period_start=start,
        period_end=_as_date(raw.get("period_end")),
        terms={k: raw.get(k) for k in ("mode", "accounting_points", "rate", "currency", "schedule_time", "quiet_minutes")},
    )


def _default_terms(mode: str = BackupMode.ALL_AT_TIME) -> dict:
    today = timezone.localdate()
    return {
        "mode": mode,
        "coverage": Coverage.ALL,
        "coverage_items": [],
        "schedule_time": "02:00",
        "quiet_minutes": 60,
        "period_start": today,
        "period_end": recommending.add_months(today, 12) - timedelta(days=1),
        # The provider's tariff in force (billing) is the starting proposal; the backup app's defaults otherwise.
        "accounting_points": recommending.default_points(mode),
        "rate": recommending.default_rate(mode),
        "currency": recommending.default_currency(mode),
        "target": "backup" if "backup" in backup_targets() else next(iter(backup_targets()), ""),
    }


# --- Pages ------------------------------------------------------------------------------------------------------


@admin_required
def contract_list(request):
    principal = request.principal
    contracts = selectors.contracts_visible_to(principal).annotate(rounds_count=Count("rounds"), last_round_at=Max("rounds__created_at"))
    institutions = None
    if principal.is_provider_staff:
        institutions = subscriber_selectors.institutions_visible_to(principal).filter(status=Institution.Status.ACTIVE).order_by("name")
        contracts = contracts.order_by("institution__name", "-created_at", "-id")
    viewer = _party_of_viewer(principal)
    return render(
        request,
        "backup/contract_list.html",
        {"contracts": contracts, "institutions": institutions, "viewer_party": viewer},
    )


@provider_staff_required
def contract_new(request):
    principal = request.principal
    institutions = subscriber_selectors.institutions_visible_to(principal).filter(status=Institution.Status.ACTIVE).order_by("name")
    institution = None
    try:
        institution = institutions.get(pk=int(request.POST.get("institution") or request.GET.get("institution") or 0))
    except (institutions.model.DoesNotExist, ValueError):
        pass
    defaults = _default_terms()
    initial = {**ProposeForm.initial_from(defaults), "institution": institution}
    form = ProposeForm(_posted(request), institutions=institutions, initial=initial)
    if form.is_bound and "recommend" not in request.POST and form.is_valid():
        try:
            contract = services.propose_contract(
                principal=principal,
                institution=form.cleaned_data["institution"],
                terms=form.terms(),
                title=form.cleaned_data["title"],
                message=form.cleaned_data["message"],
            )
        except ValidationError as error:
            add_service_error(form, error)
        else:
            messages.success(request, f"Proposed {contract} to {contract.institution.name}; their admins were notified.")
            return redirect("backup-contract", contract.pk)
    raw = form.data if form.is_bound else defaults
    return render(
        request,
        "backup/contract_form.html",
        {"form": form, "institution": institution, "recommendation": recommendation_for(institution, raw), "proposing": True},
    )


@admin_required
def contract_detail(request, pk):
    principal = request.principal
    contract = selectors.get_contract(principal, pk)
    rounds = list(selectors.rounds_of(contract))
    current = snapshot(terms_of(contract))
    labels = ItemLabels(principal, [current, *(r.terms for r in rounds)])
    viewer = _party_of_viewer(principal)
    negotiating = contract.status in NEGOTIATING
    last = rounds[-1] if rounds else None
    context = {
        "contract": contract,
        "terms": term_rows(current, labels),
        "history": history(rounds, labels),
        "viewer_party": viewer,
        "your_turn": negotiating and contract.awaiting == viewer,
        "negotiating": negotiating,
        "answer_form": AnswerForm(initial={"round": last.number if last else None}),
        "recommendation": recommendation_for(contract.institution, terms_of(contract)) if negotiating else None,
        "objects": _objects_for(principal, contract),
        "runs": selectors.runs_of(contract)[:20],
    }
    return render(request, "backup/contract_detail.html", context)


def _objects_for(principal: Principal, contract: Contract):
    """The contract's objects of backup; patient and study labels (names) only for the owning institution's people."""
    objects = list(selectors.objects_of(contract))
    # images.selectors shows an institution's studies to its own members only: provider staff see numbers.
    if principal.institution_id != contract.institution_id:
        for o in objects:
            if o.kind in (o.Kind.PATIENT, o.Kind.STUDY):
                o.label = f"{o.get_kind_display().lower()} {o.key}"
    return objects


@admin_required
def contract_counter(request, pk):
    principal = request.principal
    contract = selectors.get_contract(principal, pk)
    last_number = contract.rounds.aggregate(n=Max("number"))["n"] or 0
    initial = {**CounterForm.initial_from(terms_of(contract)), "round": last_number}
    form = CounterForm(_posted(request), initial=initial)
    if form.is_bound and "recommend" not in request.POST and form.is_valid():
        try:
            services.counter_propose(
                principal=principal,
                contract=contract,
                terms=form.terms(),
                message=form.cleaned_data["message"],
                expected_round=form.cleaned_data["round"],
            )
        except ValidationError as error:
            if getattr(error, "code", None) in TURN_ERRORS:
                # Not this caller's move (any more): the terms on the table are what to look at, not this form.
                messages.error(request, " ".join(error.messages))
                return redirect("backup-contract", contract.pk)
            add_service_error(form, error)
        else:
            messages.success(request, "Your counter-proposal was sent; the other side was notified.")
            return redirect("backup-contract", contract.pk)
    raw = form.data if form.is_bound else terms_of(contract)
    return render(
        request,
        "backup/contract_form.html",
        {
            "form": form,
            "contract": contract,
            "institution": contract.institution,
            "recommendation": recommendation_for(contract.institution, raw),
            "proposing": False,
            "your_turn": contract.status in NEGOTIATING and contract.awaiting == _party_of_viewer(principal),
        },
    )


def _answer(request, pk, service, done: str):
    principal = request.principal
    contract = selectors.get_contract(principal, pk)
    form = AnswerForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The answer could not be read; reload the contract and answer again.")
        return redirect("backup-contract", contract.pk)
    kwargs = {"principal": principal, "contract": contract, "message": form.cleaned_data.get("message", "")}
    if service is not services.terminate_contract:
        kwargs["expected_round"] = form.cleaned_data.get("round")
    try:
        service(**kwargs)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, done)
    return redirect("backup-contract", contract.pk)


@require_POST
@admin_required
def contract_accept(request, pk):
    return _answer(request, pk, services.accept_contract, "You accepted the contract; backups can start.")


@require_POST
@admin_required
def contract_reject(request, pk):
    return _answer(request, pk, services.reject_contract, "You rejected the contract.")


@require_POST
@admin_required
def contract_terminate(request, pk):
    return _answer(request, pk, services.terminate_contract, "You terminated the contract; no new backups will start.")
