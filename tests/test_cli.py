"""The `circulars` command as operators script it, including its refusals."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from circulars.models import Attachment, Circular, MailingList, Subscriber, Subscription, User

from conftest import PROJECT_ROOT


def test_users_create_reads_the_password_from_stdin(runner, session):
    result = runner.invoke(
        ["users", "create", "Head@Example.org", "--role", "admin"], input="a long enough password\n"
    )
    assert result.exit_code == 0, result.output
    user = session.scalar(select(User))
    assert user.email == "head@example.org" and user.role == "admin"
    assert user.password_hash.startswith("$argon2id$")
    result = runner.invoke(["users", "create", "head@example.org"], input="another password!\n")
    assert result.exit_code == 2 and "exists already" in result.output
    result = runner.invoke(["users", "create", "new@example.org"], input="short\n")
    assert result.exit_code == 2 and "at least 10 characters" in result.output
    assert session.scalar(select(func.count()).select_from(User)) == 1


def test_lists_create_validates(runner, session):
    assert runner.invoke(["lists", "create", "members", "--name", "Members"]).exit_code == 0
    result = runner.invoke(["lists", "create", "members", "--name", "Again"])
    assert result.exit_code == 2 and "exists already" in result.output
    result = runner.invoke(["lists", "create", "Bad Slug", "--name", "X"])
    assert result.exit_code == 2 and "lower-case" in result.output
    assert session.scalar(select(func.count()).select_from(MailingList)) == 1


def test_import_reports_bad_rows_with_line_numbers_and_keeps_the_good(runner, session, tmp_path):
    runner.invoke(["lists", "create", "members", "--name", "Members"])
    csv_file = tmp_path / "people.csv"
    csv_file.write_text(
        "email,name,language,organization,country\n"
        "ana@example.org,Ana,es,Red Migrante,Mexico\n"
        "not-an-address,Bob,en,,\n"
        "ANA@example.org,Ana again,es,,\n"
        "carla@example.org,Carla,xx-too-long-code,,\n"
        "dev@example.org,Dev,en\n"
        '"eve@example.org","Eve, Jr.",fr,"Org ""Quoted""",France\n',
        encoding="utf-8",
    )
    report = tmp_path / "rejected.csv"
    result = runner.invoke(
        ["subscribers", "import", str(csv_file), "--list", "members", "--report", str(report)]
    )
    assert result.exit_code == 0, result.output
    assert "people.csv:3: not-an-address: invalid address" in result.output
    assert "people.csv:5: carla@example.org: unknown language code" in result.output
    assert "people.csv:6: (no address): has 3 fields, the header has 5" in result.output
    assert (
        "2 subscribed (2 new)" in result.output and "1 duplicate rows, 3 rejected" in result.output
    )
    emails = set(session.scalars(select(Subscriber.email)))
    assert emails == {"ana@example.org", "eve@example.org"}
    eve = session.scalar(select(Subscriber).where(Subscriber.email == "eve@example.org"))
    assert (eve.name, eve.organization, eve.attributes) == (
        "Eve, Jr.",
        'Org "Quoted"',
        {"country": "France"},
    )
    lines = report.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "line,email,reason"
    # Every line left out, in file order; a duplicate names the line that won.
    assert [line.split(",")[0] for line in lines[1:]] == ["3", "4", "5", "6"]
    assert lines[2] == "4,ana@example.org,duplicate of line 2"
    assert "people.csv:4: ana@example.org: duplicate of line 2" in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("email,name\nrené@example.org,René\n".encode("latin-1"), "not UTF-8"),
        (b"name,organization\nAna,Org\n", "header"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "binary"),
        (b"", "empty"),
    ],
)
def test_import_refuses_a_bad_file_whole(runner, session, tmp_path, content, message):
    runner.invoke(["lists", "create", "members", "--name", "Members"])
    path = tmp_path / "bad.csv"
    # A valid first row makes sure nothing from before the bad part is kept.
    path.write_bytes(content)
    result = runner.invoke(["subscribers", "import", str(path), "--list", "members"])
    assert result.exit_code == 2
    assert "nothing imported" in result.output and message in result.output
    assert session.scalar(select(func.count()).select_from(Subscriber)) == 0


def test_a_late_encoding_error_leaves_nothing_behind(runner, session, tmp_path):
    runner.invoke(["lists", "create", "members", "--name", "Members"])
    good = "".join(f"p{i}@example.org,P {i}\n" for i in range(2500))
    path = tmp_path / "late.csv"
    path.write_bytes(b"email,name\n" + good.encode() + "zoë@example.org,Zoë\n".encode("latin-1"))
    result = runner.invoke(["subscribers", "import", str(path), "--list", "members"])
    assert result.exit_code == 2 and "not UTF-8" in result.output
    assert session.scalar(select(func.count()).select_from(Subscriber)) == 0
    assert session.scalar(select(func.count()).select_from(Subscription)) == 0


