"""What the local node understands of a Pod, as a plan; and the one way it runs it on this host.

Pure functions of the Pod object (a dict as the API returns it). Anything outside the shape the
kubespin operator renders, and the few neighbours a person would write by hand, is refused with an
:class:`UnsupportedPod` whose ``reason``/``message`` become the Pod's Failed status. The node never
runs a command it did not parse: the argv must be ``kubespin up`` followed by options that
``kubespin up`` itself declares (read from its click definition, so the two cannot drift).

How container paths become host paths (the shim runs on this host, in no mount namespace):
- a path under a ``volumeMount`` is rewritten to the volume's directory under the pod dir;
- ``--state-dir`` outside every mount goes to ``<pod dir>/rootfs/<path>`` (the container's writable
  layer);
- ``-f`` may name an existing absolute path on this host (the node's "local app" mode), a Spin app
  OCI reference (only when this kubespin can pull them), or a path under a mount;
- any other path option outside the mounts is refused: the node cannot see inside an image.
The listen address (``--listen`` and ``SPIN_HTTP_LISTEN_ADDR``) becomes ``127.0.0.1:<pod port>``.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

Body = Mapping[str, Any]

SUPPORTED_VOLUME_KINDS = ("secret", "configMap", "emptyDir", "projected", "downwardAPI")
SUPPORTED_PROJECTED_SOURCES = ("secret", "configMap", "downwardAPI", "serviceAccountToken")

#: A Spin app reference: [registry/]path[:tag][@sha256:hex] (the distribution reference grammar, simplified).
OCI_REFERENCE = re.compile(
    r"^(?:(?P<registry>[a-z0-9]+(?:[.-][a-z0-9]+)*(?::[0-9]+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)
#: Environment variables the shim reads as ``:``-separated lists of paths (not click options).
PATH_LIST_ENV = ("KUBESPIN_REGISTRY_AUTH",)
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class UnsupportedPod(Exception):
    """A Pod the local node will not run. ``reason`` is a CamelCase word for ``status.reason``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ProbePlan:
    """An httpGet or tcpSocket probe, aimed at the shim's listen port (the only port a pod has here)."""

    kind: str  # "http" | "tcp"
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    initial_delay_s: float = 0.0
    period_s: float = 10.0
    timeout_s: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3


@dataclass(frozen=True)
class MountPlan:
    volume: str
    mount_path: str
    sub_path: str = ""
    read_only: bool = False


@dataclass(frozen=True)
class ShimArg:
    """One parsed ``kubespin up`` option: the spelling used, its value (None for flags)."""

    option: str
    name: str
    value: str | None


@dataclass(frozen=True)
class PodPlan:
    namespace: str
    name: str
    uid: str
    container: str
    image: str
    shim_args: tuple[ShimArg, ...]
    env: tuple[Mapping[str, Any], ...]
    env_from: tuple[Mapping[str, Any], ...]
    volumes: Mapping[str, Mapping[str, Any]]
    mounts: tuple[MountPlan, ...]
    listen_port: int
    readiness: ProbePlan | None
    liveness: ProbePlan | None
    startup: ProbePlan | None
    restart_policy: str
    grace_period_s: float
    service_account: str
    working_dir: str = ""
    container_ports: Mapping[str, int] = field(default_factory=dict)

    def references(self) -> tuple[set[str], set[str]]:
        """Names of the Secrets and ConfigMaps the pod reads (env, envFrom, volumes)."""
        secrets: set[str] = set()
        configmaps: set[str] = set()
        for entry in self.env:
            source = entry.get("valueFrom") or {}
            if ref := source.get("secretKeyRef"):
                secrets.add(ref["name"])
            if ref := source.get("configMapKeyRef"):
                configmaps.add(ref["name"])
        for entry in self.env_from:
            if ref := entry.get("secretRef"):
                secrets.add(ref["name"])
            if ref := entry.get("configMapRef"):
                configmaps.add(ref["name"])
        for volume in self.volumes.values():
            if "secret" in volume:
                secrets.add(volume["secret"]["secretName"])
            if "configMap" in volume:
                configmaps.add(volume["configMap"]["name"])
            for source in (volume.get("projected") or {}).get("sources") or []:
                if "secret" in source:
                    secrets.add(source["secret"]["name"])
                if "configMap" in source:
                    configmaps.add(source["configMap"]["name"])
        return secrets, configmaps


# --- the `kubespin up` option table --------------------------------------------------------------


@dataclass(frozen=True)
class _OptionSpec:
    name: str
    takes_value: bool
    is_path: bool
    envvar: str | None


