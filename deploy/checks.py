"""Checks of deploy/ that no off-the-shelf validator covers.

deploy/check.sh runs each subcommand with the Python of .venv-deploy, which
has PyYAML. Every subcommand prints one line per problem and exits 1 if it
found any:

- kubernetes DIR: the shape of the KEDA objects, which have no bundled
  schema, and the rules the Deployments must follow (probes, grace period
  above the shutdown deadline, non-root, read-only root filesystem).
- kustomize RENDERED DIR: the kustomization renders every manifest in DIR
  except the example Secret.
- metrics ALERTS DASHBOARD: alert and panel expressions use only metrics that
  Attaché or RabbitMQ export.
- dashboard DASHBOARD PROMTOOL: the dashboard's structure, and that promtool
  parses every panel expression.
- compose COMPOSE: the services, loopback-only ports and mounted files of the
  Compose stack.
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

# Metrics the Attaché binaries export. Panels and alerts may also use
# rabbitmq_* (the rabbitmq_prometheus plugin) and up (Prometheus itself).
ATTACHE_METRICS = {
    "attache_tasks_accepted_total",
    "attache_api_requests_rejected_total",
    "attache_outbox_published_total",
    "attache_outbox_backlog",
    "attache_outbox_oldest_age_seconds",
    "attache_jobs_in_flight",
    "attache_jobs_consumed_total",
    "attache_jobs_dead_lettered_total",
    "attache_fetches_total",
    "attache_fetches_in_flight",
    "attache_fetch_bytes_total",
    "attache_callback_attempts_total",
    "attache_egress_requests_total",
    "attache_egress_failures_total",
    "attache_egress_in_flight",
    "attache_egress_member_healthy",
    "attache_egress_denied_total",
    "attache_jobs_requeued_total",
}
ATTACHE_HISTOGRAMS = {
    "attache_fetch_duration_seconds",
    "attache_callback_duration_seconds",
    "attache_database_batch_size",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring",
    "group_left", "group_right", "bool", "offset", "inf", "nan",
}

COMPOSE_SERVICES = {
    "postgres", "rabbitmq", "producer", "fetch-worker", "callback-worker",
    "prometheus", "grafana",
}

# Worker Deployment -> the job kind its ScaledObject must watch.
SCALED_WORKERS = {
    "attache-fetch-worker": "fetch",
    "attache-callback-worker": "callback",
}
KEDA_AUTH_PARAMETERS = {"host", "username", "password"}
EXAMPLE_SECRET_FILE = "secret.example.yaml"


class Problems:
    """Collects problems and reports them on stdout."""

    def __init__(self):
        self.count = 0

    def add(self, where, message):
        self.count += 1
        print(f"{where}: {message}")

    def exit_code(self):
        return 1 if self.count else 0


def load_documents(path):
    """Returns the non-empty YAML documents of `path`."""
    with open(path, encoding="utf-8") as file:
        return [doc for doc in yaml.safe_load_all(file) if doc]


def load_manifests(directory):
    """Returns (file name, document) for every manifest in `directory`."""
    manifests = []
    for path in sorted(Path(directory).glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_documents(path):
            manifests.append((path.name, doc))
    return manifests


def object_id(doc):
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def parse_seconds(text):
    """Parses a duration as the binaries do (250ms, 30s, 5m, 2h) into seconds."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    if not match:
        raise ValueError(f"invalid duration {text!r}: write it as 250ms, 30s, 5m or 2h")
    value, unit = int(match.group(1)), match.group(2)
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


# --- kubernetes ---------------------------------------------------------


def check_kubernetes(directory):
    problems = Problems()
    manifests = load_manifests(directory)
    by_kind = {}
    for file_name, doc in manifests:
        by_kind.setdefault(doc.get("kind"), []).append((file_name, doc))

    config = {}
    for _, doc in by_kind.get("ConfigMap", []):
        if doc["metadata"]["name"] == "attache-config":
            config = doc.get("data", {})
    if not config:
        problems.add(directory, "no ConfigMap named attache-config")
        return problems.exit_code()

    check_namespaces(manifests, by_kind, problems)
    deployments = {doc["metadata"]["name"]: (f, doc) for f, doc in by_kind.get("Deployment", [])}
    for name, (file_name, doc) in deployments.items():
        check_deployment(file_name, doc, config, problems)
    check_disruption_budgets(deployments, by_kind.get("PodDisruptionBudget", []), problems)
    check_keda(manifests, by_kind, deployments, config, problems)
    return problems.exit_code()


