"""The dpq client library: producers, consumers and an admin, blocking and asyncio.

::

    from dpq.client import Consumer, Producer

    with Producer("127.0.0.1:7100") as producer:
        job_id = producer.enqueue(b"resize photo 17", priority=1, queue="images")

    with Consumer("127.0.0.1:7100", queue="images") as consumer:
        consumer.run(handle, concurrency=4)  # acks, nacks, extends; stops on Ctrl-C

    with Admin("127.0.0.1:7100") as admin:
        admin.retry_jobs(queue="images", state="dead")  # see dpq.client.admin

Targets are ``HOST:PORT`` of a gateway or of nodes (``None``: ``$DPQ_ADDR``,
else the local ``dpq up`` gateway at ``127.0.0.1:7100``). A cluster with TLS on
wants its CA and bearer token: ``Producer(..., tls_dir="tls")`` (a ``dpq certs
init`` folder), ``root_certificates=`` and ``token=``, or ``$DPQ_TLS_DIR``.

Modules: ``producer``, ``consumer`` and ``admin`` (the client classes), ``job``
(what a consumer hands out), ``spec`` (what a producer sends), ``errors``.
The underscored modules are the parts they are built from: endpoints and
retries, the EnqueueStream, batching, held jobs and the lease keeper, one
long-poll per node, the node list, the ``run()`` workers, signal handling, and
the private event loop thread of the blocking classes.
"""

from dpq.client._endpoints import DEFAULT_TARGET, parse_targets
from dpq.client._retry import RetryPolicy
from dpq.client._runner import ExponentialBackoff, RunSummary
from dpq.client.admin import (
    Admin,
    Affected,
    AsyncAdmin,
    Explanation,
    Hold,
    JobInfo,
    JobPage,
    JobState,
    QueueConfig,
    QueuePause,
    Selector,
)
from dpq.client.consumer import AsyncConsumer, Consumer
from dpq.client.errors import (
    AlreadyExistsError,
    ClientClosedError,
    DpqError,
    InvalidArgumentError,
    JobNotFoundError,
    JobRefError,
    LeaseLostError,
    NotFoundError,
    PartialEnqueueError,
    ResourceExhaustedError,
    ServerError,
    UnauthenticatedError,
    UnavailableError,
    UnknownJobError,
)
from dpq.client.job import AsyncJob, BaseJob, Job
from dpq.client.producer import AsyncProducer, Producer, ProducerStats
from dpq.client.schedules import ScheduleDeletion, ScheduleInfo
from dpq.client.spec import Delay, JobLike, JobSpec, Payload
from dpq.security.errors import TlsError

__all__ = [
    "DEFAULT_TARGET",
    "Admin",
    "Affected",
    "AlreadyExistsError",
    "AsyncAdmin",
    "AsyncConsumer",
    "AsyncJob",
    "AsyncProducer",
    "BaseJob",
    "ClientClosedError",
    "Consumer",
    "Delay",
    "DpqError",
    "Explanation",
    "ExponentialBackoff",
    "Hold",
    "InvalidArgumentError",
    "Job",
    "JobInfo",
    "JobLike",
    "JobNotFoundError",
    "JobPage",
    "JobRefError",
    "JobSpec",
    "JobState",
    "LeaseLostError",
    "NotFoundError",
    "PartialEnqueueError",
    "Payload",
    "Producer",
    "ProducerStats",
    "QueueConfig",
    "QueuePause",
    "ResourceExhaustedError",
    "RetryPolicy",
    "RunSummary",
    "ScheduleDeletion",
    "ScheduleInfo",
    "Selector",
    "ServerError",
    "TlsError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnknownJobError",
    "parse_targets",
]
