"""The exceptions the dpq client raises.

Every one derives from :class:`DpqError`. A failed RPC becomes a
:class:`ServerError` carrying the gRPC status code and the server's message
unchanged (the server writes messages a person can act on); the subclass says
what to do about it:

- :class:`InvalidArgumentError`: the request is wrong; it is never retried.
- :class:`UnavailableError`: no endpoint answered in time, after every retry.
- :class:`ResourceExhaustedError`: the cluster is over its memory budget, after
  every retry; consume, or slow down.
- :class:`UnauthenticatedError`: the server wants TLS and the cluster's bearer
  token (``tls_dir=``, ``$DPQ_TLS_DIR``); never retried.
- :class:`NotFoundError`: no such job or queue (``NOT_FOUND``). ``Admin.get_job``
  and ``explain_job`` raise its :class:`UnknownJobError`, which is also a
  :class:`JobNotFoundError`: one ``except JobNotFoundError`` covers both kinds.

TLS material the client cannot use raises :class:`dpq.security.errors.TlsError`
(also exported as ``dpq.client.TlsError``) when the client is made.

A job whose ack, nack or lease extension the server refused (per job: the RPC
itself succeeded, see ``RefResult``) raises a :class:`JobRefError`: a
:class:`LeaseLostError` or :class:`JobNotFoundError` for the reasons it knows,
the base class itself for a reason this client version does not know.
"""

from __future__ import annotations

import grpc


class DpqError(Exception):
    """The base of every error the dpq client raises."""


class ClientClosedError(DpqError):
    """The producer or consumer was used after ``close()``."""


class ServerError(DpqError):
    """An RPC failed with a gRPC status the client does not (or no longer) retries.

    ``code`` is the :class:`grpc.StatusCode`, ``details`` the server's message
    as sent, ``method`` the RPC (``"Enqueue"``) and ``address`` the endpoint
    that answered last.
    """

    def __init__(self, code: grpc.StatusCode, details: str, method: str,
                 address: str | None = None) -> None:
        where = f" at {address}" if address else ""
        super().__init__(f"{method}{where} failed with {code.name}: {details}")
        self.code = code
        self.details = details
        self.method = method
        self.address = address


class InvalidArgumentError(ServerError):
    """The server refused the request as invalid (``INVALID_ARGUMENT``); fix the call."""


class UnavailableError(ServerError):
    """No endpoint served the request (``UNAVAILABLE`` or ``DEADLINE_EXCEEDED``),
    and the retries ran out."""


class ResourceExhaustedError(ServerError):
    """The cluster is over its memory budget (``RESOURCE_EXHAUSTED``) and stayed so
    through every retry; nothing of the request was taken."""


class UnauthenticatedError(ServerError):
    """The server refused the call for want of the right bearer token
    (``UNAUTHENTICATED``): connect with the cluster's TLS folder or token."""


class NotFoundError(ServerError):
    """The server has no such job or queue (``NOT_FOUND``); never retried."""


class AlreadyExistsError(ServerError):
    """A schedule of that name exists (``ALREADY_EXISTS``): delete it, or create with
    ``replace=True``."""


class PartialEnqueueError(DpqError):
    """``enqueue_many`` failed part way: ``job_ids`` holds the ids of the jobs that
    were enqueued (the first ones, in order); the cause is ``__cause__``."""

    def __init__(self, job_ids: list[int], total: int, cause: BaseException) -> None:
        super().__init__(f"{len(job_ids)} of {total} jobs were enqueued before: {cause}")
        self.job_ids = job_ids


class JobRefError(DpqError):
    """The server refused an ack, nack or lease extension of one job.

    ``reason`` is the server's word for it (``"lease_lost"``, ``"not_found"``: the
    ``dpq.v1.Refusal`` names, lower case, without ``REFUSAL_``).
    """

    def __init__(self, job_id: int, attempt: int, reason: str, action: str) -> None:
        super().__init__(f"{action} of job {job_id} (attempt {attempt}) refused: {reason}")
        self.job_id = job_id
        self.attempt = attempt
        self.reason = reason


class LeaseLostError(JobRefError):
    """The job's lease ran out and the job was handed out again (or given up):
    this consumer no longer holds it, and another may be working on it."""


class JobNotFoundError(JobRefError):
    """The job no longer exists (it was acked)."""


class UnknownJobError(NotFoundError, JobNotFoundError):
    """``GetJob`` / ``ExplainJob``: the cluster knows no job ``job_id`` (never enqueued,
    or acked or cancelled long enough ago to be forgotten). Both a
    :class:`ServerError` (``code``, ``details``, ``method``, ``address``) and a
    :class:`JobNotFoundError` (``job_id``; ``attempt`` 0)."""

    def __init__(self, job_id: int, error: ServerError) -> None:
        # Not ServerError.__init__: its super() would reach JobRefError's signature.
        DpqError.__init__(self, str(error))
        self.code, self.details = error.code, error.details
        self.method, self.address = error.method, error.address
        self.job_id, self.attempt, self.reason = job_id, 0, "not_found"


def server_error(code: grpc.StatusCode, details: str, method: str,
                 address: str | None = None) -> ServerError:
    """The :class:`ServerError` subclass for a gRPC status code."""
    kind = {
        grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
        grpc.StatusCode.UNAVAILABLE: UnavailableError,
        grpc.StatusCode.DEADLINE_EXCEEDED: UnavailableError,
        grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
        grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
        grpc.StatusCode.NOT_FOUND: NotFoundError,
        grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    }.get(code, ServerError)
    return kind(code, details, method, address)


#: ``RefResult.error`` → the exception raised for it; any other reason raises
#: :class:`JobRefError` itself (never a guess such as LeaseLostError).
JOB_REF_ERRORS: dict[str, type[JobRefError]] = {
    "lease_lost": LeaseLostError,
    # the job is not leased and the reference names no delivery of it: not this
    # consumer's lease either
    "not_leased": LeaseLostError,
    "not_found": JobNotFoundError,
}


def job_ref_error(job_id: int, attempt: int, reason: str, action: str) -> JobRefError:
    """The :class:`JobRefError` subclass for a ``RefResult.error``."""
    kind = JOB_REF_ERRORS.get(reason, JobRefError)
    return kind(job_id, attempt, reason, action)
