"""Releases: real git repositories and real folders in tmp_path, real builds."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sqlifier.delivery.releases import (
    Release,
    ReleaseError,
    Releases,
    ReleaseStatus,
    content_hash,
    follows_source,
    releases_table,
)
from sqlifier.secrets.local import KEY_VARIABLE, LocalStore
from sqlifier.stack import load_stack
from sqlifier.stack.model import Stack

T1 = 1_700_000_000  # commit times of the fixture repository
T2 = 1_700_003_600
PYTHON = shlex.quote(sys.executable)

SERVICES = """\
[stack]
name = "shop"

[services.web]
run = "python3 app.py"
source = "repo/services/web"
instances = 2
env = { LOG_LEVEL = "info" }

[services.whole]
run = "python3 services/web/app.py"
source = "repo"

[services.api]
run = "python3 api.py"
source = "repo/services/api"

[services.plain]
run = "python3 app.py"
source = "plain"
"""


class Clock:
    """Whole seconds from T1, one more each call: creation order without sleeping."""

    def __init__(self) -> None:
        self.now = float(T1)

    def __call__(self) -> float:
        self.now += 1
        return self.now


def git(repo: Path, *args: str, when: int = T1) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Alice",
        "GIT_AUTHOR_EMAIL": "alice@example.com",
        "GIT_COMMITTER_NAME": "Alice",
        "GIT_COMMITTER_EMAIL": "alice@example.com",
        "GIT_AUTHOR_DATE": f"@{when} +0000",
        "GIT_COMMITTER_DATE": f"@{when} +0000",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def write_stack(root: Path, text: str = SERVICES) -> Stack:
    path = root / "sqlifier.toml"
    path.write_text(text)
    stack, _ = load_stack(path)
    return stack


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Folders in tmp_path are never taken for part of a repository around it.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.setenv("SQLIFIER_USER", "carol")
    monkeypatch.delenv(KEY_VARIABLE, raising=False)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """Two commits on main: v1 (tagged, and branch `stable`) and v2, which adds
    services/api."""
    repo = tmp_path / "repo"
    web = repo / "services" / "web"
    web.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("shop\n")
    (web / "app.py").write_text("print('v1')\n")
    (web / "run.sh").write_text("#!/bin/sh\nexec python3 app.py\n")
    (web / "run.sh").chmod(0o755)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "one", when=T1)
    git(repo, "tag", "v1")
    git(repo, "branch", "stable")
    (web / "app.py").write_text("print('v2')\n")
    (repo / "services" / "api").mkdir()
    (repo / "services" / "api" / "api.py").write_text("print('api')\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "two", when=T2)
    return repo.resolve()


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "app.py").write_text("print('plain')\n")
    return folder


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / ".sqlifier" / "dev"


@pytest.fixture
def releases(state: Path) -> Releases:
    return Releases(state, "dev", clock=Clock())


def files(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def commit_of(repo: Path, ref: str) -> str:
    return git(repo, "rev-parse", f"{ref}^{{commit}}")


# --- from git ---------------------------------------------------------------------------


def test_release_by_tag_is_that_commit_labelled_by_the_tag(
    tmp_path: Path, repo: Path, releases: Releases, state: Path
) -> None:
    release = releases.make(write_stack(tmp_path), "web", version="v1")
    assert (release.version, release.ref, release.commit) == ("v1", "v1", commit_of(repo, "v1"))
    assert release.path == state / "releases" / "web" / "v1"
    assert files(release.path)["app.py"] == "print('v1')\n"


def test_release_by_branch_is_its_tip_labelled_by_the_branch(
    tmp_path: Path, repo: Path, releases: Releases
) -> None:
    release = releases.make(write_stack(tmp_path), "web", version="stable")
    assert (release.version, release.ref, release.commit) == (
        "stable",
        "stable",
        commit_of(repo, "v1"),
    )
    assert files(release.path)["app.py"] == "print('v1')\n"


def test_release_by_commit_sha(tmp_path: Path, repo: Path, releases: Releases) -> None:
    sha = commit_of(repo, "v1")
    release = releases.make(write_stack(tmp_path), "web", version=sha[:10])
    assert (release.version, release.commit) == (sha[:10], sha)
    assert files(release.path)["app.py"] == "print('v1')\n"


def test_ref_without_version_is_labelled_by_the_tag_or_the_commit(
    tmp_path: Path, repo: Path, releases: Releases
) -> None:
    stack = write_stack(tmp_path)
    assert releases.make(stack, "web", ref="v1").version == "v1"
    by_branch = releases.make(stack, "web", ref="main")
    assert (by_branch.version, by_branch.ref) == (commit_of(repo, "main")[:12], "main")


def test_head_is_the_default_and_the_commit_labels_it(
    tmp_path: Path, repo: Path, releases: Releases
) -> None:
    release = releases.make(write_stack(tmp_path), "web")
    head = commit_of(repo, "HEAD")
    assert (release.version, release.ref, release.commit) == (head[:12], "HEAD", head)
    assert files(release.path)["app.py"] == "print('v2')\n"


def test_the_commit_time_is_recorded(tmp_path: Path, repo: Path, releases: Releases) -> None:
    stack = write_stack(tmp_path)
    assert releases.make(stack, "web", version="v1").commit_time == T1
    assert releases.make(stack, "web").commit_time == T2


def test_a_version_that_names_no_ref_labels_a_snapshot_of_head(
    tmp_path: Path, repo: Path, releases: Releases
) -> None:
    release = releases.make(write_stack(tmp_path), "web", version="2024.1")
    assert (release.version, release.ref, release.commit) == (
        "2024.1",
        "HEAD",
        commit_of(repo, "HEAD"),
    )


def test_a_subdirectory_source_is_that_folder_alone(
    tmp_path: Path, repo: Path, releases: Releases
) -> None:
    release = releases.make(write_stack(tmp_path), "web")
    assert files(release.path) == {
        "app.py": "print('v2')\n",
        "run.sh": "#!/bin/sh\nexec python3 app.py\n",
    }
    assert (release.path / "run.sh").stat().st_mode & stat.S_IXUSR


def test_a_source_at_the_top_of_the_repository_keeps_its_layout(
    tmp_path: Path, repo: Path, releases: Releases
) -> None:
    release = releases.make(write_stack(tmp_path), "whole")
    assert sorted(files(release.path)) == [
        "README.md",
        "services/api/api.py",
        "services/web/app.py",
        "services/web/run.sh",
    ]


def test_uncommitted_changes_are_not_part_of_a_git_release(
    tmp_path: Path, repo: Path, releases: Releases
) -> None:
    (repo / "services" / "web" / "app.py").write_text("print('dirty')\n")
    (repo / "services" / "web" / "notes.txt").write_text("untracked\n")
    release = releases.make(write_stack(tmp_path), "web")
    assert files(release.path)["app.py"] == "print('v2')\n"
    assert "notes.txt" not in files(release.path)


def test_an_unknown_ref_is_refused_with_the_tags_and_branches(
    tmp_path: Path, repo: Path, releases: Releases, state: Path
) -> None:
    with pytest.raises(ReleaseError) as caught:
        releases.make(write_stack(tmp_path), "web", ref="v9")
    assert str(caught.value) == f"no git ref 'v9' in {repo}; tags: v1; branches: main, stable"
    assert (caught.value.service, caught.value.version) == ("web", None)
    assert list((state / "releases" / "web").iterdir()) == []


def test_a_source_folder_missing_from_the_commit_is_refused(
    tmp_path: Path, repo: Path, releases: Releases
) -> None:
    with pytest.raises(ReleaseError) as caught:
        releases.make(write_stack(tmp_path), "api", version="v1")
    sha = commit_of(repo, "v1")[:12]
    assert str(caught.value) == (
        f"cannot release api from v1 ({sha}): its source folder services/api is not in "
        f"that commit of {repo}"
    )


def test_a_repository_without_commits_is_refused(tmp_path: Path, releases: Releases) -> None:
    empty = tmp_path / "repo"
    (empty / "services" / "web").mkdir(parents=True)
    git(empty, "init", "-q", "-b", "main")
    with pytest.raises(ReleaseError) as caught:
        releases.make(write_stack(tmp_path), "web")
    assert str(caught.value) == (
        f"cannot release web: the git repository {empty.resolve()} has no commit yet; "
        "commit the service's source first"
    )


# --- from a plain folder ----------------------------------------------------------------


def test_a_plain_folder_is_snapshotted_and_labelled_by_its_content_hash(
    tmp_path: Path, plain: Path, releases: Releases
) -> None:
    release = releases.make(write_stack(tmp_path), "plain")
    assert release.version == release.content_hash == content_hash(plain)
    assert len(release.version) == 12
    assert int(release.version, 16) >= 0
    assert (release.commit, release.commit_time, release.ref) == (None, None, None)
    assert files(release.path) == {"app.py": "print('plain')\n"}


def test_a_snapshot_skips_caches_environments_and_state(
    tmp_path: Path, plain: Path, releases: Releases
) -> None:
    before = content_hash(plain)
    for junk in (".git/HEAD", ".sqlifier/dev/x", ".venv/bin/python", "__pycache__/a.pyc"):
        (plain / junk).parent.mkdir(parents=True, exist_ok=True)
        (plain / junk).write_text("junk\n")
    (plain / "b.pyc").write_text("junk\n")
    release = releases.make(write_stack(tmp_path), "plain")
    assert release.version == before
    assert files(release.path) == {"app.py": "print('plain')\n"}


def test_a_snapshot_of_the_stack_folder_leaves_out_its_releases(
    tmp_path: Path, plain: Path, releases: Releases
) -> None:
    stack = write_stack(tmp_path, '[stack]\nname = "shop"\n\n[services.top]\nrun = "x"\n')
    first = releases.make(stack, "top", version="1")
    (tmp_path / "more.txt").write_text("more\n")
    second = releases.make(stack, "top", version="2")
    assert first.path.is_dir()
    assert sorted(files(second.path)) == ["more.txt", "plain/app.py", "sqlifier.toml"]


def test_content_hash_sees_paths_contents_and_the_executable_bit(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("x")
    seen = {content_hash(tmp_path)}
    (tmp_path / "a").chmod(0o755)
    seen.add(content_hash(tmp_path))
    (tmp_path / "a").rename(tmp_path / "b")
    seen.add(content_hash(tmp_path))
    (tmp_path / "b").write_text("y")
    seen.add(content_hash(tmp_path))
    assert len(seen) == 4


# --- immutability -----------------------------------------------------------------------


def test_making_a_version_again_with_the_same_content_returns_it(
    tmp_path: Path, plain: Path, releases: Releases, state: Path
) -> None:
    stack = write_stack(tmp_path)
    first = releases.make(stack, "plain", version="1.0", reason="first")
    again = releases.make(stack, "plain", version="1.0", reason="again")
    assert again == first
    assert sorted(p.name for p in (state / "releases" / "plain").iterdir()) == [
        ".lock",
        "1.0",
        "1.0.json",
    ]


def test_a_git_version_made_again_is_returned_as_is(
    tmp_path: Path, repo: Path, releases: Releases
) -> None:
    stack = write_stack(tmp_path)
    assert releases.make(stack, "web", version="v1") == releases.make(stack, "web", ref="v1")


def test_a_version_with_other_content_is_refused(
    tmp_path: Path, plain: Path, releases: Releases
) -> None:
    stack = write_stack(tmp_path)
    first = releases.make(stack, "plain", version="1.0")
    (plain / "app.py").write_text("print('changed')\n")
    with pytest.raises(ReleaseError) as caught:
        releases.make(stack, "plain", version="1.0")
    assert str(caught.value) == (
        "release 1.0 of plain already exists with other content; releases are immutable — "
        "choose another --version"
    )
    assert files(first.path) == {"app.py": "print('plain')\n"}
    assert [r.version for r in releases.list("plain")] == ["1.0"]


def test_release_files_are_read_only(tmp_path: Path, repo: Path, releases: Releases) -> None:
    release = releases.make(write_stack(tmp_path), "whole")
    modes = [p.stat().st_mode for p in release.path.rglob("*") if p.is_file()]
    assert len(modes) == 4
    assert all(mode & 0o222 == 0 for mode in modes)  # as root, only the bits can tell


@pytest.mark.parametrize("version", ["../x", ".hidden", "a/b", "", "x" * 129])
def test_an_invalid_version_is_refused(
    tmp_path: Path, plain: Path, releases: Releases, version: str
) -> None:
    with pytest.raises(ReleaseError) as caught:
        releases.make(write_stack(tmp_path), "plain", version=version)
    assert str(caught.value) == (
        f"release version {version!r} of plain is not valid: use letters, digits, '.', '_', "
        "'+' and '-', starting with a letter or digit (at most 128 characters)"
    )


# --- building ---------------------------------------------------------------------------

BUILD = """\
import os, sys
print("hello build")
with open("built.txt", "w") as f:
    f.write(os.environ["RELEASE"] + " " + os.environ["LOG_LEVEL"])
