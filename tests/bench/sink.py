"""The upload baseline: an HTTP endpoint that only streams the request body into the store.

``python -m tests.bench.sink PORT STORE_DIR`` serves it with the same server (uvicorn) and the
same store code as the API, so POST /api/v1/jobs compared with it shows what Quire adds to a
plain upload: multipart parsing, the zip listing, the job's rows and the enqueue.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import uvicorn

from app.memory import keep_freed_memory
from app.storage import LocalStore


def make_app(store: LocalStore) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        writer = store.open_writer(f"uploads/{uuid.uuid4()}/source.zip", "application/zip")
        more = True
        while more:
            message = await receive()
            writer.write(message.get("body", b""))
            more = message.get("more_body", False)
        writer.commit()
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


if __name__ == "__main__":
    # The API keeps freed memory for reuse (app/memory.py); so does the baseline, or the
    # comparison would measure the allocator instead of what Quire adds to an upload.
    keep_freed_memory()
    port, root = int(sys.argv[1]), Path(sys.argv[2])
    uvicorn.run(
        make_app(LocalStore(root, secret="x")), host="127.0.0.1", port=port, log_level="warning"
    )
