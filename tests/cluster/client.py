"""The cluster test's client, run on the client host (its own network namespace).

    client.py submit <api-url> <zip>                          -> {"job_id": ...}
    client.py wait <api-url,api-url,...> <job> <until> <timeout>
        polls the replicas in turn until ``terminal`` or ``completed>=N``
        -> {"status": ..., "polls": {url: n}, "server_errors": n}
    client.py download <url> <path>                           -> {"bytes": n}

The last line printed is the answer, as JSON. No proxy from the environment is used: the client
reaches the replicas and the store only at the addresses it is given.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx


def submit(api: str, zip_path: str) -> dict[str, Any]:
    with httpx.Client(trust_env=False, timeout=120) as http:
        data = Path(zip_path).read_bytes()
        response = http.post(
            f"{api}/api/v1/jobs", files={"file": ("batch.zip", data, "application/zip")}
        )
    if response.status_code != 202:
        raise SystemExit(f"submit: {response.status_code} {response.text}")
    return {"job_id": response.json()["job_id"]}


def reached(status: dict[str, Any], until: str) -> bool:
    if until == "terminal":
        return status["status"] in ("COMPLETED", "FAILED")
    if until.startswith("completed>="):
        return int(status["progress"]["completed"]) >= int(until.split(">=")[1])
    raise SystemExit(f"wait: unknown condition {until!r}")


def wait(apis: str, job_id: str, until: str, timeout: str) -> dict[str, Any]:
    replicas = apis.split(",")
    polls = dict.fromkeys(replicas, 0)
    server_errors = 0
    deadline = time.monotonic() + float(timeout)
    turn = 0
    with httpx.Client(trust_env=False, timeout=30) as http:
        while time.monotonic() < deadline:
            api = replicas[turn % len(replicas)]
            turn += 1
            try:
                response = http.get(f"{api}/api/v1/jobs/{job_id}")
            except httpx.HTTPError:
                time.sleep(0.3)
                continue
            polls[api] += 1
            if response.status_code >= 500:
                server_errors += 1
            elif response.status_code == 200:
                status = response.json()
                # Every replica is asked at least once, even when the job was already there at
                # the first answer (a fault can outlast the whole job): both must tell it.
                if reached(status, until) and all(polls.values()):
                    return {"status": status, "polls": polls, "server_errors": server_errors}
            time.sleep(0.3)
    raise SystemExit(f"wait: job {job_id} did not reach {until} in {timeout} s")


def download(url: str, path: str) -> dict[str, Any]:
    with httpx.Client(trust_env=False, timeout=120, follow_redirects=True) as http:
        response = http.get(url)
    if response.status_code != 200:
        raise SystemExit(f"download: {response.status_code} from {url}")
    Path(path).write_bytes(response.content)
    return {"bytes": len(response.content), "final_url": str(response.url)}


COMMANDS: dict[str, Callable[..., dict[str, Any]]] = {
    "submit": submit,
    "wait": wait,
    "download": download,
}

if __name__ == "__main__":
    command, *args = sys.argv[1:]
    print(json.dumps(COMMANDS[command](*args)))
