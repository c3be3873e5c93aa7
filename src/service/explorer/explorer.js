// The hsm-csr API explorer. Signs each call in the page with
// ACS3-HMAC-SHA256 (src/service/request_signing.rs has the grammar) using
// WebCrypto; the secret is read from its field when a call is
// signed and goes nowhere else: no storage, no URL, no request.
'use strict';

(() => {
  const enc = new TextEncoder();
  const $ = (id) => document.getElementById(id);

  // Parameters of each kind of action, in the order the API documents them,
  // with the names each SDK generation gives them.
  const PARAMS = {
    csr: ['CommonName', 'SANs', 'Organization', 'OrganizationUnit', 'Country', 'State', 'City', 'Email'],
    companion: ['DomainName', 'ServerCertificate'],
  };
  const SNAKE = {
    CommonName: 'common_name', SANs: 'sans', Organization: 'organization',
    OrganizationUnit: 'organization_unit', Country: 'country', State: 'state',
    City: 'city', Email: 'email', DomainName: 'domain_name',
    ServerCertificate: 'server_certificate',
  };
  const PY_METHOD = {
    CreateCdnCertificateSigningRequest: 'create_cdn_certificate_signing_request',
    CreateDcdnCertificateSigningRequest: 'create_dcdn_certificate_signing_request',
    SetCdnDomainCSRCertificate: 'set_cdn_domain_csrcertificate',
    SetDcdnDomainCSRCertificate: 'set_dcdn_domain_csrcertificate',
  };

  function selectedAction() {
    const select = $('Action');
    const option = select.options[select.selectedIndex];
    return {
      name: option.value,
      version: option.dataset.version,
      product: option.dataset.product,
      kind: option.dataset.kind,
    };
  }

  function showParams() {
    const { kind } = selectedAction();
    for (const fieldset of document.querySelectorAll('fieldset[data-kind]')) {
      const on = fieldset.dataset.kind === kind;
      fieldset.hidden = !on;
      fieldset.disabled = !on;
    }
  }

  /** The selected action's parameters that have a value, in API order. */
  function params() {
    const { kind } = selectedAction();
    const out = [];
    for (const name of PARAMS[kind]) {
      const value = document.querySelector(`[name="${name}"]`).value;
      if (value !== '') out.push([name, value]);
    }
    return out;
  }

  // --- ACS3-HMAC-SHA256 -------------------------------------------------

  function wellFormed(s) {
    if (typeof s.isWellFormed === 'function') return s.isWellFormed();
    return !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?:^|[^\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s);
  }

  /** RFC 3986 percent-encoding: all but A-Z a-z 0-9 - _ . ~ */
  function pe(s) {
    return encodeURIComponent(s).replace(/[!'()*]/g,
      (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
  }

  /** Compares by code point, as the service (Rust) and the SDKs sort. */
  function byCodePoint(a, b) {
    const x = Array.from(a);
    const y = Array.from(b);
    for (let i = 0; i < Math.min(x.length, y.length); i += 1) {
      const d = x[i].codePointAt(0) - y[i].codePointAt(0);
      if (d !== 0) return d;
    }
    return x.length - y.length;
  }

  function hex(buffer) {
    return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, '0')).join('');
  }

  async function sha256Hex(text) {
    return hex(await crypto.subtle.digest('SHA-256', enc.encode(text)));
  }

  async function hmacSha256Hex(secret, text) {
    const key = await crypto.subtle.importKey(
      'raw', enc.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
    return hex(await crypto.subtle.sign('HMAC', key, enc.encode(text)));
  }

  function nonce() {
    if (typeof crypto.randomUUID === 'function') return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = hex(b);
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  /**
   * The signed request: `POST /?query` with the six signed headers and
   * Authorization, as alibabacloud-tea-openapi sends it.
   */
  async function sign(action, query, accessKeyId, secret) {
    const payload = await sha256Hex('');
    const headers = [
      ['host', location.host],
      ['x-acs-action', action.name],
      ['x-acs-content-sha256', payload],
      ['x-acs-date', new Date().toISOString().replace(/\.\d{3}Z$/, 'Z')],
      ['x-acs-signature-nonce', nonce()],
      ['x-acs-version', action.version],
    ];
    const canonicalQuery = query
      .slice()
      .sort((a, b) => byCodePoint(a[0], b[0]) || byCodePoint(a[1], b[1]))
      .map(([k, v]) => `${pe(k)}=${pe(v)}`)
      .join('&');
    const names = headers.map(([n]) => n).join(';');
    const canonical = ['POST', '/', canonicalQuery,
      headers.map(([n, v]) => `${n}:${v.trim()}\n`).join(''),
      names, payload].join('\n');
    const stringToSign = `ACS3-HMAC-SHA256\n${await sha256Hex(canonical)}`;
    const signature = await hmacSha256Hex(secret, stringToSign);
    headers.push(['authorization',
      `ACS3-HMAC-SHA256 Credential=${accessKeyId},SignedHeaders=${names},Signature=${signature}`]);
    const qs = query.map(([k, v]) => `${pe(k)}=${pe(v)}`).join('&');
    return { method: 'POST', path: qs ? `/?${qs}` : '/', headers };
  }

  // --- Reading a CSR (RFC 2986) -----------------------------------------

  function der(bytes) {
    function at(pos, end) {
      if (pos + 2 > end) throw new Error('truncated DER');
      const tag = bytes[pos];
      let len = bytes[pos + 1];
      let start = pos + 2;
      if (len & 0x80) {
        const n = len & 0x7f;
        if (n < 1 || n > 3 || start + n > end) throw new Error('bad DER length');
        len = 0;
        for (let i = 0; i < n; i += 1) len = len * 256 + bytes[start + i];
        start += n;
      }
      if (start + len > end) throw new Error('truncated DER');
      return { tag, start, end: start + len };
    }
    function kids(node) {
      const out = [];
      for (let p = node.start; p < node.end;) {
        const k = at(p, node.end);
        out.push(k);
        p = k.end;
      }
      return out;
    }
    function oid(node) {
      const arcs = [];
      let v = 0;
      for (let i = node.start; i < node.end; i += 1) {
        v = v * 128 + (bytes[i] & 0x7f);
        if (!(bytes[i] & 0x80)) {
          if (arcs.length === 0) arcs.push(v < 80 ? Math.floor(v / 40) : 2, v < 80 ? v % 40 : v - 80);
          else arcs.push(v);
          v = 0;
        }
      }
      return arcs.join('.');
    }
    function text(node) {
      const raw = bytes.subarray(node.start, node.end);
      if (node.tag === 0x1e) {
        let s = '';
        for (let i = 0; i + 1 < raw.length; i += 2) s += String.fromCharCode(raw[i] * 256 + raw[i + 1]);
        return s;
      }
      return new TextDecoder('utf-8').decode(raw);
    }
    return { root: at(0, bytes.length), kids, oid, text, bytes };
  }

  const ATTRIBUTE = {
    '2.5.4.6': 'C', '2.5.4.8': 'ST', '2.5.4.7': 'L', '2.5.4.10': 'O',
    '2.5.4.11': 'OU', '2.5.4.3': 'CN', '1.2.840.113549.1.9.1': 'emailAddress',
  };
  const CURVE = {
    '1.2.840.10045.3.1.7': 'EC P-256', '1.3.132.0.34': 'EC P-384', '1.3.132.0.35': 'EC P-521',
  };

  function pemBytes(pem) {
    const b64 = pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
    return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  }

  function keyType(d, spki) {
    const [alg, bits] = d.kids(spki);
    const [algOid, param] = d.kids(alg);
    const id = d.oid(algOid);
    if (id === '1.2.840.113549.1.1.1') {
      const rsa = d.kids({ tag: 0x30, start: bits.start + 1, end: bits.end });
      const seq = d.kids(rsa[0]);
      let { start } = seq[0];
      while (start < seq[0].end && d.bytes[start] === 0) start += 1;
      const top = d.bytes[start];
      return `RSA ${(seq[0].end - start - 1) * 8 + (top ? Math.floor(Math.log2(top)) + 1 : 0)}`;
    }
    if (id === '1.2.840.10045.2.1') return CURVE[d.oid(param)] || `EC ${d.oid(param)}`;
    if (id === '1.3.101.112') return 'Ed25519';
    return id;
  }

  function sans(d, attributes) {
    const out = [];
    for (const attr of d.kids(attributes)) {
      const [type, values] = d.kids(attr);
      if (d.oid(type) !== '1.2.840.113549.1.9.14') continue;
      for (const extensions of d.kids(values)) {
        for (const ext of d.kids(extensions)) {
          const parts = d.kids(ext);
          if (d.oid(parts[0]) !== '2.5.29.17') continue;
          const value = parts[parts.length - 1];
          const names = d.kids({ tag: 0x30, start: value.start, end: value.end })[0];
          for (const name of d.kids(names)) {
            const raw = d.bytes.subarray(name.start, name.end);
            if (name.tag === 0x82) out.push(`DNS:${d.text(name)}`);
            else if (name.tag === 0x81) out.push(`email:${d.text(name)}`);
            else if (name.tag === 0x86) out.push(`URI:${d.text(name)}`);
            else if (name.tag === 0x87 && raw.length === 4) out.push(`IP:${Array.from(raw).join('.')}`);
            else if (name.tag === 0x87 && raw.length === 16) {
              const groups = [];
              for (let i = 0; i < 16; i += 2) groups.push(((raw[i] << 8) | raw[i + 1]).toString(16));
              out.push(`IP:${groups.join(':')}`);
            }
          }
        }
      }
    }
    return out;
  }

  function decodeCsr(pem) {
    const d = der(pemBytes(pem));
    const [info] = d.kids(d.root);
    const [, subject, spki, attributes] = d.kids(info);
    const rdns = [];
    for (const set of d.kids(subject)) {
      for (const atv of d.kids(set)) {
        const [type, value] = d.kids(atv);
        const id = d.oid(type);
        rdns.push(`${ATTRIBUTE[id] || id}=${d.text(value)}`);
      }
    }
    return {
      subject: rdns.join(', '),
      sans: attributes ? sans(d, attributes) : [],
      keyType: keyType(d, spki),
    };
  }

  // --- SDK code ---------------------------------------------------------

  /** A Python string literal: ASCII only, every special character escaped. */
  function pyStr(s) {
    let out = '"';
    for (const ch of s) {
      const c = ch.codePointAt(0);
      if (ch === '\\' || ch === '"') out += `\\${ch}`;
      else if (ch === '\n') out += '\\n';
      else if (ch === '\r') out += '\\r';
      else if (ch === '\t') out += '\\t';
      else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, '0')}`;
      else if (c > 0xffff) out += `\\U${c.toString(16).padStart(8, '0')}`;
      else if (c > 0x7e) out += `\\u${c.toString(16).padStart(4, '0')}`;
      else out += ch;
    }
    return `${out}"`;
  }

  /**
   * A Java string literal. Control characters are octal escapes: javac
   * turns \\uXXXX into its character before it reads the literal, so
   * \\u000a or \\u0022 would end it. Non-ASCII is \\uXXXX (never a quote,
   * backslash or line end once turned back).
   */
  function javaStr(s) {
    let out = '"';
    for (let i = 0; i < s.length; i += 1) {
      const ch = s[i];
      const c = s.charCodeAt(i);
      if (ch === '\\' || ch === '"') out += `\\${ch}`;
      else if (ch === '\n') out += '\\n';
      else if (ch === '\r') out += '\\r';
      else if (ch === '\t') out += '\\t';
      else if (c < 0x20 || c === 0x7f) out += `\\${c.toString(8).padStart(3, '0')}`;
      else if (c > 0x7e) out += `\\u${c.toString(16).padStart(4, '0')}`;
      else out += ch;
    }
    return `${out}"`;
  }

  function endpoint() {
    return { host: location.host, protocol: location.protocol === 'https:' ? 'https' : 'http' };
  }

  function pythonNew(action, query) {
    const { host, protocol } = endpoint();
    const pkg = `alibabacloud_${action.product}${action.version.replace(/-/g, '')}`;
    const lines = [
      `# pip install ${pkg.replace(/_/g, '-')} alibabacloud-tea-openapi`,
      'import json',
      'import os',
      '',
      `from ${pkg} import models`,
      `from ${pkg}.client import Client`,
      'from alibabacloud_tea_openapi import models as open_api_models',
      '',
      'client = Client(open_api_models.Config(',
      '    access_key_id=os.environ["ALIBABA_CLOUD_ACCESS_KEY_ID"],',
      '    access_key_secret=os.environ["ALIBABA_CLOUD_ACCESS_KEY_SECRET"],',
      `    endpoint=${pyStr(host)},`,
      `    protocol=${pyStr(protocol)},`,
      '))',
      `request = models.${action.name}Request(`,
      ...query.map(([k, v]) => `    ${SNAKE[k]}=${pyStr(v)},`),
      ')',
      `response = client.${PY_METHOD[action.name]}(request)`,
      'print(json.dumps(response.body.to_map(), indent=2))',
    ];
    return `${lines.join('\n')}\n`;
  }

  function pythonLegacy(action, query) {
    const { host, protocol } = endpoint();
    const v = action.version.replace(/-/g, '');
    const lines = [
      `# pip install aliyun-python-sdk-core aliyun-python-sdk-${action.product}`,
      'import os',
      '',
      'from aliyunsdkcore.client import AcsClient',
      `from aliyunsdk${action.product}.request.v${v}.${action.name}Request import ${action.name}Request`,
      '',
      'client = AcsClient(',
      '    os.environ["ALIBABA_CLOUD_ACCESS_KEY_ID"],',
      '    os.environ["ALIBABA_CLOUD_ACCESS_KEY_SECRET"],',
      '    "cn-hangzhou",',
      ')',
      `request = ${action.name}Request()`,
      `request.set_endpoint(${pyStr(host)})`,
      `request.set_protocol_type(${pyStr(protocol)})`,
      ...query.map(([k, val]) => `request.set_${k}(${pyStr(val)})`),
      'print(client.do_action_with_exception(request).decode())',
    ];
    return `${lines.join('\n')}\n`;
  }

  function java(action, query) {
    const { host, protocol } = endpoint();
    const pkg = `com.aliyun.${action.product}${action.version.replace(/-/g, '')}`;
    const method = action.name[0].toLowerCase() + action.name.slice(1);
    const lines = [
      `// Maven: ${pkg.replace('com.aliyun.', 'com.aliyun:')} and com.aliyun:tea-openapi`,
      `import ${pkg}.Client;`,
      `import ${pkg}.models.${action.name}Request;`,
      `import ${pkg}.models.${action.name}Response;`,
      'import com.aliyun.teaopenapi.models.Config;',
      '',
      'public class Sample {',
      '    public static void main(String[] args) throws Exception {',
      '        Config config = new Config()',
      '                .setAccessKeyId(System.getenv("ALIBABA_CLOUD_ACCESS_KEY_ID"))',
      '                .setAccessKeySecret(System.getenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET"))',
      `                .setEndpoint(${javaStr(host)})`,
      `                .setProtocol(${javaStr(protocol)});`,
      '        Client client = new Client(config);',
      `        ${action.name}Request request = new ${action.name}Request()${query.length ? '' : ';'}`,
      ...query.map(([k, v], i) => `                .set${k}(${javaStr(v)})${i === query.length - 1 ? ';' : ''}`),
      `        ${action.name}Response response = client.${method}(request);`,
      '        System.out.println(com.aliyun.teautil.Common.toJSONString(response.getBody()));',
      '    }',
      '}',
    ];
    return `${lines.join('\n')}\n`;
  }

  /**
   * Writes the SDK code for `query`; the name of a parameter that is not
   * valid Unicode (a lone surrogate has no UTF-8 form: no SDK, and no call,
   * could send it), which gets a note instead, or undefined.
   */
  function showSdk(action = selectedAction(), query = params()) {
    const bad = query.find(([, v]) => !wellFormed(v));
    if (bad) {
      const note = `${bad[0]} holds text that is not valid Unicode; correct it to get code.`;
      for (const id of ['sdk-python', 'sdk-python-legacy', 'sdk-java']) $(id).textContent = note;
      return bad[0];
    }
    $('sdk-python').textContent = pythonNew(action, query);
    $('sdk-python-legacy').textContent = pythonLegacy(action, query);
    $('sdk-java').textContent = java(action, query);
    return undefined;
  }

  // --- Sending ----------------------------------------------------------

  function say(text) {
    $('status').textContent = text;
  }

  function showAnswer(status, body) {
    $('http-status').textContent = `(HTTP ${status})`;
    let answer = null;
    try {
      answer = JSON.parse(body);
    } catch (_) {
      answer = null;
    }
    $('response').textContent = answer === null ? body : JSON.stringify(answer, null, 2);
    $('error').textContent = '';
    $('decoded').hidden = true;
    if (answer && answer.Code) {
      // As the SDKs raise it: tea-openapi's TeaException, then
      // aliyun-python-sdk-core's ServerException.
      $('error').textContent =
        `Error: ${answer.Code} code: ${status}, ${answer.Message} request id: ${answer.RequestId}\n`
        + `HTTP Status: ${status} Error:${answer.Code} ${answer.Message} RequestID: ${answer.RequestId}`;
    } else if (status >= 400) {
      $('error').textContent = `HTTP ${status}`;
    }
    if (answer && typeof answer.Csr === 'string') {
      try {
        const csr = decodeCsr(answer.Csr);
        $('csr-subject').textContent = csr.subject;
        $('csr-sans').textContent = csr.sans.length ? csr.sans.join(', ') : '(none)';
        $('csr-key-type').textContent = csr.keyType;
        $('csr-pub-md5').textContent = answer.PubMd5 || '';
        $('decoded').hidden = false;
      } catch (e) {
        $('error').textContent = `The CSR could not be read: ${e.message}`;
      }
    }
  }

  async function send(event) {
    event.preventDefault();
    const action = selectedAction();
    const query = params();
    const accessKeyId = $('AccessKeyId').value.trim();
    const secret = $('AccessKeySecret').value;
    const bad = showSdk(action, query);
    if (!accessKeyId || !secret) {
      say('Type the AccessKeyId and AccessKeySecret first.');
      return;
    }
    if (!/^[\x21-\x7e]+$/.test(accessKeyId) || /[,=]/.test(accessKeyId)) {
      say('The AccessKeyId is printable ASCII without spaces, "," or "=".');
      return;
    }
    if (bad) {
      say(`${bad} holds text that is not valid Unicode.`);
      return;
    }
    $('send').disabled = true;
    say(`Sending ${action.name}...`);
    try {
      const request = await sign(action, query, accessKeyId, secret);
      $('request').textContent = [`${request.method} ${location.origin}${request.path}`,
        ...request.headers.map(([n, v]) => `${n}: ${v}`)].join('\n');
      const answer = await fetch(request.path, {
        method: request.method,
        headers: request.headers.filter(([n]) => n !== 'host'),
        credentials: 'omit',
        cache: 'no-store',
        referrerPolicy: 'no-referrer',
      });
      showAnswer(answer.status, await answer.text());
      say(`${action.name}: HTTP ${answer.status}.`);
    } catch (e) {
      say(`The call was not answered: ${e.message}`);
    } finally {
      $('send').disabled = false;
    }
  }

  function copy(event) {
    const target = $(event.currentTarget.dataset.copy);
    navigator.clipboard.writeText(target.textContent).then(
      () => say('Copied.'),
      () => say('The browser refused the clipboard; select the code and copy it.'));
  }

  function start() {
    $('Action').addEventListener('change', () => { showParams(); showSdk(); });
    $('call').addEventListener('input', () => showSdk());
    $('call').addEventListener('submit', send);
    for (const button of document.querySelectorAll('button.copy')) button.addEventListener('click', copy);
    showParams();
    showSdk();
    if (!window.isSecureContext || !crypto.subtle) {
      say('This browser gives WebCrypto only to pages served over https or from localhost: '
        + 'serve with tls_cert and tls_key, or open the page through an SSH tunnel to 127.0.0.1.');
      return;
    }
    $('send').disabled = false;
    say('Ready.');
  }

  start();
})();
