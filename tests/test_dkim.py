"""DKIM: keys from the CLI, signatures that dkimpy verifies, signing on every path to SMTP."""

from __future__ import annotations

import dataclasses
import random
import re
import stat

import dkim
import pytest
from click.testing import CliRunner

from circulars.mail.dkim import (
    DkimKey,
    DkimKeyError,
    DkimSigner,
    SigningMessenger,
    canonical_body,
    load_key,
    write_key,
)
from circulars.mail.mime import AttachmentData, Envelope, build_message, prepare_message

DOMAIN = "example.org"


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("dkim")


@pytest.fixture(scope="module")
def keys(key_dir) -> dict[str, DkimKey]:
    return {
        "rsa": write_key(key_dir, "circ-rsa", "rsa"),
        "ed25519": write_key(key_dir, "circ-ed", "ed25519"),
    }


def dns_for(*keys: DkimKey, domain: str = DOMAIN):
    records = {f"{key.dns_name(domain)}.".encode(): key.dns_value().encode() for key in keys}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    return dnsfunc


def sample_message(
    *, attachment: bool = True, subject: str = "Circulaire n° 7 : été 2026"
) -> bytes:
    prepared = prepare_message(
        from_name="Réseau des droits",
        from_address=f"secretariat@{DOMAIN}",
        subject=subject,
        html_template="<p>Chère  %%CIRCULARS.name%%,\t</p>\r\n<p>Texte   avec  espaces.</p>\r\n",
        text_template="Chère %%CIRCULARS.name%%,  \r\n\r\nTexte.\r\n\r\n\r\n",
        attachments=[
            AttachmentData("Déclaration finale.pdf", "application/pdf", bytes(range(256)) * 40)
        ]
        if attachment
        else [],
        list_names={3: ("members", "Membres")},
        domain=DOMAIN,
    )
    return build_message(
        prepared,
        Envelope(
            to_name="Zoë Ødegård",
            to_address="zoe@example.org",
            list_id=3,
            unsubscribe_url="https://circulars.example.org/u/" + "t" * 150,
            unsubscribe_mailto=None,
            message_id=f"<7.1.abc@{DOMAIN}>",
            fields={"name": "Zoë"},
        ),
    )


def h_tag(signed: bytes) -> list[str]:
    header = signed.split(b"\r\n\r\n", 1)[0].decode()
    match = re.search(r"h=([^;]+);", header)
    assert match
    return re.sub(r"\s+", "", match.group(1)).split(":")


# --- unit: signatures --------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
@pytest.mark.parametrize("attachment", [True, False])
def test_signature_verifies_with_dkimpy(keys, algorithm, attachment):
    key = keys[algorithm]
    signed = DkimSigner(DOMAIN, [key]).sign(sample_message(attachment=attachment))
    assert signed.startswith(b"DKIM-Signature: v=1; a=" + key.signature_algorithm)
    assert dkim.verify(signed, dnsfunc=dns_for(key))


def test_dual_signing_both_verify(keys):
    signed = DkimSigner(DOMAIN, [keys["rsa"], keys["ed25519"]]).sign(sample_message())
    checker = dkim.DKIM(signed)
    assert signed.count(b"DKIM-Signature:") == 2
    assert checker.verify(idx=0, dnsfunc=dns_for(*keys.values()))
    assert checker.verify(idx=1, dnsfunc=dns_for(*keys.values()))


