"""Spin app artifacts in OCI registries: ``kubespin registry push`` and the pull behind ``kubespin up -f REF``.

Modules: ``refs`` (reference grammar), ``auth`` (credentials from Docker configs and pull secrets),
``client`` (the distribution API, on oras-py), ``store`` (the digest-keyed cache), ``push``, ``pull``,
``cli`` (the click group). Nothing here is imported by ``kubespin up`` unless the app is a reference.
"""
