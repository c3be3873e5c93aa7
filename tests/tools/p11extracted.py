"""Plants an EC P-256 key pair whose private half has been out of the token:
made on the token extractable and not sensitive, its CKA_VALUE read, then
made sensitive and unextractable. It ends CKA_LOCAL, CKA_SENSITIVE TRUE and
CKA_EXTRACTABLE FALSE, but CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE
FALSE. Prints the private value's length, to show it was read.

usage: p11extracted.py MODULE TOKEN_LABEL ID_HEX KEY_LABEL   (PIN in HSM_CSR_PIN)
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
]
public = common + [
    (PyKCS11.CKA_VERIFY, PyKCS11.CK_TRUE),
    # DER OID of prime256v1.
    (PyKCS11.CKA_EC_PARAMS, bytes.fromhex("06082a8648ce3d030107")),
]
private = common + [
    (PyKCS11.CKA_PRIVATE, PyKCS11.CK_TRUE),
    (PyKCS11.CKA_SENSITIVE, PyKCS11.CK_FALSE),
    (PyKCS11.CKA_EXTRACTABLE, PyKCS11.CK_TRUE),
    (PyKCS11.CKA_SIGN, PyKCS11.CK_TRUE),
]
_, priv = session.generateKeyPair(public, private, mecha=PyKCS11.MechanismECGENERATEKEYPAIR)
value = session.getAttributeValue(priv, [PyKCS11.CKA_VALUE])[0]
session.setAttributeValue(priv, [
    (PyKCS11.CKA_SENSITIVE, PyKCS11.CK_TRUE),
    (PyKCS11.CKA_EXTRACTABLE, PyKCS11.CK_FALSE),
])
session.logout()
print(len(value))