def test_rfc8058_headers_are_signed_and_from_oversigned(keys):
    names = h_tag(DkimSigner(DOMAIN, [keys["rsa"]]).sign(sample_message()))
    for name in ("from", "to", "subject", "date", "message-id", "mime-version", "content-type"):
        assert name in names
    assert "list-id" in names
    assert "list-unsubscribe" in names and "list-unsubscribe-post" in names
    assert names.count("from") == 2  # one more than present: a second From breaks it


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_tampering_fails_verification(keys, algorithm):
    key = keys[algorithm]
    signed = DkimSigner(DOMAIN, [key]).sign(sample_message())
    dnsfunc = dns_for(key)
    assert dkim.verify(signed, dnsfunc=dnsfunc)
    assert not dkim.verify(signed.replace(b"Texte.", b"Textf."), dnsfunc=dnsfunc)
    head, body = signed.split(b"\r\n\r\n", 1)
    assert not dkim.verify(
        head.replace(
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: x"
        )
        + b"\r\n\r\n"
        + body,
        dnsfunc=dnsfunc,
    )
    # An added List-Unsubscribe (oversigned) breaks it too.
    added = b"List-Unsubscribe: <https://evil.example/u>\r\n" + signed
    assert not dkim.verify(added, dnsfunc=dnsfunc)
    # And a key that is not the one published.
    from circulars.mail.dkim import generate_private_key

    stranger = dataclasses.replace(key, private_key=generate_private_key(algorithm))
    other = dns_for(stranger)
    assert not dkim.verify(signed, dnsfunc=other)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\r\n",
        b"\r\n\r\n",
        b"a \r\n\r\n",
        b"a\r\r\n",
        b"x  y\t\r\nz",
        b"abc",
        b"a \t",
        b" \r\n",
    ],
)
def test_body_canonicalisation_matches_dkimpy(body):
    from dkim.canonicalization import Relaxed

    assert canonical_body(body) == Relaxed.canonicalize_body(body)


def test_body_canonicalisation_matches_dkimpy_on_random_white_space():
    from dkim.canonicalization import Relaxed

    rng = random.Random(8)
    alphabet = [b" ", b" ", b"  ", b"\t", b"\r\n", b"a", b"<td>", b"=\r\n", b"        "]
    for _ in range(500):
        body = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 60)))
        assert canonical_body(body) == Relaxed.canonicalize_body(body), body


def test_bare_line_feeds_are_sent_as_crlf_and_verify(keys):
    message = sample_message(attachment=False).replace(b"Texte.\r\n", b"Texte.\n")
    signed = DkimSigner(DOMAIN, [keys["ed25519"]]).sign(message)
    assert b"Texte.\r\n" in signed
    assert dkim.verify(signed, dnsfunc=dns_for(keys["ed25519"]))


# --- unit: keys ----------------------------------------------------------------------------


def test_key_files_are_private_and_never_replaced_silently(tmp_path):
    key = write_key(tmp_path / "dkim", "s1", "ed25519")
    path = tmp_path / "dkim" / "s1.ed25519.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "dkim").stat().st_mode) == 0o700
    assert load_key(tmp_path / "dkim", "s1").dns_value() == key.dns_value()
    with pytest.raises(DkimKeyError, match="already exists"):
        write_key(tmp_path / "dkim", "s1", "ed25519")
    with pytest.raises(DkimKeyError, match="already exists"):
        write_key(tmp_path / "dkim", "s1", "rsa")  # one selector, one DNS record, one key
    replaced = write_key(tmp_path / "dkim", "s1", "rsa", force=True)
    assert not path.exists()
    assert load_key(tmp_path / "dkim", "s1").dns_value() == replaced.dns_value()
    with pytest.raises(DkimKeyError, match="no key for selector"):
        load_key(tmp_path / "dkim", "nope")
    with pytest.raises(DkimKeyError, match="not a valid selector"):
        write_key(tmp_path / "dkim", "../x", "rsa")


