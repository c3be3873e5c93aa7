"""The session every p11*.py tool starts with: MODULE loaded, the token
labelled LABEL found, a session opened (read-write if asked) and logged in
with the PIN in HSM_CSR_PIN."""
import os

import PyKCS11


def login(module, label, rw=False):
    lib = PyKCS11.PyKCS11Lib()
    lib.load(module)
    slot = next(s for s in lib.getSlotList(tokenPresent=True)
                if lib.getTokenInfo(s).label.strip() == label)
    flags = PyKCS11.CKF_SERIAL_SESSION | (PyKCS11.CKF_RW_SESSION if rw else 0)
    session = lib.openSession(slot, flags)
    session.login(os.environ["HSM_CSR_PIN"])
    return session
