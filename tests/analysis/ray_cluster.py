"""A two-node Ray cluster on this machine, on loopback only, for the tests: `ray start --head`
and a second `ray start --address` worker, each a node of its own (raylet, object store), both
listening on 127.0.0.1. Every process it started is found by its session directory or port and
killed by pid afterwards (`ray stop` would kill every Ray process of every user on the machine).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

TIMED = "xopt_timed"
# `ray start --address 127.0.0.1:PORT` on Linux rewrites the loopback address to the machine's
# routable one (ray-project/ray#59110) and cannot reach a head that listens on loopback only;
# the worker node is started through Ray's own CLI with that one rewrite left out.
_WORKER = ("import sys, ray._private.services as s; s.resolve_ip_for_localhost = lambda host: host; "
           "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> list[str]:
    return [str(Path(sys.executable).with_name("ray"))]


class LoopbackCluster:
    def __init__(self, cpus_per_node: int = 1, env: dict | None = None):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # short: Ray's unix socket paths live below it (108-byte limit)
        self.temp = Path(tempfile.mkdtemp(prefix="xr", dir="/tmp"))
        self.cpus = cpus_per_node
        # the head turns token authentication on (Ray >= 2.52); the worker and drivers must use it too
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
                    "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), **(env or {})}

    def _run(self, cmd, env) -> None:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                               f"{proc.stderr[-3000:]}")

    def start(self) -> "LoopbackCluster":
        common = [f"--num-cpus={self.cpus}", f"--resources={json.dumps({TIMED: 1})}", "--disable-usage-stats",
                  f"--temp-dir={self.temp}"]
        # the head keeps 127.0.0.1 (and listens there only) with Ray's local-only switch
        self._run([*_ray_cli(), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={self.port}",
                   "--include-dashboard=false", "--ray-client-server-port", str(free_port()), *common],
                  {**self.env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
        self._run([sys.executable, "-c", _WORKER, "start", f"--address={self.address}", *common], self.env)
        return self

    def processes(self) -> list[psutil.Process]:
        marks = (str(self.temp), f"127.0.0.1:{self.port}")
        found = {}
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                line = " ".join(p.info["cmdline"] or [])
            except psutil.Error:
                continue
            if p.pid != os.getpid() and any(m in line for m in marks):
                found[p.pid] = p
        for p in list(found.values()):
            try:
                found.update({c.pid: c for c in p.children(recursive=True)})
            except psutil.Error:
                pass
        return list(found.values())

    def listening(self) -> set[str]:
        pids = {p.pid for p in self.processes()}
        return {c.laddr.ip for c in psutil.net_connections("inet") if c.status == "LISTEN" and c.pid in pids}

    def stop(self) -> None:
        procs = self.processes()
        for p in procs:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=10)
        shutil.rmtree(self.temp, ignore_errors=True)

    def wait_nodes(self, n: int = 2, timeout: float = 60.0) -> None:
        """Both raylets registered (the worker's `ray start` returns before the head lists it)."""
        code = ("import ray, json; ray.init(address=%r, log_to_driver=False); "
                "print(json.dumps(sum(1 for x in ray.nodes() if x['Alive'])))" % self.address)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                                 env={**self.env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
            if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(n)]:
                return
            time.sleep(1)
        raise RuntimeError(f"the loopback cluster at {self.address} did not reach {n} nodes")


def ray_processes_of(pid: int) -> list[psutil.Process]:
    """Descendants of `pid` that are Ray's (an embedded instance's gcs_server, raylet, workers)."""
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    out = []
    for k in kids:
        try:
            if k.status() == psutil.STATUS_ZOMBIE:  # exited, not yet reaped: not running
                continue
            name = " ".join(k.cmdline()) or k.name()
        except psutil.Error:
            continue
        if "ray" in name or "gcs_server" in name or "raylet" in name:
            out.append(k)
    return out
