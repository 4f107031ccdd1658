#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (run from anywhere; needs Python 3
with the `cryptography` package for the signed tokens).

The seeds are meant to be read: each file is one meaningful input in the format its harness
documents (src/fuzzing.rs). Sources: the API's own request shapes and error table (README),
the cloud's error bodies (docs/huawei-api.md), tokens minted with the public dev and test keys
at the harness's fixed clock, the SDK signing vectors (tests/data/sdk-sign-vectors.json) and
the shipped config files. Rerunning rewrites the same files (the ECDSA and PSS signatures of
the raw tokens differ each run; they stay valid).
"""

import base64
import hashlib
import hmac
import json
import pathlib

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"

# Must match src/fuzzing.rs.
FUZZ_NOW = 1_750_000_000
HMAC_SECRET = b"bmsgw-fuzz-only-shared-secret-0123456789"
DEV_ISS = "https://idp.dev.bms-console-gateway.invalid"
HMAC_ISS = "https://hmac.fuzz.bms-console-gateway.invalid"
AUD = "bms-console-gateway"

P = "bbf1946d374b44a0a2a95533562ba954"
S = "cf2a8b97-b5c6-47ef-9714-eb27adf26e5b"
BODY = '{"remote_console":{"protocol":"serial","type":"serial"}}'


def write(target, name, data):
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (folder / name).write_bytes(data)


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(obj):
    return json.dumps(obj, separators=(",", ":"))


def private_key(path):
    return serialization.load_pem_private_key((ROOT / path).read_bytes(), password=None)


def sign_jwt(header, claims):
    message = f"{b64(compact(header).encode())}.{b64(compact(claims).encode())}".encode()
    alg = header["alg"]
    if alg == "ES256":
        der = private_key("config/dev/es256-private.pem").sign(message, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    elif alg == "RS256":
        signature = private_key("tests/data/keys/rs256-private.pem").sign(
            message, padding.PKCS1v15(), hashes.SHA256()
        )
    elif alg == "PS256":
        signature = private_key("tests/data/keys/rs256-private.pem").sign(
            message,
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
            hashes.SHA256(),
        )
    elif alg == "EdDSA":
        signature = private_key("tests/data/keys/ed25519-private.pem").sign(message)
    elif alg == "HS256":
        signature = hmac.new(HMAC_SECRET, message, hashlib.sha256).digest()
    else:
        raise ValueError(alg)
    return f"{message.decode()}.{b64(signature)}"


def dev_claims(**extra):
    claims = {"iss": DEV_ISS, "aud": AUD, "sub": "alice", "iat": FUZZ_NOW - 60, "exp": FUZZ_NOW + 600}
    claims.update(extra)
    return claims


def request(start, headers, body=BODY):
    lines = [start] + [f"{n}: {v}" for n, v in headers]
    return "\r\n".join(lines) + "\r\n\r\n" + body


def request_seeds():
    token = sign_jwt({"alg": "ES256", "kid": "bmsgw-dev-only-es256", "typ": "JWT"}, dev_claims())
    route = f"/v1/{P}/baremetalservers/{S}/remote_console"
    base = [
        ("Host", "127.0.0.1:8080"),
        ("Authorization", f"Bearer {token}"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(BODY))),
    ]
    t = "request_parse"
    write(t, "valid", request(f"POST {route} HTTP/1.1", base))
    write(t, "valid-trailing-slash", request(f"POST {route}/ HTTP/1.1", base))
    write(t, "valid-upper-case-ids", request(f"POST /v1/{P.upper()}/baremetalservers/{S.upper()}/remote_console HTTP/1.1", base))
    write(t, "valid-sdk-spacing-charset-no-cache", request(
        f"POST {route} HTTP/1.1",
        [("Content-Type", "application/json;charset=UTF-8"), ("Cache-Control", "max-age=0, no-cache"),
         ("X-Request-Id", "3eca308128e04e99b077a7f9fda67883"), ("Authorization", f"bearer  {token} ")],
        '{"remote_console": {"protocol": "serial", "type": "serial"}}',
    ))
    write(t, "bad-project-id", request(f"POST /v1/xyz/baremetalservers/{S}/remote_console HTTP/1.1", base))
    write(t, "bad-server-id", request(f"POST /v1/{P}/baremetalservers/not-a-uuid/remote_console HTTP/1.1", base))
    write(t, "method-get", request(f"GET {route} HTTP/1.1", base, ""))
    write(t, "no-such-route", request(f"POST /v1/{P}/baremetalservers/{S}/remote_console/x?a=b HTTP/1.1", base))
    write(t, "content-type-text", request(f"POST {route} HTTP/1.1", [("Content-Type", "text/plain")]))
    write(t, "content-length-too-large", request(f"POST {route} HTTP/1.1", [("Content-Type", "application/json"), ("Content-Length", "5000")]))
    write(t, "body-not-json", request(f"POST {route} HTTP/1.1", base, "{nope"))
    write(t, "protocol-vnc", request(f"POST {route} HTTP/1.1", base, '{"remote_console":{"protocol":"vnc","type":"serial"}}'))
    write(t, "type-missing", request(f"POST {route} HTTP/1.1", base, '{"remote_console":{"protocol":"serial"}}'))
    write(t, "remote-console-null", request(f"POST {route} HTTP/1.1", base, '{"remote_console":null,"extra":[1,2,{"a":true}]}'))
    write(t, "duplicate-body-field", request(f"POST {route} HTTP/1.1", base, '{"remote_console":{"protocol":"vnc","protocol":"serial","type":"serial"}}'))
    write(t, "type-not-string", request(f"POST {route} HTTP/1.1", base, '{"remote_console":{"protocol":"serial","type":1e400}}'))
    write(t, "two-authorization-headers", request(f"POST {route} HTTP/1.1", base + [("Authorization", "Basic YWxpY2U6cGFzcw==")]))
    write(t, "request-id-too-long", request(f"POST {route} HTTP/1.1", base + [("X-Request-Id", "r" * 129)]))
    write(t, "request-line-too-long", request(f"POST {route}?pad={'x' * 8200} HTTP/1.1", base))


def jwt_seeds():
    t = "jwt_verify"
    es = {"alg": "ES256", "kid": "bmsgw-dev-only-es256", "typ": "JWT"}
    hs = {"alg": "HS256", "typ": "JWT"}
    hs_claims = {"iss": HMAC_ISS, "aud": ["other", "second-audience"], "sub": "bot-7", "iat": FUZZ_NOW, "exp": FUZZ_NOW + 300}
    # Raw compact tokens, signed for real.
    write(t, "raw-es256-dev-key", sign_jwt(es, dev_claims(groups=["ops", "dba"])))
    write(t, "raw-rs256", sign_jwt({"alg": "RS256", "kid": "rsa"}, dev_claims()))
    write(t, "raw-ps256", sign_jwt({"alg": "PS256", "kid": "rsa"}, dev_claims()))
    write(t, "raw-eddsa", sign_jwt({"alg": "EdDSA", "kid": "ed"}, dev_claims()))
    write(t, "raw-hs256-audience-list", sign_jwt(hs, hs_claims))
    write(t, "raw-expired", sign_jwt(es, dev_claims(iat=FUZZ_NOW - 7200, exp=FUZZ_NOW - 3600)))
    write(t, "raw-over-size-cap", sign_jwt(es, dev_claims(pad="p" * 8200)))
    write(t, "raw-two-parts", ".".join(sign_jwt(es, dev_claims()).split(".")[:2]))
    none_header = b64(b'{"alg":"none"}')
    write(t, "raw-alg-none", f"{none_header}.{b64(compact(dev_claims()).encode())}.")

    # Structured inputs: header line, claims; the harness signs them with its key for `alg`.
    def structured(name, header, claims):
        h = header if isinstance(header, str) else compact(header)
        c = claims if isinstance(claims, str) else compact(claims)
        write(t, name, f"{h}\n{c}")

    structured("json-valid-es256", es, dev_claims())
    structured("json-valid-hs256", hs, hs_claims)
    structured("json-nbf-in-future", es, dev_claims(nbf=FUZZ_NOW + 3600))
    structured("json-lifetime-too-long", hs, dict(hs_claims, exp=FUZZ_NOW + 7200))
    structured("json-wrong-audience", es, dev_claims(aud=["someone-else"]))
    structured("json-audience-not-string", es, dev_claims(aud=[AUD, 7]))
    structured("json-subject-empty", es, dev_claims(sub=""))
    structured("json-exp-as-string", es, dev_claims(exp=str(FUZZ_NOW + 600)))
    structured("json-exp-float", es, dev_claims(exp=FUZZ_NOW + 600.75))
    structured("json-crit-header", dict(es, crit=["exp"]), dev_claims())
    structured("json-hs256-on-dev-issuer", {"alg": "HS256", "kid": "bmsgw-dev-only-es256"}, dev_claims())
    structured("json-unknown-kid", dict(es, kid="rotated-away"), dev_claims())
    structured("json-kid-number", dict(es, kid=1), dev_claims())
    structured("json-duplicate-claim", es, compact(dev_claims())[:-1] + ',"sub":"mallory"}')
    structured("json-duplicate-nested-key", es, compact(dev_claims())[:-1] + ',"x":{"a":1,"a":2}}')
    structured("json-unknown-issuer", es, dev_claims(iss="https://evil.example"))
    structured("json-huge-numbers", es, dev_claims(iat=-9223372036854775808, exp=18446744073709551615))


def upstream_seeds():
    t = "upstream_response"
    ok = {"remote_console": {"type": "serial", "protocol": "serial", "url": "https://console.bms.sim.invalid/serial/?token=5dde2079-6ba6-4307-86b2-c6b1b6dacf68"}}
    write(t, "200-console-url", "200\n" + compact(ok))
    write(t, "200-sdk-spacing", "200\n" + json.dumps(ok))
    write(t, "200-http-url", "200\n" + compact({"remote_console": {"url": "http://console.example/serial"}}))
    write(t, "200-url-not-string", "200\n" + compact({"remote_console": {"url": ["https://a"]}}))
    write(t, "200-legacy-console-shape", "200\n" + compact({"console": {"url": "https://c/", "type": "serial"}}))
    write(t, "400-bms-0395-nested", "400\n" + compact({"error": {"message": f"The server[{S}] is windows system and cannot support remote login.", "code": "BMS.0395"}}))
    write(t, "404-bms-0040-nested", "404\n" + compact({"error": {"message": "The server does not exist.", "code": "BMS.0040"}}))
    write(t, "400-nested-with-details", "400\n" + compact({"error": {"message": "bad", "code": "BMS.0001", "details": [{"code": "X", "message": "y"}]}}))
    write(t, "401-apigw-0301-flat", "401\n" + compact({"error_code": "APIGW.0301", "error_msg": "Incorrect IAM authentication information: verify aksk signature fail", "request_id": "3eca308128e04e99b077a7f9fda67883"}))
    write(t, "429-apigw-0308-flat", "429\n" + compact({"error_code": "APIGW.0308", "error_msg": "The throttling threshold has been reached", "request_id": "x"}))
    write(t, "403-camel-case", "403\n" + compact({"errorCode": "Common.0018", "errorMsg": "project not owned"}))
    write(t, "401-keystone-numeric-code", "401\n" + compact({"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}))
    write(t, "400-iam-flat", "400\n" + compact({"error_msg": "The username or password is wrong.", "error_code": "IAM.0001"}))
    write(t, "502-html", "502\n<html><body><h1>502 Bad Gateway</h1></body></html>")
    write(t, "503-empty", "503\n")
    write(t, "500-long-multibyte-message", "500\n" + compact({"error_code": "BMS.9999", "error_msg": "服务器错误" * 60}))
    iam = {"token": {"expires_at": "2020-01-04T09:05:22.701000Z", "issued_at": "2020-01-03T09:05:22.701000Z", "methods": ["password"], "project": {"id": P, "name": "cn-north-4"}}}
    write(t, "201-iam-token", "201\n" + json.dumps(iam))
    write(t, "201-iam-token-bad-expiry", "201\n" + compact({"token": {"expires_at": "2020-13-45T99:00:00Z"}}))


def config_seeds():
    t = "config_parse"
    for path in ["config/gateway.toml", "config/production.example.toml", "config/replicas.example.toml"]:
        write(t, "shipped-" + pathlib.Path(path).stem.replace(".", "-"), (ROOT / path).read_text())
    dev = (ROOT / "config/gateway.toml").read_text()
    write(t, "syntax-error", dev.replace('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1:8080'))
    write(t, "unknown-key", dev.replace("[cache]", "[cache]\nttl_secnds = 5"))
    write(t, "wrong-type", dev.replace("burst = 50", 'burst = "fifty"'))
    write(t, "bad-project-id", dev.replace(f'projects = ["{P}"]', 'projects = ["not-hex"]', 1))
    write(t, "redis-backend-without-section", dev.replace("[cache]", '[cache]\nbackend = "redis"'))
    write(t, "inline-secret", dev.replace('"file:dev/demo-secret-key"', '"hunter2"'))
    write(t, "hmac-issuer-and-tiers", dev.replace('algorithms = ["ES256"]', 'algorithms = ["HS256"]\nhmac_secret = "env:BMSGW_HMAC"')
          .replace("[cache]", '[rate_limit.tiers.bots]\nrequests_per_second = 0.5\nburst = 2\n\n[cache]')
          .replace('subjects = ["*"]', 'subjects = ["*"]\nservers = ["cf2a8b97-*"]\nrate_limit_tier = "bots"\nclaims = { groups = ["ops"] }'))
    write(t, "empty", "")
    write(t, "minimal-missing-auth", "[server]\nlisten = \"[::1]:0\"\n")


def signer_seeds():
    t = "signer_canonical"
    vectors = json.loads((ROOT / "tests/data/sdk-sign-vectors.json").read_text())["vectors"]
    for v in vectors:
        i, o = v["inputs"], v["outputs"]
        target = o["uri_as_sent"].replace(" ", "%20")
        headers = [(n, val) for n, val in o["headers_final"].items()]
        body = i["body"]["text"] or ""
        lines = [f"{i['method']} {target} {i['ak']} {i['sk']}"] + [f"{n}: {val}" for n, val in headers]
        write(t, "sdk-" + v["name"].replace("_", "-"), "\n".join(lines) + "\n\n" + body)
    write(t, "missing-sdk-date", f"POST /v1/{P}/baremetalservers/{S}/remote_console\nHost: bms.example\n\n{BODY}")
    write(t, "bad-sdk-date", "GET /\nX-Sdk-Date: 20240230T250000Z\n\n")
    write(t, "header-injection", "GET /\nX-Sdk-Date: 20240102T030405Z\nX-Evil: a\rb\n\n")
    write(t, "bad-access-key", "GET / AK,with=comma\nX-Sdk-Date: 20240102T030405Z\n\n")
    write(t, "duplicate-headers-and-stated-hash", "PUT /a/%2F/b?x=1&x=&=&y\nX-Sdk-Date: 20240102T030405Z\nhost: a\nHost: b\nX-Sdk-Content-Sha256: UNSIGNED-PAYLOAD\nx_underscore: skipped\n\nnot json")


if __name__ == "__main__":
    request_seeds()
    jwt_seeds()
    upstream_seeds()
    config_seeds()
    signer_seeds()
    for folder in sorted(CORPUS.iterdir()):
        files = list(folder.iterdir())
        print(f"{folder.name}: {len(files)} files, {sum(f.stat().st_size for f in files)} bytes")
