"""Fills a token with N EC P-256 key pairs (labels fill-0 .. fill-N-1,
random CKA_IDs) in one session: keys nobody asks about, so that a test can
show a lookup costs the same however many keys the token holds.

usage: p11fill.py MODULE TOKEN_LABEL N   (PIN in HSM_CSR_PIN)
"""
import os
import sys

import PyKCS11

import p11session

module, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
session = p11session.login(module, token, rw=True)
for i in range(n):
    common = [
        (PyKCS11.CKA_TOKEN, PyKCS11.CK_TRUE),
        (PyKCS11.CKA_ID, os.urandom(16)),
        (PyKCS11.CKA_LABEL, f"fill-{i}"),
    ]
    public = common + [
        (PyKCS11.CKA_VERIFY, PyKCS11.CK_TRUE),
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
