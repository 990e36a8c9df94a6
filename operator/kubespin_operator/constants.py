"""Names shared by the CRDs, the renderers and the reconcilers.

Kept in one module so that a label or path is spelled once: the Deployment selector, the
Secret name and the mount path are part of the contract with running pods and must not drift.
"""

from __future__ import annotations

GROUP = "kubespin.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

SPINAPP_KIND = "SpinApp"
SPINAPP_PLURAL = "spinapps"
STORE_KIND = "KeyValueStore"
STORE_PLURAL = "keyvaluestores"
LINK_KIND = "StoreLink"
LINK_PLURAL = "storelinks"

#: Field manager for server-side apply: everything the operator owns is written under this name.
FIELD_MANAGER = "kubespin-operator"

#: Label put on every object the operator renders; the operator watches only objects carrying it.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "kubespin-operator"
#: Pod selector label. Part of the Deployment selector, which is immutable: never change its value.
APP_LABEL = "kubespin.dev/app"
STORE_LABEL = "kubespin.dev/store"
NAME_LABEL = "app.kubernetes.io/name"

#: Finalizer that holds a KeyValueStore's deletion while StoreLinks still point at it.
STORE_FINALIZER = "kubespin.dev/linked-apps"

#: Runtime config: the Secret is mounted as a directory (never subPath) so that kubelet
#: propagates updates to running pods; the shim re-reads the file when it changes.
RUNTIME_CONFIG_KEY = "runtime-config.toml"
RUNTIME_CONFIG_DIR = "/etc/kubespin/runtime-config"
RUNTIME_CONFIG_PATH = f"{RUNTIME_CONFIG_DIR}/{RUNTIME_CONFIG_KEY}"
RUNTIME_CONFIG_VOLUME = "kubespin-runtime-config"
#: Spin stores (SQLite on a PersistentVolumeClaim) are mounted below this directory, one per store.
SPIN_STORE_ROOT = "/var/lib/kubespin/stores"

HTTP_PORT = 80
HEALTH_PATH = "/.well-known/spin/health"
# After SIGTERM the shim keeps serving this long (KUBESPIN_SHUTDOWN_DELAY) while kube-proxy and load
# balancers drop the terminating pod from the Service; the pod's grace period covers that, the shim's
# default request timeout (requests in flight finish) and a margin.
SHUTDOWN_DELAY_S = 5
SHIM_REQUEST_TIMEOUT_S = 30
TERMINATION_GRACE_S = SHUTDOWN_DELAY_S + SHIM_REQUEST_TIMEOUT_S + 5

#: Executors this operator can render. The default runs the kubespin shim in an ordinary container.
EXECUTOR_KUBESPIN = "kubespin-shim"
#: Upstream containerd-shim-spin through a RuntimeClass: the app image is the container image.
EXECUTOR_CONTAINERD_SPIN = "containerd-shim-spin"
KNOWN_EXECUTORS = (EXECUTOR_KUBESPIN, EXECUTOR_CONTAINERD_SPIN)


def runtime_config_secret_name(app_name: str) -> str:
    """The stable name of an app's runtime-config Secret (updated in place, never renamed)."""
    return f"{app_name}-runtime-config"


def store_pvc_name(store_name: str) -> str:
    """The PersistentVolumeClaim that holds a `spin` (SQLite) KeyValueStore."""
    return f"kvstore-{store_name}"