def shim_options() -> dict[str, _OptionSpec]:
    """Every spelling of every ``kubespin up`` option, from the shim's own click command."""
    import click
    from kubespin_shim.cli import up

    table: dict[str, _OptionSpec] = {}
    for param in up.params:
        if not isinstance(param, click.Option):
            continue
        spec = _OptionSpec(
            name=param.name or "",
            takes_value=not param.is_flag,
            is_path=isinstance(param.type, click.Path),
            envvar=param.envvar if isinstance(param.envvar, str) else None,
        )
        for spelling in (*param.opts, *param.secondary_opts):
            table[spelling] = spec
    return table


def parse_shim_argv(argv: Sequence[str]) -> tuple[ShimArg, ...]:
    """Parse ``kubespin up ...``; refuse anything else (another program, unknown options, positionals)."""
    if len(argv) < 2 or PurePosixPath(argv[0]).name != "kubespin" or argv[1] != "up":
        shown = " ".join(argv[:3]) or "(none: the image's entrypoint, which the node cannot know)"
        raise UnsupportedPod(
            "UnsupportedCommand",
            f"the container runs {shown!r}; a kubespin local node only runs `kubespin up ...` "
            "(the command the kubespin operator renders)",
        )
    table = shim_options()
    parsed: list[ShimArg] = []
    rest = list(argv[2:])
    while rest:
        token = rest.pop(0)
        if token in ("--help", "-h"):
            raise UnsupportedPod("UnsupportedCommand", "`kubespin up --help` is not a server to run")
        spelling, has_eq, inline = token.partition("=") if token.startswith("--") else (token, "", "")
        spec = table.get(spelling)
        if spec is None:
            raise UnsupportedPod(
                "UnsupportedArgument",
                f"`kubespin up` has no option {token!r} (known: {', '.join(sorted(table))})",
            )
        if not spec.takes_value:
            parsed.append(ShimArg(spelling, spec.name, None))
            continue
        if has_eq:
            value = inline
        elif rest:
            value = rest.pop(0)
        else:
            raise UnsupportedPod("UnsupportedArgument", f"`kubespin up {spelling}` needs a value")
        parsed.append(ShimArg(spelling, spec.name, value))
    return tuple(parsed)


# --- pod → plan ----------------------------------------------------------------------------------


