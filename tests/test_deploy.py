"""Tests of the operator files in deploy/: the Prometheus rules and their unit tests,
the Grafana dashboard, and the systemd unit with its environment file."""

import configparser
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from smsworker.cli import main
from smsworker.metrics import Metrics, SyncMetrics
from smsworker.worker import SHUTDOWN_GRACE_S

DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy"
ALERTS = DEPLOY_DIR / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY_DIR / "prometheus" / "alerts_test.yml"
DASHBOARD = DEPLOY_DIR / "grafana" / "smsworker.json"
UNIT = DEPLOY_DIR / "systemd" / "smsworker.service"
ENV_EXAMPLE = DEPLOY_DIR / "systemd" / "smsworker.env.example"
DEPLOY_README = DEPLOY_DIR / "README.md"

METRIC_NAME = re.compile(r"\bsmsworker_[a-z0-9_]*[a-z0-9]")
# The sample names each metric type exports, as suffixes of the family name.
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
}
# A command line in backticks: `smsworker dead-letters retry --all`.
COMMAND_LINE = re.compile(r"`(smsworker [^`]+)`")
ALERT_NAMES = {
    "SmsworkerLagHigh",
    "SmsworkerLagCritical",
    "SmsworkerNoActiveWorker",
    "SmsworkerDeadLetters",
    "SmsworkerReplyFailures",
    "SmsworkerRepliesPending",
    "SmsworkerDown",
    "SmsworkerNotPolling",
    "SmsworkerSyncStale",
}
GRID_COLUMNS = 24


def run_promtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return subprocess.run(
        [promtool, *arguments], capture_output=True, text=True, timeout=60, check=False
    )


def exported_metric_names() -> set[str]:
    """Return every sample name the worker and the sync can export, labelled series included."""
    names: set[str] = set()
    registry = Metrics().registry
    SyncMetrics(registry)
    for family in registry.collect():
        # A metric with labels has no samples until a label set is used, so
        # the family name and its type give the names too.
        names.update(family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


def alert_rules() -> dict[str, str]:
    """Split alerts.yml into the text of each rule, keyed by alert name."""
    chunks = re.split(r"^\s*- alert: ", ALERTS.read_text(), flags=re.MULTILINE)[1:]
    return {chunk.split("\n", 1)[0].strip(): chunk for chunk in chunks}


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Yield the panels and the panels inside collapsed rows."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def read_unit() -> configparser.ConfigParser:
    # strict=False accepts keys that systemd allows to repeat.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    # systemd keys are case-sensitive, and configparser lowercases them by default.
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def read_env_example() -> dict[str, str]:
    """Return the variables of the example, those commented out included."""
    variables = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"#?([A-Z][A-Z0-9_]*)=(.*)", line)
        if match:
            variables[match.group(1)] = match.group(2)
    return variables


def environment_variables(command: click.Command) -> set[str]:
    """Return the environment variables that a command and its subcommands read."""
    names = {param.envvar for param in command.params if isinstance(param.envvar, str)}
    if isinstance(command, click.Group):
        for subcommand in command.commands.values():
            names |= environment_variables(subcommand)
    return names


# Prometheus rules.


