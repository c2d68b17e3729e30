"""`sqlifier rules test` as a user runs it: samples in, actions out, --expect for CI."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import ROOT, run_sqlifier

SHOP = ROOT / "examples" / "shop"
STORY = ["rules/seed.sql", "--samples", "samples/seed-story.csv", "--stack", "sqlifier.toml"]


def test_the_seed_story_replays_with_exact_times() -> None:
    result = run_sqlifier("rules", "test", *STORY, "--json", cwd=SHOP)
    assert result.returncode == 0, result.stderr
    actions = json.loads(result.stdout)
    assert [(a["t"], a["rule"], a["action"], a["detail"]) for a in actions] == [
        (240, "rules/seed.sql:6", "SCALE", "2 -> 4"),
        (330, "rules/seed.sql:13", "ROLLBACK", "current -> previous_stable"),
        (420, "rules/seed.sql:6", "SCALE", "4 -> 6"),
        (600, "rules/seed.sql:6", "SCALE", "6 -> 8"),
    ]
    assert actions[0]["reason"] == "high_cpu(>80%): 92% for 3m"


def test_expect_passes_on_the_recorded_actions_and_fails_on_a_difference(tmp_path: Path) -> None:
    expected = SHOP / "samples" / "seed-story.expected.json"
    assert (
        run_sqlifier("rules", "test", *STORY, "--expect", str(expected), cwd=SHOP).returncode == 0
    )
    changed = json.loads(expected.read_text())
    changed[0]["t"] = 239
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(changed))
    result = run_sqlifier("rules", "test", *STORY, "--expect", str(wrong), cwd=SHOP)
    assert result.returncode == 1
    assert "action 1: expected 239 | rules/seed.sql:6" in result.stderr


def test_expect_reads_csv_and_ignores_an_empty_reason(tmp_path: Path) -> None:
    expected = tmp_path / "expected.csv"
    expected.write_text(
        "t,rule,service,action,detail,reason\n"
        "240,rules/seed.sql:6,image-processor-svc,SCALE,2 -> 4,\n"
        "330,rules/seed.sql:13,payment-gateway,ROLLBACK,current -> previous_stable,\n"
    )
    result = run_sqlifier(
        "rules", "test", *STORY, "--until", "400", "--expect", str(expected), cwd=SHOP
    )
    assert result.returncode == 0, result.stderr


def test_expect_refuses_a_file_that_is_neither_actions_json_nor_their_csv(
    tmp_path: Path,
) -> None:
    expected = tmp_path / "expected.txt"
    for text in ("garbage\n", "", "{}\n", "null\n"):
        expected.write_text(text)
        result = run_sqlifier("rules", "test", *STORY, "--expect", str(expected), cwd=SHOP)
        assert result.returncode == 1, (text, result.stderr)
        assert "expected.txt:1: expected the JSON of rules test --json, or CSV" in result.stderr


def test_explain_prints_the_decisions_not_to_act() -> None:
    result = run_sqlifier(
        "rules", "test", *STORY, "--until", "250", "--explain", "--json", cwd=SHOP
    )
    out = json.loads(result.stdout)
    outcomes = [(d["t"], d["outcome"]) for d in out["decisions"]]
    assert (60, "pending") in outcomes and (240, "fired") in outcomes
    assert [a["t"] for a in out["actions"]] == [240]


def test_iso_times_come_back_as_iso_times(tmp_path: Path) -> None:
    samples = tmp_path / "s.csv"
    rows = ["t,service,signal,value,message"]
    rows += [f"2026-11-26T10:{s // 60:02d}:{s % 60:02d}Z,web,cpu,95," for s in range(0, 300, 20)]
    samples.write_text("\n".join(rows) + "\n")
    rules = tmp_path / "r.sql"
    rules.write_text("RULE hot ON cpu() > 90% FOR 2m DO RESTART service.name;\n")
    result = run_sqlifier(
        "rules", "test", str(rules), "--samples", str(samples), "--json", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert [a["t"] for a in json.loads(result.stdout)] == [
        "2026-11-26T10:02:00Z",
        "2026-11-26T10:04:00Z",
    ]
    # the clock stops at the last sample (10:04:40)


def test_bad_samples_name_the_line_and_what_is_valid(tmp_path: Path) -> None:
    rules = tmp_path / "r.sql"
    rules.write_text("ON cpu() > 90% DO RESTART service.name;\n")
    cases = {
        "t,service,signal,value\n0,web,cpux,1\n": "s.csv:2: unknown signal 'cpux'; valid: cpu, memory",
        "t,service,signal,value\n0,web,cpu,lots\n": "s.csv:2: the value 'lots' is not a number",
        "t,service,signal,value\nsoon,web,cpu,1\n": "s.csv:2: 'soon' is neither seconds from 0 nor an ISO 8601 time",
        "time,svc,sig,val\n": "s.csv:1: the header must be t,service,signal,value,message",
        "t,service,signal,value\n0,web,log,loud\n": "s.csv:2: 'loud' is not a log level; valid: debug, info",
        "t,service,signal,value\n5,web,cpu,1\n100000000,web,cpu,1\n": "s.csv: the replay would run 1,157 days of virtual time, from second 0 to the last sample; rules test replays at most 31 days",
        "t,service,signal,value\n1970-01-01T00:00:00Z,web,cpu,1\n2100-01-01T00:00:00Z,web,cpu,1\n": "s.csv: the replay would run 47,482 days of virtual time, from the first sample",
    }
    for text, message in cases.items():
        (tmp_path / "s.csv").write_text(text)
        result = run_sqlifier("rules", "test", "r.sql", "--samples", "s.csv", cwd=tmp_path)
        assert result.returncode == 1
        assert message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_rules_with_errors_are_refused_like_check(tmp_path: Path) -> None:
    (tmp_path / "r.sql").write_text("ON cpu() > 90% FOR 3 minutes DO RESTART service.name;\n")
    (tmp_path / "s.csv").write_text("t,service,signal,value\n0,web,cpu,1\n")
    result = run_sqlifier("rules", "test", "r.sql", "--samples", "s.csv", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("r.sql:1:20: error: expected a duration after FOR")


def test_live_commands_say_when_the_agent_is_not_running() -> None:
    result = run_sqlifier("rules", "list", cwd=SHOP)
    assert result.returncode == 1
    assert "the agent of shop (dev) is not running" in result.stderr
