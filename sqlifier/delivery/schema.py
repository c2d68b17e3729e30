"""State awareness: may a rollback go back to a release, given where the database is now?

A service may declare `migrate` (run once per release before any of its instances take
traffic) and `schema_version` (a command printing the database's current revision, such
as `alembic current`). Each release records the revision it ran against. Old code on a
newer schema is safe only when the newer migrations are backward compatible (added a
table or a nullable column, say), which the releases that made them declare with
`compatible_schemas`; anything else (a dropped or renamed column) would break the old
release in ways no traffic shift can undo, so the rollback is refused before anything
changes, unless forced.

Pure functions: the deployer runs the commands and passes their output here.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlifier.delivery.records import Release

__all__ = ["NO_REVISION", "read_revision", "rollback_refusal"]

NO_REVISION = "none"  # what an empty database (no migration applied) is called


def read_revision(output: str) -> str:
    """The revision a `schema_version` command printed: the first word of its last
    non-empty line (`alembic current` prints `0002_add_note (head)`); NO_REVISION when
    it printed nothing (a database no migration has touched)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        return NO_REVISION
    return lines[-1].split()[0]


def rollback_refusal(
    target: Release, current: str, releases: Sequence[Release], live: Release | None
) -> str | None:
    """Why rolling back to `target` is unsafe with the database at revision `current`,
    or None when it is safe: the revisions are the same, or `current` was declared
    backward compatible by a release made after `target` that ran here (it recorded a
    revision). `releases` are the service's
    releases (any order); `live` the one running now."""
    service, version = target.service, target.version
    recorded = target.details.get("schema")
    if recorded is None:
        return (
            f"rollback of {service} to {version} refused: {version} recorded no schema "
            f"revision (it never ran here with schema_version set), so whether it works "
            f"on the database's revision {current} is unknown; pass --force to roll back "
            "anyway (audited)"
        )
    if recorded == current:
        return None
    # Only releases that ran here (their migrations, if any, were applied) can vouch.
    newer = [
        r for r in releases if r.created > target.created and r.details.get("schema") is not None
    ]
    if live is not None and live.version not in {r.version for r in newer}:
        newer.append(live)
    for release in newer:
        if current in release.config.get("compatible_schemas", ()):
            return None
    migrated = next((r.version for r in newer if r.details.get("schema") == current), None)
    by = f" (migrated by {migrated})" if migrated else ""
    return (
        f"rollback of {service} to {version} refused: {version} ran against schema "
        f"revision {recorded}, but the database is now at revision {current}{by}, and no "
        f"release declares {current} backward compatible (compatible_schemas). "
        f"{version}'s code may fail on it, and moving traffic cannot undo a migration. "
        f"Migrate the database back to {recorded} first, or pass --force to roll back "
        "anyway (audited)"
    )
