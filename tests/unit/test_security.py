"""Security basics that hold by construction: loopback defaults, no unsafe deserialisation."""

import re
from pathlib import Path

from serving.settings import ApiSettings
from streams.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["streams", "serving", "models_onnx", "infra", "loadtests"]


def test_services_bind_loopback_by_default():
    assert WorkerSettings().metrics_host == "127.0.0.1"
    assert ApiSettings().host == "127.0.0.1"
    assert ApiSettings().auth_token is None  # documented: set SEGUE_API_AUTH_TOKEN to require a bearer token


def test_no_pickle_eval_or_exec_in_the_code():
    pattern = re.compile(
        r"\b(import pickle|pickle\.loads?|cPickle|marshal\.loads|(?<![.\w])eval\(|(?<![.\w])exec\(|yaml\.load\()"
    )
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for pkg in PACKAGES
        for path in (ROOT / pkg).rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line) and "safe_load" not in line
    ]
    assert offenders == []
