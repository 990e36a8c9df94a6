"""The one source of truth for the kubespin.dev CRDs.

crds/*.yaml and charts/kubespin/crds/*.yaml are generated from the dictionaries built here
(`kubespin crds --write`); a unit test fails when the committed YAML differs from them.

SpinApp is a superset of SpinKube's `core.spinkube.dev/v1alpha1` SpinApp: every SpinKube field keeps
its name and meaning, so a SpinKube manifest works after changing only `apiVersion`. Schemas are
structural (every node typed); the Kubernetes core types SpinKube embeds (Volume, Affinity, …) are
typed objects whose inner fields the API server validates when the operator renders the Deployment,
which keeps this file readable instead of inlining thousands of lines of core/v1 schema.
"""

from __future__ import annotations

from typing import Any

from kubespin_operator import constants as c

Schema = dict[str, Any]

QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: Spin store labels become TOML table keys (`[key_value_store.<label>]`) and component config.
STORE_LABEL_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
#: Spin variable names: lowercase ASCII letters, digits and underscores, starting with a letter.
VARIABLE_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"


# --- small schema builders -------------------------------------------------------------------------


def string(description: str = "", **extra: Any) -> Schema:
    return _described({"type": "string", **extra}, description)


def integer(description: str = "", **extra: Any) -> Schema:
    return _described({"type": "integer", "format": "int32", **extra}, description)


def boolean(description: str = "", **extra: Any) -> Schema:
    return _described({"type": "boolean", **extra}, description)


def string_map(description: str = "") -> Schema:
    return _described({"type": "object", "additionalProperties": {"type": "string"}}, description)


def quantity(description: str = "") -> Schema:
    return _described(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        },
        description,
    )


def free_object(description: str = "", required: list[str] | None = None, **props: Schema) -> Schema:
    """An object whose known fields are typed and whose other fields are kept as written.

    Used for Kubernetes core types (Volume, Toleration, Affinity …) that the operator copies into
    the pod template unchanged; the API server validates them there.
    """
    schema: Schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if props:
        schema["properties"] = props
    if required:
        schema["required"] = required
    return _described(schema, description)


def obj(description: str = "", required: list[str] | None = None, **props: Schema) -> Schema:
    schema: Schema = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    return _described(schema, description)


def array(items: Schema, description: str = "", **extra: Any) -> Schema:
    return _described({"type": "array", "items": items, **extra}, description)


def _described(schema: Schema, description: str) -> Schema:
    if description:
        return {"description": description, **schema}
    return schema


def key_selector(kind: str) -> Schema:
    return obj(
        f"Selects a key of a {kind} in the object's namespace.",
        required=["name", "key"],
        name=string(f"Name of the {kind}."),
        key=string(f"Key within the {kind}."),
        optional=boolean(f"Whether the {kind} or its key may be missing."),
    )


def condition_schema() -> Schema:
    """metav1.Condition, the shape `kubectl wait --for=condition=…` and Argo CD read."""
    return obj(
        required=["type", "status"],
        type=string("Type of condition: Ready, Progressing, Degraded (SpinApp) …"),
        status=string("True, False or Unknown.", enum=["True", "False", "Unknown"]),
        reason=string("CamelCase reason for the last transition, for machines."),
        message=string("What happened and what to do about it, for people."),
        lastTransitionTime=string("When the status last changed.", format="date-time"),
        observedGeneration={"type": "integer", "format": "int64"},
    )


