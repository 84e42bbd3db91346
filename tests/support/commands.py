"""Builders for queue commands, and a log that feeds them to a state machine.

Shared by the state-machine tests and the owned-jobs tests.
"""

from __future__ import annotations

from hypothesis import strategies as st

from dpq.paxos.types import Proposal
from dpq.queue.commands import batch_of, stamp
from dpq.queue.results import Enqueued, Leased, Refusal, Settled
from dpq.queue.state import QueueState
from dpq.v1 import log_pb2, queue_pb2

MS = 1000
#: The cluster of the state-machine tests.
MEMBERS = frozenset({1, 2, 3})


def receipt(job_id: int) -> int:
    """The receipt the helpers below lease a job with (a node draws it at random)."""
    return 0xD0_0000_0000 + job_id


def settled(*outcomes: Refusal | None) -> Settled:
    """The result of an Ack, Nack, Extend or Expire: per reference None (done) or a refusal."""
    return Settled(outcomes)


def enqueued(*job_ids: int) -> Enqueued:
    return Enqueued(job_ids)


def grants(results: list) -> list:
    """The grants of a slot of one Lease command."""
    [result] = results
    assert isinstance(result, Leased), result
    return list(result.grants)


class Recorder:
    def __init__(self):
        self.events = []

    def job_changed(self, job, previous_owner, previous_state):
        self.events.append((job.job_id, previous_owner, job.owner, previous_state, job.state))

    def queue_changed(self, queue):
        self.events.append(("queue", queue))


class Log:
    """Feeds commands to a state machine the way committed slots would."""

    def __init__(self, state=None):
        self.state = state or QueueState(members=MEMBERS)
        self.slot = 0
        self.seq = 0

    def run(self, at_ms, *commands, client="c1", seq=None):
        self.slot += 1
        if seq is None:
            self.seq += 1
            seq = self.seq
        data = stamp(at_ms * MS, batch_of(*commands))
        return self.state.apply(self.slot, Proposal(client, seq, data))


def enqueue(*jobs, owners=None, dedup_window_ms=0):
    news = [
        j if isinstance(j, queue_pb2.NewJob) else queue_pb2.NewJob(queue="q", priority=j[0],
                                                                   payload=j[1])
        for j in jobs
    ]
    return log_pb2.Command(
        enqueue=log_pb2.EnqueueCommand(
            jobs=news, owners=owners or [1] * len(news), dedup_window_us=dedup_window_ms * MS
        )
    )


def lease(*ids, node=1, lease_ms=1000, consumer="w", receipts=None):
    return log_pb2.Command(
        lease=log_pb2.LeaseCommand(
            node=node, job_ids=ids, lease_ms=lease_ms, consumer_id=consumer,
            receipts=[receipt(i) for i in ids] if receipts is None else receipts)
    )


def refs(*pairs):
    """``(job_id, attempt)`` (with the helpers' receipt) or ``(job_id, attempt, receipt)``."""
    return [queue_pb2.JobRef(job_id=p[0], attempt=p[1],
                             receipt=p[2] if len(p) > 2 else receipt(p[0]))
            for p in pairs]


def ack(*pairs):
    return log_pb2.Command(ack=log_pb2.AckCommand(jobs=refs(*pairs)))


def nack(*pairs, delay_ms=0, max_attempts=3, undelivered=False):
    return log_pb2.Command(
        nack=log_pb2.NackCommand(jobs=refs(*pairs), delay_ms=delay_ms, max_attempts=max_attempts,
                                 undelivered=undelivered)
    )


def expire(*pairs, max_attempts=3):
    return log_pb2.Command(expire=log_pb2.ExpireCommand(jobs=refs(*pairs),
                                                        max_attempts=max_attempts))


def extend(*pairs, lease_ms=1000):
    return log_pb2.Command(extend=log_pb2.ExtendCommand(jobs=refs(*pairs), lease_ms=lease_ms))


def reassign(ids, owners):
    return log_pb2.Command(reassign=log_pb2.ReassignCommand(job_ids=ids, owners=owners))


def checkpoint(slot):
    return log_pb2.Command(checkpoint=log_pb2.CheckpointCommand(written_slot=slot))


def selector(job_ids=(), queue="", state=0, priority=0, dedup_key_prefix="", all=False):
    return queue_pb2.JobSelector(job_ids=job_ids, queue=queue, state=state, priority=priority,
                                 dedup_key_prefix=dedup_key_prefix, all=all)


def cancel(**sel):
    return log_pb2.Command(cancel=log_pb2.CancelCommand(selector=selector(**sel)))


def retry(**sel):
    return log_pb2.Command(retry=log_pb2.RetryCommand(selector=selector(**sel)))


def set_priority(new_priority, **sel):
    return log_pb2.Command(set_priority=log_pb2.SetPriorityCommand(selector=selector(**sel),
                                                                   priority=new_priority))


def pause(queue="q", duration_ms=0):
    return log_pb2.Command(pause=log_pb2.PauseCommand(queue=queue, duration_ms=duration_ms))


def resume(queue="q"):
    return log_pb2.Command(resume=log_pb2.ResumeCommand(queue=queue))


def purge(queue="q"):
    return log_pb2.Command(purge=log_pb2.PurgeCommand(queue=queue))


