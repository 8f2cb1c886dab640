"""The embedded broker stays whole when a worker uses its channel from several threads."""

from __future__ import annotations

import threading

from kombu import Connection

from circulars.broker import celery_broker_options


def test_threads_sharing_a_channel_lose_and_duplicate_nothing(tmp_path):
    # As in a Celery worker: the main thread polls while other threads put messages
    # back (the requeue of a task whose pool process died) on the same channel.
    options = celery_broker_options(f"sqla+sqlite:///{tmp_path / 'broker.db'}")
    connection = Connection(options["broker_url"], transport=options["broker_transport"])
    channel = connection.channel()
    channel._new_queue("tasks")
    putters, each = 4, 150
    errors: list[BaseException] = []

    def put(worker: int) -> None:
        try:
            for index in range(each):
                channel._put("tasks", {"n": worker * each + index})
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(number,)) for number in range(putters)]
    for thread in threads:
        thread.start()
    received: list[int] = []
    while any(thread.is_alive() for thread in threads) or len(received) < putters * each:
        try:
            received.append(channel._get("tasks")["n"])
        except Exception as exc:  # kombu's Empty when the queue is empty for now
            if type(exc).__name__ != "Empty":
                raise
        if errors:
            break
    for thread in threads:
        thread.join()
    connection.release()
    assert errors == []
    assert sorted(received) == list(range(putters * each))


def test_workers_use_this_transport_when_the_url_comes_from_the_environment(tmp_path, monkeypatch):
    # CELERY_BROKER_URL is our setting's name and Celery's own: Celery reads it over
    # broker_url, and its `sqla+` would pick kombu's channel over ours.
    from celery import Celery

    from circulars.broker import Transport

    url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    app = Celery("circulars-test", set_as_current=False)
    app.conf.update(celery_broker_options(url))
    for connection in (app.connection_for_read(), app.connection_for_write()):
        assert isinstance(connection.transport, Transport)
        connection.release()