def conditions() -> Schema:
    return array(
        condition_schema(),
        "Observations of the object's state.",
        **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


def runtime_config_option() -> Schema:
    return obj(
        required=["name"],
        name=string("Name of the option (a key of the runtime-config table)."),
        value=string("Static value."),
        valueFrom=obj(
            "Where to read the value from (Secret or ConfigMap in the app's namespace).",
            configMapKeyRef=key_selector("ConfigMap"),
            secretKeyRef=key_selector("Secret"),
        ),
    )


def named_runtime_config(what: str) -> Schema:
    return obj(
        f"An inline {what} rendered into runtime-config.toml.",
        required=["name", "type"],
        name=string("The label components use (e.g. `default`)."),
        type=string("Spin backend type, e.g. `redis`, `spin`, `azure_cosmos`, `libsql`."),
        options=array(runtime_config_option(), "Further keys of the table, e.g. `url`, `path`."),
    )


def health_probe() -> Schema:
    return obj(
        httpGet=obj(
            required=["path"],
            path=string("Path to GET, e.g. /.well-known/spin/health."),
            httpHeaders=array(obj(required=["name", "value"], name=string(), value=string()), "Headers to send."),
        ),
        initialDelaySeconds=integer(default=10, minimum=0),
        timeoutSeconds=integer(default=1, minimum=1),
        periodSeconds=integer(default=10, minimum=1),
        successThreshold=integer(default=1, minimum=1),
        failureThreshold=integer(default=3, minimum=1),
    )


def local_object_reference() -> Schema:
    return obj(required=["name"], name=string())


# --- SpinApp ---------------------------------------------------------------------------------------


def spinapp_spec() -> Schema:
    return obj(
        "Desired state of a Spin app. Field names follow SpinKube's core.spinkube.dev SpinApp.",
        required=["image"],
        image=string("OCI reference of the Spin app (or a path/URL the executor understands).", minLength=1),
        executor=string(
            "How the app runs. `kubespin-shim` (default): the kubespin shim in a container, its image set "
            "by operator configuration. `containerd-shim-spin`: the upstream shim via RuntimeClass."
        ),
        replicas=integer("Number of pods. Target of the scale subresource.", minimum=0),
        enableAutoscaling=boolean(
            "Leave the Deployment's replica count to an external autoscaler targeting the Deployment. "
            "Cannot be combined with `replicas`."
        ),
        variables=array(
            obj(
                required=["name"],
                name=string("Spin variable name.", pattern=VARIABLE_NAME_PATTERN),
                value=string("Static value."),
                valueFrom=free_object(
                    "A core/v1 EnvVarSource (secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef).",
                    secretKeyRef=key_selector("Secret"),
                    configMapKeyRef=key_selector("ConfigMap"),
                ),
            ),
            "Bindings of Spin variables, passed as SPIN_VARIABLE_<NAME> environment variables.",
        ),
        runtimeConfig=obj(
            "Runtime configuration rendered into runtime-config.toml. StoreLinks add key-value stores.",
            loadFromSecret=string(
                "Secret whose `runtime-config.toml` key is the base; inline settings and links are added."
            ),
            keyValueStores=array(named_runtime_config("key-value store")),
            sqliteDatabases=array(named_runtime_config("SQLite database")),
            llmCompute=obj(
                "The [llm_compute] table.",
                required=["type"],
                type=string("`spin` (local models) or `remote_http`."),
                options=array(runtime_config_option()),
            ),
        ),
        checks=obj(
            "Readiness and liveness probes. Default: HTTP GET /.well-known/spin/health.",
            readiness=health_probe(),
            liveness=health_probe(),
        ),
        resources=obj(
            "Compute resources of the app container.",
            limits={"type": "object", "additionalProperties": quantity()},
            requests={"type": "object", "additionalProperties": quantity()},
        ),
        invocationLimits=string_map(
            "Per-invocation limits (SpinKube SKIP 006). `memory` (a quantity) becomes "
            "SPIN_MAX_INSTANCE_MEMORY; executor-specific keys are namespaced."
        ),
        components=array(string(), "Components to run (SPIN_COMPONENTS_TO_RETAIN); all when unset.", minItems=1),
        volumes=array(free_object("A core/v1 Volume.", required=["name"], name=string())),
        volumeMounts=array(
            free_object(
                "A core/v1 VolumeMount.",
                required=["name", "mountPath"],
                name=string(),
                mountPath=string(),
            )
        ),
        podAnnotations=string_map("Annotations on the pods."),
        podLabels=string_map("Labels on the pods (in addition to the selector label)."),
        deploymentAnnotations=string_map("Annotations on the Deployment."),
        serviceAnnotations=string_map("Annotations on the Service."),
        serviceAccountName=string("ServiceAccount the pods run as."),
        imagePullSecrets=array(local_object_reference(), "Secrets for pulling images."),
        nodeSelector=string_map("Node selector for the pods."),
        tolerations=array(free_object("A core/v1 Toleration.")),
        affinity=free_object("A core/v1 Affinity."),
    )


def spinapp_status() -> Schema:
    return obj(
        "Observed state, for machines (observedGeneration, conditions) and people (messages).",
        observedGeneration={"type": "integer", "format": "int64"},
        conditions=conditions(),
        replicas=integer("Pods that exist (the scale subresource's status replicas)."),
        readyReplicas=integer("Pods that are ready."),
        selector=string("Label selector of the pods, for the scale subresource (HPA, KEDA)."),
        runtimeConfigSecret=string("Name of the Secret holding runtime-config.toml."),
        keyValueStores=array(
            obj(
                required=["label"],
                label=string(),
                store=string("KeyValueStore bound to the label."),
                storeLink=string("StoreLink that binds it; empty for inline runtimeConfig stores."),
                backend=string("redis, spin or the inline type."),
            ),
            "Which store each key-value label is bound to.",
            **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["label"]},
        ),
        localInference=obj(
            "What the operator read from the app's image about LLM inference (condition LocalInference says "
            "what it means for scheduling).",
            image=string("The image that was read."),
            digest=string("Its manifest digest."),
            localNodeRequired={
                "type": "boolean",
                "description": "The pods need a node labelled kubespin.dev/llm-local=true (ai_models with a "
                "local [llm_compute]).",
            },
            components=array(
                obj(required=["component"], component=string(), aiModels=array(string())),
                "Components that list ai_models, with their models.",
            ),
        ),
    )


