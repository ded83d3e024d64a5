"""Run Attaché end to end on this machine and check every example task.

The demo serves examples/files over HTTP and runs moto as AWS, set up by
scripts/aws_fixture.py with an STS front that enforces External IDs. It
runs gcp-storage-emulator as Cloud Storage, behind a front that checks
each token's access per bucket, beside a mock of IAM Credentials. It
starts the producer API and both workers against the attache_demo database
and queue prefix. Through /v1/integrations/aws, the "demo" team activates
delegated access to customer A's role, and a third team tries customer B's
role, which the API must reject. Through /v1/integrations/gcp, the
"impersonating" team names a service account without its identifier, which
the API must reject, then activates one with it. It runs Azurite as Azure
Blob Storage, behind a front that checks each token's tenant per container,
beside a mock token endpoint that issues tokens only to consented tenants.
Through /v1/integrations/azure, the "azure-linked" team links its tenant by
admin consent, and sending the same consent redirect again must be
rejected. Then the demo submits each
examples/tasks/*.json for its team, waits for the signed callback, and
compares the result with the example's expectation. examples/README.md
describes the example format and the teams. The demo exits 0 only when
every example and every S3, Cloud Storage and Azure set-up step matched. Logs,
callbacks and stored attachments stay in .run/demo for inspection.

`make demo` runs scripts/demo.sh, which starts the services, builds the
binaries and recreates the database before it runs this file with .venv's
Python. Every server here listens on 127.0.0.1 on a port picked at run time.
"""

import argparse
import os
import shutil
import signal
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from attache_demo import DemoError
from attache_demo.api import ApiClient
from attache_demo.azure_access import (
    DemoAzure,
    azure_settings,
    link_tenant,
    show_anonymous,
    start_azure,
)
from attache_demo.azure_access import check_traffic as check_azure_traffic
from attache_demo.azure_access import show_verification as show_azure_verification
from attache_demo.gcs_access import (
    DemoGcp,
    activate_impersonation,
    check_traffic,
    gcp_settings,
    show_cross_project,
    start_gcp,
)
from attache_demo.gcs_access import show_verification as show_gcs_verification
from attache_demo.examples import (
    DEFAULT_TEAM,
    TEAMS,
    Example,
    ExampleError,
    LocalFiles,
    Sources,
    fill_placeholders,
    load_examples,
    unfilled_placeholders,
)
from attache_demo.results import Submission, evaluate, print_table
from attache_demo.s3_access import (
    DemoAws,
    activate_delegation,
    attempt_unenforced_role,
    aws_settings,
    show_verification,
    start_aws,
)
from attache_demo.servers import CallbackReceiver, FileServer
from attache_demo.services import Services, create_team, free_port, start_binaries

REPO = Path(__file__).resolve().parent.parent
RUN_DIR = REPO / ".run" / "demo"
DATABASE_URL = "postgres://postgres@127.0.0.1:5432/attache_demo"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
QUEUE_PREFIX = "attache_demo"
# The binaries are expected to be ready within a few seconds. The rest is
# margin for a loaded 2-core CI machine.
READY_TIMEOUT_SECONDS = 60
# The team that tries to activate customer B's role. It submits no example.
UNENFORCED_ROLE_TEAM = "customer-b"
# The object whose POST /v1/integrations/aws/verify report the demo prints.
VERIFIED_OBJECT = ("customer_a", "space")
# The teams that read gs:// objects by impersonation and by cross-project access.
IMPERSONATING_TEAM = "impersonating"
CROSS_PROJECT_TEAM = "cross-project"
# The object whose POST /v1/integrations/gcp/verify report the demo prints.
VERIFIED_GCS_OBJECT = ("customer", "question")
# The teams that read Azure blobs with their linked tenant's token and anonymously.
AZURE_LINKED_TEAM = "azure-linked"
AZURE_ANONYMOUS_TEAM = "azure-anonymous"
# The blob whose POST /v1/integrations/azure/verify report the demo prints.
VERIFIED_AZURE_BLOB = ("private", "nested")
# The source addresses of the egress pool, which loopback provides without
# set-up. The file server, the callback receivers, and the Cloud Storage
# and Azure fronts see only these.
EGRESS_MEMBER_IPS = ("127.0.0.11", "127.0.0.12")


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--timeout",
        type=float,
        default=float(os.environ.get("ATTACHE_DEMO_TIMEOUT", 120)),
        help="seconds to wait for all callbacks after the last submission"
        " (default: $ATTACHE_DEMO_TIMEOUT or 120)",
    )
    parser.add_argument(
        "--tasks-dir",
        type=Path,
        default=REPO / "examples" / "tasks",
        help="directory of example task files (default: examples/tasks)",
    )
    parser.add_argument(
        "--files-dir",
        type=Path,
        default=REPO / "examples" / "files",
        help="directory served as {{FILES_URL}} (default: examples/files)",
    )
    parser.add_argument(
        "--target-dir",
        type=Path,
        default=REPO / "target" / "debug",
        help="directory of the built binaries (default: target/debug)",
    )
    return parser.parse_args(argv)


