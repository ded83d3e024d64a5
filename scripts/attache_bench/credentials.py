"""The credential figures: how many credential requests a cold fetch-worker makes per provider.

For each delegated provider (S3, Cloud Storage, Azure Blob) every team has
its own delegated access: an AWS role with the team's External ID, a
service account that ours impersonates, or a consented tenant. Each team
may read only its own bucket or container, so a credential used for the
wrong team fails the fetch. The attachments are spread over the teams in
turn and all queued before a new fetch-worker starts, so its
`credential_fetches` fetches in flight begin together with nothing cached.

The credential requests are counted where they arrive: at the STS front,
at the mock IAM Credentials and at the mock token endpoint, from after the
activations until the last callback. The object reads that reached the
storage endpoint are the same-run reference, and the fetch-worker's own
`attache_credential_requests_total` and `attache_credential_cache_total`
are the cross-check. Every attachment must succeed with the SHA-256 of its
object, or the phase fails.
"""

from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Protocol

from attache_demo import DemoError
from attache_demo.api import ApiClient
from attache_demo.services import free_port

from . import fleet, machine
from .cloud import (
    CloudContext,
    Team,
    TeamReceivers,
    count_succeeded,
    create_teams,
    now_us,
    submit_tasks,
)
from .cloud.aws import small_objects, start_aws
from .cloud.azure import start_azure
from .cloud.gcp import start_gcp
from .fleet import Fleet


class Provider(Protocol):
    """One provider's stand-in, set up for the teams (`BenchAws`, `BenchGcp`, `BenchAzure`)."""

    name: str
    credential_service: str
    # The provider label of the fetch-worker's credential metrics.
    metric_label: str
    # The SHA-256 of each object by URI.
    digests: dict[str, str]

    def activate(self, client: ApiClient, team_index: int) -> None: ...
    def uris(self, team_index: int) -> list[str]: ...
    def mark(self) -> None: ...
    def credential_requests(self) -> Counter[str]: ...
    def object_reads(self) -> int: ...


@dataclass
class CredentialRun:
    """One provider's cold run: what the credential service and the storage received."""

    provider: str
    credential_service: str
    teams: int
    attachments: int
    # Counted at the credential endpoint, rejected requests included.
    requests: int
    # The maximum requests for any one team's role, service account or tenant.
    max_per_team: int
    # The fetch-worker's own attache_credential_requests_total, all outcomes.
    worker_requests: int
    cache_misses: int
    cache_hits: int
    object_reads: int
    # From the fetch-worker's start to the last callback.
    seconds: float
    # The fetch-worker's user plus system CPU time over those seconds.
    worker_cpu_seconds: float
    fetch_concurrency: int

    @property
    def target(self) -> int:
        """One request per team."""
        return self.teams


def measure_credentials(ctx: CloudContext) -> list[CredentialRun]:
    """Set up every provider for the teams, then run one cold fetch-worker per provider."""
    settings = ctx.settings
    per_task = settings.attachments_per_task
    if settings.credential_attachments % per_task:
        raise DemoError(
            f"credential_attachments ({settings.credential_attachments}) is not a multiple of"
            f" attachments_per_task ({per_task}): change one in scripts/attache_bench/settings.py"
        )
    fleet.clear_data(ctx.database, ctx.store_dir)
    names = [f"credentials-{n}" for n in range(1, settings.credential_teams + 1)]
    teams = create_teams(ctx, names)
    size = settings.credential_bytes

    with ExitStack() as stack:
        receivers = TeamReceivers(ctx, teams, stack)
        aws = start_aws(stack, ctx, teams, small_objects(per_task, size))
        gcp = start_gcp(stack, ctx, len(teams), per_task, size)
        azure = start_azure(stack, ctx, len(teams), per_task, size)
        # The consent redirect URL names the API, so its address is picked here.
        api_addr = f"127.0.0.1:{free_port()}"
        env = {**aws.env(), **gcp.env(), **azure.env(f"http://{api_addr}")}
        providers: list[Provider] = [aws, gcp, azure]
        activate_all(ctx, teams, providers, env, api_addr)
        return [
            run_cold(ctx, provider, teams, receivers, env, api_addr) for provider in providers
        ]


def activate_all(
    ctx: CloudContext,
    teams: list[Team],
    providers: list[Provider],
    env: dict[str, str],
    api_addr: str,
) -> None:
    """Activate every team's delegated access for every provider, with no fetch-worker running."""
    fleet_ = Fleet(ctx.services)
    fleet_.start(0, env, api_addr)
    try:
        for team_index, team in enumerate(teams):
            client = ApiClient(fleet_.api_url, team.api_key)
            for provider in providers:
                provider.activate(client, team_index)
    finally:
        fleet_.stop()


def run_cold(
    ctx: CloudContext,
    provider: Provider,
    teams: list[Team],
    receivers: TeamReceivers,
    env: dict[str, str],
    api_addr: str,
) -> CredentialRun:
    """Queue every attachment of one provider, then fetch them all with a new fetch-worker."""
    settings = ctx.settings
    tasks = settings.credential_attachments // settings.attachments_per_task
    fetches = settings.credential_fetches
    fleet.clear_data(ctx.database, ctx.store_dir)
    receivers.reset()
    fleet_ = Fleet(ctx.services)
    fleet_.start(0, env, api_addr)
    try:
        uris = [provider.uris(team_index) for team_index in range(len(teams))]
        run_id = f"credentials-{provider.metric_label}"
        submit_tasks(fleet_.api_url, teams, receivers, uris, tasks, run_id)
        fleet.wait_for_empty_outbox(ctx.database, settings.phase_timeout)

        provider.mark()
        started_us = now_us()
        name = fleet_.start_fetch_worker({**env, "ATTACHE_FETCH_CONCURRENCY": str(fetches)})
        ctx.services.wait_ready(fleet.READY_TIMEOUT_SECONDS)
        last_us = receivers.wait(ctx, tasks)
        samples = fleet.scrape(fleet_.admin_url(name))
        worker_cpu_seconds = machine.cpu_seconds(fleet_.pids()[name])
    finally:
        fleet_.stop()

    requests = provider.credential_requests()
    label = f'provider="{provider.metric_label}"'
    return CredentialRun(
        provider=provider.name,
        credential_service=provider.credential_service,
        teams=len(teams),
        attachments=count_succeeded(ctx.database, provider.digests),
        requests=sum(requests.values()),
        max_per_team=max(requests.values(), default=0),
        worker_requests=int(metric_with(samples, "attache_credential_requests_total", label)),
        cache_misses=int(metric_with(samples, "attache_credential_cache_total", label, "miss")),
        cache_hits=int(metric_with(samples, "attache_credential_cache_total", label, "hit")),
        object_reads=provider.object_reads(),
        seconds=(last_us - started_us) / 1e6,
        worker_cpu_seconds=worker_cpu_seconds,
        fetch_concurrency=fetches,
    )


def metric_with(samples: dict[str, float], name: str, label: str, result: str = "") -> float:
    """Sum the samples of a metric whose labels contain `label` and, if given, result="RESULT"."""
    required = [label] + ([f'result="{result}"'] if result else [])
    return sum(
        value
        for key, value in samples.items()
        if key.startswith(name + "{") and all(part in key for part in required)
    )
