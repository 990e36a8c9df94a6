"""`inspect_app`: an app's ai_models read from a real registry without pulling its Wasm layers.

The operator uses this to schedule SpinApps that need local inference. Apps are the SDK-built test apps
pushed with `kubespin registry push`; registries are the real ggcr and distribution servers on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from kubespin_shim.registry.errors import (
    ArtifactNotFoundError,
    InvalidReferenceError,
    RegistryAuthError,
    RegistryProtocolError,
    RegistryUnreachableError,
)
from kubespin_shim.registry.inspect import ai_models_of_locked_app, inspect_app

from tests.integration.test_registry import push
from tests.registry_server import start_registry
from tests.shimproc import built_app, free_port


def test_inspect_reads_ai_models_and_downloads_no_wasm(tmp_path: Path) -> None:
    with start_registry(tmp_path, "ggcr") as server:
        llm_ref = server.ref("apps/llm", "v1")
        pinned = push(built_app("py-llm"), llm_ref)
        hello_ref = server.ref("apps/hello", "v1")
        push(built_app("py-hello"), hello_ref)
        before = len(server.requests())

        facts = inspect_app(llm_ref)
        assert facts.digest == pinned.rsplit("@", 1)[1]
        assert facts.models_of() == {"llm": ("tiny", "smollm2", "all-minilm-l6-v2", "absent-model")}
        assert facts.models_of(["some-other-component"]) == {}
        # One manifest and one blob (the locked app): the 36 MB component is not fetched.
        fetched = [path for method, path in server.requests()[before:] if method == "GET"]
        assert len([p for p in fetched if "/manifests/" in p]) == 1, fetched
        assert len([p for p in fetched if "/blobs/" in p]) == 1, fetched

        by_digest = inspect_app(pinned)
        assert by_digest.ai_models == facts.ai_models
        assert inspect_app(hello_ref).models_of() == {}

        with pytest.raises(ArtifactNotFoundError):
            inspect_app(server.ref("apps/nothing", "v1"))


def test_inspect_uses_pull_secret_documents_and_never_runs_helpers(tmp_path: Path) -> None:
    with start_registry(tmp_path, "distribution", users={"alice": "wonderland"}) as server:
        ref = server.ref("apps/private", "v1")
        config = tmp_path / "docker" / "config.json"
        config.parent.mkdir()
        auths = {server.address: {"auth": base64.b64encode(b"alice:wonderland").decode()}}
        config.write_text(json.dumps({"auths": auths}))
        push(built_app("py-llm"), ref, env={"DOCKER_CONFIG": str(config.parent)})

        with pytest.raises(RegistryAuthError, match="requires authentication"):
            inspect_app(ref, environ={})
        secret = json.dumps({"auths": auths}).encode()
        facts = inspect_app(ref, auth_documents=[("Secret ns/pull (.dockerconfigjson)", secret)], environ={})
        assert "llm" in facts.models_of()

        # A helper named in a user's Secret is not run by the operator: the lookup just finds nothing.
        marker = tmp_path / "ran"
        helper = tmp_path / "bin" / "docker-credential-evil"
        helper.parent.mkdir()
        helper.write_text(f"#!/bin/sh\ntouch {marker}\necho '{{\"Username\":\"alice\",\"Secret\":\"wonderland\"}}'\n")
        helper.chmod(0o755)
        evil = json.dumps({"credsStore": "evil"}).encode()
        env = {"PATH": f"{helper.parent}:{os.environ['PATH']}"}
        with pytest.raises(RegistryAuthError):
            inspect_app(ref, auth_documents=[("Secret ns/evil", evil)], environ=env)
        assert not marker.exists()


def test_inspect_errors_are_typed_and_bounded() -> None:
    with pytest.raises(RegistryUnreachableError):
        inspect_app(f"127.0.0.1:{free_port()}/apps/x:v1", environ={"KUBESPIN_REGISTRY_TIMEOUT": "2"})
    with pytest.raises(RegistryProtocolError, match="components"):
        ai_models_of_locked_app(b'{"spin_lock_version": 1}', "ref")
    with pytest.raises(RegistryProtocolError, match="ai_models"):
        ai_models_of_locked_app(b'{"components": [{"id": "a", "metadata": {"ai_models": [1]}}]}', "ref")
    assert ai_models_of_locked_app(b'{"components": [{"id": "a"}]}', "ref") == {"a": ()}


def test_a_local_spin_toml_is_read_directly_and_anything_else_is_explained(tmp_path: Path) -> None:
    """The single-machine dev setup runs apps from their paths; the operator reads the same spin.toml."""
    app = built_app("py-llm")
    facts = inspect_app(str(app))
    assert facts.models_of() == {"llm": ("tiny", "smollm2", "all-minilm-l6-v2", "absent-model")}
    assert facts.digest.startswith("sha256:") and inspect_app(str(app / "spin.toml")).digest == facts.digest
    with pytest.raises(InvalidReferenceError, match="is neither a registry reference"):
        inspect_app(str(tmp_path / "nothing-here"))
