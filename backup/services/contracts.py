"""Negotiating a backup contract: propose, counter-propose, accept, reject, terminate.

Provider staff propose; then the side that is awaited answers (accept, reject, or counter-propose with changed
terms) until one side accepts or rejects. Either side may terminate an accepted contract, after which no new runs
start (`Contract.runs_allowed`). Every step appends a ContractRound (who, when, the terms as they stood, a
message), is audited, and notifies the other side. A refused step raises and changes nothing.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.urls import reverse
from django.utils import timezone

from subscribers import audit
from subscribers.access import Principal
from subscribers.models import Institution, Membership, Role, User
from subscribers.services import notify

from ..models import Contract, ContractRound
from .terms import TERM_FIELDS, apply_terms, changed_terms, clean_terms, snapshot, terms_of

Party = Contract.Party
Status = Contract.Status
Action = ContractRound.Action
NEGOTIATING = (Status.PROPOSED, Status.COUNTERED)
MAX_MESSAGE = 4000


def party_of(principal: Principal, contract: Contract) -> str:
    """The side principal speaks for on this contract; PermissionDenied/NotVisible if neither.

    Provider staff always speak for the provider (even when they are also members of an institution).
    """
    if principal.is_provider_staff:
        return Party.PROVIDER
    principal.check_visible(contract)
    principal.require_role(Role.ADMIN)
    return Party.INSTITUTION


def other_party(party: str) -> str:
    return Party.INSTITUTION if party == Party.PROVIDER else Party.PROVIDER


def _clean_message(message: str | None) -> str:
    message = (message or "").strip()
    if len(message) > MAX_MESSAGE:
        raise ValidationError(f"The message is {len(message)} characters long; keep it under {MAX_MESSAGE}.", code="message_too_long")
    return message


def _locked(contract: Contract) -> Contract:
    """The contract's row, locked for this transaction and read fresh (a stale copy must not decide anything)."""
    return Contract.objects.select_for_update().select_related("institution").get(pk=contract.pk)


def _check_round(contract: Contract, expected_round: int | None) -> None:
    """Refuse an answer to a round that is no longer the latest (the other side moved meanwhile)."""
    if expected_round is None:
        return
    latest = contract.rounds.aggregate(n=Max("number"))["n"] or 0
    if int(expected_round) != latest:
        last = contract.rounds.get(number=latest)
        raise ValidationError(
            f"The contract changed since you opened it: round {latest} ({last.get_action_display().lower()} by the "
            f"{last.get_party_display().lower()}). Review the current terms and answer again.",
            code="stale_round",
        )


def _require_turn(contract: Contract, party: str, verb: str, expected_round: int | None) -> None:
    """The contract is still being negotiated, nobody moved since the caller looked, and party is awaited."""
    if contract.status not in NEGOTIATING:
        raise ValidationError(
            f"This contract is already {contract.get_status_display().lower()}; there is no proposal left to {verb}.",
            code="not_negotiating",
        )
    _check_round(contract, expected_round)
    if contract.awaiting != party:
        raise ValidationError(
            f"It is the {Party(contract.awaiting).label.lower()}'s turn to answer: you made the last proposal, "
            f"so you cannot {verb} it. Wait for their answer.",
            code="not_your_turn",
        )


def _append_round(contract: Contract, *, party: str, action: str, principal: Principal, message: str) -> ContractRound:
    number = (contract.rounds.aggregate(n=Max("number"))["n"] or 0) + 1
    try:
        with transaction.atomic():
            return ContractRound.objects.create(
                contract=contract,
                number=number,
                party=party,
                action=action,
                user=principal.user if principal.user is not None and principal.user.pk else None,
                terms=snapshot(terms_of(contract)),
                message=message,
            )
    except IntegrityError:
        # Two answers raced past the lock (SQLite has no row locks): the round number is unique, the second loses.
        raise ValidationError("Someone answered this contract at the same moment; reload it and look again.", code="stale_round")


def _recipients(contract: Contract, party: str) -> list[User]:
    """The people who speak for party: the institution's active admins, or every active provider staff member."""
    if party == Party.INSTITUTION:
        memberships = Membership.objects.filter(institution=contract.institution, is_admin=True, is_active=True).select_related("user")
        return [m.user for m in memberships]
    return list(User.objects.filter(is_staff=True, is_active=True))


def _tell_other_side(contract: Contract, party: str, text: str) -> None:
    notify(
        users=_recipients(contract, other_party(party)),
        text=text,
        link=reverse("backup-contract", args=[contract.pk]),
        institution=contract.institution,
    )


def _audit(principal: Principal, contract: Contract, action: str, round_: ContractRound, **detail) -> None:
    audit.record(
        action=f"backup.contract.{action}",
        principal=principal,
        institution=contract.institution,
        obj=contract,
        round=round_.number,
        party=round_.party,
        status=contract.status,
        **detail,
    )


# --- Use cases ------------------------------------------------------------------------------------------


