"""docker/kibana/import_saved_objects.py (compose service kibana-setup) against a fake Kibana on 127.0.0.1.

The answers the fake sends are shaped as the import API documents them (success, successCount, errors,
successResults); what the real Kibana 8.19 answers for our file is not checked here (no Kibana).
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import importlib.util
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from covidflow import PROJECT_ROOT
from covidflow.show import kibana

SCRIPT = PROJECT_ROOT / "docker" / "kibana" / "import_saved_objects.py"
PASSWORD = "s3cr3t-test"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_saved_objects", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeKibana:
    """Answers POSTs with the queued (status, body) pairs, the last one repeated; records every request."""

    def __init__(self, answers: list[tuple[int, Any]]) -> None:
        self.answers = answers
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                fake.requests.append({"path": self.path, "headers": self.headers, "body": body})
                status, answer = fake.answers[min(len(fake.requests), len(fake.answers)) - 1]
                data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def run(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    servers: list[FakeKibana] = []

    def _run(answers: list[tuple[int, Any]], **env: str) -> tuple[int, FakeKibana]:
        fake = FakeKibana(answers)
        servers.append(fake)
        settings = {
            "KIBANA_URL": fake.url,
            "ELASTIC_PASSWORD": PASSWORD,
            "SAVED_OBJECTS": str(kibana.NDJSON_PATH),
            "KIBANA_IMPORT_ATTEMPTS": "3",
            "KIBANA_IMPORT_DELAY": "0",
            **env,
        }
        for key, value in settings.items():
            monkeypatch.setenv(key, value)
        return load_script().main(), fake

    yield _run
    for fake in servers:
        fake.close()


def committed() -> list[dict[str, Any]]:
    return [json.loads(line) for line in kibana.NDJSON_PATH.read_text(encoding="utf-8").splitlines()]


def success() -> dict[str, Any]:
    results = [{"type": o["type"], "id": o["id"], "meta": {"title": o["attributes"]["title"]}} for o in committed()]
    return {"success": True, "successCount": len(results), "successResults": results}


def test_posts_the_file_with_overwrite_xsrf_and_basic_auth(run: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, fake = run([(200, success())])
    assert code == 0
    assert f"imported {len(committed())} saved objects" in capsys.readouterr().out
    (req,) = fake.requests
    assert req["path"] == "/api/saved_objects/_import?overwrite=true"
    assert req["headers"]["kbn-xsrf"] == "true"
    assert req["headers"]["Authorization"] == "Basic " + base64.b64encode(f"elastic:{PASSWORD}".encode()).decode()
    head = f"Content-Type: {req['headers']['Content-Type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + req["body"])
    (part,) = list(message.iter_parts())
    assert part.get_param("name", header="content-disposition") == "file"
    assert part.get_filename() == "saved_objects.ndjson"
    assert part.get_content() == kibana.NDJSON_PATH.read_bytes()


def test_failed_import_exits_non_zero_and_prints_the_answer(run: Any, capsys: pytest.CaptureFixture[str]) -> None:
    answer = success()
    answer["success"] = False
    answer["successCount"] -= 1
    answer["successResults"] = answer["successResults"][1:]
    answer["errors"] = [
        {
            "id": kibana.DATA_VIEW_ID,
            "type": "index-pattern",
            "title": "covid-observations",
            "error": {"type": "unknown", "message": "boom"},
        }
    ]
    code, _ = run([(200, answer)])
    err = capsys.readouterr().err
    assert code == 1
    assert "success is not true" in err and "1 error(s)" in err and f"index-pattern/{kibana.DATA_VIEW_ID}" in err
    assert '"message": "boom"' in err  # the whole answer is printed


def test_success_without_every_object_is_a_failure(run: Any, capsys: pytest.CaptureFixture[str]) -> None:
    answer = success()
    answer["successCount"] = 1
    answer["successResults"] = answer["successResults"][:1]
    code, _ = run([(200, answer)])
    assert code == 1
    assert "successCount 1 != 5 objects in the file" in capsys.readouterr().err


def test_retries_while_kibana_is_not_ready(run: Any, capsys: pytest.CaptureFixture[str]) -> None:
    not_ready = {"statusCode": 503, "error": "Service Unavailable", "message": "Kibana server is not ready yet"}
    code, fake = run([(503, not_ready), (200, success())])
    assert code == 0 and len(fake.requests) == 2
    assert "retry 1/3" in capsys.readouterr().err


def test_gives_up_after_the_attempts(run: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, fake = run([(503, "not ready")])
    assert code == 1 and len(fake.requests) == 3
    assert "did not answer after 3 attempts" in capsys.readouterr().err


def test_refusals_are_not_retried(run: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, fake = run([(401, {"statusCode": 401, "error": "Unauthorized"})])
    assert code == 1 and len(fake.requests) == 1
    assert "HTTP 401" in capsys.readouterr().err


def test_not_json_is_a_failure(run: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run([(200, "<html>proxy</html>")])
    assert code == 1 and "<html>proxy</html>" in capsys.readouterr().err


def test_missing_password_stops_before_any_request(run: Any) -> None:
    code, fake = run([(200, success())], ELASTIC_PASSWORD="")
    assert code == 2 and not fake.requests


def test_expected_objects_ignore_an_export_summary_line(tmp_path: Path) -> None:
    script = load_script()
    content = kibana.NDJSON_PATH.read_bytes() + b'{"exportedCount": 5, "missingRefCount": 0}\n'
    assert script.expected_objects(content) == {(o["type"], o["id"]) for o in committed()}
