"""Starting a real `yardmaster serve` for the end-to-end tests: a temporary directory with the
config and policy, an ephemeral port on 127.0.0.1, and a wait until /readyz answers."""

import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "target" / "debug" / "yardmaster"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """A running gateway: `url`, its directory `dir` and its log file `log`."""

    def __init__(self, config, policy, env, args=()):
        self.dir = Path(tempfile.mkdtemp())
        (self.dir / "yardmaster.yaml").write_text(config)
        (self.dir / "main.route").write_text(policy)
        self.log = self.dir / "serve.log"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [str(BINARY), "serve", "--config", str(self.dir / "yardmaster.yaml"), "--listen", f"127.0.0.1:{port}", *args],
            env=dict(os.environ, **env), stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
        )
        for _ in range(200):
            try:
                if urllib.request.urlopen(self.url + "/readyz", timeout=1).status == 200:
                    return
            except Exception:
                time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError("the gateway did not start:\n" + self.log.read_text())

    def stop(self):
        """SIGTERM, then wait for the drain; returns the exit status."""
        self.proc.terminate()
        return self.proc.wait(timeout=35)

    def cpu_seconds(self):
        """User + system CPU time the gateway has used so far (Linux)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