def test_unknown_list_is_an_error(runner, tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("email\na@example.org\n", encoding="utf-8")
    result = runner.invoke(["subscribers", "import", str(path), "--list", "nope"])
    assert result.exit_code == 2 and "unknown list 'nope'" in result.output
    body = tmp_path / "b.md"
    body.write_text("x", encoding="utf-8")
    result = runner.invoke(
        ["circulars", "create", "--title", "T", "--body", str(body), "--list", "nope"]
    )
    assert result.exit_code == 2 and "unknown list 'nope'" in result.output


def test_circulars_create_with_attachments_and_refusals(runner, session, tmp_path):
    runner.invoke(["lists", "create", "members", "--name", "Members"])
    body = tmp_path / "body.md"
    body.write_text("# Hello\n\nText.", encoding="utf-8")
    doc = tmp_path / "Résumé des débats.pdf"
    doc.write_bytes(b"%PDF" + b"\x01" * 1000)
    result = runner.invoke(
        [
            "circulars",
            "create",
            "--title",
            "Report",
            "--body",
            str(body),
            "--attach",
            str(doc),
            "--list",
            "members",
        ]
    )
    assert result.exit_code == 0, result.output
    circular = session.get(Circular, int(result.output))
    assert [a.filename for a in circular.attachments] == ["Résumé des débats.pdf"]
    assert [item.slug for item in circular.lists] == ["members"]
    assert circular.number is None
    assert (circular.topic, circular.in_archive) == (None, True)

    result = runner.invoke(
        ["circulars", "create", "--title", "Line\r\nBcc: victim@example.org", "--body", str(body)]
    )
    assert result.exit_code == 2 and "single line" in result.output
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (2 * 1024 * 1024 + 1))  # the test stacks allow 2 MB
    result = runner.invoke(
        ["circulars", "create", "--title", "Big", "--body", str(body), "--attach", str(big)]
    )
    assert result.exit_code == 2 and "larger than the limit" in result.output
    assert session.scalar(select(func.count()).select_from(Circular)) == 1
    assert session.scalar(select(func.count()).select_from(Attachment)) == 1


def test_send_refusals(runner, session, tmp_path):
    result = runner.invoke(["send", "999", "--list", "members"])
    assert result.exit_code == 2 and "no circular 999" in result.output
    runner.invoke(["lists", "create", "members", "--name", "Members"])
    body = tmp_path / "b.md"
    body.write_text("x", encoding="utf-8")
    circular_id = runner.invoke(
        ["circulars", "create", "--title", "T", "--body", str(body)]
    ).output.strip()
    result = runner.invoke(["send", circular_id, "--list", "ghosts"])
    assert result.exit_code == 2 and "unknown list 'ghosts'" in result.output
    result = runner.invoke(["send", circular_id])
    assert result.exit_code == 2 and "Choose at least one list" in result.output
    result = runner.invoke(["send", circular_id, "--list", "members"])
    assert result.exit_code == 2 and "No one would receive it" in result.output
    assert session.get(Circular, int(circular_id)).number is None


def test_a_malformed_setting_stops_the_command_and_names_it(tmp_path):
    env = {**os.environ, "INSTANCE_PATH": str(tmp_path), "SMTP_URL": "http://mail.example.org"}
    result = subprocess.run(
        [sys.executable, "-m", "circulars.cli", "lists", "create", "x", "--name", "X"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "SMTP_URL='http://mail.example.org' is not valid" in result.stderr
    assert not (tmp_path / "circulars.db").exists()


def test_circulars_create_with_a_topic_and_kept_out_of_the_archive(runner, session, tmp_path):
    body = tmp_path / "body.md"
    body.write_text("Text.", encoding="utf-8")
    result = runner.invoke(
        [
            "circulars",
            "create",
            "--title",
            "Internal",
            "--body",
            str(body),
            "--topic",
            " Labour migration ",
            "--not-in-archive",
        ]
    )
    assert result.exit_code == 0, result.output
    circular = session.get(Circular, int(result.output))
    assert (circular.topic, circular.in_archive) == ("Labour migration", False)

    before = session.scalar(select(func.count()).select_from(Circular))
    for topic in ("x" * 101, "two\nlines"):
        refused = runner.invoke(
            ["circulars", "create", "--title", "T", "--body", str(body), "--topic", topic]
        )
        assert refused.exit_code != 0 and "topic" in refused.output
    assert session.scalar(select(func.count()).select_from(Circular)) == before


def test_digests_dry_run_from_the_console_script(tmp_path):
    # As an operator runs it: its own process, the app made by the command group.
    env = {
        **os.environ,
        "INSTANCE_PATH": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'circulars.db'}",
    }
    env.pop("CELERY_BROKER_URL", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "circulars.cli", *args],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert cli("db", "upgrade").returncode == 0
    result = cli("digests", "--dry-run", "--at", "2026-12-14T09:30")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["As of 2026-12-14 09:30 (UTC):", "No digest is due."]
    result = cli("digests", "--dry-run", "--list", "nobody")
    assert result.returncode == 2
    assert "there is no list 'nobody'" in result.stderr
