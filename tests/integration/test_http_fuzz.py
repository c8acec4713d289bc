"""Story: a property-based run over the OpenAPI document finds no 5xx (schemathesis).

Every operation of ``/v1/openapi.json`` gets generated requests, valid and invalid, against a
live relay; none may be answered with a server error, and every error must be JSON.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from conftest import RelayRunner, build_settings


@pytest.fixture(scope="module")
def fuzz_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayRunner]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    runner = RelayRunner(build_settings(tmp, delivery={"enabled": False})).start()
    runner.key = runner.create_key("fuzz")  # type: ignore[attr-defined]
    runner.admin_key = runner.create_key("fuzz-admin", scope="admin")  # type: ignore[attr-defined]
    yield runner
    runner.stop()


def test_no_server_errors(fuzz_relay: RelayRunner) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_relay.http_url}/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 30

    def headers(path: str) -> dict[str, str]:
        """The admin routes with an admin key, so the fuzzing gets past their 403."""
        admin = path.startswith("/v1/admin/")
        key = fuzz_relay.admin_key if admin else fuzz_relay.key  # type: ignore[attr-defined]
        return {"Authorization": f"Bearer {key}"}

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def check(case) -> None:  # type: ignore[no-untyped-def]
            responses = [case.call(base_url=fuzz_relay.http_url, headers=headers(case.path))]
            if case.path in ("/v1/messages/send", "/v1/messages/analyze") and isinstance(
                case.body, dict
            ):
                # Again with a valid sender and recipient, so the fuzzing gets past them.
                case.body = {**case.body, "from": "app@example.com", "to": "x@example.net"}
                responses.append(
                    case.call(base_url=fuzz_relay.http_url, headers=headers(case.path))
                )
            for response in responses:
                assert response.status_code < 500, (
                    case.method,
                    case.path,
                    response.status_code,
                    response.text,
                )
                if response.status_code >= 400:
                    body = response.json()
                    assert set(body) == {"error"} and body["error"]["code"], body

        check()
