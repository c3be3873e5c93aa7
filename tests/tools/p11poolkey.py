"""Makes an EC P-256 key pair shaped like an hsm-csr pool key, but with
CKA_MODIFIABLE = FALSE: a token that will refuse to change its CKA_ID.

usage: p11poolkey.py MODULE TOKEN_LABEL ID_HEX KEY_LABEL   (PIN in HSM_CSR_PIN)
"""
import os
import sys

import PyKCS11

module, token, id_hex, key_label = sys.argv[1:5]
lib = PyKCS11.PyKCS11Lib()
lib.load(module)
slot = next(s for s in lib.getSlotList(tokenPresent=True)
            if lib.getTokenInfo(s).label.strip() == token)
session = lib.openSession(slot, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
session.login(os.environ["HSM_CSR_PIN"])
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
