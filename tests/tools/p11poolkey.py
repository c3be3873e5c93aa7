"""Makes an EC P-256 key pair shaped like an hsm-csr pool key, but with
CKA_MODIFIABLE = FALSE: a token that will refuse to change its CKA_ID.

usage: p11poolkey.py MODULE TOKEN_LABEL ID_HEX KEY_LABEL   (PIN in HSM_CSR_PIN)
"""
import sys

import PyKCS11

import p11session

module, token, id_hex, key_label = sys.argv[1:5]
session = p11session.login(module, token, rw=True)
common = [
    (PyKCS11.CKA_TOKEN, PyKCS11.CK_TRUE),
    (PyKCS11.CKA_ID, bytes.fromhex(id_hex)),
    (PyKCS11.CKA_LABEL, key_label),
    (PyKCS11.CKA_MODIFIABLE, PyKCS11.CK_FALSE),
]
public = common + [
    (PyKCS11.CKA_VERIFY, PyKCS11.CK_TRUE),
    # DER OID of prime256v1.
    (PyKCS11.CKA_EC_PARAMS, bytes.fromhex("06082a8648ce3d030107")),
]
private = common + [
    (PyKCS11.CKA_PRIVATE, PyKCS11.CK_TRUE),
    (PyKCS11.CKA_SENSITIVE, PyKCS11.CK_TRUE),
    (PyKCS11.CKA_EXTRACTABLE, PyKCS11.CK_FALSE),
    (PyKCS11.CKA_SIGN, PyKCS11.CK_TRUE),
]
session.generateKeyPair(public, private, mecha=PyKCS11.MechanismECGENERATEKEYPAIR)
session.logout()
