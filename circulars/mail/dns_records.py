"""The DNS records that make our mail trusted (DKIM, SPF, DMARC), and checking them.

Receivers judge a message by what the sending domain publishes: the DKIM
public key, the SPF list of hosts allowed to send, the DMARC policy. We know
what those should say, so we show them and can look them up. The lookup is a
function passed in (`Resolver`), so tests, and installs without internet,
never touch the network.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

from .dkim import DkimKey

FOUND, MISSING, DIFFERENT, UNREACHABLE = "found", "missing", "different", "unreachable"


class DnsUnreachable(Exception):
    """The lookup itself failed (no resolver, time-out, server failure): we know nothing."""


#: TXT strings published at a name; [] when the name or the record does not exist.
Resolver = Callable[[str], list[str]]


@dataclass(frozen=True)
class DnsRecord:
    kind: str  # "dkim", "spf" or "dmarc"
    label: str
    name: str
    value: str

    @property
    def zone_line(self) -> str:
        chunks = [self.value[i : i + 255] for i in range(0, len(self.value), 255)]
        return f"{self.name}. TXT " + " ".join(f'"{chunk}"' for chunk in chunks)


@dataclass(frozen=True)
class RecordCheck:
    record: DnsRecord
    status: str
    found: tuple[str, ...] = ()
    detail: str = ""


def spf_value(relay_host: str | None) -> str:
    """Allow the relay we hand mail to; without one known, the domain's MX hosts."""
    if not relay_host or relay_host in ("localhost", "127.0.0.1", "::1"):
        return "v=spf1 mx ~all"
    try:
        address = ipaddress.ip_address(relay_host)
    except ValueError:
        return f"v=spf1 a:{relay_host} mx ~all"
    return f"v=spf1 ip{address.version}:{address} mx ~all"


def expected_records(
    *,
    mail_domain: str,
    dkim_domain: str,
    dkim_keys: Sequence[DkimKey],
    relay_host: str | None,
    report_address: str,
) -> list[DnsRecord]:
    records = [
        DnsRecord(
            "dkim",
            f"DKIM key “{key.selector}” ({'RSA-2048' if key.algorithm == 'rsa' else 'Ed25519'})",
            key.dns_name(dkim_domain),
            key.dns_value(),
        )
        for key in dkim_keys
    ]
    records.append(
        DnsRecord("spf", "SPF (who may send for the domain)", mail_domain, spf_value(relay_host))
    )
    records.append(
        DnsRecord(
            "dmarc",
            "DMARC (what receivers do with mail that fails, and where they report)",
            f"_dmarc.{mail_domain}",
            f"v=DMARC1; p=none; rua=mailto:{report_address}",
        )
    )
    return records


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    return PublicSuffixList()  # the list the package bundles: no download


def organisational_domain(domain: str) -> str:
    """The registered domain DMARC aligns on (RFC 7489 3.2): one label below a public suffix.

    A name that is itself a public suffix (co.uk) or has no dot is its own.
    """
    domain = domain.lower().rstrip(".")
    return _public_suffixes().privatesuffix(domain) or domain


def dkim_alignment_problem(mail_domain: str, dkim_domain: str) -> str:
    """Why DMARC would not count our signatures, or "" when it would.

    DMARC passes on DKIM only for a signature whose d= domain has the same
    organisational domain as the From domain (relaxed alignment, the
    default): news.example.org and mail.example.org do, example.co.uk and
    other.co.uk do not, since co.uk is a public suffix (the Public Suffix
    List decides). The return path is always on the From domain (VERP), so
    SPF is aligned whatever this says.
    """
    mail, dkim = mail_domain.lower().rstrip("."), dkim_domain.lower().rstrip(".")
    if mail == dkim or organisational_domain(mail) == organisational_domain(dkim):
        return ""
    return (
        f"Messages are signed for {dkim} (DKIM_DOMAIN) but sent from {mail} (MAIL_FROM): "
        f"receivers checking DMARC will not count those signatures, because the two are not "
        f"the same organisation's domain. Set DKIM_DOMAIN to {mail} or a parent of it, and "
        f"publish the keys there."
    )


def _tags(value: str) -> dict[str, str]:
    tags = {}
    for part in value.split(";"):
        name, sep, tag_value = part.partition("=")
        if sep:
            tags[name.strip().lower()] = re.sub(r"\s+", "", tag_value)
    return tags


def compare(record: DnsRecord, published: list[str]) -> RecordCheck:
    """Found, missing or different, judged the way receivers read each kind."""
    if record.kind == "dkim":
        keys = [text for text in published if "p=" in text]
        if not keys:
            return RecordCheck(record, MISSING, tuple(published))
        want = _tags(record.value)
        for text in keys:
            have = _tags(text)
            if have.get("p") == want["p"] and have.get("k", "rsa") == want["k"]:
                return RecordCheck(record, FOUND, (text,))
        return RecordCheck(
            record, DIFFERENT, tuple(keys), "the published key is not the key we sign with"
        )
    prefix = "v=spf1" if record.kind == "spf" else "v=dmarc1"
    matching = [text for text in published if text.lower().split(" ", 1)[0].rstrip(";") == prefix]
    if not matching:
        return RecordCheck(record, MISSING, ())
    if len(matching) > 1:
        return RecordCheck(
            record, DIFFERENT, tuple(matching), "more than one record: receivers ignore them all"
        )
    text = matching[0]
    if record.kind == "spf":
        mechanisms = [item for item in record.value.split()[1:] if item.startswith(("a:", "ip"))]
        missing = [item for item in mechanisms if item.lower() not in text.lower().split()]
        if missing:
            return RecordCheck(
                record, DIFFERENT, (text,), f"it does not allow the relay ({', '.join(missing)})"
            )
        return RecordCheck(record, FOUND, (text,))
    if "p" not in _tags(text):
        return RecordCheck(record, DIFFERENT, (text,), "it has no policy (p=)")
    return RecordCheck(record, FOUND, (text,))


def check_records(records: Sequence[DnsRecord], resolve: Resolver) -> list[RecordCheck]:
    checks = []
    for record in records:
        try:
            published = resolve(record.name)
        except DnsUnreachable as exc:
            checks.append(RecordCheck(record, UNREACHABLE, (), str(exc)))
            continue
        checks.append(compare(record, published))
    return checks


def dnspython_resolver(timeout: float = 3.0) -> Resolver:
    """Look TXT records up with the system's resolvers, giving up after `timeout` seconds."""
    import dns.exception
    import dns.resolver

    try:
        resolver = dns.resolver.Resolver()
    except dns.exception.DNSException as exc:
        message = f"no DNS resolver configured: {exc}"

        def unavailable(name: str) -> list[str]:
            raise DnsUnreachable(message)

        return unavailable
    resolver.timeout = timeout
    resolver.lifetime = timeout

    def resolve(name: str) -> list[str]:
        try:
            answer = resolver.resolve(name, "TXT", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            raise DnsUnreachable(str(exc) or type(exc).__name__) from exc
        return [b"".join(item.strings).decode("utf-8", "replace") for item in answer]

    return resolve
