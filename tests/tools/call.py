"""Makes N CreateCdnCertificateSigningRequest calls through the official SDK
and prints their PubMd5 values as a JSON list.

usage: call.py ENDPOINT N   (access key MainKey / s3cret, as tests/service.rs configures)
"""
import json
import sys

from alibabacloud_cdn20180510.client import Client
from alibabacloud_cdn20180510 import models
from alibabacloud_tea_openapi import models as om

client = Client(om.Config(access_key_id="MainKey", access_key_secret="s3cret", endpoint=sys.argv[1], protocol="http"))
print(json.dumps([
    client.create_cdn_certificate_signing_request(
        models.CreateCdnCertificateSigningRequestRequest(common_name=f"pool{i}.example.com")).body.pub_md_5
    for i in range(int(sys.argv[2]))
]))
