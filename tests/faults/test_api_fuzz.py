"""Schemathesis fuzzes the control API from its own OpenAPI document against a real
platform: no answer is a server error, and every status returned is documented."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from tidal.testing import start_platform

pytestmark = pytest.mark.slow

# Not fuzzed: builds that install whatever requirements they are given (a fuzzer's
# made-up package names would go to the package index), and endless log streams.
BUILDS = r"^/api/v1/(environments|images)$|^/api/v1/apps$|/rollback$"
STREAMS = r"/logs$"
EXAMPLES = 25  # per operation: the whole run stays well under a minute


def test_the_control_api_never_fails_and_answers_as_documented(tmp_path: Path) -> None:
    (tmp_path / "tidal.toml").write_text("[host]\ncpus = 64\nmemory_mb = 131072\n")
    with start_platform(tmp_path, auth=True) as platform:
        key = (tmp_path / "admin.key").read_text().strip()
        auth = {"authorization": f"Key {key}"}
        schema = schemathesis.openapi.from_url(f"{platform.url}/api/v1/openapi.json",
                                               headers=auth)  # fmt: skip
        schema = schema.exclude(method="POST", path_regex=BUILDS).exclude(path_regex=STREAMS)
        failures: list[str] = []
        operations = [result.ok() for result in schema.get_all_operations()]
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=EXAMPLES, deadline=None, database=None,
                phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
            )  # fmt: skip
            def fuzz(case: Any) -> None:
                case.call_and_validate(base_url=platform.url, headers=auth, timeout=30,
                                       checks=[not_a_server_error, status_code_conformance])  # fmt: skip

            try:
                fuzz()
            except (Exception, BaseExceptionGroup) as exc:  # each operation's, reported at the end
                failures.append(f"{operation.label}: {str(exc)[:1500]}")
        print(f"schemathesis: {len(operations)} operations, {EXAMPLES} examples each, "
              f"{len(failures)} failing")  # fmt: skip
        assert not failures, "\n\n".join(failures)