def test_settings_validate_dkim(tmp_path):
    from circulars.config import ConfigError, load_settings

    base = {
        "INSTANCE_PATH": str(tmp_path),
        "SECRET_KEY": "x" * 32,
        "MAIL_FROM": "a@news.example.org",
    }
    settings = load_settings(base)
    assert settings.dkim_selectors == ()
    assert settings.dkim_signing_domain == "news.example.org"
    assert settings.dkim_keys_path == tmp_path.resolve() / "dkim"
    settings = load_settings({**base, "DKIM_SELECTOR": "a, b", "DKIM_DOMAIN": "Example.ORG"})
    assert settings.dkim_selectors == ("a", "b")
    assert settings.dkim_signing_domain == "example.org"
    for name, value in [
        ("DKIM_SELECTOR", "bad_selector"),
        ("DKIM_SELECTOR", "a,a"),
        ("DKIM_SELECTOR", "a,b,c"),
        ("DKIM_DOMAIN", "not a domain"),
    ]:
        with pytest.raises(ConfigError, match=name):
            load_settings({**base, name: value})


def test_signing_only_when_a_key_is_configured(tmp_path):
    from circulars.config import load_settings
    from circulars.mail.transport import SmtpMessenger
    from circulars.wiring import send_context

    base = {"INSTANCE_PATH": str(tmp_path), "SECRET_KEY": "x" * 32}
    assert isinstance(send_context(load_settings(base)).messenger, SmtpMessenger)
    write_key(tmp_path / "dkim", "k1", "ed25519")
    messenger = send_context(load_settings({**base, "DKIM_SELECTOR": "k1"})).messenger
    assert isinstance(messenger, SigningMessenger)
    assert messenger.signer.domain == "example.org"  # MAIL_FROM's domain by default
    assert [key.selector for key in messenger.signer.keys] == ["k1"]


def test_missing_key_stops_start_up(tmp_path):
    from circulars.config import ConfigError, load_settings
    from circulars.wiring import send_context

    settings = load_settings(
        {"INSTANCE_PATH": str(tmp_path), "SECRET_KEY": "x" * 32, "DKIM_SELECTOR": "gone"}
    )
    with pytest.raises(ConfigError, match="circulars dkim generate --selector gone"):
        send_context(settings)


# --- CLI --------------------------------------------------------------------------------------


