"""Who may deploy to an environment: `approval`, `approvers` and `two_person` of
`[environments.E]`, decided as pure functions (the deploy command applies them).

- `approval = "none"` (the default): anyone deploys.
- `approval = "required"`: the deploy needs `--approve` from someone in `approvers`.
- `two_person = true` as well: the approver must be someone other than the deployer. An
  approver who deploys with `--approve` still needs a second approver: the deploy waits as
  `awaiting approval` until another approver runs `sqlifier approve DEPLOY_ID`. Someone
  who is not an approver may request a deploy (without `--approve`): it waits the same
  way, for any approver.

The caller is `SQLIFIER_USER`, else the operating-system user (`store.audit.current_user`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlifier.stack.model import Approval, Environment

__all__ = ["Decision", "first_approval", "second_approval"]


@dataclass(frozen=True, slots=True)
class Decision:
    """`allowed` to go on now; or `waiting` for a second approver; otherwise refused. The
    reason says which, in words a user can act on."""

    allowed: bool
    waiting: bool
    reason: str


def _names(environment: Environment) -> str:
    return ", ".join(environment.approvers) or "none listed"


def first_approval(environment: Environment, caller: str, approve: bool) -> Decision:
    """May `caller` start a deploy to `environment` (with or without `--approve`)?"""
    env = environment.name
    if environment.approval is Approval.NONE:
        return Decision(True, False, f"{env} needs no approval")
    if not environment.approvers:
        return Decision(
            False,
            False,
            f"{env} requires approval but lists no approvers; add "
            f'approvers = ["..."] to [environments.{env}]',
        )
    if not approve and environment.two_person and caller not in environment.approvers:
        # A request: the deployer and the approver are two people already.
        return Decision(
            False,
            True,
            f"{env} needs an approver: awaiting approval by one of {_names(environment)}",
        )
    if not approve:
        return Decision(
            False,
            False,
            f"{env} requires approval: run again with --approve as one of its approvers "
            f"({_names(environment)})",
        )
    if caller not in environment.approvers:
        return Decision(
            False, False, f"{caller} is not an approver of {env}; approvers: {_names(environment)}"
        )
    if environment.two_person:
        others = [a for a in environment.approvers if a != caller]
        if not others:
            return Decision(
                False,
                False,
                f"{env} needs two people but {caller} is its only approver; "
                f"add another to [environments.{env}] approvers",
            )
        return Decision(
            False,
            True,
            f"{env} needs a second person: awaiting approval by one of {', '.join(others)}",
        )
    return Decision(True, False, f"approved by {caller}")


def second_approval(environment: Environment, deployer: str, approver: str) -> Decision:
    """May `approver` approve `deployer`'s deploy waiting in `environment`?"""
    env = environment.name
    if approver not in environment.approvers:
        return Decision(
            False, True, f"{approver} is not an approver of {env}; approvers: {_names(environment)}"
        )
    if environment.two_person and approver == deployer:
        return Decision(
            False,
            True,
            f"{env} needs two people: {approver} started this deploy and cannot also approve it",
        )
    return Decision(True, False, f"approved by {approver} (deployed by {deployer})")