def binary_env() -> dict[str, str]:
    """Return the environment shared by every binary the demo runs."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("ATTACHE_ADMIN_ADDR", "ATTACHE_API_ADDR")
    }
    env.update(
        ATTACHE_DATABASE_URL=DATABASE_URL,
        ATTACHE_AMQP_URL=os.environ.get("ATTACHE_AMQP_URL", DEFAULT_AMQP_URL),
        ATTACHE_QUEUE_PREFIX=QUEUE_PREFIX,
        ATTACHE_STORE_DIR=str(RUN_DIR / "attachments"),
        ATTACHE_LOG_FORMAT=os.environ.get("ATTACHE_LOG_FORMAT", "text"),
        RUST_LOG=os.environ.get("RUST_LOG", "info"),
        # The destination guard rejects loopback destinations, such as the
        # demo's file server and callback receivers, unless allowed.
        ATTACHE_EGRESS_ALLOW_CIDRS="127.0.0.0/8",
        ATTACHE_EGRESS_MEMBERS=",".join(f"local:{ip}" for ip in EGRESS_MEMBER_IPS),
    )
    return env


def submit_all(
    clients: dict[str, ApiClient],
    receivers: dict[str, CallbackReceiver],
    examples: list[Example],
    placeholders: dict[str, str],
) -> list[Submission]:
    """Submit each example for its team, with its placeholders filled in.

    Raises DemoError before the first submission if any example contains an
    unknown placeholder.
    """
    requests = []
    for example in examples:
        callback_url = f"{receivers[example.team].url}/callbacks/{example.name}"
        request = fill_placeholders(example.request, {**placeholders, "CALLBACK_URL": callback_url})
        if unfilled := unfilled_placeholders(request):
            raise DemoError(
                f"{example.path.name}: unknown placeholders {', '.join(unfilled)}"
                " (examples/README.md lists the known ones)"
            )
        requests.append(request)

    submissions = []
    for example, request in zip(examples, requests, strict=True):
        client = clients[example.team]
        accepted = client.submit_task(request, idempotency_key=f"demo-{example.name}")
        if len(accepted.get("attachments", [])) != len(request["attachments"]):
            raise DemoError(
                f"{example.path.name}: the 202 response lists a different number of attachments"
            )
        submissions.append(Submission(example, request, accepted["task_id"]))
        say(f"submitted {example.path.name} for team {example.team} as task {accepted['task_id']}")
    return submissions


def wait_for_callbacks(
    receivers: dict[str, CallbackReceiver],
    services: Services,
    submissions: list[Submission],
    timeout: float,
    first_submitted_at: float,
) -> None:
    """Wait until every submission has a callback, a binary exits, or timeout seconds pass."""
    say(f"waiting up to {timeout:.0f} s for {len(submissions)} callbacks")
    started = time.monotonic()
    while True:
        pending = [
            s for s in submissions if not receivers[s.example.team].received_for(s.example.name)
        ]
        if not pending:
            elapsed = time.monotonic() - first_submitted_at
            say(f"all callbacks arrived {elapsed:.1f} s after the first submission")
            return
        if exited := services.exited():
            raise DemoError("; ".join(exited))
        if time.monotonic() - started > timeout:
            say(f"timed out with no callback for {', '.join(s.example.path.name for s in pending)}")
            return
        receivers[pending[0].example.team].wait_for_change(0.5)


def reset_run_dir() -> None:
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    (RUN_DIR / "attachments").mkdir(parents=True)


def start_file_server(stack: ExitStack, files_dir: Path) -> LocalFiles:
    log = stack.enter_context(open(RUN_DIR / "file-server.log", "w", encoding="utf-8"))
    file_server = FileServer(files_dir, log)
    file_server.start()
    stack.callback(file_server.stop)
    say(f"serving {files_dir} at {file_server.url}")
    return LocalFiles(files_dir.resolve(), file_server.url)


def start_receivers(
    stack: ExitStack, teams: dict[str, dict[str, str]]
) -> dict[str, CallbackReceiver]:
    """Start one callback receiver per team that submits examples, with the team's secret."""
    receivers = {}
    for name in TEAMS:
        suffix = "" if name == DEFAULT_TEAM else f"-{name}"
        log = stack.enter_context(
            open(RUN_DIR / f"callback-receiver{suffix}.log", "w", encoding="utf-8")
        )
        receiver = CallbackReceiver(
            teams[name]["signing_secret"], log, RUN_DIR / f"callbacks{suffix}.jsonl"
        )
        receiver.start()
        stack.callback(receiver.stop)
        receivers[name] = receiver
        say(f"receiving team {name}'s callbacks at {receiver.url}/callbacks/")
    return receivers