def test_alert_rules_pass_promtool_check() -> None:
    result = run_promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_promtool_unit_tests() -> None:
    result = run_promtool("test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_cover_expected_alerts() -> None:
    assert set(alert_rules()) == ALERT_NAMES


@pytest.mark.parametrize("alert", sorted(ALERT_NAMES))
def test_alert_rule_has_severity_and_help(alert: str) -> None:
    rule = alert_rules()[alert]

    assert re.search(r"^\s+severity: (warning|critical)$", rule, re.MULTILINE), rule
    assert re.search(r"^\s+summary: \S", rule, re.MULTILINE), rule
    assert re.search(r"^\s+description: \S", rule, re.MULTILINE), rule


# Metric names and commands the files refer to.


@pytest.mark.parametrize("path", [ALERTS, DASHBOARD], ids=lambda path: path.name)
def test_deploy_file_uses_exported_metrics(path: Path) -> None:
    used = set(METRIC_NAME.findall(path.read_text()))
    assert used, f"{path.name} names no smsworker metric"

    missing = used - exported_metric_names()
    assert not missing, f"{path.name} uses metrics that smsworker does not export: {missing}"


@pytest.mark.parametrize("path", [ALERTS, DEPLOY_README, ENV_EXAMPLE], ids=lambda path: path.name)
def test_deploy_file_names_existing_commands(path: Path) -> None:
    command_lines = COMMAND_LINE.findall(path.read_text())
    assert command_lines, f"{path.name} names no smsworker command"

    for command_line in command_lines:
        words = command_line.split()[1:]
        command: click.Command = main
        context = click.Context(main)
        while words and isinstance(command, click.Group):
            subcommand = command.get_command(context, words[0])
            assert subcommand is not None, f"{path.name}: `{command_line}` has no such command"
            command = subcommand
            words = words[1:]
        options = {
            option
            for param in command.get_params(context)
            for option in param.opts + param.secondary_opts
        }
        for word in words:
            if word.startswith("--"):
                assert word in options, f"{path.name}: `{command_line}` has no option {word}"


# Grafana dashboard.


def test_dashboard_identity() -> None:
    dashboard = load_dashboard()

    assert dashboard["uid"] == "smsworker"
    assert dashboard["schemaVersion"] == 39


def test_dashboard_datasource_variable() -> None:
    variables = {variable["name"]: variable for variable in load_dashboard()["templating"]["list"]}

    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_dashboard_panel_ids_unique() -> None:
    ids = [panel["id"] for panel in all_panels(load_dashboard()["panels"])]

    assert len(ids) == len(set(ids)), sorted(ids)


def test_dashboard_queries_use_datasource_variable() -> None:
    for panel in all_panels(load_dashboard()["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_dashboard_queries_pass_promtool_check(tmp_path: Path) -> None:
    # promtool 2.42 checks queries only inside rule files, so each query becomes
    # a recording rule named after its panel id and refId.
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for panel in all_panels(load_dashboard()["panels"]):
        for target in panel.get("targets", []):
            lines.append(f"      - record: panel_{panel['id']}_{target['refId']}")
            lines.append(f"        expr: {json.dumps(target['expr'])}")
    rules = tmp_path / "dashboard.yml"
    rules.write_text("\n".join(lines) + "\n")

    result = run_promtool("check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_panels_fit_without_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels(load_dashboard()["panels"]):
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


# systemd unit and its environment file.


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("Unit", "After", "network-online.target postgresql.service"),
        ("Unit", "Wants", "network-online.target"),
        ("Service", "Type", "simple"),
        ("Service", "User", "smsworker"),
        ("Service", "EnvironmentFile", "/etc/smsworker/smsworker.env"),
        ("Service", "ExecStartPre", "/opt/smsworker/venv/bin/smsworker migrate"),
        ("Service", "ExecStart", "/opt/smsworker/venv/bin/smsworker run"),
        ("Service", "Restart", "on-failure"),
        ("Service", "RestartSec", "5"),
        ("Service", "TimeoutStopSec", "30"),
        ("Service", "KillSignal", "SIGTERM"),
        ("Service", "NoNewPrivileges", "yes"),
        ("Service", "ProtectSystem", "strict"),
        ("Service", "ProtectHome", "yes"),
        ("Service", "PrivateTmp", "yes"),
        ("Install", "WantedBy", "multi-user.target"),
    ],
)
def test_unit_setting(section: str, key: str, value: str) -> None:
    unit = read_unit()

    assert unit.has_option(section, key), f"[{section}] has no {key}="
    assert unit.get(section, key) == value


def test_unit_stop_timeout_covers_shutdown_grace() -> None:
    timeout_s = float(read_unit().get("Service", "TimeoutStopSec"))

    assert timeout_s > SHUTDOWN_GRACE_S


@pytest.mark.parametrize(
    "name", ["DATABASE_URL", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "SMSWORKER_METRICS_PORT"]
)
def test_env_example_sets_variable(name: str) -> None:
    assert read_env_example().get(name), f"{ENV_EXAMPLE.name} sets no {name}"


def test_env_example_names_only_known_variables() -> None:
    unknown = set(read_env_example()) - environment_variables(main)

    assert not unknown, f"smsworker reads none of {unknown}"


def test_env_example_mentions_chmod_600() -> None:
    assert "chmod 600" in ENV_EXAMPLE.read_text()
