"""A real two-node Ray cluster on the loopback addresses for the scale-out tests (issue #14), started once per
session by the ``ray_cluster`` fixture (registered in conftest.py, so every module shares one).

- Each node is its own ``ray start`` (1 CPU, a small object store, no dashboard) with its own
  raylet, ports and ``--temp-dir``, in a process group of its own: teardown kills exactly those
  groups (never ``ray stop``, which would stop every Ray of the user on the machine).
- Everything stays on the loopback range, one address per node: the head at 127.0.0.2, the
  others at 127.0.0.3, 127.0.0.4, … (Ray replaces 127.0.0.1 and "localhost" by the machine's
  network address; other loopback addresses it takes as given). A node's address tells the
  nodes apart in messages too.
- As root, the second node runs in a mount namespace of its own where ``cluster.hidden`` is an
  empty tmpfs: a folder the driver and the head node see and the second node does not, as on a
  cluster without a shared filesystem. Elsewhere ``hidden`` is None (the test that needs it skips).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

RAY = str(Path(sys.executable).with_name("ray"))
# A raylet that dies is declared dead after ~3 s instead of ~30 s (the fault test kills one).
SYSTEM_CONFIG = {"health_check_initial_delay_ms": 1000, "health_check_period_ms": 1000, "health_check_failure_threshold": 3}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Node:
    name: str
    pgid: int  # the process group of its `ray start` and every daemon it started
    node_manager_port: int
    temp_dir: Path

    def running(self, title: str) -> bool:
        """Whether a worker of this node (a child of its raylet) runs a task: Ray titles a worker
        ``ray::<function>`` meanwhile."""
        raylet = self.raylet_pid()
        for proc in Path("/proc").iterdir():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == raylet and (proc / "cmdline").read_bytes().startswith(title.encode()):
                    return True
            except (OSError, ValueError, IndexError):
                continue
        return False

    def raylet_pid(self) -> int | None:
        """The raylet of this node: the process whose command line has its node-manager port."""
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                args = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if args and args[0].endswith(b"/raylet") and f"--node_manager_port={self.node_manager_port}".encode() in args:
                return int(proc.name)
        return None


@dataclasses.dataclass
class RayCluster:
    address: str  # 127.0.0.2:PORT, the head's GCS
    folder: Path
    nodes: list[Node]
    hidden: Path | None  # a folder the second node cannot see (root only), else None

    def add_node(self, name: str, *, hide: bool = False) -> Node:
        ip = f"127.0.0.{len(self.nodes) + 2}"
        port = self.address.rpartition(":")[2]
        node = _start(self.folder, name, ip, ["--address", f"{ip}:{port}"], hide=self.hidden if hide else None)
        self.nodes.append(node)
        return node

    def kill_raylet(self, node: Node) -> None:
        pid = node.raylet_pid()
        assert pid, f"no raylet of {node.name}"
        os.kill(pid, signal.SIGKILL)

    def alive_nodes(self) -> int:
        code = "import ray; ray.init(address=%r, logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
        out = subprocess.run([sys.executable, "-c", code % self.address], capture_output=True, text=True, timeout=60)
        return int(out.stdout.strip().splitlines()[-1])

    def stop(self) -> None:
        for node in reversed(self.nodes):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(node.pgid, sig)
                except ProcessLookupError:
                    break
                time.sleep(0.5)


def _start(folder: Path, name: str, ip: str, args: list[str], *, hide: Path | None = None) -> Node:
    temp_dir = folder / name
    temp_dir.mkdir(parents=True, exist_ok=True)
    nm_port = free_port()
    cmd = [
        RAY, "start", *args, "--num-cpus", "1", "--object-store-memory", str(200 * 1024**2),
        "--node-ip-address", ip, "--node-manager-port", str(nm_port), "--object-manager-port", str(free_port()),
        "--dashboard-agent-listen-port", str(free_port()), "--temp-dir", str(temp_dir), "--disable-usage-stats",
    ]  # fmt: skip
    if hide is not None:  # its own mount namespace, an empty tmpfs over `hide`
        script = f'mount -t tmpfs -o size=1m tmpfs "{hide}" && exec "$@"'
        cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *cmd]
    (temp_dir / "tmp").mkdir(exist_ok=True)  # the node's $TMPDIR: what its workers write there stays in the session
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "TMPDIR": str(temp_dir / "tmp")}
    log = temp_dir / "start.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        code = proc.wait(timeout=120)
    if code != 0:
        raise RuntimeError(f"ray start ({name}) failed: {log.read_text()[-2000:]}")
    return Node(name, proc.pid, nm_port, temp_dir)


def _can_hide(folder: Path) -> bool:
    """Whether this process may give a child its own mount namespace (root, unshare present)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", f'mount -t tmpfs tmpfs "{folder}"'], capture_output=True
    )
    return probe.returncode == 0


def start_cluster(folder: Path, *, workers: int = 1, hide: bool = True) -> RayCluster:
    """A head node (127.0.0.2) and ``workers`` more nodes, 1 CPU each; the first worker in its own
    mount namespace hiding ``folder/hidden`` when ``hide`` and this process may (root)."""
    hidden = folder / "hidden"
    hidden.mkdir(parents=True, exist_ok=True)
    cluster = RayCluster("", folder, [], hidden if hide and _can_hide(hidden) else None)
    try:
        port = free_port()
        head = [
            "--head", "--port", str(port), "--include-dashboard=false", "--ray-client-server-port", str(free_port()),
            "--dashboard-port", str(free_port()), "--system-config", json.dumps(SYSTEM_CONFIG),
        ]  # fmt: skip
        cluster.nodes.append(_start(folder, "head", "127.0.0.2", head))
        cluster.address = f"127.0.0.2:{port}"
        for i in range(workers):
            cluster.add_node(f"node{i + 2}", hide=i == 0 and cluster.hidden is not None)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A head node and a second node, 1 CPU each, on 127.0.0.2 and .3; torn down at the end of the session."""
    pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install -e '.[ray]'")
    cluster = start_cluster(tmp_path_factory.mktemp("ray"))
    try:
        yield cluster
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        cluster.stop()