def test_cli_generates_keys_and_prints_the_record(tmp_path, monkeypatch):
    from circulars.cli import main

    monkeypatch.setenv("INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("SECRET_KEY", "y" * 32)
    monkeypatch.setenv("MAIL_FROM", "secretariat@news.example.org")
    # A DKIM_SELECTOR naming the key not yet made must not stop its creation.
    monkeypatch.setenv("DKIM_SELECTOR", "s2026")
    runner = CliRunner()

    result = runner.invoke(main, ["dkim", "generate", "--selector", "s2026"])
    assert result.exit_code == 0, result.output
    path = tmp_path / "dkim" / "s2026.rsa.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    record = re.search(r"^s2026\._domainkey\.news\.example\.org TXT (.+)$", result.output, re.M)
    assert record, result.output
    value = "".join(re.findall(r'"([^"]*)"', record.group(1)))
    assert value == load_key(tmp_path / "dkim", "s2026").dns_value()
    assert value.startswith("v=DKIM1; k=rsa; p=MIIB")

    result = runner.invoke(main, ["dkim", "generate", "--selector", "s2026"])
    assert result.exit_code == 2
    assert "already exists" in result.output
    assert path.exists()

    result = runner.invoke(
        main,
        [
            "dkim",
            "generate",
            "--selector",
            "ed1",
            "--algorithm",
            "ed25519",
            "--domain",
            "example.org",
        ],
    )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE((tmp_path / "dkim" / "ed1.ed25519.pem").stat().st_mode) == 0o600
    assert re.search(
        r'^ed1\._domainkey\.example\.org TXT "v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}="$',
        result.output,
        re.M,
    )


# --- the app: every path to SMTP signs ------------------------------------------------------


@pytest.fixture
def signing_ctx(app, keys):
    ctx = app.extensions["circulars.send_context"]
    signer = DkimSigner(ctx.domain, [keys["rsa"], keys["ed25519"]])
    return dataclasses.replace(ctx, messenger=SigningMessenger(ctx.messenger, signer))


def test_test_send_is_signed(app, session, smtp_server, signing_ctx, keys, tmp_path):
    from circulars.models import Circular
    from circulars.sending.engine import send_test

    circular = Circular(title="Été : réunion", body_markdown="Bonjour à **tous**.")
    session.add(circular)
    session.commit()
    send_test(session, circular.id, "someone@example.org", signing_ctx)
    (received,) = smtp_server.wait_for(1)
    dnsfunc = dns_for(*keys.values(), domain=signing_ctx.domain)
    checker = dkim.DKIM(received.data)
    assert checker.verify(idx=0, dnsfunc=dnsfunc) and checker.verify(idx=1, dnsfunc=dnsfunc)
    assert "list-unsubscribe-post" in h_tag(received.data)


def test_welcome_mail_is_signed(app, session, smtp_server, signing_ctx, keys):
    from circulars.mail.transactional import send_welcome
    from circulars.models import MailingList
    from circulars.subscribers.service import add_to_list

    members = MailingList(slug="members", name="Membres", welcome_message="Bienvenue !")
    session.add(members)
    session.flush()
    subscriber, _ = add_to_list(session, members, "new@example.org", name="Zoë")
    session.commit()
    assert send_welcome(session, subscriber.id, [members.id], signing_ctx) == 1
    (received,) = smtp_server.wait_for(1)
    assert dkim.verify(received.data, dnsfunc=dns_for(*keys.values(), domain=signing_ctx.domain))


@pytest.mark.integration
def test_send_through_the_worker_is_signed(app, stack, runner, worker, smtp_server, tmp_path):
    """The real worker, started with DKIM_SELECTOR, signs what it hands to SMTP."""
    from conftest import WorkerProcess

    key_dir = tmp_path / "keys"
    rsa_key = write_key(key_dir, "w-rsa", "rsa")
    ed_key = write_key(key_dir, "w-ed", "ed25519")
    env = {
        **stack,
        "DKIM_SELECTOR": "w-rsa,w-ed",
        "DKIM_KEY_DIR": str(key_dir),
        "DKIM_DOMAIN": "circulars.test",
    }
    assert runner.invoke(["lists", "create", "members", "--name", "Membres"]).exit_code == 0
    csv = tmp_path / "people.csv"
    csv.write_text(
        "email,name\n" + "".join(f"p{i}@example.org,Personne {i} é\n" for i in range(12)),
        encoding="utf-8",
    )
    assert runner.invoke(["subscribers", "import", str(csv), "--list", "members"]).exit_code == 0
    body = tmp_path / "body.md"
    body.write_text("Chers collègues,\n\nLe  texte.\n", encoding="utf-8")
    pdf = tmp_path / "annexe é.pdf"
    pdf.write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 100)
    result = runner.invoke(
        [
            "circulars",
            "create",
            "--title",
            "Réunion d'été",
            "--body",
            str(body),
            "--attach",
            str(pdf),
            "--list",
            "members",
        ]
    )
    assert result.exit_code == 0, result.output
    circular_id = result.output.strip()

    worker.stop()  # the shared worker does not sign; ours takes the queue meanwhile
    signing = WorkerProcess(env, tmp_path / "signing-worker.log")
    try:
        signing.start()
        result = runner.invoke(
            ["send", circular_id, "--list", "members", "--wait", "--timeout", "120"]
        )
        assert result.exit_code == 0, result.output
        received = smtp_server.wait_for(12, timeout=30)
    finally:
        signing.stop()
        worker.start()
    dnsfunc = dns_for(rsa_key, ed_key, domain="circulars.test")
    assert len(received) == 12
    for item in received:
        checker = dkim.DKIM(item.data)
        assert checker.verify(idx=0, dnsfunc=dnsfunc), item.rcpt_tos
        assert checker.verify(idx=1, dnsfunc=dnsfunc), item.rcpt_tos
        assert {"list-unsubscribe", "list-unsubscribe-post"} <= set(h_tag(item.data))


