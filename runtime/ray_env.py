"""Ray for xopt: an embedded instance that listens on loopback only, or a cluster joined on request.

Without an address (and without RAY_ADDRESS) xopt starts Ray inside the command, bound to
127.0.0.1 with the dashboard off, and stops it afterwards. Joining a cluster is explicit:
`--address HOST:PORT` or RAY_ADDRESS. Ray stays an optional extra (`pip install "xopt[ray]"`).
"""
from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Iterator

from xopt.errors import UserError
from xopt.extras import require

LOOPBACK = "127.0.0.1"
# One timed job at a time per node: a node offers one unit (the embedded instance does; cluster
# nodes are started with `ray start --resources='{"xopt_timed": 1}'`), a CPU-timed task takes it.
TIMED_RESOURCE = "xopt_timed"
# Ray on Linux rewrites 127.0.0.1 to the machine's routable address and then listens on every
# interface; with this set to 0 it keeps loopback (the setting Ray uses on macOS and Windows).
_LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # a broken or blocked install
        return False


def require_ray(why: str = "to scale out"):
    return require("ray", "ray", why)


def requested_address(address: str | None) -> str | None:
    """The cluster to join: the flag, else RAY_ADDRESS; None means an embedded instance."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address in (None, "local"):
        return None
    if address == "auto":
        raise UserError("--address auto would join whichever Ray instance runs on this machine",
                        "pass the head's HOST:PORT, or no --address for an embedded instance")
    return address


def is_loopback_address(address: str) -> bool:
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class RayContext:
    ray: object
    address: str
    embedded: bool
    nodes: list[dict] = field(default_factory=list)

    def describe(self) -> str:
        where = "embedded Ray on 127.0.0.1 (dashboard off)" if self.embedded else f"Ray cluster at {self.address}"
        cpus = sum(n["resources"].get("CPU", 0) for n in self.nodes)
        gpus = sum(n["resources"].get("GPU", 0) for n in self.nodes)
        return f"{where}: {len(self.nodes)} node(s), {cpus:g} CPU(s), {gpus:g} GPU(s)"

    def timed_slots(self) -> int:
        return int(sum(n["resources"].get(TIMED_RESOURCE, 0) for n in self.nodes))

    def gpus(self) -> int:
        return int(sum(n["resources"].get("GPU", 0) for n in self.nodes))


def _keep_loopback(local: bool, user_value: str | None) -> bool | None:
    """Ray reads the switch once, when it is imported (perhaps before xopt set it, or for an
    earlier connect): set the imported value to match; returns the value it had."""
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is None or not hasattr(constants, "ENABLE_RAY_CLUSTER"):
        return None
    before = constants.ENABLE_RAY_CLUSTER
    normal = user_value.lower() in ("1", "true") if user_value is not None else not constants.IS_WINDOWS_OR_OSX
    constants.ENABLE_RAY_CLUSTER = False if local else normal
    return before


def _quiet(ray) -> None:
    with contextlib.suppress(Exception):
        import ray.data  # noqa: F401 - it sets up its own loggers on import: quieten them afterwards

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # xopt shows its own progress (items done, time left)
        ctx.print_on_execution_start = False
    logging.getLogger("ray").setLevel(logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # execution plans, "progress bars disabled"


def _nodes(ray) -> list[dict]:
    return [{"node_id": n["NodeID"], "ip": n["NodeManagerAddress"], "hostname": n.get("NodeManagerHostname", ""),
             "resources": dict(n.get("Resources") or {})} for n in ray.nodes() if n.get("Alive")]


@contextlib.contextmanager
def connect(address: str | None = None, num_cpus: int | None = None, same_imports: bool = True,
            why: str = "to scale out") -> Iterator[RayContext]:
    """Ray for the duration of the block. `address` (or RAY_ADDRESS) joins that cluster; without
    one an embedded instance starts on 127.0.0.1 with the dashboard off, offering one
    TIMED_RESOURCE unit, and stops when the block ends. `same_imports`: on this machine
    (embedded or a loopback cluster) workers get this process's import path, so models and
    passes registered from it import there too."""
    address = requested_address(address)
    saved = os.environ.get(_LOCAL_ONLY_ENV)
    saved_auth = os.environ.get("RAY_AUTH_MODE")  # ray.init sets it for a new instance: not ours to keep
    local = address is None or is_loopback_address(address)
    if local:
        os.environ[_LOCAL_ONLY_ENV] = "0"
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = require_ray(why)
    if ray.is_initialized():
        raise UserError("Ray is already initialised in this process",
                        "call xopt's Ray entry points before ray.init, or ray.shutdown() first")
    constant = _keep_loopback(local, saved)
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}} if local and same_imports else None
    kwargs = {"logging_level": logging.WARNING, "log_to_driver": False, "runtime_env": env}
    from xopt import progress

    try:
        if address is None:
            with progress.step("Ray: starting an embedded instance on 127.0.0.1"):  # several seconds
                ray.init(_node_ip_address=LOOPBACK, include_dashboard=False, num_cpus=num_cpus or os.cpu_count() or 1,
                         resources={TIMED_RESOURCE: 1}, **kwargs)
        else:
            try:
                with progress.step(f"Ray: joining the cluster at {address}"):
                    ray.init(address=address, **kwargs)
            except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
                text = " ".join(str(exc).split())
                fix = ("the cluster uses token authentication: set RAY_AUTH_MODE=token and give this machine the "
                       "cluster's token (~/.ray/auth_token or RAY_AUTH_TOKEN)" if "token" in text.lower() else
                       "check the head's HOST:PORT (ray status on the head) and that this machine can reach it")
                raise UserError(f"cannot join the Ray cluster at {address} ({text[:200]})", fix) from exc
        _quiet(ray)
        ctx = RayContext(ray, address or LOOPBACK, address is None, _nodes(ray))
        if address is None and any(n["ip"] != LOOPBACK for n in ctx.nodes):
            raise UserError(f"the embedded Ray came up on {ctx.nodes[0]['ip']}, not loopback",
                            "report this with your Ray version; pass --address to use a cluster on purpose")
        yield ctx
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if saved is None:
            os.environ.pop(_LOCAL_ONLY_ENV, None)
        else:
            os.environ[_LOCAL_ONLY_ENV] = saved
        if constant is not None:
            sys.modules["ray._private.ray_constants"].ENABLE_RAY_CLUSTER = constant
        if saved_auth is None:
            os.environ.pop("RAY_AUTH_MODE", None)


def current_node() -> dict:
    """Where this code runs: Ray's node id and address inside a Ray worker, the host otherwise."""
    import platform

    info = {"hostname": platform.node(), "pid": os.getpid()}
    with contextlib.suppress(Exception):
        import ray

        if ray.is_initialized():
            rc = ray.get_runtime_context()
            info.update(node_id=rc.get_node_id(), ip=ray.util.get_node_ip_address(),
                        gpu_ids=[str(g) for g in ray.get_gpu_ids()])
    return info
