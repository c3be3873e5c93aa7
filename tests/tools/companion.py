"""Calls `hsm-csr serve` through the official Alibaba Cloud SDKs, unmodified,
with only the endpoint changed: the CSR calls and their companions
SetCdnDomainCSRCertificate / SetDcdnDomainCSRCertificate.

usage: companion.py ENDPOINT < calls.json
calls.json: a JSON list of calls, each
  {"op": "create" | "set", "sdk": "new" | "new-rpc" | "old", "product": "cdn" | "dcdn",
   "ak": ID, "secret": SECRET,
   create: "common_name", "sans";  set: "domain", "cert" (either may be null: not sent)}
"new" is the current SDK with its default ACS3-HMAC-SHA256 signature, "new-rpc" the same
SDK signing HMAC-SHA1 (signature_algorithm v2), "old" aliyun-python-sdk-core with the
product's request class. Prints a JSON list, one answer per call:
  {"ok": true, "body": {...}} or {"ok": false, "code": CODE, "status": HTTP, "message": MSG}
"""
import json
import sys

from alibabacloud_cdn20180510.client import Client as CdnClient
from alibabacloud_cdn20180510 import models as cdn_models
from alibabacloud_dcdn20180115.client import Client as DcdnClient
from alibabacloud_dcdn20180115 import models as dcdn_models
from alibabacloud_tea_openapi import models as open_api_models
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcdn.request.v20180510.CreateCdnCertificateSigningRequestRequest import (
    CreateCdnCertificateSigningRequestRequest as OldCdnCreate,
)
from aliyunsdkcdn.request.v20180510.SetCdnDomainCSRCertificateRequest import (
    SetCdnDomainCSRCertificateRequest as OldCdnSet,
)
from aliyunsdkdcdn.request.v20180115.CreateDcdnCertificateSigningRequestRequest import (
    CreateDcdnCertificateSigningRequestRequest as OldDcdnCreate,
)
from aliyunsdkdcdn.request.v20180115.SetDcdnDomainCSRCertificateRequest import (
    SetDcdnDomainCSRCertificateRequest as OldDcdnSet,
)

ENDPOINT = sys.argv[1]


def new_call(c):
    cfg = open_api_models.Config(access_key_id=c["ak"], access_key_secret=c["secret"],
                                 endpoint=ENDPOINT, protocol="http")
    if c["sdk"] == "new-rpc":
        cfg.signature_algorithm = "v2"
    cdn = c["product"] == "cdn"
    client = CdnClient(cfg) if cdn else DcdnClient(cfg)
    models = cdn_models if cdn else dcdn_models
    if c["op"] == "create":
        if cdn:
            r = client.create_cdn_certificate_signing_request(models.CreateCdnCertificateSigningRequestRequest(
                common_name=c["common_name"], sans=c.get("sans")))
        else:
            r = client.create_dcdn_certificate_signing_request(models.CreateDcdnCertificateSigningRequestRequest(
                common_name=c["common_name"], sans=c.get("sans")))
    elif cdn:
        r = client.set_cdn_domain_csrcertificate(models.SetCdnDomainCSRCertificateRequest(
            domain_name=c.get("domain"), server_certificate=c.get("cert")))
    else:
        r = client.set_dcdn_domain_csrcertificate(models.SetDcdnDomainCSRCertificateRequest(
            domain_name=c.get("domain"), server_certificate=c.get("cert")))
    return r.body.to_map()


def old_call(c):
    cdn = c["product"] == "cdn"
    if c["op"] == "create":
        request = OldCdnCreate() if cdn else OldDcdnCreate()
        request.set_CommonName(c["common_name"])
        if c.get("sans"):
            request.set_SANs(c["sans"])
    else:
        request = OldCdnSet() if cdn else OldDcdnSet()
        if c.get("domain") is not None:
            request.set_DomainName(c["domain"])
        if c.get("cert") is not None:
            request.set_ServerCertificate(c["cert"])
    request.set_endpoint(ENDPOINT)
    request.set_protocol_type("http")
    client = AcsClient(c["ak"], c["secret"], "cn-hangzhou", auto_retry=False)
    return json.loads(client.do_action_with_exception(request))


answers = []
for call in json.load(sys.stdin):
    try:
        body = old_call(call) if call["sdk"] == "old" else new_call(call)
        answers.append({"ok": True, "body": body})
    except ServerException as e:
        answers.append({"ok": False, "code": e.get_error_code(), "status": e.get_http_status(),
                        "message": e.get_error_msg()})
    except Exception as e:  # the new SDK's ClientException / ServerException
        answers.append({"ok": False, "code": getattr(e, "code", None),
                        "status": getattr(e, "status_code", None),
                        "message": getattr(e, "message", str(e))})
print(json.dumps(answers))