def set_up_s3_access(clients: dict[str, ApiClient], aws: DemoAws) -> list[str]:
    """Set up the teams' S3 access as customers would, and return the problems found."""
    problems = activate_delegation(clients[DEFAULT_TEAM], DEFAULT_TEAM, aws)
    problems += attempt_unenforced_role(clients[UNENFORCED_ROLE_TEAM], UNENFORCED_ROLE_TEAM, aws)
    verified_uri = aws.fixture.uri(*VERIFIED_OBJECT)
    problems += show_verification(clients[DEFAULT_TEAM], DEFAULT_TEAM, verified_uri)
    return [f"S3 set-up: {problem}" for problem in problems]


def set_up_gcs_access(clients: dict[str, ApiClient], gcp: DemoGcp) -> list[str]:
    """Set up the teams' Cloud Storage access as customers would, and return the problems found."""
    problems = activate_impersonation(clients[IMPERSONATING_TEAM], IMPERSONATING_TEAM, gcp)
    problems += show_cross_project(clients[CROSS_PROJECT_TEAM], CROSS_PROJECT_TEAM)
    verified_uri = gcp.fixture.uri(*VERIFIED_GCS_OBJECT)
    problems += show_gcs_verification(clients[IMPERSONATING_TEAM], IMPERSONATING_TEAM, verified_uri)
    return [f"Cloud Storage set-up: {problem}" for problem in problems]


def set_up_azure_access(clients: dict[str, ApiClient], azure: DemoAzure) -> list[str]:
    """Set up the teams' Azure Blob Storage access as customers would, and return the problems."""
    problems = link_tenant(clients[AZURE_LINKED_TEAM], AZURE_LINKED_TEAM, azure)
    problems += show_anonymous(clients[AZURE_ANONYMOUS_TEAM], AZURE_ANONYMOUS_TEAM)
    verified_uri = azure.fixture.uri(*VERIFIED_AZURE_BLOB)
    problems += show_azure_verification(clients[AZURE_LINKED_TEAM], AZURE_LINKED_TEAM, verified_uri)
    return [f"Azure set-up: {problem}" for problem in problems]


