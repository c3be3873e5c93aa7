"""Certificates for the public key of a CSR, made with Python's
`cryptography` (nothing of hsm-csr's), for the tenancy tests.

usage: tenant_certs.py MODE [N] < csr.pem
Prints a JSON list of PEM texts (a chain is one text, leaf first):
  foreign  a valid certificate around the CSR's key, signed by another
           tenant's own key (its own CA): what a hostile tenant would send
  expired  valid 2020-01-01 to 2021-01-01
  ca       basicConstraints cA TRUE
  badsig   the leaf signed by one CA, followed by another CA's certificate
  valid N  N distinct valid leaves (each an hour newer), each with its CA
"""
import datetime
import json
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

UTC = datetime.timezone.utc
NOW = datetime.datetime.now(UTC)
csr = x509.load_pem_x509_csr(sys.stdin.buffer.read())
cn = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def name(text):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def ca(text):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(text))
        .issuer_name(name(text))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def leaf(issuer_key, issuer, start, end, is_ca=False):
    b = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(issuer.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
    )
    if not is_ca:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def pem(*certs):
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


mode = sys.argv[1]
day = datetime.timedelta(days=1)
ca1_key, ca1 = ca("Tenancy Test CA 1")
if mode == "foreign":
    b_key, b_ca = ca("Tenant B's own CA")
    out = [pem(leaf(b_key, b_ca, NOW - day, NOW + 30 * day), b_ca)]
elif mode == "expired":
    out = [pem(leaf(ca1_key, ca1, datetime.datetime(2020, 1, 1, tzinfo=UTC),
                    datetime.datetime(2021, 1, 1, tzinfo=UTC)), ca1)]
elif mode == "ca":
    out = [pem(leaf(ca1_key, ca1, NOW - day, NOW + 30 * day, is_ca=True), ca1)]
elif mode == "badsig":
    _, ca2 = ca("Tenancy Test CA 2")
    out = [pem(leaf(ca1_key, ca1, NOW - day, NOW + 30 * day), ca2)]
elif mode == "valid":
    n = int(sys.argv[2])
    hour = datetime.timedelta(hours=1)
    out = [pem(leaf(ca1_key, ca1, NOW - (n + 1 - i) * hour, NOW + 30 * day), ca1) for i in range(n)]
else:
    sys.exit(f"unknown mode {mode}")
json.dump(out, sys.stdout)
