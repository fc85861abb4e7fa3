"""xception_edge.scale.executor.map_tasks: the same results in the same order here and as Ray
tasks on the two-node test cluster; on_done for each; a task's BadInput comes back as itself;
one-line errors for an unreachable --ray-address and an unknown executor."""

from __future__ import annotations

import os
import sys
import time

import pytest

from xception_edge.errors import BadInput
from xception_edge.scale.executor import map_tasks, probe


def square(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def refuse(x: int) -> int:
    if x == 2:
        raise BadInput(f"item {x} is bad")
    return x


def test_local_in_order_with_on_done():
    seen = []
    out = map_tasks(square, [3, 1, 2], on_done=lambda i, r: seen.append((i, r[0])))
    assert [r[0] for r in out] == [9, 1, 4] and seen == [(0, 9), (1, 1), (2, 4)]
    assert {r[1] for r in out} == {os.getpid()}


@pytest.fixture(scope="module")
def by_value():
    """This module's functions travel to the workers by value (the workers cannot import a test module)."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_ray_same_results_in_order(ray_cluster, by_value):
    seen = []
    out = map_tasks(square, list(range(6)), executor="ray", ray_address=ray_cluster.address, on_done=lambda i, r: seen.append(i))
    assert [r[0] for r in out] == [x * x for x in range(6)]
    assert sorted(seen) == list(range(6)) and os.getpid() not in {r[1] for r in out}


def test_ray_task_error_is_raised_as_itself(ray_cluster, by_value):
    with pytest.raises(BadInput, match="^item 2 is bad$"):
        map_tasks(refuse, [1, 2, 3], executor="ray", ray_address=ray_cluster.address)


def test_unreachable_address_fails_fast():
    from raycluster import free_port

    t0 = time.perf_counter()
    with pytest.raises(BadInput, match=r"--ray-address 127\.0\.0\.1:\d+: no Ray head node reachable there"):
        probe(f"127.0.0.1:{free_port()}")
    assert time.perf_counter() - t0 < 10


def test_bad_executor_and_address():
    with pytest.raises(BadInput, match="--executor 'spark' is not one of local, ray"):
        map_tasks(square, [1], executor="spark")
    with pytest.raises(BadInput, match="is not HOST:PORT"):
        probe("nohostport")
