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
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