# --- KeyValueStore ---------------------------------------------------------------------------------


def store_spec() -> Schema:
    redis = obj(
        "A Redis server. Exactly one of url or urlFrom.",
        url=string(
            "redis://, rediss:// or unix:// URL. Put URLs with a password in a Secret (urlFrom).",
            minLength=1,
        ),
        urlFrom=obj(required=["secretKeyRef"], secretKeyRef=key_selector("Secret")),
    )
    redis["x-kubernetes-validations"] = [
        {
            "rule": "has(self.url) != has(self.urlFrom)",
            "message": "set exactly one of spec.redis.url and spec.redis.urlFrom",
        }
    ]
    spin = obj(
        "SQLite on a PersistentVolumeClaim the operator creates. A ReadWriteOnce volume attaches to one "
        "node: the operator links it only to one app running one replica.",
        required=["size"],
        size=quantity("Requested storage, e.g. 1Gi."),
        storageClassName=string("StorageClass of the claim; the cluster default when unset."),
        accessMode=string(
            "Access mode of the claim.", enum=["ReadWriteOnce", "ReadWriteOncePod"], default="ReadWriteOnce"
        ),
    )
    schema = obj(
        "A key-value store with its own lifecycle; apps reach it through StoreLinks.",
        redis=redis,
        spin=spin,
        deletionPolicy=string(
            "Retain keeps the data when the store is deleted, Delete removes what the operator created "
            "(the PersistentVolumeClaim of a spin store). External Redis data is never deleted.",
            enum=["Retain", "Delete"],
            default="Retain",
        ),
    )
    schema["x-kubernetes-validations"] = [
        {"rule": "has(self.redis) != has(self.spin)", "message": "set exactly one of spec.redis and spec.spin"}
    ]
    return schema


def store_status() -> Schema:
    return obj(
        observedGeneration={"type": "integer", "format": "int64"},
        conditions=conditions(),
        backend=string("redis or spin."),
        linkedApps=array(
            obj(required=["app", "label"], app=string(), label=string(), storeLink=string()),
            "Apps bound to this store, with the label they use.",
        ),
        persistentVolumeClaim=string("Claim that holds a spin store."),
    )


