"""DAG runs through real Airflow (`dag.test()`), each in its own process, without paying Airflow's start-up per run.

One "zygote" process per Airflow environment imports Airflow, Great Expectations and pandas and parses the DAG
folder once; every run is then a fork of it: a fresh process of its own (own process group, own output file, a
real SIGKILL kills exactly it), as if started with `python -c "...dag.test()"`, minus ~10 s of imports and
parsing. The zygote never touches the metadata DB or any other connection, so nothing open is shared by a fork.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ZYGOTE = r"""
import datetime, json, logging, os, signal, sys, traceback
proto = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol with the test process; anything printed -> log
os.dup2(2, 1)
import great_expectations, pandas  # noqa: F401 - the heavy imports every gated run needs, paid once
from airflow.dag_processing.dagbag import DagBag

import threading
from airflow.sdk.execution_time import supervisor, task_runner  # noqa: F401 - what dag.test() runs tasks with

bag = DagBag()
assert not bag.import_errors, bag.import_errors
# The in-process Execution API that dag.test() talks to: building its FastAPI app (~1.5 s) and Cadwyn's versioned
# routers (done on its first request, about half of a short run's time) once, here, instead of in every run.
api = supervisor.in_process_api_server().app
if not getattr(api, "_cadwyn_initialized", True):
    api._cadwyn_initialize()
assert threading.active_count() == 1, "the zygote must not fork with threads running"
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # finished runs are reaped by the kernel
print("READY", file=proto)
for line in sys.stdin:
    req = json.loads(line)
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        proto.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setpgid(0, 0)
        os.environ.clear(); os.environ.update(req["env"])
        fd = os.open(req["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1); os.dup2(fd, 2)
        code = 1
        try:
            conf = req["conf"]
            when = conf.pop("logical_date", None)  # the same date again = the same run id: a clear + re-run
            kw = {"logical_date": datetime.datetime.fromisoformat(when),
                  "run_after": datetime.datetime.fromisoformat(when)} if when else {}
            run = bag.get_dag(req["dag_id"]).test(run_conf=conf, **kw)
            print("STATE", run.state, run.run_id, flush=True)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            logging.shutdown()
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass  # the child did it first
    print("PID", pid, file=proto)
"""


class Zygote:
    """One pre-loaded Airflow process for one environment (AIRFLOW_HOME and its settings)."""

    def __init__(self, env: dict):
        log = open(os.path.join(env["AIRFLOW_HOME"], "zygote.log"), "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], env=env, cwd=ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)
        ready = self.proc.stdout.readline().strip()
        assert ready == "READY", f"the Airflow zygote did not start; see {log.name}"

    def start(self, dag_id: str, conf: dict, out_path: str, env: dict) -> int:
        """Fork one run; its pid (= its process group id)."""
        self.proc.stdin.write(json.dumps({"dag_id": dag_id, "conf": conf, "out": out_path, "env": env}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().split()
        assert line and line[0] == "PID", f"the Airflow zygote stopped: {line}"
        return int(line[1])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


_ZYGOTES: dict[tuple, Zygote] = {}


def _zygote(env: dict) -> Zygote:
    """The zygote of an environment: one per AIRFLOW_HOME and Airflow settings (AIRFLOW__*); connections and other
    variables may differ per run (the fork takes the run's environment)."""
    key = (env["AIRFLOW_HOME"], *sorted((k, v) for k, v in env.items() if k.startswith("AIRFLOW__")))
    zygote = _ZYGOTES.get(key)
    if zygote is None or zygote.proc.poll() is not None:
        zygote = _ZYGOTES[key] = Zygote(env)
    return zygote


@atexit.register
def _close_all() -> None:
    for zygote in _ZYGOTES.values():
        zygote.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait(pid: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            raise TimeoutError(f"DAG run process {pid} still running after {timeout:.0f} s; killed")
        time.sleep(0.05)


def start_dag_run(env: dict, dag_id: str, conf: dict, out_path: str) -> int:
    """Start one DAG run (dag.test) in its own process (group); its pid. Output (and a final 'STATE <state>
    <run id>' line when dag.test returned) in `out_path`."""
    return _zygote(env).start(dag_id, dict(conf), out_path, env)


def states(out_path: str) -> list[str]:
    with open(out_path) as out:
        return [ln.split()[1] for ln in out.read().splitlines() if ln.startswith("STATE")]