# --- DNS records: what to publish, and the check --------------------------------------------


def test_expected_records_and_comparison(keys):
    from circulars.mail.dns_records import (
        DIFFERENT,
        FOUND,
        MISSING,
        UNREACHABLE,
        DnsUnreachable,
        check_records,
        expected_records,
    )

    records = expected_records(
        mail_domain="news.example.org",
        dkim_domain="example.org",
        dkim_keys=[keys["rsa"], keys["ed25519"]],
        relay_host="smtp.relay.example.net",
        report_address="dmarc@example.org",
    )
    by_name = {record.name: record for record in records}
    assert by_name["circ-rsa._domainkey.example.org"].value == keys["rsa"].dns_value()
    assert by_name["circ-ed._domainkey.example.org"].value.startswith("v=DKIM1; k=ed25519; p=")
    assert by_name["news.example.org"].value == "v=spf1 a:smtp.relay.example.net mx ~all"
    assert (
        by_name["_dmarc.news.example.org"].value == "v=DMARC1; p=none; rua=mailto:dmarc@example.org"
    )
    rsa_value = keys["rsa"].dns_value()
    # Split into 255-byte strings and spaced differently, as DNS hosts publish it.
    published = {
        "circ-rsa._domainkey.example.org": [rsa_value.replace("; ", ";")],
        "circ-ed._domainkey.example.org": [keys["ed25519"].dns_value()[:-8] + "AAAAAAA="],
        "news.example.org": ["v=spf1 include:_spf.other.example ~all", "google-site=x"],
    }

    def resolve(name: str) -> list[str]:
        if name.startswith("_dmarc"):
            raise DnsUnreachable("timed out")
        return published.get(name, [])

    statuses = {check.record.name: check.status for check in check_records(records, resolve)}
    assert statuses == {
        "circ-rsa._domainkey.example.org": FOUND,
        "circ-ed._domainkey.example.org": DIFFERENT,
        "news.example.org": DIFFERENT,  # an SPF record that does not allow our relay
        "_dmarc.news.example.org": UNREACHABLE,
    }
    assert check_records(records[-1:], lambda name: [])[0].status == MISSING


@pytest.fixture
def dns_admin(app, auth, keys, key_dir, monkeypatch):
    settings = app.extensions["circulars.settings"]
    monkeypatch.setitem(
        app.extensions,
        "circulars.settings",
        dataclasses.replace(
            settings,
            dkim_selectors=("circ-rsa",),
            dkim_key_dir=key_dir,
            dkim_domain="example.org",
        ),
    )
    auth.create_user("admin@example.org", "admin")
    auth.login("admin@example.org")
    return auth


def test_dns_page_shows_the_records(dns_admin, client, keys):
    page = client.get("/admin/dns")
    assert page.status_code == 200
    assert "DNS records" in page.text
    assert "circ-rsa._domainkey.example.org" in page.text
    assert keys["rsa"].public_key_b64() in page.text
    assert "v=spf1 a:127.0.0.1" not in page.text  # a loopback relay is no SPF advice
    assert "_dmarc.circulars.test" in page.text
    assert "v=DMARC1; p=none; rua=mailto:" in page.text
    assert 'href="/admin/dns"' in page.text  # in the navigation
    assert "Check DNS" in page.text


