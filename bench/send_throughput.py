"""Messages per second of a real send into Postfix's smtp-sink, against a bare smtplib loop.

One circular, personalised and DKIM-signed (RSA-2048), to N subscribers on
PostgreSQL + Redis, with one Celery worker of two processes (`celery -A worker
worker --concurrency 2`), into `smtp-sink` on loopback (Debian package
`postfix`; only the sink runs, never the Postfix daemon). Two shapes: a 20 KB
circular without attachment, and a short one with a 100 KB PDF (about 139 KB
on the wire).

For each shape and run it prints:

- end to end: messages per second from "send" (the Send row created and
  START_SEND queued, as `circulars send` does) to the last message smtp-sink
  accepted;
- the peak resident memory (VmHWM) of each worker process;
- the bare loop, measured in the same run just before: two processes each
  sending prebuilt copies of a real signed message of the same shape over one
  smtplib connection to the same smtp-sink, and the ratio of the two rates;
- the ceiling, also measured in the same run: how many RSA-2048 signatures,
  and how many whole DKIM signings of the same message, two processes doing
  nothing else make per second, and from it an upper bound: the machine's
  cores divided by the CPU a message cannot do without (the bare loop's and
  smtp-sink's, one signature, the PostgreSQL record). No sender that signs and
  durably records each personalised message can pass it on this machine.

The benchmark creates a throwaway PostgreSQL database and uses a Redis
database of its own (`--redis-db`, flushed before and after); it drops and
stops everything it started, also on Ctrl-C.

    .venv/bin/python bench/send_throughput.py --recipients 10000 --runs 2
    .venv/bin/python bench/send_throughput.py --recipients 100000 --shape attachment
    .venv/bin/python bench/send_throughput.py --recipients 2000 --profile plain

`--profile SHAPE` runs no worker: it starts the send in-process and runs
`engine.deliver_batch` for the first batches under cProfile against the same
smtp-sink, then prints the functions that take the time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import multiprocessing
import os
import pstats
import random
import re
import secrets
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CIRCULARS = [sys.executable, "-m", "circulars.cli"]
SMTP_SINK = "/usr/sbin/smtp-sink"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_BASE = "redis://127.0.0.1:6379"
SHAPES = ("plain", "attachment")
PARAGRAPH = (
    "The Secretariat has the honour to inform the member organisations that the "
    "meeting of the working group will take place as planned. Delegations wishing "
    "to attend are invited to register through the usual channels before the end "
    "of the month, and to send the names of their representatives.\n\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sink:
    """smtp-sink on loopback; its `-c` counters (written on every ".") say what it accepted."""

    def __init__(self) -> None:
        if not os.path.exists(SMTP_SINK):
            raise SystemExit(
                f"{SMTP_SINK} is missing: DEBIAN_FRONTEND=noninteractive apt-get install -y postfix"
            )
        self.port = free_port()
        command = [SMTP_SINK, "-c"]
        if os.geteuid() == 0:
            command += ["-u", "nobody"]  # smtp-sink refuses to run as root otherwise
        command += [f"127.0.0.1:{self.port}", "256"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.accepted = 0
        self.changed = threading.Condition()
        self.last_accept = time.monotonic()
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise SystemExit(
                        f"smtp-sink did not start: {self.process.stderr.read()!r}"
                    ) from None
                time.sleep(0.05)

    def _read(self) -> None:
        assert self.process.stdout is not None
        pattern = re.compile(rb"mesg=(\d+)")
        buffer = b""
        while True:
            chunk = os.read(self.process.stdout.fileno(), 65536)
            if not chunk:
                return
            now = time.monotonic()
            buffer = (buffer + chunk)[-4096:]
            found = pattern.findall(buffer)
            if found:
                count = int(found[-1])
                with self.changed:
                    if count != self.accepted:
                        self.accepted, self.last_accept = count, now
                        self.changed.notify_all()

    def wait_for(self, count: int, timeout: float) -> float:
        """Block until `count` messages were accepted in all; the monotonic time of the last."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.accepted < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SystemExit(f"smtp-sink got {self.accepted} of {count} messages in time")
                self.changed.wait(min(left, 1))
            return self.last_accept

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --- the bare loop ------------------------------------------------------------------------


