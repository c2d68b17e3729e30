"""Approvals per environment: who may deploy, and the two-person rule."""

from __future__ import annotations

from sqlifier.delivery.approvals import Decision, first_approval, second_approval
from sqlifier.stack.model import Approval, Environment

OPEN = Environment("dev")
GUARDED = Environment("production", Approval.REQUIRED, ("alice", "bob"))
TWO = Environment("production", Approval.REQUIRED, ("alice", "bob"), two_person=True)


def test_no_approval_needed() -> None:
    assert first_approval(OPEN, "carol", approve=False) == Decision(
        True, False, "dev needs no approval"
    )


def test_required_approval_needs_the_flag_from_an_approver() -> None:
    assert first_approval(GUARDED, "alice", approve=False) == Decision(
        False,
        False,
        "production requires approval: run again with --approve as one of its approvers "
        "(alice, bob)",
    )
    assert first_approval(GUARDED, "carol", approve=True) == Decision(
        False, False, "carol is not an approver of production; approvers: alice, bob"
    )
    assert first_approval(GUARDED, "alice", approve=True) == Decision(
        True, False, "approved by alice"
    )


def test_two_people_wait_for_someone_else() -> None:
    started = first_approval(TWO, "alice", approve=True)
    assert started == Decision(
        False, True, "production needs a second person: awaiting approval by one of bob"
    )
    assert second_approval(TWO, "alice", "alice") == Decision(
        False,
        True,
        "production needs two people: alice started this deploy and cannot also approve it",
    )
    assert second_approval(TWO, "alice", "carol").allowed is False
    assert second_approval(TWO, "alice", "bob") == Decision(
        True, False, "approved by bob (deployed by alice)"
    )


def test_someone_else_requests_and_any_approver_approves() -> None:
    requested = first_approval(TWO, "carol", approve=False)
    assert requested == Decision(
        False, True, "production needs an approver: awaiting approval by one of alice, bob"
    )
    assert second_approval(TWO, "carol", "alice") == Decision(
        True, False, "approved by alice (deployed by carol)"
    )
    assert second_approval(TWO, "carol", "dave").allowed is False
    # --approve from someone who cannot approve is still refused, not taken as a request.
    assert first_approval(TWO, "carol", approve=True).reason == (
        "carol is not an approver of production; approvers: alice, bob"
    )
    # Where one approver suffices, a request is not a thing: the approver deploys.
    assert not first_approval(GUARDED, "carol", approve=False).waiting


def test_a_lone_approver_cannot_satisfy_two_people() -> None:
    lone = Environment("production", Approval.REQUIRED, ("alice",), two_person=True)
    decision = first_approval(lone, "alice", approve=True)
    assert not decision.allowed and not decision.waiting
    assert "alice is its only approver" in decision.reason


def test_required_without_approvers_says_what_to_add() -> None:
    empty = Environment("production", Approval.REQUIRED, ())
    assert first_approval(empty, "alice", approve=True).reason == (
        'production requires approval but lists no approvers; add approvers = ["..."] '
        "to [environments.production]"
    )