def check_namespaces(manifests, by_kind, problems):
    namespaces = {doc["metadata"]["name"] for _, doc in by_kind.get("Namespace", [])}
    for file_name, doc in manifests:
        if doc.get("kind") == "Namespace":
            continue
        namespace = doc.get("metadata", {}).get("namespace")
        if namespace not in namespaces:
            problems.add(
                f"{file_name} {object_id(doc)}",
                f"namespace {namespace!r} is not one of the manifests' Namespaces {sorted(namespaces)}",
            )


def check_deployment(file_name, doc, config, problems):
    where = f"{file_name} {object_id(doc)}"
    pod = doc["spec"]["template"]["spec"]
    containers = pod["containers"]
    if len(containers) != 1:
        problems.add(where, f"expected one container, found {len(containers)}")
        return
    container = containers[0]

    pod_security = pod.get("securityContext", {})
    if pod_security.get("runAsNonRoot") is not True:
        problems.add(where, "pod securityContext.runAsNonRoot must be true")
    container_security = container.get("securityContext", {})
    if container_security.get("readOnlyRootFilesystem") is not True:
        problems.add(where, "container securityContext.readOnlyRootFilesystem must be true")
    if container_security.get("allowPrivilegeEscalation") is not False:
        problems.add(where, "container securityContext.allowPrivilegeEscalation must be false")

    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        actual = container.get(probe, {}).get("httpGet", {}).get("path")
        if actual != path:
            problems.add(where, f"{probe} must GET {path}, found {actual!r}")

    resources = container.get("resources", {})
    for section in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in resources.get(section, {}):
                problems.add(where, f"resources.{section}.{resource} is missing")

    env = {item["name"]: item.get("value") for item in container.get("env", [])}
    for name, value in env.items():
        if name.endswith("_ADDR") and not str(value).startswith("0.0.0.0:"):
            problems.add(where, f"{name}={value} must bind 0.0.0.0 inside a container")
    if "ATTACHE_ADMIN_ADDR" not in env:
        problems.add(where, "ATTACHE_ADMIN_ADDR is not set, so the admin server binds 127.0.0.1")

    grace = pod.get("terminationGracePeriodSeconds", 30)
    deadline = parse_seconds(config.get("ATTACHE_SHUTDOWN_DEADLINE", "30s"))
    if grace <= deadline:
        problems.add(
            where,
            f"terminationGracePeriodSeconds {grace} must exceed ATTACHE_SHUTDOWN_DEADLINE ({deadline:g} s)",
        )


def check_disruption_budgets(deployments, budgets, problems):
    for name, (file_name, doc) in deployments.items():
        pod_labels = doc["spec"]["template"]["metadata"]["labels"]
        covered = any(
            budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
            for _, budget in budgets
        )
        if not covered:
            problems.add(f"{file_name} {object_id(doc)}", "no PodDisruptionBudget selects its pods")


def check_keda(manifests, by_kind, deployments, config, problems):
    prefix = config.get("ATTACHE_QUEUE_PREFIX", "attache")
    auth_names = set()
    for file_name, doc in manifests:
        if not str(doc.get("apiVersion", "")).startswith("keda.sh/"):
            continue
        where = f"{file_name} {object_id(doc)}"
        if doc.get("apiVersion") != "keda.sh/v1alpha1":
            problems.add(where, f"apiVersion {doc.get('apiVersion')} is not keda.sh/v1alpha1")
        if doc["kind"] == "TriggerAuthentication":
            auth_names.add(doc["metadata"]["name"])
            check_trigger_authentication(where, doc, problems)
        elif doc["kind"] != "ScaledObject":
            problems.add(where, "only ScaledObject and TriggerAuthentication are expected from KEDA")

    scaled = set()
    for file_name, doc in by_kind.get("ScaledObject", []):
        where = f"{file_name} {object_id(doc)}"
        target = check_scaled_object(where, doc, deployments, prefix, auth_names, problems)
        if target:
            scaled.add(target)

    for name in SCALED_WORKERS:
        if name not in scaled:
            problems.add(name, "no ScaledObject scales this Deployment")
    for name in scaled:
        file_name, doc = deployments[name]
        if "replicas" in doc["spec"]:
            problems.add(
                f"{file_name} {object_id(doc)}",
                "spec.replicas is set, so every `kubectl apply` resets what KEDA scaled",
            )


