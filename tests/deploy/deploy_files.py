"""Reading deploy/: the dashboard's and the alert rules' PromQL, and DRIFTD_* names vs Settings.

Shared by the static checks in tests/deploy and by the live check against a real Prometheus in
tests/integration/test_prometheus_queries.py, so both look at exactly the same expressions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import yaml
from pydantic import BaseModel

from driftd.settings.root import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "driftd.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"

#: Grafana's built-in interval variables, replaced by durations Prometheus accepts. A minute
#: covers several scrapes of a 1 s test Prometheus and of a 15 s production one alike, and
#: reaches back before the test's Prometheus started (the annotations look back one interval).
GRAFANA_INTERVALS = {
    "$__rate_interval": "1m",
    "$__interval_ms": "60000",
    "$__interval": "1m",
    "$__range_s": "300",
    "$__range": "5m",
}
#: The dashboard's own variables, as a user who picked "All" would have them.
ALL_VALUES = {"job": ".*", "instance": ".*", "topic": ".*"}

_COMPARISONS = {"==", "!=", ">", "<", ">=", "<="}
_SET_OPERATORS = {"and", "or", "unless"}
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\s*\)$")


@dataclass(frozen=True)
class Query:
    """One PromQL expression of the dashboard and where it sits (for error messages)."""

    where: str
    expr: str


def load_yaml(path: Path) -> Any:
    """One YAML document."""
    return yaml.safe_load(path.read_text())


def dashboard() -> dict[str, Any]:
    """The Grafana dashboard JSON."""
    return json.loads(DASHBOARD.read_text())


def dashboard_queries(board: Mapping[str, Any] | None = None) -> list[Query]:
    """Every PromQL expression in the dashboard: panel targets, annotations, query variables.

    A ``label_values(selector, label)`` variable query (Grafana's, not PromQL) becomes
    ``group by (label) (selector)``: the same series, so the same check applies.
    """
    board = dashboard() if board is None else board
    queries = [
        Query(f"panel {panel['id']} {panel['title']!r} target {target['refId']}", target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]
    for annotation in board["annotations"]["list"]:
        if "expr" in annotation:
            queries.append(Query(f"annotation {annotation['name']!r}", annotation["expr"]))
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = _LABEL_VALUES.match(variable["definition"])
        assert match, f"variable {variable['name']}: not a label_values() query"
        promql = f"group by ({match['label']}) ({match['selector']})"
        queries.append(Query(f"variable ${variable['name']}", promql))
    return queries


def substitute(expr: str, values: Mapping[str, str] = ALL_VALUES) -> str:
    """``expr`` with Grafana's interval variables and the dashboard variables replaced."""
    for name, duration in GRAFANA_INTERVALS.items():
        expr = expr.replace(name, duration)
    for name, value in values.items():
        expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
    return expr


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of deploy/prometheus/alerts.yml."""
    groups = load_yaml(ALERTS)["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def walk(node: promql_parser.Expr) -> Iterator[promql_parser.Expr]:
    """``node`` and every expression below it."""
    yield node
    for name in ("expr", "lhs", "rhs", "vector_selector"):
        child = getattr(node, name, None)
        if isinstance(child, promql_parser.Expr):
            yield from walk(child)
    for child in getattr(node, "args", None) or []:
        if isinstance(child, promql_parser.Expr):
            yield from walk(child)


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    """Every series selector of ``expr`` (parsed: a syntax error raises ``ValueError``)."""
    return [
        n for n in walk(promql_parser.parse(expr)) if isinstance(n, promql_parser.VectorSelector)
    ]


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects."""
    return {selector.name for selector in selectors(expr) if selector.name}


def alert_signals(expr: str) -> list[str]:
    """The non-constant operands of every threshold comparison in an alert expression.

    ``a > 900 and on (job) b > 0`` gives ``[a, b]``; ``x < 0.8 * max_over_time(x[6h])`` gives
    both sides. These are what an alert watches: each must return data on a live system, even
    while the alert itself (rightly) does not fire.
    """
    found: list[str] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.ParenExpr):
            visit(node.expr)
        elif isinstance(node, promql_parser.BinaryExpr) and str(node.op) in _SET_OPERATORS:
            visit(node.lhs)
            visit(node.rhs)
        elif isinstance(node, promql_parser.BinaryExpr) and str(node.op) in _COMPARISONS:
            for side in (node.lhs, node.rhs):
                if not isinstance(side, promql_parser.NumberLiteral):
                    found.append(str(side))
        else:
            found.append(str(node))

    visit(promql_parser.parse(expr))
    return found


def settings_env_problems(names: Iterable[str]) -> list[str]:
    """Each ``DRIFTD_*`` name that is not a field of :class:`driftd.settings.root.Settings`.

    ``DRIFTD_SECTION__FIELD`` (nested delimiter ``__``) must name a section of Settings and a
    field (or alias, e.g. ``log.json``) of that section; deeper nesting must go on through
    nested models.
    """
    problems = []
    for name in names:
        if not name.startswith("DRIFTD_"):
            problems.append(f"{name}: not a DRIFTD_ variable")
            continue
        parts = name.removeprefix("DRIFTD_").lower().split("__")
        model: type[BaseModel] | None = Settings
        for part in parts:
            fields = {} if model is None else model.model_fields
            by_name = {alias: f for f in fields for alias in (f, fields[f].alias) if alias}
            if model is None or part not in by_name:
                problems.append(f"{name}: no settings field {part!r}")
                break
            annotation = fields[by_name[part]].annotation
            is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
            model = annotation if is_model else None
        else:
            if model is not None:
                problems.append(f"{name}: names a whole section, not a field")
    return problems


@dataclass(frozen=True)
class TorchrunLaunch:
    """A ``torchrun [options] --no-python driftd run`` command line, read back."""

    options: dict[str, str]
    program: list[str]

    def host_port(self, option: str) -> tuple[str, int]:
        """``options[option]`` as ``host:port``."""
        host, _, port = self.options[option].rpartition(":")
        return host, int(port)


def torchrun_launch(command: list[str]) -> TorchrunLaunch:
    """The options and program of torchrun's arguments (``--name=value`` options only).

    Raises:
        ValueError: An option is not in ``--name=value`` form, or ``--no-python`` is missing.
    """
    if "--no-python" not in command:
        raise ValueError(f"no --no-python in {command}")
    split = command.index("--no-python")
    options = {}
    for argument in command[:split]:
        name, equals, value = argument.partition("=")
        if not name.startswith("--") or not equals:
            raise ValueError(f"{argument!r}: not --name=value")
        options[name.removeprefix("--")] = value
    return TorchrunLaunch(options, command[split + 1 :])