def expand_references(text: str, values: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion in command/args/env: unknown names stay as written, ``$$`` → ``$``."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return values.get(name, match.group(0))

    return _VAR_REF.sub(sub, text)


def _listen_port(value: str) -> int:
    _host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise UnsupportedPod("UnsupportedArgument", f"listen address {value!r} is not HOST:PORT")
    return int(port)


def _probe(raw: Mapping[str, Any] | None, listen_port: int, named_ports: Mapping[str, int]) -> ProbePlan | None:
    if not raw:
        return None
    common = {
        "initial_delay_s": float(raw.get("initialDelaySeconds", 0)),
        "period_s": float(raw.get("periodSeconds", 10)),
        "timeout_s": float(raw.get("timeoutSeconds", 1)),
        "success_threshold": int(raw.get("successThreshold", 1)),
        "failure_threshold": int(raw.get("failureThreshold", 3)),
    }
    if "httpGet" in raw:
        action = raw["httpGet"]
        kind = "http"
    elif "tcpSocket" in raw:
        action = raw["tcpSocket"]
        kind = "tcp"
    else:
        which = ", ".join(k for k in raw if k in ("exec", "grpc")) or "unknown"
        raise UnsupportedPod("UnsupportedProbe", f"{which} probes are not supported by the local node (use httpGet)")
    port = action.get("port")
    number = named_ports.get(port) if isinstance(port, str) and not port.isdigit() else int(port)
    if number != listen_port:
        raise UnsupportedPod(
            "UnsupportedProbe",
            f"a probe targets port {port!r}, but the shim listens on {listen_port}; the local node maps only that port",
        )
    if kind == "tcp":
        return ProbePlan("tcp", **common)
    if action.get("host"):
        raise UnsupportedPod("UnsupportedProbe", "httpGet.host is not supported by the local node")
    headers = tuple((h["name"], h["value"]) for h in action.get("httpHeaders") or [])
    return ProbePlan("http", action.get("path", "/"), action.get("scheme", "HTTP"), headers, **common)


def plan_pod(pod: Body) -> PodPlan:
    """The plan for one Pod, or UnsupportedPod saying what the local node does not understand."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    for field_name in ("initContainers", "ephemeralContainers"):
        if spec.get(field_name):
            raise UnsupportedPod("UnsupportedPodSpec", f"spec.{field_name} are not supported by the local node")
    if spec.get("hostNetwork") or spec.get("hostPID"):
        raise UnsupportedPod("UnsupportedPodSpec", "hostNetwork/hostPID pods are not supported by the local node")
    containers = spec.get("containers") or []
    if len(containers) != 1:
        raise UnsupportedPod(
            "UnsupportedPodSpec",
            f"the pod has {len(containers)} containers; the local node runs pods with exactly one (the shim)",
        )
    container = containers[0]
    if container.get("lifecycle"):
        raise UnsupportedPod("UnsupportedPodSpec", "container lifecycle hooks are not supported by the local node")

    env = tuple(container.get("env") or [])
    literal_env = {e["name"]: str(e.get("value", "")) for e in env if "valueFrom" not in e}
    argv = [
        expand_references(a, literal_env) for a in [*(container.get("command") or []), *(container.get("args") or [])]
    ]
    shim_args = parse_shim_argv(argv)

    listen = next((a.value for a in shim_args if a.name == "listen"), None) or literal_env.get("SPIN_HTTP_LISTEN_ADDR")
    if listen is None:
        raise UnsupportedPod(
            "UnsupportedArgument", "the shim has no --listen (nor SPIN_HTTP_LISTEN_ADDR): no port to serve"
        )
    listen_port = _listen_port(listen)
    if not any(a.name == "source" for a in shim_args):
        raise UnsupportedPod("UnsupportedArgument", "`kubespin up` has no -f APP: no app to serve")

    volumes: dict[str, Mapping[str, Any]] = {}
    for volume in spec.get("volumes") or []:
        kinds = [k for k in volume if k != "name"]
        kind = kinds[0] if kinds else "emptyDir"
        if kind not in SUPPORTED_VOLUME_KINDS:
            raise UnsupportedPod(
                "UnsupportedVolume",
                f"volume {volume['name']!r} is a {kind}; the local node supports {', '.join(SUPPORTED_VOLUME_KINDS)} "
                "(for key-value data use a Redis KeyValueStore rather than a `spin` one)",
            )
        for source in (volume.get("projected") or {}).get("sources") or []:
            unknown = [k for k in source if k not in SUPPORTED_PROJECTED_SOURCES]
            if unknown:
                raise UnsupportedPod(
                    "UnsupportedVolume", f"projected volume {volume['name']!r} has unsupported sources {unknown}"
                )
        volumes[volume["name"]] = volume
    mounts = []
    for m in container.get("volumeMounts") or []:
        if m["name"] not in volumes:
            raise UnsupportedPod("UnsupportedVolume", f"volumeMount {m['mountPath']} names no volume {m['name']!r}")
        if m.get("subPathExpr"):
            raise UnsupportedPod("UnsupportedVolume", "volumeMounts[].subPathExpr is not supported by the local node")
        mounts.append(MountPlan(m["name"], m["mountPath"], m.get("subPath", ""), bool(m.get("readOnly"))))

    named_ports = {p["name"]: int(p["containerPort"]) for p in container.get("ports") or [] if p.get("name")}
    grace = spec.get("terminationGracePeriodSeconds")
    return PodPlan(
        namespace=meta.get("namespace", "default"),
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        container=container.get("name", "spin"),
        image=container.get("image", ""),
        shim_args=shim_args,
        env=env,
        env_from=tuple(container.get("envFrom") or []),
        volumes=volumes,
        mounts=tuple(mounts),
        listen_port=listen_port,
        readiness=_probe(container.get("readinessProbe"), listen_port, named_ports),
        liveness=_probe(container.get("livenessProbe"), listen_port, named_ports),
        startup=_probe(container.get("startupProbe"), listen_port, named_ports),
        restart_policy=spec.get("restartPolicy", "Always"),
        grace_period_s=float(30 if grace is None else grace),
        service_account=spec.get("serviceAccountName") or "default",
        working_dir=container.get("workingDir", ""),
        container_ports=named_ports,
    )


# --- plan → argv / env on this host ---------------------------------------------------------------


def registry_pull_available() -> bool:
    """Whether this kubespin's shim can pull Spin apps from an OCI registry (`kubespin up -f REF`)."""
    return importlib.util.find_spec("kubespin_shim.registry") is not None


def host_path(container_path: str, mounts: Sequence[MountPlan], volume_dirs: Mapping[str, Path]) -> Path | None:
    """The host path a container path maps to through the longest matching volumeMount, or None."""
    path = PurePosixPath(container_path)
    best: MountPlan | None = None
    for mount in mounts:
        mount_path = PurePosixPath(mount.mount_path)
        if (path == mount_path or mount_path in path.parents) and (
            best is None or len(mount_path.parts) > len(PurePosixPath(best.mount_path).parts)
        ):
            best = mount
    if best is None:
        return None
    base = volume_dirs[best.volume]
    if best.sub_path:
        base = base / best.sub_path
    rel = path.relative_to(best.mount_path)
    return base if str(rel) == "." else base / rel


def _rewrite_path(option: str, value: str, plan: PodPlan, volume_dirs: Mapping[str, Path], rootfs: Path) -> str:
    if not value.startswith("/"):
        raise UnsupportedPod(
            "UnsupportedArgument",
            f"`kubespin up {option} {value}` is relative to the container's working directory, which the local "
            "node does not have; use an absolute path inside a volumeMount",
        )
    mapped = host_path(value, plan.mounts, volume_dirs)
    if mapped is not None:
        return str(mapped)
    if option == "--state-dir":
        return str(rootfs / value.lstrip("/"))
    raise UnsupportedPod(
        "UnsupportedArgument",
        f"`kubespin up {option} {value}`: {value} is in no volumeMount, so it would come from the container image, "
        "which the local node does not unpack; mount it from a Secret or ConfigMap",
    )


def _rewrite_source(value: str, plan: PodPlan, volume_dirs: Mapping[str, Path]) -> str:
    if value.startswith("/"):
        mapped = host_path(value, plan.mounts, volume_dirs)
        if mapped is not None:
            return str(mapped)
        if os.path.exists(value):
            return value
        raise UnsupportedPod(
            "AppNotFound",
            f"the app {value} does not exist on this machine (the local node runs local paths as they are; "
            "spec.image must be an absolute path here or a Spin app OCI reference)",
        )
    if value.startswith(("http://", "https://")):
        raise UnsupportedPod("UnsupportedImage", f"app {value!r}: URLs are not Spin app references")
    if OCI_REFERENCE.match(value):
        if registry_pull_available():
            return value
        raise UnsupportedPod(
            "ImagePullUnsupported",
            f"app {value!r} is an OCI reference, but this kubespin cannot pull from registries yet; "
            "use an absolute path to the app on this machine as spec.image",
        )
    raise UnsupportedPod("UnsupportedImage", f"app {value!r} is neither an absolute path nor a Spin app OCI reference")


def shim_argv(
    plan: PodPlan, volume_dirs: Mapping[str, Path], rootfs: Path, port: int, env: Mapping[str, str]
) -> list[str]:
    """The ``kubespin up`` arguments for this host (after ``kubespin``), paths and port rewritten.

    ``env`` is the pod's resolved environment, for ``$(VAR)`` references that name valueFrom variables.
    """
    table = shim_options()
    out = ["up"]
    for arg in plan.shim_args:
        value = None if arg.value is None else expand_references(arg.value, env)
        if arg.name == "listen":
            value = f"127.0.0.1:{port}"
        elif arg.name == "source" and value is not None:
            value = _rewrite_source(value, plan, volume_dirs)
        elif value is not None and (table[arg.option].is_path or (arg.name == "variables" and value.startswith("@"))):
            at = "@" if arg.name == "variables" else ""
            value = at + _rewrite_path(arg.option, value.removeprefix(at), plan, volume_dirs, rootfs)
        out.append(arg.option)
        if value is not None:
            out.append(value)
    if not any(a.name == "listen" for a in plan.shim_args):
        out += ["--listen", f"127.0.0.1:{port}"]
    return out


def rewrite_env(
    plan: PodPlan, env: Mapping[str, str], volume_dirs: Mapping[str, Path], rootfs: Path, port: int
) -> dict[str, str]:
    """The pod environment for this host: listen address and path-valued shim variables rewritten."""
    out = dict(env)
    out["SPIN_HTTP_LISTEN_ADDR"] = f"127.0.0.1:{port}"
    for spelling, spec in shim_options().items():
        if spec.is_path and spec.envvar and spec.envvar in out and spelling.startswith("--"):
            out[spec.envvar] = _rewrite_path(spelling, out[spec.envvar], plan, volume_dirs, rootfs)
    for name in PATH_LIST_ENV:
        if out.get(name):
            out[name] = ":".join(
                _rewrite_path(f"(env {name})", item, plan, volume_dirs, rootfs) for item in out[name].split(":") if item
            )
    return out