# --- StoreLink -------------------------------------------------------------------------------------


def link_spec() -> Schema:
    return obj(
        "Binds a KeyValueStore to a key-value label of a SpinApp in the same namespace. At most one link "
        "per (app, label) takes effect; the oldest wins and the others report Conflict.",
        required=["app", "label", "store"],
        app=string("Name of the SpinApp.", minLength=1, maxLength=63, pattern=DNS_LABEL_PATTERN),
        label=string(
            "Key-value label the app's components use.", minLength=1, maxLength=63, pattern=STORE_LABEL_PATTERN
        ),
        store=string("Name of the KeyValueStore. Editing it re-links.", minLength=1, maxLength=253),
    )


def link_status() -> Schema:
    return obj(
        observedGeneration={"type": "integer", "format": "int64"},
        conditions=conditions(),
        boundStore=string("Store the label is bound to through this link, when it takes effect."),
    )


# --- CRD documents ---------------------------------------------------------------------------------


def _crd(
    kind: str,
    plural: str,
    short_names: list[str],
    spec: Schema,
    status: Schema,
    columns: list[dict[str, Any]],
    *,
    scale: bool = False,
    root_rules: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    subresources: dict[str, Any] = {"status": {}}
    if scale:
        subresources["scale"] = {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
    root = obj(
        required=["spec"],
        apiVersion=string(),
        kind=string(),
        metadata={"type": "object"},
        spec=spec,
        status=status,
    )
    if root_rules:
        root["x-kubernetes-validations"] = root_rules
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{c.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "kubespin"},
        },
        "spec": {
            "group": c.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["kubespin"],
            },
            "versions": [
                {
                    "name": c.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def _condition_column(name: str, condition: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{condition}")].status',
    }


AGE_COLUMN = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def spinapp_crd() -> dict[str, Any]:
    return _crd(
        c.SPINAPP_KIND,
        c.SPINAPP_PLURAL,
        ["spinapp", "sa"],
        spinapp_spec(),
        spinapp_status(),
        [
            {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
            {"name": "Desired", "type": "integer", "jsonPath": ".spec.replicas"},
            _condition_column("Status", "Ready"),
            {"name": "Executor", "type": "string", "jsonPath": ".spec.executor", "priority": 1},
            AGE_COLUMN,
        ],
        scale=True,
        root_rules=[
            {
                # Names become the Service name, which must be a DNS-1035 label.
                "rule": "self.metadata.name.size() <= 63",
                "message": "SpinApp names are at most 63 characters (they name the Service)",
            }
        ],
    )


def store_crd() -> dict[str, Any]:
    return _crd(
        c.STORE_KIND,
        c.STORE_PLURAL,
        ["kvstore", "kvs"],
        store_spec(),
        store_status(),
        [
            {"name": "Backend", "type": "string", "jsonPath": ".status.backend"},
            _condition_column("Ready", "Ready"),
            {"name": "Policy", "type": "string", "jsonPath": ".spec.deletionPolicy", "priority": 1},
            AGE_COLUMN,
        ],
    )


def link_crd() -> dict[str, Any]:
    return _crd(
        c.LINK_KIND,
        c.LINK_PLURAL,
        ["slink"],
        link_spec(),
        link_status(),
        [
            {"name": "App", "type": "string", "jsonPath": ".spec.app"},
            {"name": "Label", "type": "string", "jsonPath": ".spec.label"},
            {"name": "Store", "type": "string", "jsonPath": ".spec.store"},
            _condition_column("Ready", "Ready"),
            AGE_COLUMN,
        ],
    )


def all_crds() -> dict[str, dict[str, Any]]:
    """File name → CRD document, in the order they should be applied."""
    return {
        f"{c.GROUP}_{c.SPINAPP_PLURAL}.yaml": spinapp_crd(),
        f"{c.GROUP}_{c.STORE_PLURAL}.yaml": store_crd(),
        f"{c.GROUP}_{c.LINK_PLURAL}.yaml": link_crd(),
    }
