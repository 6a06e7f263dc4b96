"""A Celery app shaped like the Python system dtest replaces.

The broker, the queue names and the task names come from the environment,
so that each test owns its queues:

    CELERY_BROKER_URL   the broker (Celery itself reads this variable too)
    QUEUE_A, QUEUE_B    where task_a and task_b go; the other tasks go to A
    CELERY_SHORT_NAMES  "1": also register each task under its bare name
                        (task_a), the name dtest's dispatcher sends

Run a worker with:

    python3 -m celery -A celery_app worker -Q "$QUEUE_A" -P solo
"""
import os
import time

from celery import Celery

BROKER_URL = os.environ.get(
    "CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
QUEUE_A = os.environ.get("QUEUE_A", "queue_a")
QUEUE_B = os.environ.get("QUEUE_B", "queue_b")
SHORT_NAMES = os.environ.get("CELERY_SHORT_NAMES") == "1"

app = Celery("celery_app", broker=BROKER_URL)
app.conf.update(
    result_backend="rpc://",
    task_routes={
        "celery_app.task_a": {"queue": QUEUE_A},
        "celery_app.task_b": {"queue": QUEUE_B},
        "celery_app.*": {"queue": QUEUE_A},
    },
    # The broker is shared with other test runs: these workers must not
    # answer their remote-control broadcasts (ping, active_queues).
    worker_enable_remote_control=False,
)


def seed_result(label, message, started, retries):
    """The result dict of the seed's tasks."""
    return {
        "result": message,
        "execution_time": round(time.perf_counter() - started, 4),
        "task": label,
        "retry_count": retries,
    }


def seed_task(**options):
    """Registers celery_app.<name>, and <name> with CELERY_SHORT_NAMES."""

    def register(func):
        name = f"celery_app.{func.__name__}"
        task = app.task(bind=True, name=name, **options)(func)
        if SHORT_NAMES:
            app.task(bind=True, name=func.__name__, **options)(func)
        return task

    return register


@seed_task()
def task_a(self):
    started = time.perf_counter()
    time.sleep(0.1)
    return seed_result("A", "Hello from Task A", started, self.request.retries)


@seed_task()
def task_b(self):
    started = time.perf_counter()
    time.sleep(0.2)
    return seed_result("B", "Hello from Task B", started, self.request.retries)


@seed_task()
def fail(self):
    raise ValueError("disk quota exceeded")


@seed_task(max_retries=3)
def flaky(self):
    """Fails on its first two runs, then succeeds."""
    started = time.perf_counter()
    if self.request.retries < 2:
        raise self.retry(exc=RuntimeError("not yet"), countdown=0.05)
    return seed_result("flaky", "third time lucky", started,
                       self.request.retries)


@app.task(bind=True, name="noop")
def noop(self, *args, **kwargs):
    """Named as dtest's noop task, so both kinds of worker share a queue."""
    return {
        "result": list(args),
        "kwargs": kwargs,
        "execution_time": 0.0,
        "task": "noop",
        "retry_count": self.request.retries,
    }
