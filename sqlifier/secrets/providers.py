"""Secret references and their providers: the value a reference names, read when asked.

    secret://local/NAME      sqlifier's encrypted store for the environment (secrets.local)
    vault://MOUNT/PATH#KEY   the KEY field of a Vault or OpenBao KV v2 secret
    aws-sm://NAME#KEY        a field of an AWS Secrets Manager secret holding a JSON object;
    aws-sm://NAME            without #KEY, the whole secret string
    ssm:///PATH              an AWS SSM Parameter Store parameter, decrypted
    env://NAME               a variable of the agent's environment
    file://PATH              a file's content less one trailing newline; a relative PATH is
                             relative to the stack folder

Vault: the first segment of the path is the KV v2 mount, the rest the secret's path in it:
`vault://secret/shop/db#password` reads `secret/data/shop/db`. The API path that policies
name, `vault://secret/data/shop/db#password`, reads the same secret. The agent's environment
holds the address (VAULT_ADDR or BAO_ADDR), the credentials (VAULT_TOKEN or BAO_TOKEN; else
AppRole with VAULT_ROLE_ID and VAULT_SECRET_ID — a token of its own per read, revoked
after it), and optionally VAULT_NAMESPACE and VAULT_CACERT.

AWS: the region is AWS_REGION or AWS_DEFAULT_REGION, the credentials AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) when set, else boto3's default chain (profile,
instance role); AWS_ENDPOINT_URL points at another endpoint (an emulator, a VPC endpoint).

Every failure is a SecretError that names the reference and says what the provider
answered, never a value; credentials found in a message are masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlifier.secrets.errors import SecretError
from sqlifier.secrets.redact import MASK, MIN_LENGTH

if TYPE_CHECKING:
    import hvac
    from hvac.exceptions import VaultError

__all__ = ["Context", "Reference", "parse_reference", "resolve", "resolve_async"]

# (prefix, scheme, the form a reference of that scheme takes)
_SCHEMES = (
    ("secret://", "local", "secret://local/NAME, as in secret://local/db_password"),
    ("vault://", "vault", "vault://MOUNT/PATH#KEY, as in vault://secret/shop/db#password"),
    ("aws-sm://", "aws-sm", "aws-sm://NAME#KEY or aws-sm://NAME, as in aws-sm://shop/db#password"),
    ("ssm://", "ssm", "ssm:///PATH, as in ssm:///shop/db/password"),
    ("env://", "env", "env://NAME, as in env://DB_PASSWORD"),
    ("file://", "file", "file://PATH, as in file://secrets/db_password"),
)
_PROVIDERS_LIST = (
    "secret://local/NAME, vault://MOUNT/PATH#KEY, aws-sm://NAME#KEY, ssm:///PATH, "
    "env://NAME, file://PATH"
)
_LOCAL_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SSM_PATH = re.compile(r"/[^#]+\Z")
_CREDENTIALS = (
    "VAULT_TOKEN",
    "BAO_TOKEN",
    "VAULT_SECRET_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
# hvac's exception classes stand for these statuses; its exceptions do not carry them.
_VAULT_STATUS = {
    "InvalidRequest": 400,
    "Unauthorized": 401,
    "Forbidden": 403,
    "InvalidPath": 404,
    "UnsupportedOperation": 405,
    "PreconditionFailed": 412,
    "RateLimitExceeded": 429,
    "InternalServerError": 500,
    "VaultNotInitialized": 501,
    "BadGateway": 502,
    "VaultDown": 503,
}


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed reference: `vault://secret/shop/db#password` is scheme "vault", path
    "secret/shop/db", key "password"."""

    text: str  # as written
    scheme: str  # "local" | "vault" | "aws-sm" | "ssm" | "env" | "file"
    path: str
    key: str | None


@dataclass(frozen=True)
class Context:
    """Where references are resolved: the environment, its state, the agent's variables."""

    env: str  # the environment
    state_dir: Path  # .sqlifier/<env>/
    root: Path  # the stack folder (for file:// relative paths)
    environ: Mapping[str, str]  # the agent's environment: provider addresses, credentials
    timeout: float = 5.0  # seconds, for each provider request and for resolve_async


class _Failure(Exception):
    """A provider's failure, worded without the reference; resolve() prefixes it."""


# vault:// and the AWS references need an optional extra of the install (README.md).
_MISSING = (
    "this reference needs {package}, which is not installed: install sqlifier with it, "
    "pipx install 'sqlifier[{extra}]' (or pipx inject sqlifier {package})"
)


def parse_reference(text: str) -> Reference:
    """The parts of a reference; SecretError when it is malformed."""
    for prefix, scheme, form in _SCHEMES:
        if text.startswith(prefix):
            reference = _split(text, scheme, text[len(prefix) :])
            if reference is None or any(char.isspace() for char in text):
                raise SecretError(f"{text}: expected {form}")
            return reference
    if "://" in text:
        head = text.partition("://")[0]
        raise SecretError(f"unknown secret provider '{head}://'; providers: {_PROVIDERS_LIST}")
    # Not echoed: what is not a reference may be a value pasted in its place.
    raise SecretError(f"not a secret reference; providers: {_PROVIDERS_LIST}")


def _split(text: str, scheme: str, rest: str) -> Reference | None:
    """The reference, or None when `rest` does not fit the scheme's form."""
    path, key = rest, None
    if scheme in ("vault", "aws-sm") and "#" in rest:
        path, _, key = rest.partition("#")
        if not key or "#" in key:
            return None
    if scheme == "local":
        path = path[len("local/") :] if path.startswith("local/") else ""
    if not _fits(scheme, path, key):
        return None
    return Reference(text, scheme, path, key)


def _fits(scheme: str, path: str, key: str | None) -> bool:
    if scheme == "local":
        return bool(_LOCAL_NAME.match(path))
    if scheme == "vault":
        return key is not None and "/" in path and all(path.split("/"))
    if scheme == "ssm":
        return bool(_SSM_PATH.match(path))
    if scheme == "env":
        return bool(_ENV_NAME.match(path))
    return bool(path)  # aws-sm, file


def resolve(reference: str, context: Context) -> str:
    """The value a reference names, read from its provider now (blocking).

    SecretError on any failure, naming the reference and the provider's error.
    """
    parsed = parse_reference(reference)
    provider = _PROVIDERS[parsed.scheme]
    try:
        return provider(parsed, context)
    except _Failure as failure:
        raise SecretError(_masked(f"{reference}: {failure}", context.environ)) from None


async def resolve_async(reference: str, context: Context) -> str:
    """resolve() in a worker thread, bounded by context.timeout.

    On timeout the thread is left to finish on its own: Vault and AWS requests are bounded
    by the same timeout and end soon after; a file read that blocks (a FIFO, a hung network
    mount) holds its thread until it returns.
    """
    try:
        async with asyncio.timeout(context.timeout):
            return await asyncio.to_thread(resolve, reference, context)
    except TimeoutError:
        raise SecretError(f"{reference}: {_timed_out(context.timeout)}") from None


# --- providers ---------------------------------------------------------------------------


def _local(reference: Reference, context: Context) -> str:
    # Imported when used: the store brings cryptography and SQLite. Its SecretError says
    # which secret and environment, and what to run.
    from sqlifier.secrets.local import LocalStore  # noqa: PLC0415

    return LocalStore(context.state_dir, context.env).get(reference.path)


def _env(reference: Reference, context: Context) -> str:
    value = context.environ.get(reference.path)
    if value is None:
        raise _Failure(f"the agent's environment has no {reference.path}")
    return value


def _file(reference: Reference, context: Context) -> str:
    path = context.root / reference.path  # an absolute path stays itself
    try:
        data = path.read_bytes()
    except OSError as error:
        raise _Failure(f"cannot read {path}: {error.strerror or error}") from None
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise _Failure(f"{path} is not UTF-8 text") from None
    return text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")


def _vault(reference: Reference, context: Context) -> str:
    # hvac and requests load when a vault:// reference is resolved, not with every command.
    try:
        import hvac  # noqa: PLC0415
        import requests  # noqa: PLC0415
    except ImportError:
        raise _Failure(_MISSING.format(extra="vault", package="hvac")) from None

    environ = context.environ
    address = environ.get("VAULT_ADDR") or environ.get("BAO_ADDR")
    if not address:
        raise _Failure("VAULT_ADDR (or BAO_ADDR) is not set")
    token = environ.get("VAULT_TOKEN") or environ.get("BAO_TOKEN") or ""
    approle = None if token else _approle(environ)
    mount, path = _vault_location(reference.path)
    client = hvac.Client(
        url=address,
        token=token,  # given, even empty, so that hvac does not read ~/.vault-token
        verify=environ.get("VAULT_CACERT") or True,
        timeout=context.timeout,  # type: ignore[arg-type]  # requests takes seconds as a float
        namespace=environ.get("VAULT_NAMESPACE") or None,
    )
    try:
        if approle:
            _approle_login(client, *approle)
        data = _vault_read(client, mount, path)
        if approle:  # the token was this read's alone; a failed revocation loses nothing
            with contextlib.suppress(Exception):
                client.auth.token.revoke_self()
    except requests.RequestException as error:
        raise _Failure(_unreachable(f"Vault at {address}", error, context.timeout)) from None
    except hvac.exceptions.VaultDown:
        raise _Failure("Vault is sealed or unavailable (503)") from None
    except hvac.exceptions.VaultError as error:
        raise _Failure(f"Vault refused: {_vault_reason(error)}") from None
    finally:
        client.adapter.close()
    assert reference.key is not None  # parse_reference requires it
    return _field(data, reference.key, f"{mount}/{path}")


def _vault_location(path: str) -> tuple[str, str]:
    """(mount, path in it); "secret/data/shop/db" is the API path of "secret/shop/db"."""
    mount, _, rest = path.partition("/")
    if rest.startswith("data/"):
        rest = rest[5:]
    return mount, rest


def _approle(environ: Mapping[str, str]) -> tuple[str, str]:
    role_id, secret_id = environ.get("VAULT_ROLE_ID"), environ.get("VAULT_SECRET_ID")
    if role_id and secret_id:
        return role_id, secret_id
    if role_id or secret_id:
        missing = "VAULT_SECRET_ID" if role_id else "VAULT_ROLE_ID"
        raise _Failure(f"AppRole needs VAULT_ROLE_ID and VAULT_SECRET_ID; {missing} is not set")
    raise _Failure(
        "no Vault credentials: set VAULT_TOKEN (or BAO_TOKEN), "
        "or VAULT_ROLE_ID and VAULT_SECRET_ID for AppRole"
    )


def _approle_login(client: hvac.Client, role_id: str, secret_id: str) -> None:
    from hvac.exceptions import Forbidden, InvalidPath, InvalidRequest  # noqa: PLC0415

    try:
        client.auth.approle.login(role_id=role_id, secret_id=secret_id)
    except (Forbidden, InvalidPath, InvalidRequest) as error:
        raise _Failure(f"AppRole login failed: {_vault_reason(error)}") from None


def _vault_read(client: hvac.Client, mount: str, path: str) -> Mapping[str, object]:
    from hvac.exceptions import Forbidden, InvalidPath  # noqa: PLC0415

    try:
        response = client.secrets.kv.v2.read_secret_version(
            path=path, mount_point=mount, raise_on_deleted_version=True
        )
    except Forbidden:
        raise _Failure(_vault_denied(client, f"{mount}/data/{path}")) from None
    except InvalidPath as error:
        if "no handler for route" in _vault_reason(error):
            raise _Failure(
                f"no secrets engine is mounted at {mount}/ "
                "(the first segment of a vault:// path is the KV v2 mount)"
            ) from None
        raise _Failure(f"no secret at {mount}/{path}") from None
    data = response.get("data", {}).get("data")
    if not isinstance(data, dict):
        raise _Failure(f"{mount}/{path} is not a KV v2 secret")
    return data


def _vault_denied(client: hvac.Client, api_path: str) -> str:
    """Why a read was refused: a dead token, or a policy that does not allow it."""
    from hvac.exceptions import Forbidden  # noqa: PLC0415

    try:
        client.auth.token.lookup_self()
    except Forbidden:
        return "permission denied (403) — the token is invalid or expired"
    except Exception:  # the read's refusal is the error to report, not this one's
        pass
    return f"permission denied (403) — the token's policy does not allow reading {api_path}"


def _vault_reason(error: VaultError) -> str:
    """Vault's own words: "1 error occurred:\\n\\t* permission denied" is "permission denied"."""
    lines = [line.strip() for text in error.errors or () for line in str(text).splitlines()]
    details = [line[2:] for line in lines if line.startswith("* ")] or list(filter(None, lines))
    reason = "; ".join(details) or "no details"
    status = _VAULT_STATUS.get(type(error).__name__)
    return f"{reason} ({status})" if status else reason


def _aws_sm(reference: Reference, context: Context) -> str:
    response = _aws_call(
        "secretsmanager", context, lambda client: client.get_secret_value(SecretId=reference.path)
    )
    text = _secret_string(response)
    if reference.key is None:
        return text
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise _Failure(
            f"the secret is not a JSON object, so it has no key '{reference.key}' "
            f"(aws-sm://{reference.path} reads the whole string)"
        )
    return _field(data, reference.key, reference.path)


def _secret_string(response: Mapping[str, Any]) -> str:
    text = response.get("SecretString")
    if isinstance(text, str):
        return text
    try:
        return bytes(response.get("SecretBinary") or b"").decode()
    except UnicodeDecodeError:
        raise _Failure("the secret is binary, not UTF-8 text") from None


def _ssm(reference: Reference, context: Context) -> str:
    response = _aws_call(
        "ssm",
        context,
        lambda client: client.get_parameter(Name=reference.path, WithDecryption=True),
    )
    return str(response["Parameter"]["Value"])


def _aws_call(service: str, context: Context, call: Callable[[Any], Any]) -> Any:
    """`call(client)` with a client of `service`, its errors worded as failures."""
    # botocore loads when an AWS reference is resolved, not with every command.
    try:
        from botocore import exceptions as aws  # noqa: PLC0415
    except ImportError:
        raise _Failure(_MISSING.format(extra="aws", package="boto3")) from None

    try:
        client = _aws_client(service, context)
        try:
            return call(client)
        finally:
            client.close()
    except (aws.ConnectTimeoutError, aws.ReadTimeoutError):
        raise _Failure(_timed_out(context.timeout)) from None
    except aws.ClientError as error:
        info = error.response.get("Error", {})
        code, message = info.get("Code", "Error"), info.get("Message")
        raise _Failure(f"{code}: {message}" if message else code) from None
    except aws.NoCredentialsError:
        raise _Failure(
            "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "or AWS_PROFILE, or give the machine a role"
        ) from None
    except aws.NoRegionError:
        raise _Failure("no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION)") from None
    except (aws.BotoCoreError, ValueError) as error:  # ValueError: a malformed endpoint URL
        raise _Failure(str(error)) from None


def _aws_client(service: str, context: Context) -> Any:
    import boto3.session  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    environ = context.environ
    options: dict[str, Any] = {
        "region_name": environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None
    }
    if environ.get("AWS_ACCESS_KEY_ID") and environ.get("AWS_SECRET_ACCESS_KEY"):
        options["aws_access_key_id"] = environ["AWS_ACCESS_KEY_ID"]
        options["aws_secret_access_key"] = environ["AWS_SECRET_ACCESS_KEY"]
        options["aws_session_token"] = environ.get("AWS_SESSION_TOKEN") or None
    elif environ.get("AWS_PROFILE"):
        options["profile_name"] = environ["AWS_PROFILE"]
    config = Config(
        connect_timeout=context.timeout,
        read_timeout=context.timeout,
        retries={"total_max_attempts": 2, "mode": "standard"},
    )
    session = boto3.session.Session(**options)
    return session.client(
        service, endpoint_url=environ.get("AWS_ENDPOINT_URL") or None, config=config
    )


# --- shared ------------------------------------------------------------------------------


def _field(data: Mapping[str, object], key: str, where: str) -> str:
    """A field of a secret; its text, or its JSON when it is not a string."""
    if key not in data:
        keys = ", ".join(sorted(data)) or "(none)"
        raise _Failure(f"no key '{key}' in {where}; keys: {keys}")
    value = data[key]
    return value if isinstance(value, str) else json.dumps(value)


def _unreachable(what: str, error: Exception, timeout: float) -> str:
    text = str(error)
    if "timed out" in text.lower():  # requests words some read timeouts as connection errors
        return _timed_out(timeout)
    cause = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text) or re.search(
        r"(\[SSL: [A-Z_]+\][^'\")]*)", text
    )
    return f"cannot reach {what}: {cause.group(1).strip() if cause else text}"


def _timed_out(timeout: float) -> str:
    return f"timed out after {timeout:g}s"


def _masked(message: str, environ: Mapping[str, str]) -> str:
    """The message with any credential of the environment masked (as the Redactor does,
    not those too short to mask without garbling the message)."""
    for name in _CREDENTIALS:
        value = environ.get(name)
        if value and len(value) >= MIN_LENGTH:
            message = message.replace(value, MASK)
    return message


_PROVIDERS: dict[str, Callable[[Reference, Context], str]] = {
    "local": _local,
    "vault": _vault,
    "aws-sm": _aws_sm,
    "ssm": _ssm,
    "env": _env,
    "file": _file,
}
