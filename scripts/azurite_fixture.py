"""Create containers and blobs in a fresh Azurite, for the Blob Storage tests.

    .venv/bin/python scripts/azurite_fixture.py --endpoint http://127.0.0.1:PORT/devstoreaccount1 <spec.json

Azurite's Blob Storage API needs Shared Key or SAS authorization to create
containers, which Attaché's Rust code does not implement, so this script
uses the `azure-storage-blob` package with Azurite's well-known development
account (`devstoreaccount1` and its published key).

The spec on stdin is one JSON object:

    {"containers": [{"name": "c", "public": true,
                     "blobs": [{"name": "a b.txt", "base64": "..."}]}]}

A public container allows anonymous reads of its blobs (access level
`blob`), a private one allows none. On success the script prints one JSON
object on stdout and exits 0: {"sas": {CONTAINER: QUERY}}, where QUERY is a
read-only container SAS valid for a day, which the tests' front appends to
requests it has authorized.
"""

import argparse
import base64
import datetime
import json
import sys

from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

ACCOUNT = "devstoreaccount1"
# Azurite's well-known development account key, the same in every Azurite;
# it grants nothing outside the emulator.
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="Azurite's blob URL with the account path")
    args = parser.parse_args()
    spec = json.load(sys.stdin)

    service = BlobServiceClient(
        account_url=args.endpoint,
        credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY},
    )
    expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    sas = {}
    for container in spec["containers"]:
        name = container["name"]
        client = service.create_container(name, public_access="blob" if container["public"] else None)
        for blob in container["blobs"]:
            client.upload_blob(blob["name"], base64.b64decode(blob["base64"]), overwrite=True)
        sas[name] = generate_container_sas(
            ACCOUNT,
            name,
            account_key=ACCOUNT_KEY,
            permission=ContainerSasPermissions(read=True),
            expiry=expiry,
        )
    json.dump({"sas": sas}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
