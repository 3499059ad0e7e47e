"""One-shot (compose service kibana-setup): import include/kibana/saved_objects.ndjson into Kibana.

POST /api/saved_objects/_import?overwrite=true as the elastic user, so every start puts the repository's
data view, map, Lens panels and dashboard back as committed (edits made in Kibana to these objects are
overwritten; save a copy under another name to keep one). Kibana answers 200 even when objects fail:
success is judged on the body ({"success", "successCount", "errors", "successResults"}), and the answer
is printed whole whenever it is not a clean import of every object in the file.

Standard library only: it runs on the python:3.11-slim image. Tested by tests/unit/test_kibana_import.py.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

DEFAULT_FILE = "/opt/covidflow-kibana/saved_objects.ndjson"


def multipart(name: str, filename: str, content: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with one file field, and its content type."""
    boundary = f"covidflow-{uuid.uuid4().hex}"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        "Content-Type: application/ndjson\r\n\r\n"
    ).encode()
    return head + content + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def expected_objects(content: bytes) -> set[tuple[str, str]]:
    """(type, id) of every saved object in the ndjson file (an export summary line has no type)."""
    objects = (json.loads(line) for line in content.decode("utf-8").splitlines() if line.strip())
    return {(o["type"], o["id"]) for o in objects if "type" in o}


def problems(answer: dict[str, Any], expected: set[tuple[str, str]]) -> list[str]:
    """Why an import answer is not a clean import of ``expected`` (empty when it is)."""
    out = []
    if answer.get("success") is not True:
        out.append("success is not true")
    if answer.get("errors"):
        out.append(f"{len(answer['errors'])} error(s)")
    if answer.get("successCount") != len(expected):
        out.append(f"successCount {answer.get('successCount')} != {len(expected)} objects in the file")
    imported = {(r.get("type"), r.get("id")) for r in answer.get("successResults") or []}
    if imported != expected:
        missing = sorted(f"{t}/{i}" for t, i in expected - imported)
        out.append(f"not imported: {', '.join(missing) or '-'}")
    return out


def main() -> int:
    url = os.environ.get("KIBANA_URL", "http://kibana:5601").rstrip("/")
    password = os.environ.get("ELASTIC_PASSWORD")
    path = Path(os.environ.get("SAVED_OBJECTS", DEFAULT_FILE))
    attempts = int(os.environ.get("KIBANA_IMPORT_ATTEMPTS", "30"))
    delay = float(os.environ.get("KIBANA_IMPORT_DELAY", "5"))
    if not password:
        print("kibana-setup: ELASTIC_PASSWORD is not set", file=sys.stderr)
        return 2
    content = path.read_bytes()
    expected = expected_objects(content)
    body, content_type = multipart("file", path.name, content)
    token = base64.b64encode(f"elastic:{password}".encode()).decode()
    request = urllib.request.Request(
        f"{url}/api/saved_objects/_import?overwrite=true",
        data=body,
        method="POST",
        headers={"kbn-xsrf": "true", "Authorization": f"Basic {token}", "Content-Type": content_type},
    )
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                text = resp.read().decode("utf-8", "replace")
            break
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", "replace")
            if exc.code < 500:  # bad credentials or a refused file: retrying will not help
                print(f"kibana-setup: import refused (HTTP {exc.code}):\n{text}", file=sys.stderr)
                return 1
            reason = f"HTTP {exc.code}"
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = str(getattr(exc, "reason", exc))
        print(f"kibana-setup: Kibana not ready ({reason}), retry {attempt}/{attempts}", file=sys.stderr)
        time.sleep(delay)
    else:
        print(f"kibana-setup: Kibana at {url} did not answer after {attempts} attempts", file=sys.stderr)
        return 1
    try:
        answer = json.loads(text)
    except ValueError:
        print(f"kibana-setup: the import answer is not JSON:\n{text}", file=sys.stderr)
        return 1
    found = problems(answer, expected)
    if found:
        print(f"kibana-setup: import failed ({'; '.join(found)}):\n{json.dumps(answer, indent=2)}", file=sys.stderr)
        return 1
    print(f"kibana-setup: imported {len(expected)} saved objects from {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
