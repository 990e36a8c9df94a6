"""The PKI of a dev cluster: one CA, serving certs, client certs and the service-account key pair.

Why our own: kube-apiserver needs a client CA, a serving cert and a service-account signing key
before it starts, and the controller-manager and scheduler each need an identity it trusts. Tools
like kubeadm make these with Go code we cannot import; the `cryptography` library does the same job
in a few calls. Keys are ECDSA P-256 (fast to generate, accepted everywhere in Kubernetes,
service-account tokens become ES256). Nothing here is meant for production: one CA signs all.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubespin.devcluster_components import FRONT_PROXY_CLIENT_NAME, ClusterPKI

VALIDITY = datetime.timedelta(days=365)
"""Long enough that a dev dir kept around for months does not break; short enough to not be forever."""

CLOCK_SKEW = datetime.timedelta(minutes=5)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    *,
    client: bool,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _self_signed_ca(key: ec.EllipticCurvePrivateKey, common_name: str) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    subject = _name(common_name)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _ip(value: str) -> x509.GeneralName:
    return x509.IPAddress(ipaddress.ip_address(value))


def create_pki(directory: Path, *, advertise_address: str, service_ip: str) -> ClusterPKI:
    """Write a fresh CA and every cert/key the control plane uses into `directory`.

    `service_ip` is the first address of the service range (the in-cluster `kubernetes` Service),
    which the apiserver's serving cert must name so in-cluster clients can verify it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    pki = ClusterPKI(directory)

    ca_key = _new_key()
    ca_cert = _self_signed_ca(ca_key, "kubespin-devcluster-ca")
    _write_key(pki.ca.key, ca_key)
    _write_cert(pki.ca.cert, ca_cert)

    local_sans: list[x509.GeneralName] = [x509.DNSName("localhost"), _ip("127.0.0.1")]
    apiserver_sans = [
        *local_sans,
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"),
        x509.DNSName("kubernetes.default.svc.cluster.local"),
        _ip(service_ip),
        _ip(advertise_address),
    ]
    servers = [
        (pki.apiserver, _name("kube-apiserver"), apiserver_sans),
        (pki.components_serving, _name("kubespin-devcluster-components"), local_sans),
    ]
    for pair, subject, sans in servers:
        key = _new_key()
        _write_key(pair.key, key)
        _write_cert(pair.cert, _issue(ca_cert, ca_key, subject, key, client=False, sans=sans))

    # The users Kubernetes' bootstrap RBAC already knows: system:masters for the admin,
    # system:kube-controller-manager and system:kube-scheduler for the two components.
    clients = [
        (pki.admin, _name("kubespin-admin", "system:masters")),
        (pki.controller_manager, _name("system:kube-controller-manager")),
        (pki.scheduler, _name("system:kube-scheduler")),
    ]
    for pair, subject in clients:
        key = _new_key()
        _write_key(pair.key, key)
        _write_cert(pair.cert, _issue(ca_cert, ca_key, subject, key, client=True))

    # Without a request-header CA, every component that reads extension-apiserver-authentication
    # logs an error each second, and aggregated APIs (APIService) could not authenticate the proxy.
    proxy_ca_key = _new_key()
    proxy_ca_cert = _self_signed_ca(proxy_ca_key, "kubespin-devcluster-front-proxy-ca")
    _write_key(pki.front_proxy_ca.key, proxy_ca_key)
    _write_cert(pki.front_proxy_ca.cert, proxy_ca_cert)
    proxy_key = _new_key()
    _write_key(pki.front_proxy_client.key, proxy_key)
    _write_cert(
        pki.front_proxy_client.cert,
        _issue(proxy_ca_cert, proxy_ca_key, _name(FRONT_PROXY_CLIENT_NAME), proxy_key, client=True),
    )

    sa_key = _new_key()
    _write_key(pki.service_account_key, sa_key)
    pki.service_account_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki
