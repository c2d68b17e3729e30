"""`[router] tls` in the stack file: its forms, and its certificate files checked where the
stack file names them (errors and warnings with their positions); the development
certificate sqlifier makes and keeps."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path

import pytest

from sqlifier.errors import DiagnosticsError
from sqlifier.router.tls import fingerprint, prepare, self_signed
from sqlifier.stack import load_stack
from sqlifier.stack import model as m
from sqlifier.stack.tls import covers, read_pair
from tests.router.certs import NOW, make_cert

BASE = '[stack]\nname = "shop"\n\n[services.web]\nrun = "x"\nroutes = ["shop.localhost/"]\n\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sqlifier.toml"
    path.write_text(BASE + text)
    return path


def errors(tmp_path: Path, text: str) -> list[tuple[int, int, str]]:
    with pytest.raises(DiagnosticsError) as caught:
        load_stack(write(tmp_path, text), "sqlifier.toml")
    return [(d.line, d.col, d.message) for d in caught.value.diagnostics if d.is_error]


def warnings(tmp_path: Path, text: str) -> list[tuple[int, int, str]]:
    _, found = load_stack(write(tmp_path, text), "sqlifier.toml")
    return [(d.line, d.col, d.message) for d in found]


def test_one_certificate_and_the_options(tmp_path: Path) -> None:
    make_cert(tmp_path / "certs", "shop", ["shop.localhost"])
    stack, found = load_stack(
        write(
            tmp_path,
            '[router]\nlisten = "127.0.0.1:8443"\ntls = { cert = "certs/shop.crt", '
            'key = "certs/shop.key", redirect = "127.0.0.1:8080", hsts = "1d" }\n',
        )
    )
    assert found == []
    assert stack.router.tls == m.Tls(
        (m.TlsCertificate("certs/shop.crt", "certs/shop.key"),),
        redirect=("127.0.0.1", 8080),
        hsts=86400.0,
    )


def test_several_certificates_the_first_the_default(tmp_path: Path) -> None:
    make_cert(tmp_path, "a", ["shop.localhost"])
    make_cert(tmp_path, "b", ["b.localhost"])
    stack, found = load_stack(
        write(
            tmp_path,
            '[router]\ntls = { certs = [{ cert = "a.crt", key = "a.key" }, '
            '{ cert = "b.crt", key = "b.key" }] }\n',
        )
    )
    assert found == []
    assert stack.router.tls is not None
    assert [c.cert for c in stack.router.tls.certificates] == ["a.crt", "b.crt"]


def test_an_environment_overrides_tls_like_listen(tmp_path: Path) -> None:
    stack, _ = load_stack(
        write(
            tmp_path,
            '[router]\ntls = "self-signed"\n\n[environments.ci]\ntls = "off"\n'
            '[environments.dev]\nlisten = "127.0.0.1:9443"\n',
        )
    )
    assert stack.router_for("dev").tls == m.Tls(self_signed=True)
    assert stack.router_for("dev").port == 9443
    assert stack.router_for("ci").tls is None
    assert stack.router_for("other").tls == m.Tls(self_signed=True)


def test_a_stack_without_tls_is_unchanged(tmp_path: Path) -> None:
    stack, _ = load_stack(write(tmp_path, ""))
    assert stack.router == m.Router()
    assert stack.router_for("dev") == m.Router()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'tls = "yes"',
            (
                9,
                7,
                'router.tls must be "self-signed", "off" or a table like '
                '{ cert = "certs/site.pem", key = "certs/site.key" }',
            ),
        ),
        (
            'tls = { cert = "a.crt" }',
            (
                9,
                7,
                'router.tls has no key; write { cert = "certs/site.pem", key = "certs/site.key" }',
            ),
        ),
        (
            'tls = { crt = "a.crt", key = "a.key" }',
            (
                9,
                9,
                "unknown key 'crt' in router.tls; valid: cert, key, certs, self_signed, redirect, hsts",
            ),
        ),
        (
            'tls = { self_signed = true, redirect = "8080" }',
            (
                9,
                40,
                "router.tls.redirect must be host:port, like \"127.0.0.1:8080\", found '8080'",
            ),
        ),
        (
            "tls = { certs = [] }",
            (
                9,
                17,
                "router.tls.certs must be a list of tables like "
                '[{ cert = "certs/site.pem", key = "certs/site.key" }]',
            ),
        ),
        (
            'tls = { hsts = "1d" }',
            (
                9,
                7,
                "router.tls names no certificate: give cert and key, certs = [...], "
                'or self_signed = true (or write tls = "self-signed")',
            ),
        ),
    ],
)
def test_bad_tls_values(tmp_path: Path, text: str, expected: tuple[int, int, str]) -> None:
    assert errors(tmp_path, f"[router]\n{text}\n") == [expected]


def test_missing_files_are_errors_at_their_key(tmp_path: Path) -> None:
    found = errors(tmp_path, '[router]\ntls = { cert = "none.crt", key = "none.key" }\n')
    assert found == [(9, 16, "router.tls: none.crt does not exist")]


def test_an_unreadable_key_is_an_error(tmp_path: Path) -> None:
    make_cert(tmp_path, "shop", ["shop.localhost"])
    (tmp_path / "shop.key").write_text("not a key\n")
    found = errors(tmp_path, '[router]\ntls = { cert = "shop.crt", key = "shop.key" }\n')
    assert len(found) == 1
    assert found[0][:2] == (9, 34)
    assert found[0][2].startswith(
        "router.tls: shop.key holds no PEM private key (-----BEGIN PRIVATE KEY-----)"
    )


def test_a_key_that_is_not_the_certificates(tmp_path: Path) -> None:
    make_cert(tmp_path, "a", ["shop.localhost"])
    make_cert(tmp_path, "b", ["shop.localhost"])
    found = errors(tmp_path, '[router]\ntls = { cert = "a.crt", key = "b.key" }\n')
    assert found == [
        (
            9,
            31,
            "router.tls: b.key is not the key of a.crt (their public keys differ)",
        )
    ]


def test_which_of_several_certificates_is_wrong(tmp_path: Path) -> None:
    make_cert(tmp_path, "a", ["shop.localhost"])
    found = errors(
        tmp_path,
        '[router]\ntls = { certs = [\n  { cert = "a.crt", key = "a.key" },\n'
        '  { cert = "b.crt", key = "b.key" },\n] }\n',
    )
    assert found == [(11, 12, "router.tls: b.crt does not exist")]


def test_an_expired_certificate_is_a_warning(tmp_path: Path) -> None:
    make_cert(tmp_path, "old", ["shop.localhost"], days=10, start=NOW - datetime.timedelta(days=40))
    ended = (NOW - datetime.timedelta(days=30)).strftime("%Y-%m-%d")
    assert warnings(tmp_path, '[router]\ntls = { cert = "old.crt", key = "old.key" }\n') == [
        (9, 16, f"the certificate old.crt expired on {ended}: clients will refuse it")
    ]


def test_a_route_host_no_certificate_names_is_a_warning(tmp_path: Path) -> None:
    make_cert(tmp_path, "other", ["other.localhost", "*.example.com"])
    assert warnings(tmp_path, '[router]\ntls = { cert = "other.crt", key = "other.key" }\n') == [
        (
            9,
            7,
            "no certificate of router.tls names shop.localhost (a route of web): clients "
            "asking for it get other.crt, which names other.localhost, *.example.com",
        )
    ]


def test_a_wildcard_certificate_covers_one_label() -> None:
    assert covers(["*.b.localhost"], "x.b.localhost")
    assert covers(["*.b.localhost"], "X.B.localhost.")
    assert not covers(["*.b.localhost"], "b.localhost")
    assert not covers(["*.b.localhost"], "y.x.b.localhost")
    assert not covers(["*.localhost"], "shop.localhost")  # OpenSSL refuses such wildcards


def test_the_redirect_address_counts_as_a_listener(tmp_path: Path) -> None:
    found = warnings(
        tmp_path,
        '[router]\nlisten = "127.0.0.1:8443"\n'
        'tls = { self_signed = true, redirect = "127.0.0.1:9464" }\n',
    )
    assert [message for _, _, message in found] == [
        "router.tls.redirect and /metrics both listen on 127.0.0.1:9464"
    ]


# --- the development certificate ----------------------------------------------------------


def test_self_signed_is_private_reused_and_covers_the_route_hosts(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path / "tls", ["shop.localhost"], "sqlifier shop (dev)")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    pair = read_pair(cert, key)
    assert set(pair.names) == {"localhost", "shop.localhost"}
    first = fingerprint(cert.read_bytes())
    again = self_signed(tmp_path / "tls", ["shop.localhost"], "sqlifier shop (dev)")
    assert again == (cert, key)
    assert fingerprint(cert.read_bytes()) == first  # reused across restarts
    self_signed(tmp_path / "tls", ["shop.localhost", "api.localhost"], "sqlifier shop (dev)")
    assert fingerprint(cert.read_bytes()) != first  # a new host: made again
    assert "api.localhost" in read_pair(cert, key).names


def test_self_signed_is_made_again_before_it_expires(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path, [], "t")
    first = fingerprint(cert.read_bytes())
    later = NOW + datetime.timedelta(days=61)  # 29 days left of 90
    self_signed(tmp_path, [], "t", now=later)
    assert fingerprint(cert.read_bytes()) != first


def test_prepare_says_the_fingerprint_the_cli_prints(tmp_path: Path) -> None:
    path, shown = prepare(m.Tls(self_signed=True), tmp_path, tmp_path / "state", [], "t")
    cert = tmp_path / "state" / "tls" / "self-signed.crt"
    assert shown["fingerprint"] == fingerprint(cert.read_bytes())
    assert len(shown["fingerprint"]) == 32 * 3 - 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
