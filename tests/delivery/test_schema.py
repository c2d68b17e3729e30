"""State awareness: the revision a `schema_version` command printed, and whether a rollback
may go back to a release given the database's revision now (pure: no command runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sqlifier.delivery.releases import Release, ReleaseStatus
from sqlifier.delivery.schema import NO_REVISION, read_revision, rollback_refusal


def release(
    version: str,
    created: float,
    schema: str | None,
    compatible: tuple[str, ...] = (),
    status: ReleaseStatus = ReleaseStatus.SUPERSEDED,
) -> Release:
    config: dict[str, Any] = {"name": "payment-gateway", "run": "python3 pay.py"}
    if compatible:
        config["compatible_schemas"] = list(compatible)
    return Release(
        service="payment-gateway",
        env="dev",
        version=version,
        path=Path("/releases") / version,
        commit=None,
        commit_time=None,
        ref=None,
        content_hash="0" * 12,
        config=config,
        created=created,
        created_by="alice",
        reason="",
        status=status,
        built=False,
        build_output="",
        details={} if schema is None else {"schema": schema},
    )


# --- read_revision --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "revision"),
    [
        ("0002 (head)", "0002"),
        ("0002 (head)\n", "0002"),
        ("0001\n", "0001"),  # behind the head: no "(head)"
        ("  0003 (head) (effective head)  \n\n", "0003"),
        ("INFO  [alembic.runtime.migration] Context impl SQLiteImpl.\n0002 (head)\n", "0002"),
        ("0001\n0002 (head)", "0002"),
        ("a1b2c3d4e5f6", "a1b2c3d4e5f6"),
    ],
)
def test_the_revision_is_the_first_word_of_the_last_line(output: str, revision: str) -> None:
    assert read_revision(output) == revision


@pytest.mark.parametrize("output", ["", "\n", "  \n\t\n"])
def test_no_output_is_a_database_no_migration_touched(output: str) -> None:
    assert NO_REVISION == "none"
    assert read_revision(output) == "none"


# --- rollback_refusal -----------------------------------------------------------------------

V1 = release("v1", 100.0, "0001")
V2 = release("v2", 200.0, "0002", compatible=("0002",))
V3 = release("v3", 300.0, "0003", compatible=("0002",), status=ReleaseStatus.LIVE)
ALL = [V3, V2, V1]


def test_the_same_revision_is_safe() -> None:
    assert rollback_refusal(V2, "0002", ALL, V3) is None
    assert rollback_refusal(V1, "0001", ALL, V3) is None


def test_a_revision_a_newer_release_declared_compatible_is_safe() -> None:
    # v2 made 0002 (a nullable column) and declared it: v1 runs on it.
    assert rollback_refusal(V1, "0002", [V2, V1], V2) is None
    # Declared by any release newer than the target, not only the live one.
    assert rollback_refusal(V1, "0002", ALL, V3) is None


def test_a_destructive_revision_is_refused_naming_both_revisions() -> None:
    assert rollback_refusal(V2, "0003", ALL, V3) == (
        "rollback of payment-gateway to v2 refused: v2 ran against schema revision 0002, "
        "but the database is now at revision 0003 (migrated by v3), and no release "
        "declares 0003 backward compatible (compatible_schemas). v2's code may fail on "
        "it, and moving traffic cannot undo a migration. Migrate the database back to "
        "0002 first, or pass --force to roll back anyway (audited)"
    )


def test_going_back_past_a_compatible_revision_to_a_destructive_one_is_refused() -> None:
    assert rollback_refusal(V1, "0003", ALL, V3) == (
        "rollback of payment-gateway to v1 refused: v1 ran against schema revision 0001, "
        "but the database is now at revision 0003 (migrated by v3), and no release "
        "declares 0003 backward compatible (compatible_schemas). v1's code may fail on "
        "it, and moving traffic cannot undo a migration. Migrate the database back to "
        "0001 first, or pass --force to roll back anyway (audited)"
    )


def test_only_releases_newer_than_the_target_count() -> None:
    # The target itself, and releases older than it, cannot vouch for a newer schema.
    v1 = release("v1", 100.0, "0001", compatible=("0003",))
    v2 = release("v2", 200.0, "0002", compatible=("0003",))
    v3 = release("v3", 300.0, "0003", status=ReleaseStatus.LIVE)
    refusal = rollback_refusal(v2, "0003", [v3, v2, v1], v3)
    assert refusal is not None
    assert refusal.startswith(
        "rollback of payment-gateway to v2 refused: v2 ran against schema revision 0002, "
        "but the database is now at revision 0003 (migrated by v3), and no release declares"
    )


def test_the_live_release_counts_even_when_made_before_the_target() -> None:
    # v3 was made, deployed and rolled back from; v2 runs again and declared 0003 safe.
    v2 = release("v2", 200.0, "0003", compatible=("0003",), status=ReleaseStatus.LIVE)
    v3 = release("v3", 300.0, "0002", status=ReleaseStatus.ROLLED_BACK)
    assert rollback_refusal(v3, "0003", [v3, v2], v2) is None
    assert rollback_refusal(v3, "0003", [v3, v2], None) is not None


def test_a_revision_no_known_release_made_says_nothing_of_who_migrated_it() -> None:
    # Someone migrated the database by hand.
    assert rollback_refusal(V2, "0004", ALL, V3) == (
        "rollback of payment-gateway to v2 refused: v2 ran against schema revision 0002, "
        "but the database is now at revision 0004, and no release declares 0004 backward "
        "compatible (compatible_schemas). v2's code may fail on it, and moving traffic "
        "cannot undo a migration. Migrate the database back to 0002 first, or pass "
        "--force to roll back anyway (audited)"
    )


def test_a_target_that_recorded_no_revision_is_refused() -> None:
    old = release("v0", 50.0, None)
    assert rollback_refusal(old, "0001", [V1, old], V1) == (
        "rollback of payment-gateway to v0 refused: v0 recorded no schema revision (it "
        "never ran here with schema_version set), so whether it works on the database's "
        "revision 0001 is unknown; pass --force to roll back anyway (audited)"
    )


def test_an_empty_database_is_a_revision_like_any_other() -> None:
    empty = release("v0", 50.0, NO_REVISION)
    assert rollback_refusal(empty, "none", [V1, empty], V1) is None
    refusal = rollback_refusal(empty, "0001", [V1, empty], V1)
    assert refusal is not None
    assert (
        "v0 ran against schema revision none, but the database is now at revision 0001 (migrated by v1)"
        in refusal
    )
