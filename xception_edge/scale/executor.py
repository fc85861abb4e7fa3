"""Run ``fn(item)`` for many items, in this process or as Ray tasks (one task per item).

Ray is imported inside :func:`connect` only. The connection is made once per process and kept
(Ray's own exit hook disconnects); an unreachable address fails in seconds with a one-line
BadInput naming it, where Ray itself would retry for minutes."""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Callable

from ..errors import BadInput, BackendUnavailable

EXECUTORS = ("local", "ray")
CONNECT_TIMEOUT_S = 5.0
_state: dict = {"address": None, "owned": False}


def check_executor(executor: str) -> None:
    if executor not in EXECUTORS:
        raise BadInput(f"--executor {executor!r} is not one of {', '.join(EXECUTORS)}")


def ray_module():
    """The ``ray`` module, or a one-line BadInput naming the extra that installs it."""
    if importlib.util.find_spec("ray") is None:
        raise BackendUnavailable("ray", "ray", "--executor ray")
    import ray

    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of ``host:port`` or ``ray://host:port``; None for ``auto``/``local``."""
    rest = address.split("://", 1)[1] if "://" in address else address
    if rest in ("auto", "local", ""):
        return None
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise BadInput(f"--ray-address {address!r} is not HOST:PORT (or ray://HOST:PORT, auto); pass the head node's address")
    return host.strip("[]"), int(port)


def probe(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast when nothing listens at ``address`` (Ray's own connect retries for minutes)."""
    where = _host_port(address)
    if where is None:
        return
    try:
        socket.create_connection(where, timeout=timeout).close()
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise BadInput(
            f"--ray-address {address}: no Ray head node reachable there ({why} within {timeout:g} s); "
            "start one with `ray start --head` or pass the right HOST:PORT"
        ) from None


def connect(address: str | None):
    """Ray, connected to ``address`` (None: a local Ray this process starts, unless RAY_ADDRESS
    names a cluster); reused while the address is the same."""
    ray = ray_module()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        if _state["address"] == address:
            return ray
        ray.shutdown()
    if address:
        probe(address)
    else:  # a Ray this process starts sends no usage statistics (a cluster's own setting is its own)
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        _own_token()
    # A Ray this process starts ("local": never a cluster that `ray start` left on this machine) has
    # as many CPUs as this process may use, and no dashboard; its processes end with this one.
    local = {} if address else {"num_cpus": _cores(), "include_dashboard": False}
    try:
        ray.init(address=address or "local", logging_level="ERROR", log_to_driver=False, **local)
    except (ConnectionError, RuntimeError) as exc:
        if address and _auth_failure(exc):
            raise BadInput(
                f"--ray-address {address}: the Ray cluster asks for its authentication token; put it in "
                "RAY_AUTH_TOKEN or ~/.ray/auth_token (`ray get-auth-token` on the head node prints it)"
            ) from None
        raise
    _state["address"], _state["owned"] = address, True
    return ray


def _auth_failure(exc: BaseException) -> bool:
    """Whether Ray's connection error comes from the cluster refusing our token (or its absence):
    Ray raises ConnectionError("Failed to connect …") from an AuthenticationError."""
    seen = 0
    while exc is not None and seen < 10:
        if type(exc).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _own_token() -> None:
    """A Ray this process starts keeps Ray's token authentication, with a token of its own that its
    processes inherit through the environment. Without one, Ray 2.60 writes ~/.ray/auth_token, and
    that file outlives the run: every later `ray start --head` on this machine turns token
    authentication on, and a node joining it with `ray start --address` is refused. A token or
    RAY_AUTH_MODE the user has is left to Ray."""
    if os.environ.get("RAY_AUTH_MODE") or os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    if os.path.exists(os.path.join(os.path.expanduser("~"), ".ray", "auth_token")):
        return
    import secrets

    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)  # as Ray makes one


def _cores() -> int:
    """The CPUs this process may run on: its affinity mask (``taskset``), and at most what Ray
    itself counts (a container's CPU quota)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        from ray._private.utils import get_num_cpus  # private: without it, the affinity alone

        return max(1, min(n, int(get_num_cpus())))
    except Exception:
        return n


def stop_tasks(ray) -> None:
    """Stop this driver's tasks after an error or Ctrl-C: disconnect, and Ray ends the job and
    kills its workers. Not ``ray.cancel``: in Ray 2.60 a cancel that races with a task finishing at
    that moment fails a RAY_CHECK ("Tried to complete task that was not pending") and the whole
    process exits with 1, no message. A Ray session the caller started is left alone (its tasks
    run to their end, their results unused)."""
    if _state["owned"] and ray.is_initialized():
        ray.shutdown()
        _state["address"], _state["owned"] = None, False


def map_tasks(
    fn: Callable,
    items: list,
    *,
    executor: str = "local",
    ray_address: str | None = None,
    num_cpus: float = 1,
    max_retries: int = 3,
    on_done: Callable | None = None,
) -> list:
    """fn(item) for each item, results in items' order. executor "local": in this process, in order.
    "ray": each call is a Ray task (fn and items must be picklable), connecting to ray_address
    (None: start/attach a local Ray), with retries; on_done(index, result) is called as each
    finishes (for progress). Errors: BadInput one-liners for Ray missing / unreachable address;
    an exception raised by ``fn`` on a worker is raised here as itself."""
    check_executor(executor)
    if executor == "local":
        out = []
        for i, item in enumerate(items):
            out.append(fn(item))
            if on_done is not None:
                on_done(i, out[-1])
        return out
    ray = connect(ray_address)
    remote = ray.remote(fn).options(num_cpus=num_cpus, max_retries=max_retries)
    refs = [remote.remote(item) for item in items]
    return gather(ray, refs, on_done)


def gather(ray, refs: list, on_done: Callable | None = None) -> list:
    """The results of ``refs`` in order, calling on_done(index, result) as each finishes; on an
    error or Ctrl-C the tasks still pending are stopped (:func:`stop_tasks`)."""
    index = {ref: i for i, ref in enumerate(refs)}
    results: list = [None] * len(refs)
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            i = index[ready[0]]
            results[i] = unwrap(ray, ready[0])
            if on_done is not None:
                on_done(i, results[i])
    except BaseException:
        if pending:
            stop_tasks(ray)
        raise
    return results


def unwrap(ray, ref):
    """ray.get, with an exception raised inside the task re-raised as itself (a BadInput stays a
    one-line BadInput, not Ray's traceback-laden wrapper)."""
    from ray.exceptions import RayTaskError

    try:
        return ray.get(ref)
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from None
        raise
