"""openapi.yaml as a checker: every response a route test sees is validated against it.

`ResponseLog` wraps a handler class so that each response it sends is recorded as it leaves
(`Endpoint._send`, after the route built it); `check()` then validates each one: the status is
documented for that operation, required headers are present, and the JSON body conforms to
the schema (JSON Schema 2020-12, which is OpenAPI 3.1's dialect, with formats asserted).
"""

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parents[2] / "openapi.yaml"
_BASE = "urn:ascendos:openapi"


def load_spec() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text())


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


@dataclass
class Sent:
    route: str
    method: str
    status: int
    headers: dict[str, str]
    body: Any
    content_type: str


class Spec:
    def __init__(self, document: dict | None = None):
        self.document = document or load_spec()
        resource = DRAFT202012.create_resource(self.document)
        self._registry = Registry().with_resource(_BASE, resource)

    def _resolve(self, node: dict) -> tuple[dict, list[str]]:
        """Follow `$ref`s between spec objects (responses, headers); returns the node and the
        JSON pointer path of where it lives."""
        path: list[str] = []
        while "$ref" in node:
            path = node["$ref"].removeprefix("#/").split("/")
            node = self.document
            for part in path:
                node = node[part.replace("~1", "/").replace("~0", "~")]
        return node, path

    def problems(self, sent: Sent) -> list[str]:
        """What is wrong with one response, against its operation; [] when it conforms."""
        where = f"{sent.method} {sent.route} -> {sent.status}"
        item = self.document["paths"].get(sent.route)
        if item is None:  # a test's own probe handler, not a product route
            return []
        if not sent.method:  # a request line http.server itself rejected: a JSON error
            return self._validate(sent.body, "components/schemas/Error", where)
        verb = "get" if sent.method == "HEAD" else sent.method.lower()  # HEAD is GET, body-less
        operation = (item or {}).get(verb)
        if operation is None:  # an undeclared verb: our JSON 405 with Allow
            if sent.status != 405:
                return [f"{where}: an undeclared operation must answer 405"]
            problems = [] if "Allow" in sent.headers else [f"{where}: 405 without Allow"]
            return problems + self._validate(sent.body, "components/schemas/Error", where)
        response = operation["responses"].get(str(sent.status)) or operation["responses"].get("default")
        if response is None:
            return [f"{where}: status not documented for this operation"]
        response, path = self._resolve(response)
        if not path:
            path = ["paths", sent.route, verb, "responses", str(sent.status)]
        problems = []
        for name, header in (response.get("headers") or {}).items():
            header, _ = self._resolve(header)
            if header.get("required") and name.lower() not in {h.lower() for h in sent.headers}:
                problems.append(f"{where}: required header {name} missing")
        content = response.get("content") or {}
        if sent.content_type not in content:
            return problems + [f"{where}: content type {sent.content_type} not documented"]
        if sent.content_type == "application/json" and sent.method != "HEAD":
            pointer = _pointer(*path, "content", "application/json", "schema")
            problems += self._validate(sent.body, pointer, where)
        return problems

    def _validate(self, body: Any, pointer: str, where: str) -> list[str]:
        validator = Draft202012Validator({"$ref": f"{_BASE}#/{pointer}"}, registry=self._registry,
                                         format_checker=FormatChecker())
        return [f"{where}: {error.json_path}: {error.message[:300]}"
                for error in validator.iter_errors(body)]


class ResponseLog:
    """Records every response of the handler classes it wraps (thread-safe)."""

    def __init__(self):
        self.sent: list[Sent] = []
        self._lock = threading.Lock()

    def wrap(self, handler: type) -> type:
        log = self

        class Recorded(handler):
            def _send(self, response, request_id):
                streamed = hasattr(response, "events")  # lib.http.EventStream
                body = None if streamed else response.body
                if isinstance(body, (dict, list)):  # as the client will parse it
                    body = json.loads(json.dumps(body, default=str))
                content_type = "text/event-stream" if streamed else "application/json"
                with log._lock:
                    log.sent.append(Sent(self.route, getattr(self, "command", None), response.status,
                                         {"X-Request-Id": request_id, **response.headers},
                                         body, content_type))
                return super()._send(response, request_id)

        Recorded.__name__ = Recorded.__qualname__ = handler.__name__
        Recorded.__module__ = handler.__module__
        return Recorded

    def check(self, spec: Spec) -> list[str]:
        return [problem for sent in self.sent for problem in spec.problems(sent)]
