"""Calls tasks as a Python Celery client does; prints what it saw as JSON.

    python3 client.py get NAME       .delay().get(): result and final state
    python3 client.py poll NAME      .state and .ready() until it is done
    python3 client.py raises NAME    .get() that raises: the exception
    python3 client.py retry NAME     .get(on_message=...): every status seen
    python3 client.py chain NAME...  chain(NAME.si(), ...).get()

NAME is a task of celery_app (celery_app.task_a) or any other name, which
is sent as it is. The client's reply queue is deleted on the way out, so
nothing is left behind on the broker.
"""
import json
import sys
import time

from celery import chain as celery_chain
from celery.exceptions import NotRegistered

from celery_app import app

TIMEOUT = 15


def send(name):
    task = app.tasks.get(name)
    return task.delay() if task else app.send_task(name)


def get(name):
    result = send(name)
    value = result.get(timeout=TIMEOUT)
    return {"id": result.id, "result": value, "state": result.state}


def poll(name):
    result = send(name)
    first = {"state": result.state, "ready": result.ready()}
    states = []
    deadline = time.monotonic() + TIMEOUT
    while not result.ready() and time.monotonic() < deadline:
        states.append(result.state)
        time.sleep(0.02)
    return {
        "id": result.id,
        "first": first,
        "states": states,
        "state": result.state,
        "ready": result.ready(),
        "result": result.result,
    }


def raises(name):
    result = send(name)
    try:
        value = result.get(timeout=TIMEOUT)
    except Exception as error:
        return {
            "id": result.id,
            "type": type(error).__name__,
            "module": type(error).__module__,
            "message": str(error),
            "not_registered": isinstance(error, NotRegistered),
            "state": result.state,
            "traceback": result.traceback,
        }
    return {"id": result.id, "result": value, "error": "get() did not raise"}


def retry(name):
    result = send(name)
    statuses = []

    def seen(meta):
        statuses.append(meta["status"])

    value = result.get(timeout=TIMEOUT, on_message=seen)
    return {"id": result.id, "result": value, "state": result.state,
            "statuses": statuses}


def chain(*names):
    steps = [app.signature(name, immutable=True) for name in names]
    result = celery_chain(*steps).apply_async()
    value = result.get(timeout=TIMEOUT)
    return {"id": result.id, "result": value, "state": result.state}


def delete_reply_queue():
    with app.connection_for_write() as connection:
        connection.default_channel.queue_delete(app.backend.oid)


SCENARIOS = {"get": get, "poll": poll, "raises": raises, "retry": retry,
             "chain": chain}


def main():
    try:
        report = SCENARIOS[sys.argv[1]](*sys.argv[2:])
    finally:
        delete_reply_queue()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