@transaction.atomic
def propose_contract(*, principal: Principal, institution: Institution, terms: dict, title: str = "", message: str = "") -> Contract:
    """Provider staff put a new contract on the table; the institution's admins are asked to answer."""
    principal.require_provider_staff()
    institution = Institution.objects.select_for_update().get(pk=institution.pk)
    if not institution.is_active:
        raise ValidationError(f"{institution.name} is suspended; reactivate it before proposing a contract.", code="institution_suspended")
    title = (title or "").strip()
    if len(title) > 200:
        raise ValidationError({"title": ["Keep the title under 200 characters."]})
    message = _clean_message(message)
    typed = clean_terms(terms, institution=institution)
    contract = Contract(
        institution=institution,
        title=title,
        status=Status.PROPOSED,
        awaiting=Party.INSTITUTION,
        created_by=principal.user if principal.user is not None and principal.user.pk else None,
    )
    apply_terms(contract, typed)
    contract.save()
    round_ = _append_round(contract, party=Party.PROVIDER, action=Action.PROPOSE, principal=principal, message=message)
    _audit(principal, contract, "propose", round_, terms=round_.terms)
    _tell_other_side(contract, Party.PROVIDER, f"New backup contract proposed for {institution.name}: {contract}. Please answer it.")
    return contract


@transaction.atomic
def counter_propose(
    *, principal: Principal, contract: Contract, terms: dict, message: str = "", expected_round: int | None = None
) -> Contract:
    """The awaited side answers with changed terms; the other side is then awaited.

    terms may name only the terms that change; the rest stay as they are on the table.
    """
    party = party_of(principal, contract)
    contract = _locked(contract)
    _require_turn(contract, party, "counter-propose to", expected_round)
    message = _clean_message(message)
    current = terms_of(contract)
    merged = {**current, **terms}
    typed = clean_terms(merged, institution=contract.institution)
    changed = changed_terms(snapshot(current), snapshot(typed))
    if not changed:
        raise ValidationError(
            "A counter-proposal must change at least one term; to agree to these terms, accept them.", code="nothing_changed"
        )
    apply_terms(contract, typed)
    contract.status = Status.COUNTERED if party == Party.INSTITUTION else Status.PROPOSED
    contract.awaiting = other_party(party)
    contract.save()
    round_ = _append_round(contract, party=party, action=Action.COUNTER, principal=principal, message=message)
    _audit(principal, contract, "counter", round_, changed=changed, terms=round_.terms)
    who = contract.institution.name if party == Party.INSTITUTION else "The provider"
    _tell_other_side(contract, party, f"{who} counter-proposed the backup contract {contract} (changed: {', '.join(changed)}).")
    return contract


@transaction.atomic
def accept_contract(*, principal: Principal, contract: Contract, message: str = "", expected_round: int | None = None) -> Contract:
    """The awaited side agrees to the terms on the table; from now on the contract runs."""
    party = party_of(principal, contract)
    contract = _locked(contract)
    _require_turn(contract, party, "accept", expected_round)
    message = _clean_message(message)
    # The data may have changed since the terms were proposed (a chosen patient deleted, a target removed).
    clean_terms(terms_of(contract), institution=contract.institution)
    contract.status = Status.ACCEPTED
    contract.awaiting = ""
    contract.accepted_at = timezone.now()
    contract.save(update_fields=["status", "awaiting", "accepted_at"])
    round_ = _append_round(contract, party=party, action=Action.ACCEPT, principal=principal, message=message)
    _audit(principal, contract, "accept", round_, terms=round_.terms)
    _tell_other_side(contract, party, f"The backup contract {contract} was accepted; backups can start.")
    return contract


@transaction.atomic
def reject_contract(*, principal: Principal, contract: Contract, message: str = "", expected_round: int | None = None) -> Contract:
    """The awaited side refuses the terms on the table; the negotiation ends."""
    party = party_of(principal, contract)
    contract = _locked(contract)
    _require_turn(contract, party, "reject", expected_round)
    message = _clean_message(message)
    contract.status = Status.REJECTED
    contract.awaiting = ""
    contract.save(update_fields=["status", "awaiting"])
    round_ = _append_round(contract, party=party, action=Action.REJECT, principal=principal, message=message)
    _audit(principal, contract, "reject", round_)
    _tell_other_side(contract, party, f"The backup contract {contract} was rejected.")
    return contract


@transaction.atomic
def terminate_contract(*, principal: Principal, contract: Contract, message: str = "") -> Contract:
    """Either side ends an accepted contract: no new runs start; its backup sets stay restorable."""
    party = party_of(principal, contract)
    contract = _locked(contract)
    if contract.status != Status.ACCEPTED:
        raise ValidationError(
            f"Only an accepted contract can be terminated; this one is {contract.get_status_display().lower()}.", code="not_accepted"
        )
    message = _clean_message(message)
    contract.status = Status.TERMINATED
    contract.awaiting = ""
    contract.terminated_at = timezone.now()
    contract.save(update_fields=["status", "awaiting", "terminated_at"])
    round_ = _append_round(contract, party=party, action=Action.TERMINATE, principal=principal, message=message)
    _audit(principal, contract, "terminate", round_)
    who = contract.institution.name if party == Party.INSTITUTION else "The provider"
    _tell_other_side(contract, party, f"{who} terminated the backup contract {contract}; no new backups will start.")
    return contract


__all__ = [
    "TERM_FIELDS",
    "accept_contract",
    "counter_propose",
    "other_party",
    "party_of",
    "propose_contract",
    "reject_contract",
    "terminate_contract",
]