def test_dns_check_found_missing_different(dns_admin, client, app, keys, monkeypatch):
    published = {
        "circ-rsa._domainkey.example.org": [keys["rsa"].dns_value()],
        "circulars.test": ["v=spf1 mx ~all"],
        "_dmarc.circulars.test": ["v=DMARC1; rua=mailto:x@example.org"],
    }
    looked_up = []

    def resolve(name):
        looked_up.append(name)
        return published.get(name, [])

    monkeypatch.setitem(app.extensions, "circulars.dns_resolver", resolve)
    forged = client.post("/admin/dns", data={})  # no CSRF token: no lookups
    assert forged.status_code == 400 and looked_up == []
    page = dns_admin.post_form("/admin/dns", "/admin/dns", {})
    assert page.status_code == 200
    assert sorted(looked_up) == sorted(
        ["circ-rsa._domainkey.example.org", "circulars.test", "_dmarc.circulars.test"]
    )
    assert page.text.count(">found<") == 2  # the DKIM key and SPF
    assert ">different<" in page.text and "it has no policy (p=)" in page.text
    assert "DNS not reachable" not in page.text

    published.clear()
    page = dns_admin.post_form("/admin/dns", "/admin/dns", {})
    assert page.text.count(">missing<") == 3


def test_dns_check_unreachable(dns_admin, client, app, monkeypatch):
    from circulars.mail.dns_records import DnsUnreachable

    def resolve(name):
        raise DnsUnreachable("The DNS operation timed out.")

    monkeypatch.setitem(app.extensions, "circulars.dns_resolver", resolve)
    page = dns_admin.post_form("/admin/dns", "/admin/dns", {})
    assert page.status_code == 200
    assert "DNS not reachable" in page.text
    assert ">found<" not in page.text


@pytest.mark.parametrize(
    ("mail_domain", "dkim_domain", "aligned"),
    [
        ("example.org", "example.org", True),
        ("news.example.org", "example.org", True),  # a parent of the From domain
        ("example.org", "mail.example.org", True),  # a subdomain of it
        ("news.example.org", "mail.example.org", True),  # siblings under example.org
        ("EXAMPLE.org.", "example.ORG", True),
        ("example.org", "example.net", False),
        ("network.example", "othernetwork.example", False),
        ("example.org", "sendingservice.com", False),
        # The organisational domain is one label below a public suffix, not the last two labels.
        ("news.example.co.uk", "mail.example.co.uk", True),
        ("example.co.uk", "other.co.uk", False),
        ("example.co.uk", "co.uk", False),  # a public suffix is nobody's organisation
        ("alice.github.io", "bob.github.io", False),  # the list's private section too
        ("news.network.example", "network.example", True),
    ],
)
def test_dkim_alignment_with_the_from_domain(mail_domain, dkim_domain, aligned):
    from circulars.mail.dns_records import dkim_alignment_problem

    problem = dkim_alignment_problem(mail_domain, dkim_domain)
    assert (problem == "") is aligned, problem
    if not aligned:
        assert "DKIM_DOMAIN" in problem and "DMARC" in problem


def test_dns_page_warns_when_signatures_would_not_count_for_dmarc(
    dns_admin, client, app, monkeypatch
):
    settings = app.extensions["circulars.settings"]
    # The fixture signs for example.org while mail goes out from circulars.test.
    page = client.get("/admin/dns")
    assert "Messages are signed for example.org (DKIM_DOMAIN) but sent from circulars.test" in (
        page.text
    )
    monkeypatch.setitem(
        app.extensions,
        "circulars.settings",
        dataclasses.replace(settings, dkim_domain="circulars.test"),
    )
    assert "(DKIM_DOMAIN) but sent from" not in client.get("/admin/dns").text


def test_dns_page_is_for_admins_only(app, auth, client):
    auth.create_user("sender@example.org", "sender")
    assert client.get("/admin/dns").status_code in (302, 401)
    auth.login("sender@example.org")
    assert client.get("/admin/dns").status_code == 403
    assert 'href="/admin/dns"' not in client.get("/admin/circulars").text


def test_dns_page_without_dkim_explains_how(app, auth, client):
    auth.create_user("admin@example.org", "admin")
    auth.login("admin@example.org")
    page = client.get("/admin/dns")
    assert "No DKIM key is configured" in page.text
    assert "circulars dkim generate --selector" in page.text
    assert "_domainkey" not in page.text
