"""The demo's S3 side: moto as AWS, and the teams' settings under /v1/integrations/aws.

The order of `start_aws` follows from the fixture. Customer A's role must
trust the demo team's External ID, which the producer generates on the
first GET /v1/integrations/aws. But the fixture also creates our access
key, which the producer reads only at start. So `read_external_ids` starts
a producer of its own just to read the IDs, which the database keeps, and
stops it. Then moto starts, the fixture creates the roles with those IDs,
and the STS front starts, which applies role A's External ID condition that
moto skips. `aws_settings` returns what the demo's binaries need to use it all.

Once the binaries run, `activate_delegation`, `attempt_unenforced_role` and
`show_verification` call the API as a customer would and print what it
returns. Each returns the differences from the expected outcome, one line
each.
"""

import json
import textwrap
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from . import DemoError
from .api import ApiClient
from .moto import AwsFixture, run_fixture, start_moto
from .processes import ServerProcess
from .services import Services, free_port
from .sts_front import StsFront

INTEGRATION = "/v1/integrations/aws"

# The producer that only reads External IDs sends no AWS request. Any
# 12-digit account ID enables the routes, and static keys keep the AWS SDK
# from looking for credentials on this machine.
EXTERNAL_ID_READER_ENV = {
    "ATTACHE_AWS_ACCOUNT_ID": "000000000000",
    "ATTACHE_AWS_ACCESS_KEY_ID": "unused",
    "ATTACHE_AWS_SECRET_ACCESS_KEY": "unused",
}


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


@dataclass(frozen=True)
class DemoAws:
    """moto with the fixture set up, and the STS front before it."""

    moto: ServerProcess
    fixture: AwsFixture
    sts_front: StsFront


def start_aws(
    stack: ExitStack,
    services: Services,
    run_dir: Path,
    api_key_a: str,
    api_key_b: str,
    ready_timeout: float,
) -> DemoAws:
    """Start moto and the STS front, each stopped when stack closes.

    Customer A's role requires the External ID of the team with api_key_a.
    Customer B's role requires none, and the team with api_key_b is the one
    that will try to activate it. No binary may run yet, because
    `read_external_ids` stops every binary that services started.
    """
    external_ids = read_external_ids(services, [api_key_a, api_key_b], ready_timeout)

    moto = start_moto(run_dir)
    stack.callback(warn_if_needed, moto.stop)
    say(f"moto is AWS at {moto.url}, with its IAM checks on after the set-up")
    fixture = run_fixture(moto.url, external_id_a=external_ids[0], external_id_b=external_ids[1])
    say(
        f"scripts/aws_fixture.py created customer A's role {fixture.customers['a']['role_arn']},"
        " which requires the demo team's External ID, and customer B's, which requires none"
    )

    log = stack.enter_context(open(run_dir / "sts-front.log", "w", encoding="utf-8"))
    sts_front = StsFront(moto.url, fixture.required_external_ids(), log)
    sts_front.start()
    stack.callback(sts_front.stop)
    say(f"STS at {sts_front.url} applies the External ID conditions that moto skips")
    return DemoAws(moto, fixture, sts_front)


def warn_if_needed(stop: Callable[[], str | None]) -> None:
    """Call stop and print the warning it returns, if any."""
    if warning := stop():
        say(f"warning: {warning}")


def read_external_ids(
    services: Services, api_keys: list[str], ready_timeout: float
) -> list[str]:
    """Return each team's External ID, from GET /v1/integrations/aws of a short-lived producer."""
    api_url = f"http://127.0.0.1:{free_port()}"
    services.start(
        "producer-external-ids",
        "attache-producer",
        "serve",
        env={
            **EXTERNAL_ID_READER_ENV,
            "ATTACHE_API_ADDR": api_url.removeprefix("http://"),
            "ATTACHE_ADMIN_ADDR": f"127.0.0.1:{free_port()}",
        },
    )
    try:
        services.wait_ready(ready_timeout)
        external_ids = [read_external_id(ApiClient(api_url, key)) for key in api_keys]
    finally:
        for warning in services.stop_all():
            say(f"warning: {warning}")
    say(f"read the teams' External IDs from GET {INTEGRATION}")
    return external_ids


def read_external_id(client: ApiClient) -> str:
    status, body = client.request("GET", INTEGRATION)
    external_id = body.get("external_id") if isinstance(body, dict) else None
    if status != 200 or not isinstance(external_id, str):
        raise DemoError(
            f"GET {INTEGRATION} returned {status}, expected 200 with an external_id: {body!r}"
        )
    return external_id


