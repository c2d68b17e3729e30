"""Secret references resolved against real providers: an OpenBao dev server, files, the
environment, the local store — and for AWS, moto's server, since the real AWS is out of
reach here (the same boto3 calls, pointed at it with AWS_ENDPOINT_URL)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from sqlifier.secrets.errors import SecretError
from sqlifier.secrets.local import LocalStore
from sqlifier.secrets.providers import (
    Context,
    Reference,
    parse_reference,
    resolve,
    resolve_async,
)
from tests.secrets.servers import (
    AWS_TEST_ENVIRON,
    ROOT_TOKEN,
    Moto,
    OpenBao,
    closed_address,
    needs_bao,
    needs_moto,
    running_moto,
    running_openbao,
    silent_server,
)

PASSWORD = "s3cret-pw-7f2a"
PROVIDERS = (
    "providers: secret://local/NAME, vault://MOUNT/PATH#KEY, aws-sm://NAME#KEY, "
    "ssm:///PATH, env://NAME, file://PATH"
)


def context(root: Path, environ: Mapping[str, str], timeout: float = 5.0) -> Context:
    return Context("dev", root / ".sqlifier" / "dev", root, environ, timeout)


def failure(reference: str, ctx: Context) -> str:
    with pytest.raises(SecretError) as caught:
        resolve(reference, ctx)
    return str(caught.value)


# --- parse_reference ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "scheme", "path", "key"),
    [
        ("secret://local/db_password", "local", "db_password", None),
        ("vault://secret/shop/db#password", "vault", "secret/shop/db", "password"),
        ("vault://secret/data/shop/db#password", "vault", "secret/data/shop/db", "password"),
        ("vault://kv/db#password", "vault", "kv/db", "password"),
        ("aws-sm://shop/db#password", "aws-sm", "shop/db", "password"),
        ("aws-sm://shop/plain", "aws-sm", "shop/plain", None),
        (
            "aws-sm://arn:aws:secretsmanager:us-east-1:123456789012:secret:shop/db-AbCdEf#password",
            "aws-sm",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:shop/db-AbCdEf",
            "password",
        ),
        ("ssm:///shop/db/password", "ssm", "/shop/db/password", None),
        ("env://DB_PASS", "env", "DB_PASS", None),
        ("file://secrets/db_password", "file", "secrets/db_password", None),
        ("file:///run/secrets/db#1", "file", "/run/secrets/db#1", None),
    ],
)
def test_parse_reference_splits_each_form(
    text: str, scheme: str, path: str, key: str | None
) -> None:
    assert parse_reference(text) == Reference(text, scheme, path, key)


VAULT_FORM = "expected vault://MOUNT/PATH#KEY, as in vault://secret/shop/db#password"
AWS_SM_FORM = "expected aws-sm://NAME#KEY or aws-sm://NAME, as in aws-sm://shop/db#password"
LOCAL_FORM = "expected secret://local/NAME, as in secret://local/db_password"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("vault://secret/shop/db", f"vault://secret/shop/db: {VAULT_FORM}"),
        ("vault://db#password", f"vault://db#password: {VAULT_FORM}"),
        ("vault://secret//db#password", f"vault://secret//db#password: {VAULT_FORM}"),
        ("vault://secret/shop/db#", f"vault://secret/shop/db#: {VAULT_FORM}"),
        ("vault://secret/shop/db#a#b", f"vault://secret/shop/db#a#b: {VAULT_FORM}"),
        ("vault://secret/shop db#password", f"vault://secret/shop db#password: {VAULT_FORM}"),
        ("aws-sm://#password", f"aws-sm://#password: {AWS_SM_FORM}"),
        ("aws-sm://shop/db#", f"aws-sm://shop/db#: {AWS_SM_FORM}"),
        ("ssm://shop/db", "ssm://shop/db: expected ssm:///PATH, as in ssm:///shop/db/password"),
        ("ssm:///", "ssm:///: expected ssm:///PATH, as in ssm:///shop/db/password"),
        ("ssm:///shop#x", "ssm:///shop#x: expected ssm:///PATH, as in ssm:///shop/db/password"),
        ("env://1PASS", "env://1PASS: expected env://NAME, as in env://DB_PASSWORD"),
        ("env://", "env://: expected env://NAME, as in env://DB_PASSWORD"),
        ("file://", "file://: expected file://PATH, as in file://secrets/db_password"),
        ("secret://other/db", f"secret://other/db: {LOCAL_FORM}"),
        ("secret://local/", f"secret://local/: {LOCAL_FORM}"),
        ("secret://local/a/b", f"secret://local/a/b: {LOCAL_FORM}"),
        ("https://vault.example/x", f"unknown secret provider 'https://'; {PROVIDERS}"),
        ("", f"not a secret reference; {PROVIDERS}"),
    ],
)
def test_parse_reference_says_which_form_a_malformed_one_should_take(
    text: str, message: str
) -> None:
    with pytest.raises(SecretError) as caught:
        parse_reference(text)
    assert str(caught.value) == message


def test_text_that_is_no_reference_is_not_echoed_it_may_be_a_value() -> None:
    with pytest.raises(SecretError) as caught:
        parse_reference("hunter2-password")
    assert str(caught.value) == f"not a secret reference; {PROVIDERS}"


# --- env:// and file:// ------------------------------------------------------------------


def test_env_reads_the_agents_variable(tmp_path: Path) -> None:
    assert resolve("env://DB_PASS", context(tmp_path, {"DB_PASS": PASSWORD})) == PASSWORD


def test_env_reads_the_given_environment_not_the_process_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_PASS", PASSWORD)
    assert failure("env://DB_PASS", context(tmp_path, {})) == (
        "env://DB_PASS: the agent's environment has no DB_PASS"
    )


def test_env_an_empty_variable_is_an_empty_value(tmp_path: Path) -> None:
    assert resolve("env://DB_PASS", context(tmp_path, {"DB_PASS": ""})) == ""


def test_file_relative_to_the_stack_folder_less_one_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "db").write_bytes(f"{PASSWORD}\n\n".encode())
    assert resolve("file://secrets/db", context(tmp_path, {})) == f"{PASSWORD}\n"


@pytest.mark.parametrize(
    ("content", "value"),
    [(b"pw", "pw"), (b"pw\n", "pw"), (b"pw\r\n", "pw"), (b"a\nb\n", "a\nb"), (b"", "")],
)
def test_file_strips_one_trailing_newline_only(tmp_path: Path, content: bytes, value: str) -> None:
    (tmp_path / "db").write_bytes(content)
    assert resolve("file://db", context(tmp_path, {})) == value


def test_file_absolute_path(tmp_path: Path) -> None:
    (tmp_path / "db").write_text(PASSWORD)
    elsewhere = tmp_path / "stack"
    assert resolve(f"file://{tmp_path}/db", context(elsewhere, {})) == PASSWORD


def test_file_missing_names_the_path_it_tried(tmp_path: Path) -> None:
    assert failure("file://secrets/nope", context(tmp_path, {})) == (
        f"file://secrets/nope: cannot read {tmp_path}/secrets/nope: No such file or directory"
    )


def test_file_that_is_not_text(tmp_path: Path) -> None:
    (tmp_path / "key.bin").write_bytes(b"\xff\xfe\x00")
    assert failure("file://key.bin", context(tmp_path, {})) == (
        f"file://key.bin: {tmp_path}/key.bin is not UTF-8 text"
    )


# --- secret://local ----------------------------------------------------------------------


def test_local_reads_the_environments_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SQLIFIER_SECRET_KEY", raising=False)
    ctx = context(tmp_path, {})
    ctx.state_dir.mkdir(parents=True)
    LocalStore(ctx.state_dir, "dev").set("db_password", PASSWORD, who="test")
    assert resolve("secret://local/db_password", ctx) == PASSWORD


def test_local_missing_is_the_stores_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SQLIFIER_SECRET_KEY", raising=False)
    ctx = context(tmp_path, {})
    ctx.state_dir.mkdir(parents=True)
    with pytest.raises(SecretError, match="no secret db_password in dev"):
        resolve("secret://local/db_password", ctx)


# --- vault:// against OpenBao ------------------------------------------------------------


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    """An OpenBao dev server holding secret/shop/db {password, user} and
    secret/shop/config {port: 5432}, with AppRole enabled and a role `agent` that may read
    secret/shop/*."""
    with running_openbao(tmp_path_factory.mktemp("bao")) as server, server.client() as root:
        kv = root.secrets.kv.v2
        kv.create_or_update_secret(path="shop/db", secret={"password": PASSWORD, "user": "shop"})
        kv.create_or_update_secret(path="shop/config", secret={"port": 5432})
        root.sys.create_or_update_policy(
            name="shop-read", policy='path "secret/data/shop/*" { capabilities = ["read"] }'
        )
        root.sys.create_or_update_policy(
            name="billing-read", policy='path "secret/data/billing/*" { capabilities = ["read"] }'
        )
        root.sys.enable_auth_method("approle")
        root.auth.approle.create_or_update_approle("agent", token_policies=["shop-read"])
        yield server


def approle_environ(bao: OpenBao) -> dict[str, str]:
    """VAULT_ADDR and a fresh AppRole login for the role `agent`."""
    with bao.client() as root:
        role_id = root.auth.approle.read_role_id("agent")["data"]["role_id"]
        secret_id = root.auth.approle.generate_secret_id("agent")["data"]["secret_id"]
    return {"VAULT_ADDR": bao.url, "VAULT_ROLE_ID": role_id, "VAULT_SECRET_ID": secret_id}


def token_count(bao: OpenBao) -> int:
    with bao.client() as root:
        return len(root.auth.token.list_accessors()["data"]["keys"])


@needs_bao
def test_vault_reads_a_kv2_field(bao: OpenBao, tmp_path: Path) -> None:
    ctx = context(tmp_path, bao.environ())
    assert resolve("vault://secret/shop/db#password", ctx) == PASSWORD


@needs_bao
def test_vault_api_path_reads_the_same_secret(bao: OpenBao, tmp_path: Path) -> None:
    ctx = context(tmp_path, bao.environ())
    assert resolve("vault://secret/data/shop/db#user", ctx) == "shop"


@needs_bao
def test_vault_bao_variables_work_too(bao: OpenBao, tmp_path: Path) -> None:
    ctx = context(tmp_path, {"BAO_ADDR": bao.url, "BAO_TOKEN": ROOT_TOKEN})
    assert resolve("vault://secret/shop/db#password", ctx) == PASSWORD


@needs_bao
def test_vault_a_field_that_is_not_text_is_its_json(bao: OpenBao, tmp_path: Path) -> None:
    assert resolve("vault://secret/shop/config#port", context(tmp_path, bao.environ())) == "5432"


@needs_bao
def test_vault_missing_key_lists_the_keys(bao: OpenBao, tmp_path: Path) -> None:
    assert failure("vault://secret/shop/db#pasword", context(tmp_path, bao.environ())) == (
        "vault://secret/shop/db#pasword: no key 'pasword' in secret/shop/db; keys: password, user"
    )


@needs_bao
def test_vault_missing_path(bao: OpenBao, tmp_path: Path) -> None:
    assert failure("vault://secret/shop/nope#password", context(tmp_path, bao.environ())) == (
        "vault://secret/shop/nope#password: no secret at secret/shop/nope"
    )


@needs_bao
def test_vault_missing_mount_says_the_first_segment_is_the_mount(
    bao: OpenBao, tmp_path: Path
) -> None:
    assert failure("vault://shop/db#password", context(tmp_path, bao.environ())) == (
        "vault://shop/db#password: no secrets engine is mounted at shop/ "
        "(the first segment of a vault:// path is the KV v2 mount)"
    )


@needs_bao
def test_vault_policy_that_forbids_the_path(bao: OpenBao, tmp_path: Path) -> None:
    with bao.client() as root:
        created = root.auth.token.create(policies=["billing-read"], ttl="10m")
    token = created["auth"]["client_token"]
    message = failure("vault://secret/shop/db#password", context(tmp_path, bao.environ(token)))
    assert message == (
        "vault://secret/shop/db#password: permission denied (403) — "
        "the token's policy does not allow reading secret/data/shop/db"
    )


@needs_bao
def test_vault_invalid_token(bao: OpenBao, tmp_path: Path) -> None:
    ctx = context(tmp_path, bao.environ("s.not-a-real-token"))
    assert failure("vault://secret/shop/db#password", ctx) == (
        "vault://secret/shop/db#password: permission denied (403) — the token is invalid or expired"
    )


@needs_bao
def test_vault_approle_login_reads_the_secret(bao: OpenBao, tmp_path: Path) -> None:
    ctx = context(tmp_path, approle_environ(bao))
    assert resolve("vault://secret/shop/db#password", ctx) == PASSWORD


@needs_bao
def test_vault_approle_token_is_revoked_after_the_read(bao: OpenBao, tmp_path: Path) -> None:
    ctx = context(tmp_path, approle_environ(bao))
    before = token_count(bao)
    resolve("vault://secret/shop/db#password", ctx)
    assert token_count(bao) == before


@needs_bao
def test_vault_approle_with_a_wrong_secret_id(bao: OpenBao, tmp_path: Path) -> None:
    environ = {**approle_environ(bao), "VAULT_SECRET_ID": "0b5f0f1e-wrong"}
    message = failure("vault://secret/shop/db#password", context(tmp_path, environ))
    assert message == (
        "vault://secret/shop/db#password: AppRole login failed: invalid role or secret ID (400)"
    )


def test_vault_approle_needs_both_ids(tmp_path: Path) -> None:
    environ = {"VAULT_ADDR": closed_address(), "VAULT_ROLE_ID": "role"}
    assert failure("vault://secret/shop/db#password", context(tmp_path, environ)) == (
        "vault://secret/shop/db#password: "
        "AppRole needs VAULT_ROLE_ID and VAULT_SECRET_ID; VAULT_SECRET_ID is not set"
    )


def test_vault_without_an_address(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:8200")  # the process's is not the agent's
    assert failure("vault://secret/shop/db#password", context(tmp_path, {})) == (
        "vault://secret/shop/db#password: VAULT_ADDR (or BAO_ADDR) is not set"
    )


def test_vault_without_credentials(tmp_path: Path) -> None:
    environ = {"VAULT_ADDR": closed_address()}
    assert failure("vault://secret/shop/db#password", context(tmp_path, environ)) == (
        "vault://secret/shop/db#password: no Vault credentials: set VAULT_TOKEN (or BAO_TOKEN), "
        "or VAULT_ROLE_ID and VAULT_SECRET_ID for AppRole"
    )


def test_vault_unreachable(tmp_path: Path) -> None:
    address = closed_address()
    ctx = context(tmp_path, {"VAULT_ADDR": address, "VAULT_TOKEN": ROOT_TOKEN})
    assert failure("vault://secret/shop/db#password", ctx) == (
        f"vault://secret/shop/db#password: cannot reach Vault at {address}: Connection refused"
    )


@needs_bao
def test_vault_root_token_appears_in_no_error(bao: OpenBao, tmp_path: Path) -> None:
    # An address that carries the token, as a careless URL would, is the hard case.
    careless = closed_address().replace("//", f"//{ROOT_TOKEN}@")
    cases = [
        ("vault://secret/shop/db#pasword", bao.environ()),
        ("vault://secret/shop/nope#password", bao.environ()),
        ("vault://shop/db#password", bao.environ()),
        ("vault://secret/shop/db#password", {"VAULT_ADDR": careless, "VAULT_TOKEN": ROOT_TOKEN}),
    ]
    messages = [failure(reference, context(tmp_path, environ)) for reference, environ in cases]
    assert messages[-1].startswith(
        "vault://secret/shop/db#password: cannot reach Vault at http://****@"
    )
    assert not [message for message in messages if ROOT_TOKEN in message]


@needs_bao
def test_vault_resolve_async_reads_the_value(bao: OpenBao, tmp_path: Path) -> None:
    ctx = context(tmp_path, bao.environ())
    assert asyncio.run(resolve_async("vault://secret/shop/db#password", ctx)) == PASSWORD


# --- timeouts ----------------------------------------------------------------------------


def test_vault_that_never_answers_times_out(tmp_path: Path) -> None:
    with silent_server() as address:
        ctx = context(tmp_path, {"VAULT_ADDR": address, "VAULT_TOKEN": "t"}, timeout=0.5)
        assert failure("vault://secret/shop/db#password", ctx) == (
            "vault://secret/shop/db#password: timed out after 0.5s"
        )


def test_resolve_async_is_bounded_by_the_timeout(tmp_path: Path) -> None:
    async def attempt(ctx: Context) -> tuple[str, float]:
        started = time.monotonic()
        with pytest.raises(SecretError) as caught:
            await resolve_async("vault://secret/shop/db#password", ctx)
        return str(caught.value), time.monotonic() - started

    with silent_server() as address:
        environ = {"VAULT_ADDR": address, "VAULT_TOKEN": "t"}
        message, took = asyncio.run(attempt(context(tmp_path, environ, timeout=0.5)))
    assert message == "vault://secret/shop/db#password: timed out after 0.5s"
    assert took < 1.0  # the bound, and slack for a busy machine


def test_resolve_async_is_bounded_even_when_the_provider_is_not(tmp_path: Path) -> None:
    # Opening a FIFO for reading blocks until a writer comes; the file provider has no
    # timeout of its own.
    fifo = tmp_path / "db"
    os.mkfifo(fifo)

    async def attempt() -> str:
        with pytest.raises(SecretError) as caught:
            await resolve_async("file://db", context(tmp_path, {}, timeout=0.5))
        release(fifo)  # let the worker thread finish, or asyncio.run would wait for it
        return str(caught.value)

    assert asyncio.run(attempt()) == "file://db: timed out after 0.5s"


def release(fifo: Path) -> None:
    """Open the FIFO for writing once its reader waits, and close it: the reader reads EOF."""
    give_up = time.monotonic() + 10
    while True:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            return
        except OSError:  # ENXIO: no reader yet
            if time.monotonic() > give_up:
                raise
            time.sleep(0.01)


# --- aws-sm:// and ssm:// against moto ---------------------------------------------------


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    """moto holding secrets shop/db (JSON), shop/plain (text) and a SecureString parameter
    /shop/db/password."""
    with running_moto(tmp_path_factory.mktemp("moto")) as server:
        with server.client("secretsmanager") as sm:
            sm.create_secret(
                Name="shop/db", SecretString=json.dumps({"password": PASSWORD, "user": "shop"})
            )
            sm.create_secret(Name="shop/plain", SecretString=f"{PASSWORD}-plain")
        with server.client("ssm") as ssm:
            ssm.put_parameter(Name="/shop/db/password", Value=PASSWORD, Type="SecureString")
        yield server


@pytest.fixture
def aws_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No AWS settings from the test run's own environment or files."""
    for name in list(os.environ):
        if name.startswith("AWS_") and name != "AWS_CA_BUNDLE":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@needs_moto
def test_aws_sm_reads_a_json_field(aws: Moto, tmp_path: Path) -> None:
    assert resolve("aws-sm://shop/db#password", context(tmp_path, aws.environ())) == PASSWORD


@needs_moto
def test_aws_sm_without_key_reads_the_whole_string(aws: Moto, tmp_path: Path) -> None:
    ctx = context(tmp_path, aws.environ())
    assert resolve("aws-sm://shop/plain", ctx) == f"{PASSWORD}-plain"


@needs_moto
def test_aws_sm_missing_secret(aws: Moto, tmp_path: Path) -> None:
    assert failure("aws-sm://shop/nope#password", context(tmp_path, aws.environ())) == (
        "aws-sm://shop/nope#password: ResourceNotFoundException: "
        "Secrets Manager can't find the specified secret."
    )


@needs_moto
def test_aws_sm_missing_key_lists_the_keys(aws: Moto, tmp_path: Path) -> None:
    assert failure("aws-sm://shop/db#pasword", context(tmp_path, aws.environ())) == (
        "aws-sm://shop/db#pasword: no key 'pasword' in shop/db; keys: password, user"
    )


@needs_moto
def test_aws_sm_key_of_a_secret_that_is_not_json(aws: Moto, tmp_path: Path) -> None:
    message = failure("aws-sm://shop/plain#password", context(tmp_path, aws.environ()))
    assert message == (
        "aws-sm://shop/plain#password: the secret is not a JSON object, so it has no key "
        "'password' (aws-sm://shop/plain reads the whole string)"
    )
    assert PASSWORD not in message


@needs_moto
def test_ssm_reads_a_secure_string_decrypted(aws: Moto, tmp_path: Path) -> None:
    assert resolve("ssm:///shop/db/password", context(tmp_path, aws.environ())) == PASSWORD


@needs_moto
def test_ssm_missing_parameter(aws: Moto, tmp_path: Path) -> None:
    assert failure("ssm:///shop/nope", context(tmp_path, aws.environ())) == (
        "ssm:///shop/nope: ParameterNotFound: Parameter /shop/nope not found."
    )


@needs_moto
def test_aws_without_a_region(aws: Moto, tmp_path: Path, aws_files: None) -> None:
    environ = {k: v for k, v in aws.environ().items() if k != "AWS_REGION"}
    assert failure("ssm:///shop/db/password", context(tmp_path, environ)) == (
        "ssm:///shop/db/password: no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION)"
    )


@needs_moto
def test_aws_credentials_appear_in_no_error(aws: Moto, tmp_path: Path) -> None:
    environ = {
        **aws.environ(),
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-K7MDENG",
        "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEJr-session",
    }
    messages = [
        failure(reference, context(tmp_path, environ))
        for reference in ("aws-sm://shop/nope#password", "ssm:///shop/nope")
    ]
    assert not [m for m in messages if "wJalrXUtnFEMI" in m or "FwoGZXIv" in m]


def test_aws_unreachable(tmp_path: Path, aws_files: None) -> None:
    address = closed_address()
    environ = {"AWS_ENDPOINT_URL": address, **AWS_TEST_ENVIRON}
    assert failure("ssm:///shop/db/password", context(tmp_path, environ)) == (
        f'ssm:///shop/db/password: Could not connect to the endpoint URL: "{address}/"'
    )


def test_aws_that_never_answers_times_out(tmp_path: Path, aws_files: None) -> None:
    with silent_server() as address:
        environ = {"AWS_ENDPOINT_URL": address, **AWS_TEST_ENVIRON}
        ctx = context(tmp_path, environ, timeout=0.5)
        assert failure("aws-sm://shop/db#password", ctx) == (
            "aws-sm://shop/db#password: timed out after 0.5s"
        )