"""


def build_stack(root: Path, build: str, extra: str = "") -> Stack:
    return write_stack(
        root,
        f'[stack]\nname = "shop"\n\n[services.plain]\nrun = "python3 app.py"\n'
        f'source = "plain"\nbuild = {json.dumps(build)}\nenv = {{ LOG_LEVEL = "info" }}\n{extra}',
    )


def test_the_build_runs_in_the_release_and_its_output_is_recorded(
    tmp_path: Path, plain: Path, releases: Releases
) -> None:
    (plain / "build.py").write_text(BUILD)
    release = releases.make(build_stack(tmp_path, f"{PYTHON} build.py"), "plain", version="7")
    assert (release.built, release.build_output) == (True, "hello build\n")
    assert (release.path / "built.txt").read_text() == "7 info"
    assert not (plain / "built.txt").exists()
    assert release.content_hash == content_hash(plain)  # the source's, before the build


def test_a_failed_build_leaves_nothing_and_says_why(
    tmp_path: Path, plain: Path, releases: Releases, state: Path
) -> None:
    (plain / "build.py").write_text("print('compiling app.py')\nraise SystemExit(3)\n")
    stack = build_stack(tmp_path, f"{PYTHON} build.py")
    with pytest.raises(ReleaseError) as caught:
        releases.make(stack, "plain", version="7")
    assert str(caught.value) == (
        f"the build of release 7 of plain ({PYTHON} build.py) failed with exit code 3; "
        "nothing was kept. The end of its output:\ncompiling app.py"
    )
    assert caught.value.output == "compiling app.py\n"
    assert list((state / "releases" / "plain").iterdir()) == []
    assert releases.list("plain") == []


def test_a_build_that_outlives_its_timeout_is_stopped(
    tmp_path: Path, plain: Path, releases: Releases, state: Path
) -> None:
    (plain / "build.py").write_text("import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    stack = build_stack(tmp_path, f"{PYTHON} build.py")
    with pytest.raises(ReleaseError) as caught:
        releases.make(stack, "plain", version="7", build_timeout=0.5)
    assert str(caught.value).startswith(
        f"the build of release 7 of plain ({PYTHON} build.py) timed out after 0.5s"
    )
    assert caught.value.output == "started\n"
    assert list((state / "releases" / "plain").iterdir()) == []


def test_a_build_that_cannot_start_is_refused(
    tmp_path: Path, plain: Path, releases: Releases
) -> None:
    with pytest.raises(ReleaseError) as caught:
        releases.make(build_stack(tmp_path, "no-such-builder --all"), "plain", version="7")
    assert str(caught.value) == (
        "the build of release 7 of plain could not start: No such file or directory: "
        "no-such-builder; nothing was kept"
    )


def test_a_shell_service_builds_through_the_shell(
    tmp_path: Path, plain: Path, releases: Releases
) -> None:
    stack = build_stack(tmp_path, "echo $RELEASE > built.txt && echo done", "shell = true\n")
    release = releases.make(stack, "plain", version="7")
    assert (release.path / "built.txt").read_text() == "7\n"
    assert release.build_output == "done\n"


# --- the record -------------------------------------------------------------------------

SECRET_VALUE = "hunter2-correct-horse-7f3a"


def test_secrets_are_recorded_as_references_never_values(
    tmp_path: Path, plain: Path, state: Path, releases: Releases
) -> None:
    LocalStore(state, "dev").set("x", SECRET_VALUE, "alice")
    stack = write_stack(
        tmp_path,
        '[stack]\nname = "shop"\n\n[services.plain]\nrun = "python3 app.py"\nsource = "plain"\n'
        '[services.plain.secrets]\nX = "secret://local/x"\n'
        'Y = { ref = "env://API_TOKEN", file = "token", refresh = "5m" }\n',
    )
    release = releases.make(stack, "plain")
    assert release.config["secrets"] == {
        "X": {"ref": "secret://local/x", "file": None, "refresh": None},
        "Y": {"ref": "env://API_TOKEN", "file": "token", "refresh": 300.0},
    }
    record = (state / "releases" / "plain" / f"{release.version}.json").read_text()
    assert '"ref": "secret://local/x"' in record
    assert SECRET_VALUE not in record
    assert all(SECRET_VALUE not in text for text in files(release.path).values())


def test_the_recorded_config_is_the_service_as_the_environment_resolves_it(
    tmp_path: Path, repo: Path
) -> None:
    stack = write_stack(
        tmp_path,
        SERVICES + "\n[environments.production.services.web]\ninstances = 4\n"
        'env = { LOG_LEVEL = "warn" }\n',
    )
    production = Releases(tmp_path / ".sqlifier" / "production", "production").make(stack, "web")
    dev = Releases(tmp_path / ".sqlifier" / "dev", "dev").make(stack, "web")
    assert (production.env, production.config["instances"]) == ("production", 4)
    assert production.config["env"] == {"LOG_LEVEL": "warn"}
    assert (dev.config["instances"], dev.config["env"]) == (2, {"LOG_LEVEL": "info"})
    assert production.config["source"] == str(repo / "services" / "web")
    assert production.config["run"] == "python3 app.py"


def test_who_and_why_are_recorded(tmp_path: Path, plain: Path, releases: Releases) -> None:
    stack = write_stack(tmp_path)
    assert releases.make(stack, "plain", version="1", reason="fix #12").created_by == "carol"
    release = releases.make(stack, "plain", version="2", who="dave", reason="hotfix")
    assert (release.created_by, release.reason, release.status) == ("dave", "hotfix", "built")


def test_the_record_round_trips_through_json(
    tmp_path: Path, repo: Path, releases: Releases, state: Path
) -> None:
    release = releases.make(write_stack(tmp_path), "web", version="v1", reason="launch")
    record = json.loads((state / "releases" / "web" / "v1.json").read_text())
    assert record == release.to_json()
    assert record["status"] == "built"
    assert Release.from_json(record) == release
    assert Releases(state, "dev").get("web", "v1") == release


def test_an_unknown_service_is_refused_with_the_known_ones(
    tmp_path: Path, releases: Releases
) -> None:
    stack = write_stack(tmp_path)
    with pytest.raises(ReleaseError) as caught:
        releases.make(stack, "shop", version="1")
    assert str(caught.value) == (
        f"no service 'shop' in {stack.path}; services: web, whole, api, plain"
    )


def test_a_missing_source_is_refused(tmp_path: Path, releases: Releases) -> None:
    with pytest.raises(ReleaseError) as caught:
        releases.make(write_stack(tmp_path), "plain")
    assert str(caught.value) == (
        f"the source of plain, {tmp_path / 'plain'}, does not exist: set `source` to the "
        "service's folder or git repository"
    )


def test_a_git_ref_for_a_plain_folder_is_refused(
    tmp_path: Path, plain: Path, releases: Releases
) -> None:
    with pytest.raises(ReleaseError) as caught:
        releases.make(write_stack(tmp_path), "plain", ref="v1")
    assert str(caught.value) == (
        f"cannot release plain from git ref 'v1': its source {plain} is not in a git "
        "repository; leave out the ref to snapshot the folder"
    )


# --- listing, marking, pruning ----------------------------------------------------------


def make_versions(stack: Stack, releases: Releases, plain: Path, *versions: str) -> None:
    for version in versions:
        (plain / "app.py").write_text(f"print({version!r})\n")
        releases.make(stack, "plain", version=version)


def test_list_is_newest_first(tmp_path: Path, plain: Path, releases: Releases) -> None:
    make_versions(write_stack(tmp_path), releases, plain, "b", "c", "a")
    assert [r.version for r in releases.list("plain")] == ["a", "c", "b"]
    assert releases.list("web") == []


def test_get_names_the_known_versions(tmp_path: Path, plain: Path, releases: Releases) -> None:
    with pytest.raises(ReleaseError) as caught:
        releases.get("plain", "v9")
    assert str(caught.value) == "no release v9 of plain in dev; plain has no releases yet"
    make_versions(write_stack(tmp_path), releases, plain, "1", "2")
    with pytest.raises(ReleaseError) as caught:
        releases.get("plain", "v9")
    assert str(caught.value) == "no release v9 of plain in dev; releases: 2, 1"
    assert releases.get("plain", "1").version == "1"


def test_mark_rewrites_the_record(
    tmp_path: Path, plain: Path, releases: Releases, state: Path
) -> None:
    make_versions(write_stack(tmp_path), releases, plain, "1")
    live = releases.mark("plain", "1", "live")
    assert (live.status, live.live_at) == (ReleaseStatus.LIVE, releases.list("plain")[0].live_at)
    failed = releases.mark("plain", "1", "failed", error="error_rate 5% > 1%")
    assert failed.status == "failed"
    assert failed.live_at == live.live_at
    assert failed.details == {"error": "error_rate 5% > 1%"}
    assert Releases(state, "dev").get("plain", "1") == failed
    record = json.loads((state / "releases" / "plain" / "1.json").read_text())
    assert (record["status"], record["details"]) == ("failed", {"error": "error_rate 5% > 1%"})


def test_mark_refuses_an_unknown_status(tmp_path: Path, plain: Path, releases: Releases) -> None:
    make_versions(write_stack(tmp_path), releases, plain, "1")
    with pytest.raises(ReleaseError) as caught:
        releases.mark("plain", "1", "deployed")
    assert str(caught.value) == (
        "cannot mark release 1 of plain 'deployed': the statuses are 'built', 'live', "
        "'failed', 'rolled back', 'superseded'"
    )
    assert releases.get("plain", "1").status == "built"


def test_pruning_keeps_the_newest_and_the_live_and_previous_live_ones(
    tmp_path: Path, plain: Path, releases: Releases, state: Path
) -> None:
    stack = write_stack(tmp_path)
    for version in ("r1", "r2", "r3"):
        make_versions(stack, releases, plain, version)
        for earlier in releases.list("plain")[1:]:
            if earlier.status == "live":
                releases.mark("plain", earlier.version, "superseded")
        releases.mark("plain", version, "live")
    make_versions(stack, releases, plain, "r4", "r5", "r6", "r7", "r8")
    assert [r.version for r in releases.list("plain")] == [
        "r8",
        "r7",
        "r6",
        "r5",
        "r4",
        "r3",  # live
        "r2",  # live before it: the rollback target
    ]
    assert not (state / "releases" / "plain" / "r1").exists()
    assert not (state / "releases" / "plain" / "r1.json").exists()


def test_how_many_are_kept_is_configurable(tmp_path: Path, plain: Path, state: Path) -> None:
    releases = Releases(state, "dev", keep=2, clock=Clock())
    make_versions(write_stack(tmp_path), releases, plain, "1", "2", "3")
    assert [r.version for r in releases.list("plain")] == ["3", "2"]
    assert sorted(p.name for p in (state / "releases" / "plain").iterdir()) == [
        ".lock",
        "2",
        "2.json",
        "3",
        "3.json",
    ]


def test_releases_table(tmp_path: Path, repo: Path, plain: Path, releases: Releases) -> None:
    stack = write_stack(tmp_path)
    web = releases.make(stack, "web", version="v1", who="alice", reason="launch")
    snapshot = releases.make(stack, "plain", version="2.0.1", who="bob")
    sha = web.commit[:12] if web.commit else ""
    assert releases_table([snapshot, web]) == (
        "VERSION  STATUS  CREATED               BY     COMMIT        BUILT  REASON\n"
        "2.0.1    built   2023-11-14 22:13:22Z  bob    -             -      -\n"
        f"v1       built   2023-11-14 22:13:21Z  alice  {sha}  -      launch"
    )


def test_a_relative_state_folder_is_taken_from_the_current_one(
    tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    release = Releases(Path(".sqlifier/dev"), "dev").make(write_stack(tmp_path), "web")
    assert release.path == tmp_path / ".sqlifier" / "dev" / "releases" / "web" / release.version
    assert files(release.path)["app.py"] == "print('v2')\n"


def test_a_name_that_is_no_service_name_reads_nothing(releases: Releases) -> None:
    with pytest.raises(ReleaseError) as caught:
        releases.list("../web")
    assert str(caught.value) == (
        "'../web' is not a service name (lower-case letters, digits and '-', starting with a letter)"
    )


def test_an_option_is_no_git_ref(tmp_path: Path, repo: Path, releases: Releases) -> None:
    with pytest.raises(ReleaseError) as caught:
        releases.make(write_stack(tmp_path), "web", ref="--all")
    assert str(caught.value).startswith("no git ref '--all' in ")


def test_the_same_files_with_another_config_are_another_release(
    tmp_path: Path, plain: Path, releases: Releases
) -> None:
    stack = write_stack(tmp_path)
    first = releases.make(stack, "plain")
    assert first.version == first.content_hash
    # Only the stack file changed: a release of its own, labelled with its config's hash.
    changed = write_stack(
        tmp_path, SERVICES.replace('source = "plain"', 'source = "plain"\nenv = { MODE = "fast" }')
    )
    second = releases.make(stack=changed, service="plain")
    assert second.version.startswith(f"{first.content_hash}+")
    assert len(second.version) == len(first.version) + 9
    assert second.config["env"] == {"MODE": "fast"}
    assert releases.make(changed, "plain") == second  # made again: the same release
    assert releases.make(stack, "plain") == first
    # A version named by the caller is immutable, config included.
    releases.make(stack, "plain", version="2.0")
    with pytest.raises(ReleaseError) as caught:
        releases.make(changed, "plain", version="2.0")
    assert str(caught.value) == (
        "release 2.0 of plain already exists with other config (the stack file changed); "
        "releases are immutable — choose another --version"
    )


# --- the release `up` starts ------------------------------------------------------------


def test_up_records_its_source_as_the_live_completed_release(
    tmp_path: Path, plain: Path, releases: Releases
) -> None:
    stack = write_stack(tmp_path)
    release, what = releases.start(stack, "plain", "carol")
    assert what == "new"
    # Named as a deploy without --version would name it, after "up-": the content hash.
    assert release.version == f"up-{content_hash(plain)}"
    assert release.status is ReleaseStatus.LIVE and release.live_at is not None
    assert release.details["started_by"] == "up"
    assert release.details["completed_at"] is not None  # a previous_stable to come
    assert (release.reason, release.created_by) == ("started by sqlifier up", "carol")
    assert release.config["run"] == "python3 app.py"
    assert files(release.path) == {"app.py": "print('plain')\n"}
    assert follows_source(release)
    assert [r.version for r in releases.list("plain")] == [release.version]


def test_up_from_git_is_labelled_by_the_commit_like_a_deploy(
    tmp_path: Path, repo: Path, releases: Releases
) -> None:
    release, what = releases.start(write_stack(tmp_path), "web")
    assert (what, release.version) == ("new", f"up-{commit_of(repo, 'HEAD')[:12]}")
    assert release.commit == commit_of(repo, "HEAD")


def test_a_second_up_of_the_same_source_records_nothing_new(
    tmp_path: Path, plain: Path, releases: Releases
) -> None:
    stack = write_stack(tmp_path)
    first, _ = releases.start(stack, "plain")
    again, what = releases.start(stack, "plain")
    assert (what, again) == ("unchanged", first)
    assert len(releases.list("plain")) == 1


def test_up_of_a_changed_source_records_a_new_release_and_keeps_the_old(
    tmp_path: Path, plain: Path, releases: Releases
) -> None:
    stack = write_stack(tmp_path)
    first, _ = releases.start(stack, "plain")
    (plain / "app.py").write_text("print('changed')\n")
    second, what = releases.start(stack, "plain")
    assert what == "new" and second.version == f"up-{content_hash(plain)}" != first.version
    statuses = {r.version: r.status for r in releases.list("plain")}
    assert statuses == {first.version: ReleaseStatus.SUPERSEDED, second.version: "live"}
    # A changed config alone is a new release too: its version carries the config's hash.
    third, what = releases.start(write_stack(tmp_path, SERVICES + 'env = { X = "1" }\n'), "plain")
    assert what == "new" and third.version.startswith(f"{second.version}+")


def test_once_a_deploy_made_a_release_live_up_keeps_it(
    tmp_path: Path, plain: Path, releases: Releases
) -> None:
    stack = write_stack(tmp_path)
    first, _ = releases.start(stack, "plain")
    # A deploy of the same source makes a release of its own.
    assert releases.make(stack, "plain").version == content_hash(plain)
    deployed = releases.make(stack, "plain", version="v2")
    # What a completed deploy records (executor's WentLive).
    releases.mark("plain", first.version, ReleaseStatus.SUPERSEDED)
    releases.mark("plain", "v2", ReleaseStatus.LIVE, deploy_id="d1", completed_at=1.0)
    (plain / "app.py").write_text("print('edited after the deploy')\n")
    kept, what = releases.start(stack, "plain")
    assert (what, kept.version) == ("kept", deployed.version)
    assert len(releases.list("plain")) == 3
    # Rolled back to, the release `up` recorded is a deployed one: up no longer follows
    # the source.
    back = releases.mark(
        "plain", first.version, ReleaseStatus.LIVE, deploy_id="r1", rolled_back_from="v2"
    )
    assert not follows_source(back)


def test_uncommitted_changes_of_a_git_source_are_named_for_up_to_warn(
    tmp_path: Path, repo: Path, plain: Path, releases: Releases
) -> None:
    stack = write_stack(tmp_path)
    assert releases.uncommitted(stack, "web") == []
    web = repo / "services" / "web"
    (web / "app.py").write_text("print('edited')\n")
    (web / "new.py").write_text("print('new')\n")
    (web / "__pycache__").mkdir()
    (web / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
    (repo / "services" / "api" / "api.py").unlink()  # another service's folder
    assert releases.uncommitted(stack, "web") == ["app.py", "new.py"]
    assert releases.uncommitted(stack, "plain") == []  # no git: the snapshot is the folder
