"""A server in a run's job container (Jupyter by default, or any command, or one the job already runs),
forwarded to localhost over SSH until Ctrl-C (`submitter notebook`)."""

from __future__ import annotations

import contextlib
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass

from submitter.access.forward import Forward, wait_port
from submitter.access.ssh import capture, connect, sudo
from submitter.access.target import Say, caller_cidr, locate, port_22_open
from submitter.aws.session import Aws
from submitter.errors import RemoteError
from submitter.settings import Settings

JUPYTER = "jupyter lab --ip=0.0.0.0 --port={port} --no-browser --allow-root --ServerApp.root_dir=/"


@dataclass(frozen=True)
class Notebook:
    run_id: str
    url: str
    local_port: int
    remote: tuple[str, int]


def serve(aws: Aws, settings: Settings, run_id: str, port: int, local_port: int | None, command: str | None,
             start: bool, cidr: str | None, say: Say, on_ready: Callable[[Notebook], None],
             until: Callable[[], bool] | None = None) -> None:
    """Serve `port` of the run's container on localhost until Ctrl-C (or `until()`), starting Jupyter (or
    `command`) in the container first unless `start` is False; `on_ready` gets the local URL."""
    source = caller_cidr(cidr, settings.sandbox)  # a bad --cidr fails before anything is read or opened
    target = locate(aws, settings, run_id)
    with port_22_open(aws, target, source, say):
        transport = connect(aws, settings, target, say)
        forward = None
        pid_file = f"/tmp/submitter-notebook-{port}.pid"
        try:
            docker = f"{sudo(target)}docker"
            code, address = capture(transport, f"{docker} inspect --format "
                                    "'{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' " + target.container)
            ips = address.split()
            if code != 0 or not ips:
                raise RemoteError(f"run {run_id}", f"its container {target.container} is not running on "
                                  f"{target.instance_id} ({address.strip()[:200]})", f"see `submitter status {run_id}`")
            remote = (ips[0], port)
            log = f"/tmp/submitter-notebook-{port}.log"
            if start:
                if command is None:
                    code, _ = capture(transport, f"{docker} exec {target.container} sh -c 'command -v jupyter'")
                    if code != 0:
                        raise RemoteError(f"run {run_id}", "jupyter is not installed in the job's image",
                                          "add jupyterlab to the image, or serve something else: "
                                          f"--command 'python -m http.server {port}' (or --no-start to forward "
                                          "a port the job already serves, e.g. TensorBoard)")
                    command = JUPYTER.format(port=port)
                inner = f"{command} >{log} 2>&1 & echo $! >{pid_file}"
                code, out = capture(transport, f"{docker} exec {target.container} sh -c {shlex.quote(inner)}")
                if code != 0:
                    raise RemoteError(f"run {run_id}", f"could not start {command!r}: {out.strip()[:300]}",
                                      "try the command by hand: `submitter ssh RUN -- docker exec -it "
                                      f"{target.container} sh`")
                say(f"started in {target.container}: {command}")
            if not wait_port(transport, remote, 120):
                _, tail = capture(transport, f"{docker} exec {target.container} tail -n 20 {log}")
                raise RemoteError(f"run {run_id}", f"nothing listens on port {port} in {target.container}",
                                  f"check the server's output: {tail.strip()[-500:] or '(none)'}")
            token = ""
            if start and command and command.startswith("jupyter"):
                for _ in range(20):
                    _, text = capture(transport, f"{docker} exec {target.container} cat {log}")
                    found = re.search(r"[?&]token=([0-9a-zA-Z]+)", text)
                    if found:
                        token = found.group(1)
                        break
                    time.sleep(1)
            forward = Forward(transport, remote, local_port or port)
            url = f"http://127.0.0.1:{forward.port}/" + (f"lab?token={token}" if token else "")
            on_ready(Notebook(run_id, url, forward.port, remote))
            while transport.is_active() and not (until and until()):
                time.sleep(0.5)
            if not transport.is_active():
                raise RemoteError(f"ssh {target.instance_id}", "the connection closed", "run the command again")
        finally:
            if forward is not None:
                forward.close()
            if start and transport.is_active():
                with contextlib.suppress(Exception):
                    capture(transport, f"{sudo(target)}docker exec {target.container} sh -c "
                            + shlex.quote(f"kill $(cat {pid_file}) 2>/dev/null; rm -f {pid_file}"))
            transport.close()
