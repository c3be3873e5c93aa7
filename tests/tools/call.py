"""Makes N CreateCdnCertificateSigningRequest calls through the official SDK
and prints their PubMd5 values as a JSON list.

usage: call.py ENDPOINT N [COMMON_NAME...]   (access key MainKey / s3cret, as tests/service.rs configures)
Call i asks for COMMON_NAME number i (cycling), or pool{i}.example.com when none is given.
"""
import json
import sys

from alibabacloud_cdn20180510.client import Client
from alibabacloud_cdn20180510 import models
from alibabacloud_tea_openapi import models as om

names = sys.argv[3:]
client = Client(om.Config(access_key_id="MainKey", access_key_secret="s3cret", endpoint=sys.argv[1], protocol="http"))
print(json.dumps([
    client.create_cdn_certificate_signing_request(
        models.CreateCdnCertificateSigningRequestRequest(
            common_name=names[i % len(names)] if names else f"pool{i}.example.com")).body.pub_md_5
    for i in range(int(sys.argv[2]))
]))
