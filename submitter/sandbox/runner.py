"""The instance runner: every instance moto reports running gets a simulated host that runs its user-data.

A simulated host is a privileged container on the real engine (docker CLI on the real socket, AWS CLI,
`/mnt/submitter` shared with the real host, a loop device per EBS volume, its own IMDSv2 emulator). When
the host ends, the instance shuts down as EC2 would; when EC2 (moto) ends the instance, the host and
everything it started on the engine are torn down.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from submitter.sandbox import iam, snapshots
from submitter.sandbox import state as st
from submitter.sandbox.imds import Imds, InstanceMeta

log = logging.getLogger("submitter.sandbox.runner")

ROOT_DEVICES = {"/dev/sda1", "/dev/xvda", "/dev/sda", "/dev/nvme0n1"}
STOP_GRACE = 10  # seconds docker gives a container on a host shutdown, as on a real host
ENDED = {"shutting-down", "terminated", "stopping", "stopped"}


@dataclass
class Host:
    """One running simulated host and what it holds on the real machine."""

    instance_id: str
    container: str
    imds: Imds
    record: dict[str, Any]
    terminate_at: float | None = None  # monotonic deadline of a scheduled spot interruption
    started: float = field(default_factory=time.monotonic)
    extra: dict[str, Any] = field(default_factory=dict)


class Runner:
    """Polls moto's EC2 and keeps one simulated host per running instance."""

    def __init__(
        self, clients: Any, engine: Any, paths: st.Paths, label: str, region: str, account_id: str,
        moto_endpoint: str, image: str,
    ) -> None:
        self.clients = clients  # callable(service) -> boto3 client on moto
        self.engine = engine  # docker SDK client
        self.paths = paths
        self.label = label
        self.region = region
        self.account_id = account_id
        self.moto_endpoint = moto_endpoint
        self.image = image
        self.hosts: dict[str, Host] = {}
        self.finished: set[str] = set()
        self.sightings: dict[str, tuple[str, ...]] = {}  # instance -> its block devices when last polled
        self.stopped: set[str] = set()  # stopped instances whose volume files stay until they are terminated
        self.lock = threading.RLock()
        self.rates: dict[tuple[str, str], tuple[float, float]] = {}  # (type, AZ) -> (per hour, notice s)

    # ------------------------------------------------------------------------------------------ loop

    def tick(self) -> None:
        ec2 = self.clients("ec2")
        instances = [i for page in ec2.get_paginator("describe_instances").paginate()
                     for r in page["Reservations"] for i in r["Instances"]]
        with self.lock:
            for inst in instances:
                iid, name = inst["InstanceId"], inst["State"]["Name"]
                if name == "running" and iid not in self.hosts and iid not in self.finished:
                    if self._settled(inst):
                        self._start(inst)
                elif name in ENDED and iid in self.hosts:
                    log.info("%s is %s in EC2: tearing its host down", iid, name)
                    self.teardown(iid, keep_volumes=name in ("stopping", "stopped"))
                elif name == "terminated" and iid in self.stopped:  # its volumes go with it (DeleteOnTermination)
                    self.stopped.discard(iid)
                    shutil.rmtree(self.paths.instance(iid) / "volumes", ignore_errors=True)
            self._check_hosts()
            self._check_interrupts()
            self._check_rates()

    def _settled(self, inst: dict[str, Any]) -> bool:
        """moto lists an instance before it has attached the launch's volumes: start it only once two
        polls in a row agree on its block devices, so its host gets every volume (e.g. /dev/sdf)."""
        devices = tuple(sorted(m["DeviceName"] for m in inst.get("BlockDeviceMappings", [])))
        seen = self.sightings.get(inst["InstanceId"])
        self.sightings[inst["InstanceId"]] = devices
        return seen == devices

    def _check_hosts(self) -> None:
        """A host container that ended is an instance that shut down."""
        import docker.errors

        for iid, host in list(self.hosts.items()):
            try:
                container = self.engine.containers.get(host.container)
                status = container.status
            except docker.errors.NotFound:
                status = "gone"
            if status in ("exited", "dead", "gone"):
                log.info("%s: host ended (%s): the instance shuts down", iid, status)
                self._shut_down(iid)

    def _check_interrupts(self) -> None:
        now = time.monotonic()
        for iid, host in list(self.hosts.items()):
            if host.terminate_at is not None and now >= host.terminate_at:
                log.info("%s: spot interruption notice over: terminating", iid)
                host.terminate_at = None
                self.clients("ec2").terminate_instances(InstanceIds=[iid])
                self.teardown(iid)

    def _check_rates(self) -> None:
        """A pool told to interrupt at R per instance-hour gives each of its instances a notice 1/R hours after
        its host started: deterministic (the mean of a random reclaim), so a test knows when it comes."""
        for iid, host in list(self.hosts.items()):
            rate = self.rates.get(host.extra.get("pool", ("", "")))
            if rate and rate[0] > 0 and host.terminate_at is None and time.monotonic() - host.started >= 3600 / rate[0]:
                self.interrupt(iid, rate[1])

    def set_rate(self, pool: tuple[str, str], per_hour: float, notice: float) -> dict[str, Any]:
        """Interrupt the pool's instances at `per_hour` (0: stop); returns every pool's rate."""
        with self.lock:
            if per_hour == 0:
                self.rates.pop(pool, None)
            else:
                self.rates[pool] = (per_hour, notice)
            return {f"{t} {z}": {"per_hour": r, "notice_seconds": n} for (t, z), (r, n) in self.rates.items()}

    def _shut_down(self, iid: str) -> None:
        """Apply the instance's shutdown behaviour, as EC2 does when the OS powers off."""
        host = self.hosts[iid]
        ec2 = self.clients("ec2")
        behaviour = host.extra.get("shutdown_behaviour", "stop")
        if behaviour == "terminate" or host.extra.get("spot") or host.extra.get("asg"):
            # One-time spot instances always terminate; an ASG replaces a stopped member anyway.
            ec2.terminate_instances(InstanceIds=[iid])
            self.teardown(iid)
        else:  # a stopped instance keeps its EBS volumes (a snapshot may be made of them) until it is terminated
            ec2.stop_instances(InstanceIds=[iid])
            self.teardown(iid, keep_volumes=True)

    # ------------------------------------------------------------------------------------------ start

    def _start(self, inst: dict[str, Any]) -> None:
        iid = inst["InstanceId"]
        self.finished.add(iid)  # one attempt per instance: a failed boot is not retried
        directory = self.paths.instance(iid)
        (directory / "log").mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {"instance_id": iid, "container": st.CONTAINER_PREFIX + iid, "loops": [],
                                  "started_at": datetime.now(timezone.utc).isoformat()}
        st.write_json(directory / "instance.json", record)
        try:
            host = self._boot(inst, directory, record)
        except Exception as exc:  # any failure: say it in the instance's boot log, leave nothing behind
            log.exception("%s: could not start its host", iid)
            with (directory / "log" / "cloud-init-output.log").open("a") as f:
                f.write(f"submitter sandbox: could not start this instance's host: {exc}\n")
            self._cleanup(iid, record, None)
            return
        self.hosts[iid] = host
        log.info("%s: host %s started (IMDS %s)", iid, host.container, host.imds.endpoint)

    def _boot(self, inst: dict[str, Any], directory: Path, record: dict[str, Any]) -> Host:
        from docker.types import Mount

        iid = inst["InstanceId"]
        ec2 = self.clients("ec2")
        template = self._template_data(inst)
        raw = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData").get("UserData", {})
        user_data = base64.b64decode(raw.get("Value") or "")
        behaviour = ec2.describe_instance_attribute(
            InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior"
        ).get("InstanceInitiatedShutdownBehavior", {}).get("Value")
        # moto does not copy these from a launch template to the instance; EC2 does.
        behaviour = template.get("InstanceInitiatedShutdownBehavior") or behaviour or "stop"
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        spot = inst.get("InstanceLifecycle") == "spot" or (
            template.get("InstanceMarketOptions", {}).get("MarketType") == "spot")
        meta = InstanceMeta(
            instance_id=iid, instance_type=inst["InstanceType"], image_id=inst.get("ImageId", ""),
            availability_zone=inst["Placement"]["AvailabilityZone"], region=self.region, account_id=self.account_id,
            private_ip=inst.get("PrivateIpAddress") or "10.0.0.10", role_name=self._role_name(inst, template),
            user_data=user_data, lifecycle="spot" if spot else "on-demand",
        )

        devices: list[str] = []
        for device_name, size_gib, volume_id, snapshot_id in self._volumes(inst):
            image = directory / "volumes" / (device_name.strip("/").replace("/", "_") + ".img")
            snapshots.make_volume_file(self.paths, image, size_gib, snapshot_id)  # blank, or its snapshot's bytes
            loop = st.loop_attach(image)
            record["loops"].append({"device": loop, "file": str(image), "as": device_name, "volume_id": volume_id})
            st.write_json(directory / "instance.json", record)
            devices.append(f"{loop}:{device_name}:rwm")

        # The host's credentials are its instance role's, as on EC2: moto enforces that role's policy (iam.py).
        imds = Imds(meta, credentials=iam.RoleCredentials(self.account_id, self.region, iid)).start()
        record["imds_port"] = imds.port
        st.write_json(directory / "instance.json", record)
        host = Host(iid, record["container"], imds, record,
                    extra={"shutdown_behaviour": behaviour, "spot": spot, "asg": "aws:autoscaling:groupName" in tags,
                           "pool": (meta.instance_type, meta.availability_zone)})
        # Another sandbox's `down` may have undone the shared bind since `up`: make sure it is there.
        st.ensure_shared_work_root()
        st.ensure_credentials_address()
        st.WORK_ROOT.joinpath(iid).mkdir(parents=True, exist_ok=True)
        self.engine.containers.run(
            self.image,
            name=host.container,
            detach=True,
            network_mode="host",
            **host_privileges(),
            labels={st.LABEL: self.label, f"{st.LABEL}.instance": iid},
            mounts=[
                Mount("/var/run/docker.sock", "/var/run/docker.sock", type="bind"),
                Mount(str(st.WORK_ROOT), str(st.WORK_ROOT), type="bind", propagation="rshared"),
                Mount("/var/log", str(directory / "log"), type="bind"),
            ],
            devices=devices,
            environment={
                "AWS_ENDPOINT_URL": self.moto_endpoint,
                "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.endpoint,
            },
        )
        self._start_ssh(inst, template, directory, record, host.container)
        return host

    def _start_ssh(self, inst: dict[str, Any], template: dict[str, Any], directory: Path, record: dict[str, Any],
                   container: str) -> None:
        """With a key pair, the instance accepts SSH behind its security group (sshd.py); never fatal to boot."""
        from submitter.sandbox import sshd

        try:
            access = sshd.start(self.clients, inst, template, directory, container)
        except Exception:
            log.exception("%s: could not start its sshd: no SSH access to this instance", inst["InstanceId"])
            return
        if access is not None:
            record["ssh"] = access.record()
            st.write_json(directory / "instance.json", record)

    def _template_data(self, inst: dict[str, Any]) -> dict[str, Any]:
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        template_id = tags.get("aws:ec2launchtemplate:id")
        if not template_id:
            return {}
        version = tags.get("aws:ec2launchtemplate:version", "$Latest")
        out = self.clients("ec2").describe_launch_template_versions(LaunchTemplateId=template_id,
                                                                     Versions=[version])
        versions = out.get("LaunchTemplateVersions", [])
        return dict(versions[0].get("LaunchTemplateData", {})) if versions else {}

    def _role_name(self, inst: dict[str, Any], template: dict[str, Any]) -> str | None:
        """The role of the instance profile, whose credentials IMDS hands out (None: no profile)."""
        profile = inst.get("IamInstanceProfile") or template.get("IamInstanceProfile") or {}
        name = profile.get("Name") or (profile.get("Arn", "").rsplit("/", 1)[-1] or None)
        if not name:
            return None
        try:
            roles = self.clients("iam").get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Roles"]
        except Exception:
            log.warning("%s: instance profile %s not found in IAM: no credentials in IMDS", inst["InstanceId"], name)
            return None
        return str(roles[0]["RoleName"]) if roles else None

    def _volumes(self, inst: dict[str, Any]) -> list[tuple[str, int, str, str | None]]:
        """(device name, size GiB, volume id, snapshot id) of each non-root EBS volume attached at launch."""
        root = inst.get("RootDeviceName")
        wanted = [(m["DeviceName"], m["Ebs"]["VolumeId"]) for m in inst.get("BlockDeviceMappings", [])
                  if "Ebs" in m and m["DeviceName"] != root and m["DeviceName"] not in ROOT_DEVICES]
        if not wanted:
            return []
        volumes = self.clients("ec2").describe_volumes(VolumeIds=[v for _, v in wanted])["Volumes"]
        found = {v["VolumeId"]: v for v in volumes}
        return [(name, int(found.get(vid, {}).get("Size", 8)), vid, found.get(vid, {}).get("SnapshotId") or None)
                for name, vid in wanted]

    # ------------------------------------------------------------------------------------------ interrupt

    def interrupt(self, iid: str, notice: float) -> datetime | None:
        """Give `iid` a spot interruption notice; it is terminated `notice` seconds later."""
        with self.lock:
            host = self.hosts.get(iid)
            if host is None:
                return None
            at = datetime.now(timezone.utc) + timedelta(seconds=notice)
            host.imds.set_instance_action("terminate", at)
            host.terminate_at = time.monotonic() + notice
            log.info("%s: spot interruption notice, terminating at %s", iid, at.isoformat())
            return at

    # ------------------------------------------------------------------------------------------ teardown

    def teardown(self, iid: str, keep_volumes: bool = False) -> None:
        with self.lock:
            host = self.hosts.pop(iid, None)
            self.finished.add(iid)
            self.stopped.update([iid] if keep_volumes else [])  # its volume files go when it is terminated
            record = host.record if host else (st.read_json(self.paths.instance(iid) / "instance.json") or {})
            self._cleanup(iid, record, host.imds if host else None, keep_volumes)

    def _cleanup(self, iid: str, record: dict[str, Any], imds: Imds | None, keep_volumes: bool = False) -> None:
        teardown_instance(self.engine, iid, record, self.paths, keep_volumes)
        imds.stop() if imds is not None else None

    def shutdown_all(self) -> None:
        with self.lock:
            for iid in list(self.hosts):
                self.teardown(iid)


