"""Answering for any user from any instance: find the member that owns the user's partition.

With several instances in one Faust app (consumer group) each instance holds only the
table partitions assigned to it, so a per-user request must be answered by the member
that owns that user's partition. Faust's partition assignor publishes, with every
assignment, each member's canonical URL (``Settings.canonical_url``, the instance's own
HTTP base URL) and the changelog partitions it actively owns; ``app.router.table_metadata``
reads that map. :class:`PartitionOwners` turns a user id into a :class:`Route` (answer
here, forward to the owner, or 503 with the reason) and :class:`UserRouting` forwards
the request with the caller's API key and a hop header, so a request crosses at most
one hop.

Why not ``app.router.key_store(table, user_id)``: it hashes the key as the table's
changelog serialises it (JSON, ``b'"u-1"'``), but a user's state is written from the
partition of its command on ``<app_id>-user-commands``, which is keyed by the raw user id
(``b"u-1"``), and Faust writes a table's changelog to the partition of the event being
processed. The two hashes disagree for about two users in three, so the partition is
computed the way the commands are partitioned (Faust's producer partitioner over the raw
id) and only the owner of that partition is looked up in Faust's assignment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import httpx
from fastapi import HTTPException, Request, Response
from faust.types import TP
from yarl import URL

from mlops_platform.logs import get_logger
from recommender.metrics import recommender_metrics

log = get_logger(__name__)

HOP_HEADER = "X-Recommender-Forwarded-By"
"""Set on a forwarded request (the forwarding instance's id): such a request is never forwarded again."""
SERVED_BY_HEADER = "X-Recommender-Served-By"
"""On every routed answer: the canonical URL of the instance whose tables answered."""
PASSED_HEADERS = ("x-api-key", "authorization", "accept", "x-request-id", "x-correlation-id")
"""Request headers a forwarded request carries (the caller's key: the owner authorises it again)."""
RETRY_AFTER_S = 1
"""What a 503 tells the client to wait: a rebalance usually settles within seconds."""

Partitioner = Callable[[bytes, Sequence[int], Sequence[int]], int]


@dataclass(frozen=True)
class Route:
    """Where a user's request is answered: here (``owner`` None), at ``owner``, or nowhere now."""

    partition: int | None = None
    owner: str | None = None
    """Base URL of the member owning the partition, when it is another one."""
    unavailable: str | None = None
    """Why no member can answer right now (a 503 with this reason)."""


class FaustGroup(Protocol):
    """What routing reads of a running Faust app (``faust.App``)."""

    rebalancing: bool
    in_recovery: bool

    @property
    def tables(self) -> Any: ...

    @property
    def assignor(self) -> Any: ...

    @property
    def router(self) -> Any: ...

    @property
    def producer(self) -> Any: ...


def same_node(a: str, b: str) -> bool:
    """Whether two base URLs name the same server (host and port, as Faust's router compares them)."""
    left, right = URL(a), URL(b)
    return (left.host, left.port) == (right.host, right.port)


class PartitionOwners:
    """Which member of the Faust group owns a user's partition of ``table``, from Faust's assignment."""

    def __init__(self, app: FaustGroup, *, table: str, partitions: int, own_url: str) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, not {partitions}")
        self.app = app
        self.table = table
        self.partitions = partitions
        self.own_url = own_url

    def partition_of(self, user_id: str) -> int:
        """The partition of the user's commands, hence of all of its table state."""
        everything = list(range(self.partitions))
        partitioner = cast(Partitioner, self.app.producer.partitioner)
        return int(partitioner(user_id.encode(), everything, everything))

    def route(self, user_id: str) -> Route:
        """Answer here, forward to the owner, or say why nobody can answer now."""
        app = self.app
        recovery = app.tables.recovery
        if app.rebalancing or app.in_recovery or not recovery.completed.is_set():
            return Route(
                unavailable="rebalance in progress: partitions are being reassigned and tables restored"
            )
        partition = self.partition_of(user_id)
        changelog = str(app.tables[self.table].changelog_topic.get_topic_name())
        if TP(changelog, partition) in app.assignor.assigned_actives():
            return Route(partition=partition)
        metadata: Mapping[str, Mapping[str, Sequence[int]]] = app.router.table_metadata(self.table)
        owners = sorted(url for url, topics in metadata.items() if partition in topics.get(changelog, ()))
        if not owners:
            return Route(
                partition=partition,
                unavailable=f"no member of the group owns partition {partition} of {changelog}",
            )
        owner = owners[0]
        if same_node(owner, self.own_url):
            # The assignment names this instance, but its tables do not hold the partition:
            # the assignment being applied is newer than the one recovered.
            return Route(
                partition=partition,
                unavailable=f"partition {partition} is assigned here but not restored yet",
            )
        return Route(partition=partition, owner=owner.rstrip("/"))


def unavailable(reason: str) -> HTTPException:
    """A 503 with its reason and a hint when to try again."""
    return HTTPException(status_code=503, detail=reason, headers={"Retry-After": str(RETRY_AFTER_S)})


class UserRouting:
    """Per-user requests answered by the owner of the user's partition, forwarded there if need be."""

    def __init__(
        self, owners: PartitionOwners, client: httpx.AsyncClient, *, instance_id: str, timeout_s: float
    ) -> None:
        self.owners = owners
        self.client = client
        self.instance_id = instance_id
        self.timeout_s = timeout_s
        self.metrics = recommender_metrics()

    @property
    def own_url(self) -> str:
        return self.owners.own_url

    async def dispatch(self, request: Request, user_id: str) -> Response | None:
        """``None`` when this instance answers; else the owner's answer. Raises a 503 when nobody can."""
        route = self.owners.route(user_id)
        if route.unavailable is not None:
            self.metrics.requests_routed.labels("unavailable").inc()
            raise unavailable(route.unavailable)
        if route.owner is None:
            self.metrics.requests_routed.labels("local").inc()
            return None
        hop = request.headers.get(HOP_HEADER)
        if hop is not None:
            # The sender believed this instance was the owner: the assignment is changing.
            # Forwarding again could bounce the request between two stale views.
            self.metrics.requests_routed.labels("unavailable").inc()
            raise unavailable(
                f"forwarded by {hop}, but partition {route.partition} is owned by {route.owner}: "
                "the assignment is changing"
            )
        return await self.forward(request, route.owner, route.partition)

    async def forward(self, request: Request, owner: str, partition: int | None) -> Response:
        """The owner's answer to the same ``GET``, relayed as it is (status, body, content type)."""
        headers = {name: value for name in PASSED_HEADERS if (value := request.headers.get(name)) is not None}
        headers[HOP_HEADER] = self.instance_id
        url = f"{owner}{request.url.path}"
        if request.url.query:
            url = f"{url}?{request.url.query}"
        try:
            answer = await self.client.get(url, headers=headers, timeout=self.timeout_s)
        except httpx.TimeoutException as exc:
            self.metrics.requests_routed.labels("owner_unreachable").inc()
            log.warning("owner_timed_out", owner=owner, partition=partition, error=repr(exc))
            raise unavailable(
                f"the owner of partition {partition} ({owner}) did not answer within {self.timeout_s:g}s"
            ) from exc
        except httpx.HTTPError as exc:
            self.metrics.requests_routed.labels("owner_unreachable").inc()
            log.warning("owner_unreachable", owner=owner, partition=partition, error=repr(exc))
            raise unavailable(
                f"the owner of partition {partition} ({owner}) is unreachable: {type(exc).__name__}"
            ) from exc
        self.metrics.requests_routed.labels("forwarded").inc()
        relayed = {SERVED_BY_HEADER: answer.headers.get(SERVED_BY_HEADER, owner)}
        if "retry-after" in answer.headers:
            relayed["Retry-After"] = answer.headers["retry-after"]
        return Response(
            content=answer.content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type"),
            headers=relayed,
        )


async def answer_here_or_forward(request: Request, response: Response, user_id: str) -> Response | None:
    """For a per-user route: ``None`` if this instance answers (marked so), else the owner's answer.

    Without routing (``app.state.routing`` unset: a single process built without Faust,
    as in the unit tests) every request is answered here.
    """
    routing: UserRouting | None = getattr(request.app.state, "routing", None)
    if routing is None:
        return None
    forwarded = await routing.dispatch(request, user_id)
    if forwarded is None:
        response.headers[SERVED_BY_HEADER] = routing.own_url
    return forwarded
