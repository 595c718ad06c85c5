"""Use cases that change the backup app's state; each runs in one transaction and audits itself."""

from .contracts import accept_contract, counter_propose, propose_contract, reject_contract, terminate_contract

__all__ = ["accept_contract", "counter_propose", "propose_contract", "reject_contract", "terminate_contract"]