def check_trigger_authentication(where, doc, problems):
    references = doc.get("spec", {}).get("secretTargetRef", [])
    parameters = set()
    for reference in references:
        missing = {"parameter", "name", "key"} - reference.keys()
        if missing:
            problems.add(where, f"secretTargetRef entry lacks {sorted(missing)}")
        parameters.add(reference.get("parameter"))
    if "host" not in parameters:
        problems.add(where, "secretTargetRef must supply the `host` parameter")
    unknown = parameters - KEDA_AUTH_PARAMETERS
    if unknown:
        problems.add(where, f"unknown rabbitmq scaler parameters {sorted(unknown)}")


def check_scaled_object(where, doc, deployments, prefix, auth_names, problems):
    """Checks one ScaledObject and returns the name of the Deployment it scales."""
    spec = doc.get("spec", {})
    target = spec.get("scaleTargetRef", {}).get("name")
    if target not in deployments:
        problems.add(where, f"scaleTargetRef {target!r} is not a Deployment in the manifests")
        return None
    kind = SCALED_WORKERS.get(target)
    if kind is None:
        problems.add(where, f"{target} is not a worker that consumes a queue")
        return target

    minimum, maximum = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    if not 1 <= minimum <= maximum:
        problems.add(where, f"replica bounds must satisfy 1 <= min ({minimum}) <= max ({maximum})")
    if not isinstance(spec.get("cooldownPeriod"), int):
        problems.add(where, "cooldownPeriod must be set to a whole number of seconds")

    triggers = spec.get("triggers", [])
    if not triggers:
        problems.add(where, "no triggers")
    for trigger in triggers:
        check_rabbitmq_trigger(where, trigger, f"{prefix}.{kind}", auth_names, problems)
    return target


def check_rabbitmq_trigger(where, trigger, queue, auth_names, problems):
    metadata = trigger.get("metadata", {})
    if trigger.get("type") != "rabbitmq":
        problems.add(where, f"trigger type {trigger.get('type')!r} is not rabbitmq")
    for key, value in metadata.items():
        if not isinstance(value, str):
            problems.add(where, f"trigger metadata {key} must be a string, found {value!r}")
    # QueueLength over the management API counts ready and unacknowledged
    # messages, while over AMQP it counts ready messages only.
    expected = {"protocol": "http", "mode": "QueueLength", "queueName": queue}
    for key, value in expected.items():
        if metadata.get(key) != value:
            problems.add(where, f"trigger metadata {key} must be {value!r}, found {metadata.get(key)!r}")
    if metadata.get("excludeUnacknowledged", "false") != "false":
        problems.add(where, "excludeUnacknowledged would stop counting unacknowledged messages")
    if not re.fullmatch(r"[1-9]\d*", str(metadata.get("value", ""))):
        problems.add(where, f"trigger value must be a positive whole number, found {metadata.get('value')!r}")
    reference = trigger.get("authenticationRef", {}).get("name")
    if reference not in auth_names:
        problems.add(where, f"authenticationRef {reference!r} is not a TriggerAuthentication in the manifests")


# --- kustomize ----------------------------------------------------------


def check_kustomize(rendered, directory):
    problems = Problems()
    expected = {
        object_id(doc)
        for file_name, doc in load_manifests(directory)
        if file_name != EXAMPLE_SECRET_FILE
    }
    actual = {object_id(doc) for doc in load_documents(rendered)}
    for missing in sorted(expected - actual):
        problems.add(rendered, f"{missing} is in {directory} but not in the kustomization")
    for extra in sorted(actual - expected):
        problems.add(rendered, f"{extra} is rendered but comes from no manifest in {directory}")
    if any(identifier.startswith("Secret/") for identifier in actual):
        problems.add(rendered, "the kustomization must not apply Secrets over the real ones")
    return problems.exit_code()


# --- metrics ------------------------------------------------------------


def metric_names(expr):
    """Returns the metric names an expression selects.

    String literals, label matchers, range brackets and the label lists of
    grouping modifiers are dropped first. The words left are metric names,
    function names (followed by a parenthesis), keywords and parts of numbers.
    """
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before in ".$":
            continue  # exponent or unit of a number, or a Grafana variable
        if text[match.end():].lstrip().startswith("("):
            continue  # function or aggregation
        if match.group(0).lower() in PROMQL_KEYWORDS:
            continue
        names.add(match.group(0))
    return names


def is_known_metric(name):
    if name == "up" or name.startswith("rabbitmq_") or name in ATTACHE_METRICS:
        return True
    return any(
        name == histogram + suffix
        for histogram in ATTACHE_HISTOGRAMS
        for suffix in HISTOGRAM_SUFFIXES
    )