def _bare_sender(port: int, message: bytes, count: int, offset: int, ready: Any, cpu: Any) -> None:
    smtp = smtplib.SMTP("127.0.0.1", port)
    smtp.ehlo()
    ready.wait()
    started = time.process_time()
    for index in range(count):
        smtp.sendmail("bounces@example.org", [f"bare{offset + index}@example.org"], message)
    smtp.quit()
    with cpu.get_lock():
        cpu.value += time.process_time() - started


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu(database: str) -> dict[int, float]:
    """CPU time of each PostgreSQL backend serving `database` (named in its process title)."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                title = Path(f"/proc/{entry}/cmdline").read_bytes()
                if title.startswith(b"postgres: ") and f" {database} ".encode() in title:
                    found[int(entry)] = cpu_seconds(int(entry))
            except OSError:
                continue
    return found


def bare_loop(
    sink: Sink, message: bytes, total: int, processes: int = 2
) -> tuple[float, float, float]:
    """Messages per second of `processes` smtplib loops sending `message` `total` times,
    and the CPU milliseconds per message of the loops and of smtp-sink."""
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    cpu = context.Value("d", 0.0)
    share = total // processes
    workers = [
        context.Process(
            target=_bare_sender, args=(sink.port, message, share, i * share, ready, cpu)
        )
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    time.sleep(0.5)  # connected and greeted before the clock starts
    base = sink.accepted
    sink_cpu = cpu_seconds(sink.process.pid)
    started = time.monotonic()
    ready.set()
    last = sink.wait_for(base + share * processes, timeout=600)
    sink_cpu = cpu_seconds(sink.process.pid) - sink_cpu
    for worker in workers:
        worker.join()
    sent = share * processes
    return sent / (last - started), cpu.value / sent * 1000, sink_cpu / sent * 1000


def _signer_process(
    signer: Any, message: bytes, count: int, whole: bool, ready: Any, out: Any
) -> None:
    key = signer.keys[0]
    data = message[:600]
    ready.wait()
    started = time.monotonic()
    for _ in range(count):
        if whole:
            signer.sign(message)
        else:
            key.sign(data)
    with out.get_lock():
        out.value = max(out.value, time.monotonic() - started)


#: Processes the ceiling signs with, as many as the worker's (`--concurrency 2`).
SIGNERS = 2


def signing_ceiling(
    signer: Any, message: bytes, total: int = 2000, processes: int = SIGNERS
) -> tuple[float, float]:
    """Signatures per second of `processes` processes doing nothing else: the key's
    signature alone, and the whole DKIM signing of `message` (canonicalisation,
    hashes, signature). No sender that signs each message can go faster on this
    machine, so it bounds what the end-to-end ratio can reach."""
    context = multiprocessing.get_context("fork")
    rates = []
    for whole in (False, True):
        ready = context.Event()
        slowest = context.Value("d", 0.0)
        share = total // processes
        workers = [
            context.Process(
                target=_signer_process, args=(signer, message, share, whole, ready, slowest)
            )
            for _ in range(processes)
        ]
        for worker in workers:
            worker.start()
        time.sleep(0.2)
        ready.set()
        for worker in workers:
            worker.join()
        rates.append(share * processes / slowest.value)
    return rates[0], rates[1]


# --- set-up -------------------------------------------------------------------------------


def run(args: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(CIRCULARS + args, env=env, cwd=ROOT, text=True, capture_output=True)
    if result.returncode != 0:
        print(result.stdout, result.stderr, file=sys.stderr)
        raise SystemExit(f"circulars {' '.join(args[:3])} … failed with {result.returncode}")
    return result.stdout


def pdf_bytes(size: int) -> bytes:
    """A file that starts and ends like a PDF, filled with incompressible bytes."""
    head = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Length " + str(size).encode()
    head += b" >>\nstream\n"
    tail = b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
    return head + random.Random(4).randbytes(size - len(head) - len(tail)) + tail


@dataclass
class Bench:
    env: dict[str, str]
    workdir: Path
    sink: Sink
    list_id: int = 0
    app: Any = None

    def create_circular(self, shape: str, tag: str) -> int:
        body = self.workdir / f"{tag}.md"
        args = ["circulars", "create", "--title", f"Working group meeting ({tag})"]
        if shape == "plain":
            # About 20 KB on the wire: HTML and text parts, quoted-printable, headers.
            body.write_text("Colleagues,\n\n" + PARAGRAPH * 24, encoding="utf-8")
        else:
            body.write_text("Colleagues,\n\n" + PARAGRAPH * 2, encoding="utf-8")
            pdf = self.workdir / "Working text.pdf"
            if not pdf.exists():
                pdf.write_bytes(pdf_bytes(100_000))
            args += ["--attach", str(pdf)]
        args += ["--body", str(body), "--list", "members"]
        return int(run(args, self.env).strip())

    def sample_message(self, circular_id: int) -> bytes:
        """The circular as the engine builds and signs it for one recipient (a test send)."""
        from circulars.extensions import db
        from circulars.mail.dkim import signing_messenger
        from circulars.sending import engine
        from circulars.wiring import dkim_signer

        captured: list[bytes] = []

        class Capture:
            def send(self, envelope_from: str, recipient: str, message: bytes) -> None:
                captured.append(message)

            def close(self) -> None:
                pass

        class CaptureMessenger:
            def connect(self) -> Capture:
                return Capture()

        settings = self.app.extensions["circulars.settings"]
        ctx = replace(
            self.app.extensions["circulars.send_context"],
            messenger=signing_messenger(CaptureMessenger(), dkim_signer(settings)),
        )
        with self.app.app_context():
            engine.send_test(db.session, circular_id, "p0@example.org", ctx)
            db.session.remove()
        assert captured and b"DKIM-Signature: v=1; a=rsa-sha256" in captured[0]
        return captured[0]

    def signer(self) -> Any:
        from circulars.wiring import dkim_signer

        return dkim_signer(self.app.extensions["circulars.settings"])

    def start_send(self, circular_id: int) -> int:
        """What `circulars send` does: the Send row, then START_SEND for a worker."""
        from circulars.extensions import db
        from circulars.sending.service import create_send
        from circulars.tasks import START_SEND

        with self.app.app_context():
            send = create_send(db.session, circular_id, [self.list_id])
            db.session.commit()
            self.app.extensions["celery"].send_task(START_SEND, args=(send.id,))
            send_id = send.id
            db.session.remove()
        return int(send_id)

    def send_state(self, send_id: int) -> tuple[str, int, int, int]:
        from circulars.extensions import db
        from circulars.models import Send

        with self.app.app_context():
            send = db.session.get(Send, send_id)
            assert send is not None
            state = (str(send.status), send.total or 0, send.sent_count, send.failed_count)
            db.session.remove()
        return state


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker",
                "worker",
                "--concurrency",
                "2",
                "--pool",
                "prefork",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "INFO",
            ],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 90
    while not re.search(r"celery@\S+ ready\.", log.read_text(errors="replace")):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the worker did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return process


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry))
    return sorted(found)


def peak_rss_mb(pid: int) -> float:
    match = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else float("nan")


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# --- measurements -------------------------------------------------------------------------


def spy(py_spy: str, pids: list[int], seconds: float, out: Path) -> list[subprocess.Popen[bytes]]:
    """Sample the workers with py-spy (on-CPU samples only) while the send runs."""
    return [
        subprocess.Popen(
            [py_spy, "record", "-p", str(pid), "-d", str(seconds), "-r", "250"]
            + ["-f", "raw", "-o", str(out / f"spy-{pid}.txt"), "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]


def spy_summary(files: list[Path], top: int = 22) -> None:
    """Share of samples per function: on top of the stack (self) and anywhere in it (total)."""
    own: dict[str, int] = {}
    anywhere: dict[str, int] = {}
    samples = 0
    for path in files:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            count = int(count_text)
            frames = [
                frame.split(" (")[0] + " " + frame.rpartition("/")[2].rstrip(")")
                for frame in stack.split(";")
            ]
            if not any("deliver_batch" in frame for frame in frames):
                continue  # the worker waiting for a task, not sending
            samples += count
            own[frames[-1]] = own.get(frames[-1], 0) + count
            for frame in set(frames):
                anywhere[frame] = anywhere.get(frame, 0) + count
    if not samples:
        print("py-spy: no samples inside deliver_batch")
        return
    print(f"py-spy: {samples} on-CPU samples inside deliver_batch (both workers)")
    for title, table in (("self", own), ("total", anywhere)):
        print(f"  by {title}:")
        for name, count in sorted(table.items(), key=lambda item: -item[1])[:top]:
            print(f"    {count / samples:6.1%}  {name}")


def end_to_end(
    bench: Bench,
    shape: str,
    run_no: int,
    recipients: int,
    bare_count: int,
    py_spy: str | None = None,
) -> dict:
    circular_id = bench.create_circular(shape, f"{shape}-{run_no}")
    message = bench.sample_message(circular_id)
    bare, bare_cpu, bare_sink_cpu = bare_loop(bench.sink, message, bare_count)
    key_rate, signing_rate = signing_ceiling(bench.signer(), message)
    worker = start_worker(bench.env, bench.workdir / f"worker-{shape}-{run_no}.log")
    try:
        base = bench.sink.accepted
        processes = children(worker.pid)
        cpu_before = [cpu_seconds(pid) for pid in [*processes, bench.sink.process.pid]]
        database = bench.env["DATABASE_URL"].rpartition("/")[2]
        pg_before = postgres_cpu(database)
        started = time.monotonic()
        send_id = bench.start_send(circular_id)
        spies = []
        if py_spy:
            bench.sink.wait_for(base + min(500, recipients // 5), timeout=600)
            spies = spy(py_spy, children(worker.pid), 6, bench.workdir)
        last = bench.sink.wait_for(base + recipients, timeout=3600)
        cpu_after = [cpu_seconds(pid) for pid in [*processes, bench.sink.process.pid]]
        pg_after = postgres_cpu(database)
        pg_cpu = sum(value - pg_before.get(pid, 0.0) for pid, value in pg_after.items())
        for process in spies:
            process.wait()
        if spies:
            spy_summary(sorted(bench.workdir.glob("spy-*.txt")))
            for path in bench.workdir.glob("spy-*.txt"):
                path.unlink()
        elapsed = last - started
        deadline = time.monotonic() + 60
        while (state := bench.send_state(send_id))[0] != "done":
            if time.monotonic() > deadline:
                raise SystemExit(f"send {send_id} did not finish: {state}")
            time.sleep(0.2)
        if children(worker.pid) != processes:
            print("note: the worker replaced a process during the send")
        rss = [peak_rss_mb(pid) for pid in processes]
        parent_rss = peak_rss_mb(worker.pid)
    finally:
        stop_worker(worker)
    status, total, sent, failed = state
    if (total, sent, failed) != (recipients, recipients, 0):
        raise SystemExit(f"send {send_id}: total {total}, sent {sent}, failed {failed}")
    if bench.sink.accepted != base + recipients:
        raise SystemExit(f"smtp-sink got {bench.sink.accepted - base} messages for {recipients}")
    rate = recipients / elapsed
    spent = [after - before for before, after in zip(cpu_before, cpu_after, strict=True)]
    return {
        "cpu": {
            "workers": sum(spent[:-1]) / recipients * 1000,
            "sink": spent[-1] / recipients * 1000,
            "postgres": pg_cpu / recipients * 1000,
            "bare": bare_cpu,
            "bare_sink": bare_sink_cpu,
        },
        "shape": shape,
        "size_kb": len(message) / 1024,
        "elapsed": elapsed,
        "rate": rate,
        "bare": bare,
        "ratio": rate / bare,
        "key_rate": key_rate,
        "signing_rate": signing_rate,
        "rss": rss,
        "parent_rss": parent_rss,
    }


def profile(bench: Bench, shape: str, batches: int) -> None:
    """deliver_batch in this process under cProfile, for the first `batches` batches."""
    from circulars.extensions import db
    from circulars.sending import engine
    from circulars.sending.service import create_send

    circular_id = bench.create_circular(shape, f"profile-{shape}")
    ctx = bench.app.extensions["circulars.send_context"]
    with bench.app.app_context():
        session = db.session
        send = create_send(session, circular_id, [bench.list_id])
        session.commit()
        ranges = engine.start_send(session, send.id, ctx)[:batches]
        engine.deliver_batch(session, send.id, *ranges.pop(0), ctx)  # warm-up: caches, imports
        count = 0
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        for first, last in ranges:
            count += engine.deliver_batch(session, send.id, first, last, ctx).sent
        profiler.disable()
        elapsed = time.perf_counter() - started
        db.session.remove()
    print(f"profile: {count} messages ({shape}) in {elapsed:.2f} s under cProfile,")
    print(f"  {elapsed / count * 1000:.2f} ms a message in one process")
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(28)
        print(out.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--shape", choices=[*SHAPES, "both"], default="both")
    parser.add_argument("--runs", type=int, default=1, help="runs of each shape")
    parser.add_argument(
        "--bare-messages", type=int, default=10_000, help="messages of the bare loop (at most N)"
    )
    parser.add_argument("--redis-db", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=None, help="SEND_BATCH_SIZE")
    parser.add_argument("--profile", choices=SHAPES, default=None)
    parser.add_argument("--profile-batches", type=int, default=6)
    parser.add_argument("--py-spy", default=None, help="path of py-spy: sample the workers")
    options = parser.parse_args()
    # Clean up on SIGTERM and on Ctrl-C, also when started in the background.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    signal.signal(signal.SIGINT, signal.default_int_handler)

    import psycopg
    import redis

    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    redis_url = f"{REDIS_BASE}/{options.redis_db}"
    lock = redis.Redis.from_url(f"{REDIS_BASE}/0")
    lock_key = f"circulars-bench-run:{options.redis_db}"
    if not lock.set(lock_key, os.getpid(), nx=True, ex=6 * 3600):
        raise SystemExit(f"Redis database {options.redis_db} is in use by another run")
    workdir = Path(tempfile.mkdtemp(prefix="circulars-throughput-"))
    database = f"circulars_throughput_{secrets.token_hex(4)}"
    sink = None
    try:
        redis.Redis.from_url(redis_url).flushdb()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        sink = Sink()
        env = {
            **os.environ,
            "INSTANCE_PATH": str(workdir),
            "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}",
            "CELERY_BROKER_URL": redis_url,
            "SMTP_URL": sink.url,
            "SECRET_KEY": secrets.token_urlsafe(32),
            "BASE_URL": "https://circulars.example.org",
            "MAIL_FROM": "secretariat@example.org",
            "ORG_NAME": "Migrant Rights Network",
            "LOG_LEVEL": "WARNING",
        }
        if options.batch_size:
            env["SEND_BATCH_SIZE"] = str(options.batch_size)
        run(["dkim", "generate", "--selector", "bench"], env)
        env["DKIM_SELECTOR"] = "bench"
        run(["db", "upgrade"], env)
        run(["lists", "create", "members", "--name", "Members"], env)
        people = workdir / "people.csv"
        with people.open("w", encoding="utf-8") as out:
            out.write("email,name\n")
            for index in range(options.recipients):
                out.write(f"person{index}@example.org,Person Number {index}\n")
        setup = time.monotonic()
        run(["subscribers", "import", str(people), "--list", "members"], env)
        print(f"{options.recipients} subscribers imported in {time.monotonic() - setup:.1f} s")
        # What autovacuum does a minute later: without statistics on the new rows the
        # recipients query (count and snapshot) picks nested loops, 45 s at 8,000.
        with psycopg.connect(env["DATABASE_URL"].replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute("ANALYZE")

        from circulars import create_app
        from circulars.extensions import db
        from circulars.models import MailingList

        app = create_app(env)
        with app.app_context():
            list_id = db.session.query(MailingList.id).filter_by(slug="members").scalar()
            db.session.remove()
        bench = Bench(env, workdir, sink, list_id, app)

        if options.profile:
            profile(bench, options.profile, options.profile_batches)
            return

        shapes = SHAPES if options.shape == "both" else (options.shape,)
        bare_count = min(options.bare_messages, options.recipients)
        results = []
        for run_no in range(1, options.runs + 1):
            for shape in shapes:
                result = end_to_end(
                    bench, shape, run_no, options.recipients, bare_count, options.py_spy
                )
                results.append(result)
                print(
                    f"run {run_no} {shape:10} {result['size_kb']:6.1f} KB  "
                    f"end to end {result['rate']:6.0f} msg/s ({result['elapsed']:.1f} s)  "
                    f"bare loop {result['bare']:6.0f} msg/s  ratio {result['ratio']:.0%}  "
                    f"worker peak RSS "
                    + " / ".join(f"{mb:.0f}" for mb in result["rss"])
                    + f" MB (main process {result['parent_rss']:.0f} MB)",
                    flush=True,
                )
                cpu = result["cpu"]
                print(
                    f"    CPU ms a message: workers {cpu['workers']:.2f}, smtp-sink "
                    f"{cpu['sink']:.2f}, PostgreSQL backends {cpu['postgres']:.2f}; "
                    f"bare loop {cpu['bare']:.2f}, smtp-sink {cpu['bare_sink']:.2f}",
                    flush=True,
                )
                print(
                    f"    ceiling, two processes doing nothing else: RSA-2048 signature "
                    f"{result['key_rate']:.0f}/s ({result['key_rate'] / result['bare']:.0%} of "
                    f"the bare loop), whole DKIM signing {result['signing_rate']:.0f}/s "
                    f"({result['signing_rate'] / result['bare']:.0%})",
                    flush=True,
                )
                # CPU a message cannot do without: what the bare loop and smtp-sink spend,
                # one signature (SIGNERS processes made key_rate), and the message's record.
                signature_ms = SIGNERS * 1000 / result["key_rate"]
                floor_ms = cpu["bare"] + cpu["bare_sink"] + signature_ms + cpu["postgres"]
                bound = (os.cpu_count() or 1) * 1000 / floor_ms
                print(
                    f"    upper bound on {os.cpu_count()} cores for a sender that signs and "
                    f"records each message: {floor_ms:.2f} ms of CPU a message, {bound:.0f} msg/s "
                    f"({bound / result['bare']:.0%} of the bare loop)",
                    flush=True,
                )
        load = os.getloadavg()
        print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        for shape in shapes:
            mine = [r for r in results if r["shape"] == shape]
            best = max(mine, key=lambda r: r["ratio"])
            print(
                f"best {shape}: N={options.recipients}, {best['size_kb']:.1f} KB, "
                f"end to end {best['rate']:.0f} msg/s, bare loop {best['bare']:.0f} msg/s, "
                f"ratio {best['ratio']:.0%}, peak worker RSS "
                f"{max(max(r['rss']) for r in mine):.0f} MB"
            )
    finally:
        if sink is not None:
            sink.stop()
        from circulars.extensions import db

        if db.engine is not None:
            db.engine.dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        redis.Redis.from_url(redis_url).flushdb()
        lock.delete(lock_key)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
