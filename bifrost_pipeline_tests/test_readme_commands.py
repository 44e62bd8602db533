"""The README's commands run as written after `make demo`; the demo and the backfill are quiet.

One module fixture builds, in a temporary directory, what a fresh clone holds after `make demo`: the
config, dagster.yaml and workspace.yaml of the repository, `.venv` (a link to the virtualenv running these
tests) and the state of a small demo, made by `bifrost-pipeline demo` itself in a subprocess (one day of
200 records instead of three of 4,000, to stay fast). Commands run with PYTHONPATH at this checkout, as
the virtualenv may be an editable install of another one, and without BIFROST_ANONYMIZE_KEY, DAGSTER_HOME
or the virtualenv on PATH, as in a new shell.
"""

import os
import re
import shlex
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from bifrost_pipeline.demo import DEMO_KEY, LINEAGE_URL

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARK = "### "  # printed before each README command, to split the block's output per command


def readme_command_blocks() -> list[str]:
    """The sh blocks of the README marked runnable with `<!-- commands: ... -->`."""
    return re.findall(r"<!-- commands: [^>]*-->\s*```sh\n(.*?)```", README.read_text(), re.S)


def fresh_shell_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {
        "BIFROST_ANONYMIZE_KEY", "DAGSTER_HOME", "BIFROST_PIPELINE_CONFIG", "VIRTUAL_ENV"
    }}
    venv_bin = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env["PYTHONPATH"] = str(ROOT)
    return env


def terminal(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run `cmd` as a user would and keep what the terminal shows (stdout and stderr interleaved)."""
    return subprocess.run(
        cmd, cwd=cwd, env=fresh_shell_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=600, check=False,
    )


def assert_quiet(output: str, max_lines: int) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert not [line for line in lines if "DEBUG" in line], output
    repeated = [line for line, n in Counter(lines).items() if n > 1 and not line.startswith("note: ")]
    assert not repeated, output
    assert len(lines) <= max_lines, output
    assert DEMO_KEY not in output  # the key's value never appears, even the demo's


@pytest.fixture(scope="module")
def after_demo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("clone")
    for name in ("bifrost_pipeline.yaml", "dagster.yaml", "workspace.yaml"):
        (repo / name).write_text((ROOT / name).read_text())
    (repo / ".venv").symlink_to(sys.prefix)
    demo = terminal(
        [sys.executable, "-m", "bifrost_pipeline.cli", "demo", "--days", "1", "--records-per-day", "200",
         "--proxy-requests", "3"],
        repo,
    )
    assert demo.returncode == 0, demo.stdout
    return repo, demo.stdout


def instance_of(repo: Path, monkeypatch) -> dg.DagsterInstance:
    # dagster.yaml's storage paths are relative: they resolve from the working directory, as for `make dev`.
    monkeypatch.chdir(repo)
    monkeypatch.setenv("DAGSTER_HOME", str(repo))
    return dg.DagsterInstance.get()


def test_the_demo_prints_one_line_per_run_and_a_summary(after_demo):
    _, output = after_demo
    # 2 raw days (yesterday, today) and 2 daily exports of yesterday: 4 runs, each on one line.
    assert len(re.findall(r"^   \[\d/\d\] ", output, re.M)) == 4, output
    assert "== done in" in output and "http://127.0.0.1:3000/runs" in output
    assert "note: BIFROST_ANONYMIZE_KEY is not set" in output
    assert LINEAGE_URL in output
    assert_quiet(output, max_lines=40)  # the analyst query's table included


def test_the_demo_fills_every_output(after_demo):
    repo, output = after_demo
    assert "record(s) landed by the proxy" in output and "Analyst query" in output
    con = duckdb.connect(str(repo / ".bifrost" / "warehouse.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM request_logs").fetchone()[0] >= 190
    finally:
        con.close()
    assert list((repo / ".bifrost" / "exports" / "daily-exports").rglob("_manifest.json"))


def test_the_demo_runs_keep_their_dagster_log(after_demo, monkeypatch):
    repo, _ = after_demo
    instance = instance_of(repo, monkeypatch)
    today = datetime.now(UTC).date()
    demo_keys = {(today - timedelta(days=1)).isoformat(), today.isoformat()}
    runs = [r for r in instance.get_runs() if r.tags.get("dagster/partition") in demo_keys]
    assert len(runs) == 4 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    for run in runs:
        records = instance.all_logs(run.run_id)
        kinds = {r.dagster_event.event_type for r in records if r.dagster_event}
        assert {dg.DagsterEventType.STEP_START, dg.DagsterEventType.ASSET_MATERIALIZATION} <= kinds
        if run.job_name == "raw_logs_job":  # the asset's own log line, which the terminal no longer shows
            assert any(re.search(r"\d+ valid, \d+ quarantined", r.user_message) for r in records)


def test_the_readme_commands_run_as_written(after_demo, monkeypatch):
    repo, _ = after_demo
    (block,) = readme_command_blocks()
    commands = [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    script = "".join(f"printf '%s\\n' {shlex.quote(MARK + c)}\n{c}\n" for c in commands)
    result = terminal(["bash", "-e", "-c", script], repo)
    ran = dict(re.findall(rf"^{MARK}(.*)\n((?:(?!{MARK}).*\n)*)", result.stdout, re.M))
    assert result.returncode == 0, f"`{list(ran)[-1] if ran else commands[0]}` failed:\n{result.stdout}"
    assert list(ran) == commands

    def output_of(command: str) -> str:
        (line,) = [c for c in commands if c.startswith(command)]
        return ran[line]

    assert "bifrost_pipeline.yaml: OK" in output_of("bifrost-pipeline validate-config")
    yesterday, today = (datetime.now(UTC) - timedelta(days=1)).date(), datetime.now(UTC).date()
    # without pipeline.start_date, the partitions start at the demo's first day
    assert f"daily UTC partitions from {yesterday} (the first day with data" in output_of("bifrost-pipeline validate")
    assert "note: BIFROST_ANONYMIZE_KEY is not set" in output_of("bifrost-pipeline validate-config")
    assert "== done in" in output_of("bifrost-pipeline backfill")
    assert_quiet(output_of("bifrost-pipeline backfill"), max_lines=12)
    assert output_of("bifrost-pipeline schema").startswith("message log_record {")
    assert "Launched backfill job" in output_of("DAGSTER_HOME=$PWD dagster job backfill")
    assert DEMO_KEY not in result.stdout

    # `dagster job backfill` submits; the runs wait in the queue for `make dev`'s daemon (not started here).
    instance = instance_of(repo, monkeypatch)
    (backfill,) = instance.get_backfills()
    assert backfill.partition_names == [yesterday.isoformat(), today.isoformat()]
    queued = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
    assert len(queued) == 2 and {r.status for r in queued} == {dg.DagsterRunStatus.QUEUED}


def test_the_readme_links_the_lineage_with_every_group_expanded(monkeypatch):
    from bifrost_pipeline.config import load_config
    from bifrost_pipeline.definitions import build_definitions

    assert LINEAGE_URL in README.read_text()
    monkeypatch.delenv("BIFROST_ANONYMIZE_KEY", raising=False)
    config = ROOT / "bifrost_pipeline.yaml"
    defs = build_definitions(load_config(config), str(config))
    groups = {spec.group_name for spec in defs.resolve_all_asset_specs()}
    expanded = LINEAGE_URL.split("expanded=", 1)[1].split(",")
    assert sorted(expanded) == sorted(f"global@global:{g}" for g in groups)
