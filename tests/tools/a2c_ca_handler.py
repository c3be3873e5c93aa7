"""acme2certifier's openssl_ca_handler, with certificates shorter than a
day: `[CAhandler] cert_validity` takes "90s", "30m", "6h" or "2d" (the
stock handler takes whole days only), and a lifetime per certificate
profile: `[Profiles] validity` is a JSON object, profile name to lifetime
(the stock handler issues every profile alike)."""
import datetime
import json

from acme2certifier.acme_srv.helpers.config import profile_lookup
from acme2certifier.acme_srv.helpers.datetime_utils import duration_to_seconds
from acme2certifier.cahandlers.openssl_ca_handler import CAhandler as _Base


class CAhandler(_Base):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cert_validity_s = None
        self.profile_validity_s = {}
        self.order_profile = None

    def _config_policy_load(self, config_dic):
        super()._config_policy_load(config_dic)
        validity = config_dic.get("CAhandler", "cert_validity", fallback=None)
        if validity:
            self.cert_validity_s = duration_to_seconds(validity)
        per_profile = config_dic.get("Profiles", "validity", fallback=None)
        if per_profile:
            self.profile_validity_s = {
                name: duration_to_seconds(life)
                for name, life in json.loads(per_profile).items()
            }

    def enroll(self, csr):
        # The profile of the order this CSR finalises, as acme2certifier's
        # own handlers look it up.
        self.order_profile = profile_lookup(self.logger, csr)
        return super().enroll(csr)

    def _certexpiry_date_default(self):
        seconds = self.profile_validity_s.get(self.order_profile) or self.cert_validity_s
        if not seconds:
            return super()._certexpiry_date_default()
        now = datetime.datetime.now(datetime.timezone.utc)
        return now + datetime.timedelta(seconds=seconds)