def queue_config(queue="q", **fields):
    """A QueueConfig command setting ``fields`` (``fairness_weights`` as a dict)."""
    weights = fields.pop("fairness_weights", {})
    return log_pb2.Command(queue_config=log_pb2.QueueConfigCommand(
        change=queue_pb2.SetQueueConfigRequest(
            queue=queue, fairness_weights=[queue_pb2.FairnessWeight(key=k, weight=w)
                                           for k, w in weights.items()], **fields)))


def create_schedule(name="s", every_ms=1000, start_at_us=200_000, jitter_ms=0, queue="a",
                    replace=False):
    return log_pb2.Command(create_schedule=log_pb2.CreateScheduleCommand(
        schedule=queue_pb2.Schedule(name=name, queue=queue, priority=2, payload=b"tick",
                                    every_ms=every_ms, start_at=start_at_us,
                                    jitter_ms=jitter_ms),
        replace=replace))


def delete_schedule(name="s"):
    return log_pb2.Command(delete_schedule=log_pb2.DeleteScheduleCommand(name=name))


def schedule_tick(name="s", fire_at_us=200_000, version=1, owner=1):
    return log_pb2.Command(schedule_tick=log_pb2.ScheduleTickCommand(
        name=name, fire_at_us=fire_at_us, version=version, owner=owner))


#: Selectors of the bulk commands: by ids, by queue and state, by priority, by dedup prefix.
selectors = st.one_of(
    st.builds(lambda ids: {"job_ids": ids}, st.lists(st.integers(1, 30), min_size=1, max_size=4)),
    st.builds(lambda q, s: {"queue": q, "state": s}, st.sampled_from(["a", "b"]),
              st.sampled_from([0, 1, 2, 3, 4, 6])),
    st.builds(lambda p: {"priority": p}, st.integers(1, 5)),
    st.builds(lambda k: {"dedup_key_prefix": k}, st.sampled_from(["k", "k1"])),
)

admin_commands = st.one_of(
    st.builds(lambda sel: cancel(**sel), selectors),
    st.builds(lambda sel: retry(**sel), selectors),
    st.builds(lambda p, sel: set_priority(p, **sel), st.integers(1, 5), selectors),
    st.builds(pause, st.sampled_from(["a", "b"]), st.sampled_from([0, 300])),
    st.builds(resume, st.sampled_from(["a", "b"])),
    st.builds(purge, st.sampled_from(["a", "b"])),
    st.builds(lambda q, n, rate, attempts: queue_config(
                  q, max_in_flight=n, max_rate_per_s=rate, max_attempts=attempts,
                  fairness_weights={"t1": 3}),
              st.sampled_from(["a", "b"]), st.sampled_from([0, 1, 2]),
              st.sampled_from([0.0, 2.0, 50.0]), st.sampled_from([0, 1, 2])),
    # periodic jobs: a schedule on a grid of 200 ms + n s, so some ticks are its next one
    st.builds(create_schedule, st.sampled_from(["s", "t"]), st.sampled_from([1000, 2000]),
              replace=st.booleans()),
    st.builds(delete_schedule, st.sampled_from(["s", "t"])),
    st.builds(schedule_tick, st.sampled_from(["s", "t"]),
              st.sampled_from([200_000, 1_200_000, 2_200_000]), st.integers(1, 6),
              st.integers(1, 3)),
    st.builds(schedule_tick, st.sampled_from(["s", "t"]),
              st.sampled_from([200_000, 1_200_000, 2_200_000]), st.integers(1, 6),
              st.integers(1, 3)),
)

queue_commands = st.one_of(
    st.builds(
        lambda jobs, owners: enqueue(
            *[queue_pb2.NewJob(queue=q, priority=p, delay_ms=d, dedup_key=k,
                               fairness_key=k.replace("k", "t"))
              for q, p, d, k in jobs],
            owners=[owners] * len(jobs),
            dedup_window_ms=500,
        ),
        st.lists(
            st.tuples(st.sampled_from(["a", "b"]), st.integers(1, 5), st.sampled_from([0, 0, 300]),
                      st.sampled_from(["", "", "k1", "k2"])),
            min_size=1, max_size=4,
        ),
        st.integers(1, 2),
    ),
    st.builds(lambda ids, node, ms: lease(*ids, node=node, lease_ms=ms),
              st.lists(st.integers(1, 30), max_size=4), st.integers(1, 2),
              st.sampled_from([50, 500])),
    st.builds(lambda ids, a: ack(*[(i, a) for i in ids]), st.lists(st.integers(1, 30), max_size=3),
              st.integers(1, 3)),
    st.builds(lambda ids, a, d: nack(*[(i, a) for i in ids], delay_ms=d),
              st.lists(st.integers(1, 30), max_size=3), st.integers(1, 3),
              st.sampled_from([0, 200])),
    st.builds(lambda ids, a: expire(*[(i, a) for i in ids]),
              st.lists(st.integers(1, 30), max_size=3), st.integers(1, 3)),
    st.builds(lambda ids, a: extend(*[(i, a) for i in ids]),
              st.lists(st.integers(1, 30), max_size=3), st.integers(1, 3)),
    st.builds(lambda ids, owner: reassign(ids, [owner] * len(ids)),
              st.lists(st.integers(1, 30), max_size=3), st.integers(1, 3)),
)

#: Any command a proposer sends, the operators' bulk commands about one time in six.
commands = st.one_of(queue_commands, queue_commands, admin_commands)