def teardown_instance(engine: Any, iid: str, record: dict[str, Any], paths: st.Paths,
                      keep_volumes: bool = False) -> None:
    """Remove what one instance holds on this machine: job containers, host, mounts, loop devices, volume files
    (but a stopped instance's: `keep_volumes`).

    Used by the daemon and by `down` after a daemon crash, so it relies only on the record and the engine.
    """
    import docker.errors

    from submitter.sandbox import sshd

    sshd.stop(iid, record)
    work = st.WORK_ROOT / iid
    # The job containers the boot script started on the real engine: they bind paths under the work root.
    jobs = []
    for container in engine.containers.list(all=True):
        sources = [m.get("Source", "") for m in container.attrs.get("Mounts", [])]
        if any(s == str(work) or s.startswith(str(work) + "/") for s in sources):
            jobs.append(container)
    host_name = record.get("container") or st.CONTAINER_PREFIX + iid
    with contextlib.suppress(docker.errors.NotFound):
        jobs.append(engine.containers.get(host_name))
    # Stop them together, with the grace a real host's shutdown gives (docker.service stops containers).
    threads = [threading.Thread(target=_stop_quietly, args=(c,)) for c in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for container in jobs:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)
    st.unmount_all(work)
    with contextlib.suppress(OSError):
        work.rmdir()
    for loop in record.get("loops", []):
        st.loop_detach(loop["device"], Path(loop["file"]))
    directory = paths.instance(iid)
    for leftover in st.loops_backed_by(directory):
        st.loop_detach(leftover)
    if not keep_volumes:
        shutil.rmtree(directory / "volumes", ignore_errors=True)
    record["ended_at"] = datetime.now(timezone.utc).isoformat()
    if directory.is_dir():
        st.write_json(directory / "instance.json", record)


CAPABILITIES = [
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ",
]  # in capability-number order (linux/capability.h)


def host_privileges() -> dict[str, Any]:
    """`--privileged`, or as close as this machine allows.

    A host is privileged, as a real one is root on its own kernel. But when this machine is itself a
    container without some capability (e.g. CAP_SYS_RESOURCE), `--privileged` cannot start: then every
    capability we do hold, no seccomp/AppArmor confinement, and the loop devices passed one by one.
    """
    try:
        bounding = int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                            if line.startswith("CapBnd:")), 16)
    except (OSError, StopIteration, ValueError):
        return {"privileged": True}
    missing = [name for bit, name in enumerate(CAPABILITIES) if not bounding & (1 << bit)]
    if not missing:
        return {"privileged": True}
    return {"cap_add": ["ALL"], "cap_drop": missing,
            "security_opt": ["seccomp=unconfined", "apparmor=unconfined"]}


def _stop_quietly(container: Any) -> None:
    with contextlib.suppress(Exception):  # already gone or stopped: nothing to stop
        container.stop(timeout=STOP_GRACE)