def run_examples(
    args: argparse.Namespace, examples: list[Example], services: Services
) -> list[str]:
    """Run every example and return the problems found, one line each."""
    with ExitStack() as stack:
        files = start_file_server(stack, args.files_dir)
        services.run("migrate", "attache-producer", "migrate")
        teams = {name: create_team(services, name) for name in (*TEAMS, UNENFORCED_ROLE_TEAM)}
        say(f"created the teams {', '.join(teams)}")

        aws = start_aws(
            stack,
            services,
            RUN_DIR,
            api_key_a=teams[DEFAULT_TEAM]["api_key"],
            api_key_b=teams[UNENFORCED_ROLE_TEAM]["api_key"],
            ready_timeout=READY_TIMEOUT_SECONDS,
        )
        gcp = start_gcp(stack, RUN_DIR)
        azure = start_azure(stack, RUN_DIR)
        receivers = start_receivers(stack, teams)
        # The consent redirect URL names the API, so its address is picked here.
        api_addr = f"127.0.0.1:{free_port()}"
        cloud_env = {
            **aws_settings(aws),
            **gcp_settings(gcp),
            **azure_settings(azure, f"http://{api_addr}"),
        }
        api_url = start_binaries(services, cloud_env, api_addr)
        services.wait_ready(READY_TIMEOUT_SECONDS)
        say(f"producer API at {api_url} and both workers are ready")

        clients = {name: ApiClient(api_url, team["api_key"]) for name, team in teams.items()}
        problems = set_up_s3_access(clients, aws)
        problems += set_up_gcs_access(clients, gcp)
        problems += set_up_azure_access(clients, azure)

        sources = Sources(
            files,
            {
                **aws.fixture.contents_by_uri(),
                **gcp.fixture.contents_by_uri(),
                **azure.fixture.contents_by_uri(),
            },
        )
        placeholders = {
            "FILES_URL": files.url,
            **aws.fixture.placeholders(),
            **gcp.fixture.placeholders(),
            **azure.fixture.placeholders(),
        }
        first_submitted_at = time.monotonic()
        submissions = submit_all(clients, receivers, examples, placeholders)
        wait_for_callbacks(receivers, services, submissions, args.timeout, first_submitted_at)
        outcomes = [
            evaluate(s, receivers[s.example.team], clients[s.example.team], sources)
            for s in submissions
        ]
        problems += [
            f"Cloud Storage traffic: {problem}"
            for problem in check_traffic(gcp, EGRESS_MEMBER_IPS)
        ]
        problems += [
            f"Azure traffic: {problem}"
            for problem in check_azure_traffic(azure, EGRESS_MEMBER_IPS)
        ]

    print_table(outcomes, sources)
    return problems + [
        f"{o.submission.example.path.name}: {problem}" for o in outcomes for problem in o.problems
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM from scripts/demo.sh unwinds like Ctrl-C, so the binaries,
    # moto, gcp-storage-emulator and Azurite are stopped below.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        examples = load_examples(args.tasks_dir)
    except ExampleError as error:
        print(f"demo: error: {error}", file=sys.stderr)
        return 1

    reset_run_dir()
    services = Services(args.target_dir, RUN_DIR, binary_env())
    problems: list[str] = []
    interrupted = False
    try:
        problems = run_examples(args, examples, services)
    except DemoError as error:
        problems = [str(error)]
    except KeyboardInterrupt:
        interrupted = True
    finally:
        for warning in services.stop_all():
            say(f"warning: {warning}")

    if interrupted:
        say("interrupted, so the binaries, moto, gcp-storage-emulator and Azurite were stopped")
        return 130
    if problems:
        sys.stdout.flush()
        print("demo: FAILED", *problems, sep="\n  ", file=sys.stderr)
        print(f"\ndemo: last log lines (all logs are in {RUN_DIR}):", file=sys.stderr)
        print(services.log_tails(), file=sys.stderr)
        return 1
    say(
        f"passed: the S3, Cloud Storage and Azure set-up and all {len(examples)} examples"
        " matched their expectations"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
