"""Real servers the integration tests start and stop themselves: RabbitMQ (and more)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    import random

    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def wait_for_port(port: int, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f}s")


class RabbitMQServer:
    """A private ``rabbitmq-server`` node (Debian's package) on free ports, in a temp dir.

    Run as root, the package's script drops to the ``rabbitmq`` user: its directory is
    handed to that user. Nothing of the system's own RabbitMQ (if any) is touched.
    """

    def __init__(self) -> None:
        exe = shutil.which("rabbitmq-server") or (
            "/usr/sbin/rabbitmq-server" if Path("/usr/sbin/rabbitmq-server").exists() else None)
        if exe is None:
            raise RuntimeError("rabbitmq-server is not installed "
                               "(apt-get install -y rabbitmq-server)")
        self.port, dist = free_port(), free_port()
        self.dir = tempfile.mkdtemp(prefix="steps-rabbitmq-")
        root = Path(self.dir)
        (root / "enabled_plugins").write_text("[].\n")
        (root / "rabbitmq.conf").write_text(f"listeners.tcp.default = {self.port}\n"
                                            "loopback_users = none\n")
        if os.geteuid() == 0:
            shutil.chown(self.dir, "rabbitmq", "rabbitmq")
            for path in root.iterdir():
                shutil.chown(path, "rabbitmq", "rabbitmq")
        node = f"steps{self.port}@localhost"
        env = {**os.environ, "RABBITMQ_NODENAME": node, "RABBITMQ_NODE_PORT": str(self.port),
               "RABBITMQ_DIST_PORT": str(dist), "RABBITMQ_MNESIA_BASE": f"{self.dir}/mnesia",
               "RABBITMQ_LOG_BASE": f"{self.dir}/log",
               "RABBITMQ_ENABLED_PLUGINS_FILE": f"{self.dir}/enabled_plugins",
               "RABBITMQ_CONFIG_FILE": f"{self.dir}/rabbitmq", "HOME": self.dir}
        self.proc = subprocess.Popen([exe], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for_port(self.port, "rabbitmq-server", timeout=90)
        except RuntimeError:
            self.stop()
            raise

    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def stop(self) -> None:
        # the script that started the node exits early (dropping to the rabbitmq user), while
        # the node itself lives on in its process group: stop the group, not the script
        for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and self._running():
                time.sleep(0.1)
            if not self._running():
                break
        shutil.rmtree(self.dir, ignore_errors=True)

    def _running(self) -> bool:
        self.proc.poll()  # reap the script once it exits: a zombie would count as alive
        return _group_alive(self.proc.pid)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class SentinelSet:
    """A Redis master, one replica and three Sentinels watching them as ``mymaster``."""

    master_name = "mymaster"

    def __init__(self, redis_server_exe: str) -> None:
        self.exe = redis_server_exe
        self.dir = tempfile.mkdtemp(prefix="steps-sentinel-")
        self.master_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._redis(self.master_port)
        self._redis(self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))
        for port in self.sentinel_ports:
            conf = Path(self.dir) / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {self.master_name} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {self.master_name} 1000\n"
                f"sentinel failover-timeout {self.master_name} 5000\n"
                f"sentinel parallel-syncs {self.master_name} 1\n")
            self._start(port, [self.exe, str(conf), "--sentinel"])

    def _redis(self, port: int, *extra: str) -> None:
        self._start(port, [self.exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no", "--dir", self.dir, *extra])

    def _start(self, port: int, argv: list[str]) -> None:
        self.procs[port] = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
        wait_for_port(port, f"redis on {port}", timeout=10)

    def url(self) -> str:
        """The store URL, Celery's form: every sentinel, joined by ';'."""
        return ";".join(f"sentinel://127.0.0.1:{port}" for port in self.sentinel_ports)

    def master_port_now(self) -> int:
        """The port of the master the sentinels name now."""
        import redis

        client = redis.Redis(port=self.sentinel_ports[0])
        try:
            _, port = client.sentinel_get_master_addr_by_name(self.master_name)
            return int(port)
        finally:
            client.close()

    def kill_master(self) -> None:
        self.procs[self.master_port].kill()
        self.procs[self.master_port].wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisCluster:
    """A local Redis Cluster: ``masters`` masters (no replicas), slots spread over them."""

    def __init__(self, redis_server_exe: str, masters: int = 3) -> None:
        self.exe = redis_server_exe
        self.dir = tempfile.mkdtemp(prefix="steps-cluster-")
        self.ports = [free_cluster_port() for _ in range(masters)]
        self.procs: list[subprocess.Popen[bytes]] = []
        for port in self.ports:
            node_dir = Path(self.dir) / str(port)
            node_dir.mkdir()
            self.procs.append(subprocess.Popen(
                [self.exe, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled",
                 "yes", "--cluster-config-file", f"nodes-{port}.conf", "--save", "",
                 "--appendonly", "no", "--dir", str(node_dir)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in self.ports:
            wait_for_port(port, f"cluster node {port}", timeout=10)
        cli = shutil.which("redis-cli") or str(Path(self.exe).with_name("redis-cli"))
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=60)
        self._wait_ok()

    def _wait_ok(self, timeout: float = 30.0) -> None:
        import redis

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = []
            for port in self.ports:
                client = redis.Redis(port=port)
                try:
                    states.append(client.cluster("info").get("cluster_state"))
                finally:
                    client.close()
            if all(state == "ok" for state in states):
                return
            time.sleep(0.1)
        raise RuntimeError("the cluster did not reach state ok")

    def url(self) -> str:
        """The store URL: ``redis+cluster://`` with every node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
