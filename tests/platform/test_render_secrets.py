"""A service's Secret: rendered with its keys and no value; filled for apply through the
same providers as locally (here the local encrypted store, real files), never shown."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest

from sqlifier.platform.kubernetes.render import render, to_json, to_yaml, write_dir
from sqlifier.platform.kubernetes.render_common import Target
from sqlifier.platform.kubernetes.render_secrets import filled_secret, secret_object
from sqlifier.secrets.errors import SecretError
from sqlifier.secrets.local import KEY_VARIABLE, LocalStore
from sqlifier.secrets.providers import Context
from sqlifier.secrets.redact import Redactor
from tests.platform.render_stacks import full

PASSWORD = "correct horse battery staple"
TLS_KEY = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----"


@pytest.fixture(autouse=True)
def _no_key_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_VARIABLE, raising=False)


def _context(folder: Path) -> Context:
    return Context("prod", folder / ".sqlifier" / "prod", folder, {})


def _stored(folder: Path) -> Context:
    context = _context(folder)
    store = LocalStore(context.state_dir, "prod")
    store.set("db_password", PASSWORD, "ana")
    store.set("tls_key", TLS_KEY, "ana")
    return context


def test_the_rendered_secret_lists_its_keys_and_holds_no_value(tmp_path: Path) -> None:
    stack = full(tmp_path)
    secret = secret_object(Target.of(stack, "prod"), stack.services_for("prod")["db"])
    assert secret is not None
    assert secret["metadata"]["name"] == "db-secrets"
    assert secret["type"] == "Opaque"
    assert secret["data"] == {"DB_PASSWORD": "", "TLS_KEY": ""}
    assert secret["metadata"]["annotations"] == {
        "sqlifier.dev/filled-at-apply": "true",
        "sqlifier.dev/references": '{"DB_PASSWORD": "secret://local/db_password", '
        '"TLS_KEY": "secret://local/tls_key"}',
    }
    assert secret_object(Target.of(stack, "prod"), stack.services_for("prod")["web"]) is None


def test_a_secret_reaches_the_container_by_reference_or_as_a_file(tmp_path: Path) -> None:
    objects = render(full(tmp_path), "prod")
    db = next(o for o in objects if o["kind"] == "StatefulSet")
    (box,) = db["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in box["env"]}
    assert env["DB_PASSWORD"] == {
        "name": "DB_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "db-secrets", "key": "DB_PASSWORD"}},
    }
    assert env["TLS_KEY"] == {"name": "TLS_KEY", "value": "/run/secrets/sqlifier/tls.key"}
    volume = next(
        v for v in db["spec"]["template"]["spec"]["volumes"] if v["name"] == "secret-files"
    )
    assert volume["secret"] == {
        "secretName": "db-secrets",
        "defaultMode": 0o400,
        "items": [{"key": "TLS_KEY", "path": "tls.key"}],
    }
    assert {"name": "secret-files", "mountPath": "/run/secrets/sqlifier", "readOnly": True} in box[
        "volumeMounts"
    ]


def test_no_value_is_rendered_even_when_the_store_holds_it(tmp_path: Path) -> None:
    _stored(tmp_path)
    objects = render(full(tmp_path), "prod")
    written = write_dir(objects, tmp_path / "out", "test")
    outputs = [to_yaml(objects), to_json(objects), *(p.read_text() for p in written)]
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    for text in outputs:
        assert PASSWORD not in text
        assert encoded not in text
        assert "MIIEvQIBADANBg" not in text


def test_filled_secret_resolves_each_key_through_the_local_provider(tmp_path: Path) -> None:
    context = _stored(tmp_path)
    stack = full(tmp_path)
    redactor = Redactor()
    filled = filled_secret(
        Target.of(stack, "prod"), stack.services_for("prod")["db"], context, redactor
    )
    assert filled is not None
    assert {k: base64.b64decode(v).decode() for k, v in filled["data"].items()} == {
        "DB_PASSWORD": PASSWORD,
        "TLS_KEY": TLS_KEY,
    }
    rendered = secret_object(Target.of(stack, "prod"), stack.services_for("prod")["db"])
    assert rendered is not None
    assert {k: v for k, v in filled.items() if k != "data"} == {
        k: v for k, v in rendered.items() if k != "data"
    }
    assert redactor.redact(f"password={PASSWORD}") == "password=****"


def test_a_filled_secret_printed_or_logged_shows_no_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    context = _stored(tmp_path)
    stack = full(tmp_path)
    filled = filled_secret(Target.of(stack, "prod"), stack.services_for("prod")["db"], context)
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("applying %s", filled)
        logging.getLogger("test").info(f"applying {filled!r}")
    for text in (repr(filled), str(filled), caplog.text):
        assert encoded not in text
        assert "'DB_PASSWORD': '****'" in text


def test_a_secret_that_cannot_be_resolved_names_the_service_and_key(tmp_path: Path) -> None:
    context = _context(tmp_path)
    LocalStore(context.state_dir, "prod").set("db_password", PASSWORD, "ana")
    stack = full(tmp_path)
    with pytest.raises(SecretError) as caught:
        filled_secret(Target.of(stack, "prod"), stack.services_for("prod")["db"], context)
    message = str(caught.value)
    assert message.startswith("service db: secret TLS_KEY: ")
    assert "tls_key" in message
    assert PASSWORD not in message