def aws_settings(aws: DemoAws) -> dict[str, str]:
    """Return the ATTACHE_AWS_* settings of the producer and the fetch-worker."""
    vendor = aws.fixture.vendor
    role_name = aws.fixture.customers["a"]["role_arn"].rsplit("/", 1)[-1]
    return {
        "ATTACHE_AWS_ACCOUNT_ID": vendor["account_id"],
        "ATTACHE_AWS_ROLE_NAME": role_name,
        "ATTACHE_AWS_PRINCIPAL_ARN": vendor["user_arn"],
        "ATTACHE_AWS_REGION": aws.fixture.region,
        "ATTACHE_AWS_S3_ENDPOINT_URL": aws.moto.url,
        "ATTACHE_AWS_STS_ENDPOINT_URL": aws.sts_front.url,
        "ATTACHE_AWS_ACCESS_KEY_ID": vendor["access_key_id"],
        "ATTACHE_AWS_SECRET_ACCESS_KEY": vendor["secret_access_key"],
    }


def activate_delegation(client: ApiClient, team: str, aws: DemoAws) -> list[str]:
    """Activate delegated access through customer A's role for team, and return the problems."""
    customer = aws.fixture.customers["a"]
    rejected_before = aws.sts_front.assume_role_rejected
    status, body = client.request("PUT", INTEGRATION, {"account_id": customer["account_id"]})
    active = isinstance(body, dict) and body.get("delegated_access_active") is True
    if status != 200 or not active:
        return [
            f"PUT {INTEGRATION} for team {team} returned {status},"
            f" expected 200 with delegated_access_active true: {body!r}"
        ]

    problems = []
    if body.get("role_arn") != customer["role_arn"]:
        problems.append(
            f"PUT {INTEGRATION} for team {team} shows role_arn {body.get('role_arn')!r},"
            f" expected {customer['role_arn']!r}"
        )
    # Activation also tries the role without an External ID and with a
    # wrong one, and the STS front must reject both.
    rejected = aws.sts_front.assume_role_rejected - rejected_before
    if rejected != 2:
        problems.append(
            f"PUT {INTEGRATION} for team {team} made {rejected} AssumeRole requests that"
            " the STS front rejected, expected 2 (no External ID, then a wrong one)"
        )
    say(
        f"team {team} activated delegated access through {body.get('role_arn')}: the role"
        f" accepted the team's External ID and rejected {rejected} other AssumeRole requests"
    )
    return problems


def attempt_unenforced_role(client: ApiClient, team: str, aws: DemoAws) -> list[str]:
    """Try to activate customer B's role, whose trust policy lacks the External ID condition."""
    account_id = aws.fixture.customers["b"]["account_id"]
    status, body = client.request("PUT", INTEGRATION, {"account_id": account_id})
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    message = str(error.get("message", ""))
    if status != 422 or error.get("code") != "aws_link_failed" or "sts:ExternalId" not in message:
        return [
            f"PUT {INTEGRATION} for team {team} with customer B's account returned {status},"
            f" expected 422 aws_link_failed naming sts:ExternalId: {body!r}"
        ]
    say(
        f"team {team} tried to activate customer B's role, which trusts us without an"
        f" External ID. The API rejected it with {status} {error['code']}: {message}"
    )

    status, body = client.request("GET", INTEGRATION)
    inactive = isinstance(body, dict) and body.get("delegated_access_active") is False
    if status != 200 or not inactive:
        return [
            f"GET {INTEGRATION} for team {team} after the rejected activation returned {status},"
            f" expected 200 with delegated_access_active false: {body!r}"
        ]
    return []


def show_verification(client: ApiClient, team: str, uri: str) -> list[str]:
    """Print the verify report of uri for a team with delegated access, and check it."""
    status, report = client.request("POST", f"{INTEGRATION}/verify", {"uri": uri})
    say(f"POST {INTEGRATION}/verify of {uri} for team {team} returned {status}:")
    print(textwrap.indent(json.dumps(report, indent=2), "  "), flush=True)
    if (
        status != 200
        or not isinstance(report, dict)
        or report.get("ok") is not True
        or report.get("access_path") != "delegated"
    ):
        return [
            f"POST {INTEGRATION}/verify of {uri} for team {team} returned {status},"
            ' expected 200 with "ok": true and "access_path": "delegated"'
        ]
    return []