def alert_expressions(path):
    for group in load_documents(path)[0]["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule.get("record"), rule["expr"]


def panel_expressions(dashboard):
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            if "expr" in target:
                yield f"panel {panel.get('title')!r} query {target.get('refId')}", target["expr"]


def all_panels(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def check_metrics(alerts_path, dashboard_path):
    problems = Problems()
    with open(dashboard_path, encoding="utf-8") as file:
        dashboard = json.load(file)
    sources = [(alerts_path, alert_expressions(alerts_path)), (dashboard_path, panel_expressions(dashboard))]
    for path, expressions in sources:
        for where, expr in expressions:
            names = metric_names(expr)
            if not names:
                problems.add(f"{path} {where}", "expression selects no metric")
            for name in sorted(names):
                if not is_known_metric(name):
                    problems.add(f"{path} {where}", f"unknown metric {name}")
    return problems.exit_code()


# --- dashboard ----------------------------------------------------------


def check_dashboard(path, promtool):
    problems = Problems()
    with open(path, encoding="utf-8") as file:
        dashboard = json.load(file)

    for key in ("uid", "title", "panels", "schemaVersion"):
        if key not in dashboard:
            problems.add(path, f"dashboard has no {key}")
    variables = {variable["name"] for variable in dashboard.get("templating", {}).get("list", [])}
    if "datasource" not in variables:
        problems.add(path, "no `datasource` variable, so the dashboard is bound to one datasource name")

    ids = set()
    for panel in all_panels(dashboard):
        where = f"{path} panel {panel.get('title')!r}"
        if panel.get("id") in ids:
            problems.add(where, f"duplicate panel id {panel.get('id')}")
        ids.add(panel.get("id"))
        if panel.get("type") == "row":
            continue
        if not panel.get("targets"):
            problems.add(where, "panel has no queries")
        grid = panel.get("gridPos", {})
        if grid.get("x", 0) + grid.get("w", 0) > 24:
            problems.add(where, "panel extends past the 24-column grid")
        for target in panel.get("targets", []):
            if not target.get("expr"):
                problems.add(where, f"query {target.get('refId')} has no expression")

    check_promql_syntax(path, list(panel_expressions(dashboard)), promtool, problems)
    return problems.exit_code()


def check_promql_syntax(path, expressions, promtool, problems):
    """Parses each expression with promtool, as the expression of a recording rule."""
    rules = []
    for index, (_, expr) in enumerate(expressions):
        # Grafana replaces its variables before it sends a query, so give them
        # plausible values and parse what Prometheus would receive.
        concrete = expr.replace("$__rate_interval", "1m").replace("$prefix", "attache")
        rules.append({"record": f"dashboard:query_{index}", "expr": concrete})
    document = {"groups": [{"name": "dashboard", "rules": rules}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as file:
        yaml.safe_dump(document, file)
        file.flush()
        result = subprocess.run(
            [promtool, "check", "rules", file.name],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        problems.add(path, "promtool rejected a panel expression:\n" + result.stdout + result.stderr)


# --- compose ------------------------------------------------------------


def check_compose(path):
    problems = Problems()
    compose = load_documents(path)[0]
    services = compose.get("services", {})

    missing = COMPOSE_SERVICES - services.keys()
    if missing:
        problems.add(path, f"missing services {sorted(missing)}")
    for name, service in services.items():
        for port in service.get("ports", []):
            if not str(port).startswith("127.0.0.1:"):
                problems.add(f"{path} {name}", f"port {port!r} is published beyond 127.0.0.1")
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith("."):
                if not (Path(path).parent / source).exists():
                    problems.add(f"{path} {name}", f"mounted path {source} does not exist")
            elif source not in compose.get("volumes", {}):
                problems.add(f"{path} {name}", f"volume {source} is not declared under volumes")
    return problems.exit_code()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("kubernetes").add_argument("directory")
    kustomize = commands.add_parser("kustomize")
    kustomize.add_argument("rendered")
    kustomize.add_argument("directory")
    metrics = commands.add_parser("metrics")
    metrics.add_argument("alerts")
    metrics.add_argument("dashboard")
    dashboard = commands.add_parser("dashboard")
    dashboard.add_argument("dashboard")
    dashboard.add_argument("promtool")
    commands.add_parser("compose").add_argument("compose")
    args = parser.parse_args()

    if args.command == "kubernetes":
        return check_kubernetes(args.directory)
    if args.command == "kustomize":
        return check_kustomize(args.rendered, args.directory)
    if args.command == "metrics":
        return check_metrics(args.alerts, args.dashboard)
    if args.command == "dashboard":
        return check_dashboard(args.dashboard, args.promtool)
    return check_compose(args.compose)


if __name__ == "__main__":
    sys.exit(main())
