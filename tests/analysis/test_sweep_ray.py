"""`xopt sweep` on Ray: an embedded instance (loopback only, dashboard off), then a two-node
cluster formed on this machine (`ray start --head` plus a `ray start --address` worker, both on
127.0.0.1): the results agree, a worker killed mid-point is retried, a re-run measures nothing,
and no Ray process outlives the tests."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import psutil
import pytest

from hardening._support import TOY, cli, cli_process
from toy_model import ensure_registered

pytest.importorskip("onnxruntime")
pytest.importorskip("ray")

from ray_cluster import LoopbackCluster, ray_processes_of  # noqa: E402 (beside this file)

SWEEP = """
[sweep]
frames = 3
[[job]]
model = "toy"
variants = ["fp32", "int8"]
profile = "cpu"
shapes = [{ height = 32, width = 32 }, { height = 64, width = 64 }]
"""


@pytest.fixture(scope="module", autouse=True)
def _toy(tmp_path_factory):
    ensure_registered()
    saved = os.environ.get("XOPT_CACHE_DIR")  # sweep exports go to a cache of the tests' own
    os.environ["XOPT_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if saved is None:
        os.environ.pop("XOPT_CACHE_DIR")
    else:
        os.environ["XOPT_CACHE_DIR"] = saved


def _join(monkeypatch, *args):
    """`xopt sweep ARGS` in a fresh process, as a user joins a cluster: the head turned token
    authentication on, so the driver runs with RAY_AUTH_MODE=token (set before ray is imported)."""
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    return cli_process("sweep", *args, setup=TOY, timeout=600)


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("sweep") / "toy.toml"
    p.write_text(SWEEP, encoding="utf-8")
    return p


class Watcher(threading.Thread):
    """While a sweep runs: the addresses Ray processes listen on, and (with `kill`) SIGKILL for
    the first worker seen executing a point (its process title is `ray::xopt_point`)."""

    def __init__(self, kill: bool = False):
        super().__init__(daemon=True)
        self.kill, self.killed, self.listening, self.stop = kill, None, set(), threading.Event()

    def run(self):
        last = 0.0
        while not self.stop.is_set():
            ray_pids = set()
            for p in psutil.process_iter(["pid", "cmdline"]):
                line = " ".join(p.info["cmdline"] or [])
                if "ray" in line or "gcs_server" in line or "raylet" in line:
                    ray_pids.add(p.pid)
                if self.kill and self.killed is None and line.startswith("ray::xopt_point"):
                    try:
                        p.kill()
                        self.killed = p.pid
                    except psutil.Error:
                        pass
            if time.monotonic() - last > 0.5:  # sockets: often enough to see every server, cheaply
                last = time.monotonic()
                try:
                    self.listening |= {c.laddr.ip for c in psutil.net_connections("inet")
                                       if c.status == "LISTEN" and c.pid in ray_pids}
                except psutil.Error:
                    pass
            time.sleep(0.05)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join(5)


def _points(out):
    return json.loads((out / "results.json").read_text())["points"]


def _loopback(addresses) -> bool:
    return bool(addresses) and all(a in ("127.0.0.1", "::ffff:127.0.0.1") for a in addresses)


@pytest.fixture(scope="module")
def embedded(sweep_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("embedded")
    with Watcher() as w:
        r = cli("sweep", sweep_file, "--out", out)
    assert r.rc == 0, r.err + r.out
    return out, r, w.listening


def test_embedded_ray_listens_on_loopback_measures_every_point_and_stops(embedded):
    out, r, listening = embedded
    points = _points(out)
    assert len(points) == 4 and {p["status"] for p in points.values()} == {"ok"}
    assert {p["node"]["ip"] for p in points.values()} == {"127.0.0.1"}
    assert _loopback(listening), listening
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["ran on"].startswith("embedded Ray on 127.0.0.1 (dashboard off)")
    assert not ray_processes_of(os.getpid()), "the embedded Ray outlived its sweep"


def test_a_second_run_measures_nothing_and_starts_no_ray(embedded, sweep_file):
    out, _, _ = embedded
    before = _points(out)
    t0 = time.perf_counter()
    r = cli("sweep", sweep_file, "--out", out)
    assert r.rc == 0, r.err
    assert "0 measured now, 4 reused" in r.out
    assert _points(out) == before
    assert time.perf_counter() - t0 < 30  # no export, no Ray start-up, no profiling


@pytest.mark.slow
def test_ctrl_c_on_ray_keeps_the_points_and_stops_ray(sweep_file, tmp_path):
    out = tmp_path / "out"
    proc = cli_process("sweep", sweep_file, "--out", out, setup=TOY, popen=True)
    deadline = time.monotonic() + 300
    try:
        while not (out / "results.json").exists() or not _points(out):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        ray_kids = ray_processes_of(proc.pid)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "run the same command again to resume" in err, err
    assert 1 <= len(_points(out)) < 4
    psutil.wait_procs(ray_kids, timeout=30)
    assert not [p for p in ray_kids if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # a cache of its own: the cluster exports again rather than finding the embedded run's export
    c = LoopbackCluster(cpus_per_node=1, env={"XOPT_CACHE_DIR": str(tmp_path_factory.mktemp("cluster-cache"))})
    try:
        c.start()
        c.wait_nodes(2)
        yield c
    finally:
        c.stop()


def test_two_node_loopback_cluster_agrees_with_embedded(cluster, embedded, sweep_file, tmp_path, monkeypatch):
    assert _loopback(cluster.listening()), cluster.listening()
    out = tmp_path / "cluster"
    r = _join(monkeypatch, sweep_file, "--out", out, "--address", cluster.address)
    assert r.rc == 0, r.err + r.out
    mine, theirs = _points(out), _points(embedded[0])
    assert sorted(mine) == sorted(theirs), "same artifacts, shapes and settings: the same point keys"
    assert len({p["node"]["node_id"] for p in mine.values()}) == 2, "both nodes took points"
    for key, p in mine.items():
        q = theirs[key]
        assert p["status"] == q["status"] == "ok"
        assert p["result"]["drift_gate"]["passed"] == q["result"]["drift_gate"]["passed"]
        for term in ("mae", "iou"):
            assert p["result"]["drift"][term] == pytest.approx(q["result"]["drift"][term], rel=1e-6, abs=1e-12)
        assert p["measured"]["inputs"] == q["measured"]["inputs"]
    assert "2 node(s)" in json.loads((out / "report.json").read_text())["settings"]["ran on"]
    assert _loopback(cluster.listening())


def test_a_worker_killed_mid_point_is_retried_and_every_point_completes(cluster, tmp_path, monkeypatch):
    f = tmp_path / "kill.toml"
    f.write_text(SWEEP.replace("frames = 3", "frames = 400"), encoding="utf-8")
    out = tmp_path / "out"
    with Watcher(kill=True) as w:
        r = _join(monkeypatch, f, "--out", out, "--address", cluster.address, "--retries", "2")
    assert w.killed is not None, "no point was seen running"
    assert r.rc == 0, r.err + r.out
    points = _points(out)
    assert len(points) == 4 and {p["status"] for p in points.values()} == {"ok"}
    assert all(p["result"]["latency_ms"]["n"] == 400 for p in points.values())


def test_every_process_the_cluster_started_is_stopped(cluster):
    assert cluster.processes()
    cluster.stop()
    assert not cluster.processes()
