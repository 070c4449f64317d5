"""Security settings and log hygiene.

* TLS and SASL/SCRAM settings reach aiokafka: the kwargs our own clients get
  (`Settings.kafka_client_kwargs`), the credentials Faust gets (`faust_broker_credentials`,
  `app.conf.broker_credentials`) and what Faust's aiokafka driver turns them into; aiokafka
  accepts them; the TLS context trusts exactly the configured CA (a local TLS handshake).
* Secrets (SASL password, API token, a password in the ledger URL) never appear in
  `repr`/`str`/`model_dump_json` of the settings, nor in the log of a worker that runs with
  them set, nor in what a worker prints when it fails to start.
* No PHI in logs: a worker at log level debug adjudicates the sample claims (and serves API
  calls); its log holds no member id and no diagnosis code of the sample data.

* On Apache Kafka with a SASL_SSL listener (SCRAM-SHA-256, certificates made by the test):
  a worker configured with the documented `CLAIMS_*` settings decides the sample claims as
  batch mode does; a client without credentials, with a wrong password, or in plaintext is
  refused. (The embedded broker speaks neither TLS nor SCRAM here; a worker pointed at it
  with SCRAM fails at the SASL handshake.)
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from rules.rulebook import default_rulebooks
from contract import topics
from streams.kafka import client
from streams.devbrokers.tansu import EmbeddedBroker
from streams.devbrokers.process import BrokerError, free_port, wait_for_kafka
from streams.devbrokers.kafka import KafkaCluster
from streams.tools.demo import comparable, stop_worker
from streams.pipeline.batch import load_reference_dir, run_batch
from streams.settings import Settings
from streams.build import create_topics
from tests.harness import Pipeline

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "streams" / "sample_data"
SASL_PASSWORD = "sasl-Pa55word-7f3a9c2e1b"
API_TOKEN = "api-token-0d9e8f7a6b5c4d3e"
DB_PASSWORD = "db-Pa55word-4b1c2d9e"
SECRETS = (SASL_PASSWORD, API_TOKEN, DB_PASSWORD)


# --- certificates ----------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _make_pki(directory: Path, name: str = "claims-test-ca") -> Pki:
    """A throwaway CA, a server certificate for localhost/127.0.0.1 and a client certificate
    signed by it: with `cryptography` when it is installed, else with the openssl CLI."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(*(directory / f for f in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")))
    try:
        import cryptography  # noqa: F401
    except ImportError:
        _pki_openssl(pki, name)
    else:
        _pki_cryptography(pki, name)
    return pki


def _pki_openssl(pki: Pki, name: str) -> None:
    d = pki.ca.parent
    run = lambda *args: subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", pki.ca.name, "-days", "2",
        "-subj", f"/CN={name}")
    for leaf, cn, ext in (("server", "localhost", ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]),
                          ("client", "claims-worker", [])):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{leaf}.key", "-out", f"{leaf}.csr", "-subj", f"/CN={cn}", *ext)
        run("x509", "-req", "-in", f"{leaf}.csr", "-CA", pki.ca.name, "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{leaf}.pem", "-days", "2", "-copy_extensions", "copy")


def _pki_cryptography(pki: Pki, name: str) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(subject: str, key, issuer: str, issuer_key, ca: bool, san: list | None = None):
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def write_key(path: Path, key) -> None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    pki.ca.write_bytes(cert(name, ca_key, name, ca_key, True).public_bytes(serialization.Encoding.PEM))
    for path, key_path, cn, san in (
        (pki.server_cert, pki.server_key, "localhost",
         [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
        (pki.client_cert, pki.client_key, "claims-worker", None),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        write_key(key_path, key)
        path.write_bytes(cert(cn, key, name, ca_key, False, san).public_bytes(serialization.Encoding.PEM))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _make_pki(tmp_path_factory.mktemp("pki"))


def _secure_settings(pki: Pki, **overrides) -> Settings:
    values = {
        "bootstrap_servers": "kafka-1.example.internal:9093,kafka-2.example.internal:9093",
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "claims-svc",
        "sasl_password": SASL_PASSWORD, "ssl_cafile": pki.ca, "ssl_certfile": pki.client_cert,
        "ssl_keyfile": pki.client_key, "api_token": API_TOKEN,
        "ledger_url": f"postgresql://claims:{DB_PASSWORD}@db.example.internal:5432/claims",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


# --- TLS and SASL reach aiokafka ---------------------------------------------------------------


def _ca_names(ctx: ssl.SSLContext) -> set[str]:
    return {v for cert in ctx.get_ca_certs() for rdn in cert["subject"] for k, v in rdn if k == "commonName"}


async def test_tls_and_sasl_scram_settings_reach_aiokafka(pki: Pki) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient
    from faust.auth import SASLCredentials
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from streams.worker.app import create_app

    s = _secure_settings(pki)
    kwargs = s.kafka_client_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "claims-svc"
    assert kwargs["sasl_plain_password"] == SASL_PASSWORD
    ctx = kwargs["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert _ca_names(ctx) == {"claims-test-ca"}, "the context must trust the configured CA (and only it)"

    # aiokafka accepts them, as our own clients (admin, reference consumer) pass them (its
    # constructors refuse an unknown option or a protocol without its context); that they
    # are used is shown on a real broker: test_worker_decides_over_tls_and_scram_on_kafka_...
    AIOKafkaProducer(bootstrap_servers=s.bootstrap_list, **kwargs)
    AIOKafkaConsumer(bootstrap_servers=s.bootstrap_list, group_id=None, **kwargs)
    admin = AIOKafkaAdminClient(bootstrap_servers=s.bootstrap_list, **kwargs)
    await admin.close()

    # Faust: the credentials object, the app's config, and what its aiokafka driver builds
    creds = s.faust_broker_credentials()
    assert isinstance(creds, SASLCredentials)
    assert (creds.username, creds.password, creds.mechanism.value, creds.protocol.value) == \
        ("claims-svc", SASL_PASSWORD, "SCRAM-SHA-512", "SASL_SSL")
    assert creds.ssl_context is ctx
    app = create_app(s)
    assert app.conf.broker_credentials is not None
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)
    assert auth == {key: kwargs[key] for key in auth}, "Faust's clients must get what ours get"
    assert [str(u) for u in app.conf.broker] == ["kafka://kafka-1.example.internal:9093", "kafka://kafka-2.example.internal:9093"]

    # TLS alone, and SASL without TLS
    tls = _secure_settings(pki, security_protocol="SSL")
    assert tls.kafka_client_kwargs().keys() == {"security_protocol", "ssl_context"}
    assert credentials_to_aiokafka_auth(create_app(tls).conf.broker_credentials)["security_protocol"] == "SSL"
    plain = _secure_settings(pki, security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256")
    assert "ssl_context" not in plain.kafka_client_kwargs()
    assert credentials_to_aiokafka_auth(plain.faust_broker_credentials()) == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256", "sasl_plain_username": "claims-svc",
        "sasl_plain_password": SASL_PASSWORD, "ssl_context": None}
    assert _secure_settings(pki, security_protocol="PLAINTEXT").faust_broker_credentials() is None


def _tls_server(pki: Pki) -> tuple[int, threading.Thread]:
    """A one-shot TLS server with the CA-signed localhost certificate, asking for a client certificate."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
    server_ctx.load_verify_locations(pki.ca)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        with listener:
            listener.settimeout(10)
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(tls.getpeercert()["subject"][0][0][1].encode())
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread


def test_tls_context_verifies_the_broker_with_the_configured_ca_and_presents_the_client_cert(pki: Pki, tmp_path: Path) -> None:
    ctx = _secure_settings(pki).ssl_context
    port, thread = _tls_server(pki)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.recv(100) == b"claims-worker"  # the server saw our client certificate
    thread.join(5)
    # another CA: the handshake must fail
    other = _secure_settings(_make_pki(tmp_path / "other", name="someone-else-ca")).ssl_context
    port, thread = _tls_server(pki)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, pytest.raises(ssl.SSLCertVerificationError):
        other.wrap_socket(raw, server_hostname="localhost")
    thread.join(5)


# --- secrets never printed ----------------------------------------------------------------------


def test_secrets_never_in_repr_str_or_dump(pki: Pki) -> None:
    from streams.worker.app import create_app
    from streams.ledger.store import Ledger

    s = _secure_settings(pki)
    shown = {
        "repr": repr(s), "str": str(s), "model_dump_json": s.model_dump_json(), "model_dump": repr(s.model_dump()),
        "faust credentials": repr(s.faust_broker_credentials()),
        "app.conf.broker_credentials": repr(create_app(s).conf.broker_credentials),
    }
    for where, text in shown.items():
        for secret in SECRETS:
            assert secret not in text, f"a secret appears in {where}: {text[:300]}"
    assert "claims-svc" in shown["repr"]  # the non-secret parts still show
    assert "db.example.internal:5432/claims" in shown["repr"] and s.ledger_url.count(DB_PASSWORD) == 1  # usable as is
    in_query = _secure_settings(pki, ledger_url=f"postgresql://db.example.internal/claims?sslmode=require&password={DB_PASSWORD}")
    assert DB_PASSWORD not in repr(in_query) + str(in_query) + in_query.model_dump_json()
    probe = Ledger.__new__(Ledger)
    probe.url, probe.postgres = s.ledger_url, True
    assert DB_PASSWORD not in probe.describe() and "db.example.internal" in probe.describe()


def _worker_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "streams.cli.main", "worker", *args]


def _worker_env(bootstrap: str, workdir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAIMS_")}
    env.update({
        "CLAIMS_BOOTSTRAP_SERVERS": bootstrap, "CLAIMS_LEDGER_URL": f"sqlite:///{workdir / 'ledger.db'}",
        "CLAIMS_DATA_DIR": str(workdir / "data"), "CLAIMS_WEB_PORT": "0", **extra,
    })
    return env


@pytest.mark.broker
@pytest.mark.parametrize("failure", [pytest.param("sasl_scram_against_plaintext_broker", marks=pytest.mark.both_brokers),  # SASL
                                     "ledger_unreachable"])
def test_worker_start_failure_prints_no_secret(failure: str, fresh_bootstrap: str, tmp_path: Path) -> None:
    extra = {"CLAIMS_API_TOKEN": API_TOKEN, "CLAIMS_SASL_USERNAME": "claims-svc", "CLAIMS_SASL_PASSWORD": SASL_PASSWORD}
    if failure == "sasl_scram_against_plaintext_broker":
        extra.update(CLAIMS_SECURITY_PROTOCOL="SASL_PLAINTEXT", CLAIMS_SASL_MECHANISM="SCRAM-SHA-512")
    else:
        extra.update(CLAIMS_LEDGER_URL=f"postgresql://claims:{DB_PASSWORD}@127.0.0.1:{free_port()}/claims")
    proc = subprocess.run(_worker_cmd("--loglevel", "debug"), env=_worker_env(fresh_bootstrap, tmp_path, **extra),
                          capture_output=True, timeout=60, check=False)
    output = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode != 0 and output.strip(), output
    if failure == "sasl_scram_against_plaintext_broker":
        # Tansu answers the handshake with an unsupported mechanism, Apache Kafka (no SASL on
        # that listener) with an illegal SASL state: either way the client asked for SASL
        assert "SaslMechanism" in output or "IllegalSaslState" in output, \
            f"the SASL mechanism never reached the broker: {output[-500:]}"
    else:
        assert "127.0.0.1" in output and "claims" in output, output  # the store is named, without its password
    for secret in SECRETS:
        assert secret not in output, f"secret printed on a failed start: {output[-500:]}"
    assert "Traceback" not in output, output[-1000:]


# --- a worker at debug level, on the sample data -------------------------------------------------


@dataclass
class DebugRun:
    log: str
    members: set[str]
    diagnoses: set[str]
    claim_ids: set[str]


def _sample_phi() -> tuple[set[str], set[str], set[str]]:
    members, diagnoses, claims = set(), set(), set()
    for raw in (SAMPLES / "claims.jsonl").read_bytes().splitlines():
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(obj, dict):
            continue
        if isinstance(obj.get("member_id"), str):
            members.add(obj["member_id"])
        if isinstance(obj.get("claim_id"), str):
            claims.add(obj["claim_id"])
        for code in obj.get("diagnosis_codes") or []:
            if isinstance(code, str):
                diagnoses.add(code)
    for raw in (SAMPLES / "reference" / "members.jsonl").read_bytes().splitlines():
        members.add(orjson.loads(raw)["member_id"])
    return members, diagnoses, claims


def _api(port: int, method: str, path: str, body: dict | None = None, token: str | None = API_TOKEN) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     data=orjson.dumps(body) if body is not None else None)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DebugRun]:
    """One worker at log level debug, with a SASL password and an API token set (plaintext
    broker: the password is configured, not used), adjudicating the sample claims and
    serving API calls; its whole log."""
    workdir = tmp_path_factory.mktemp("debug-worker")
    lines = [ln for ln in (SAMPLES / "claims.jsonl").read_bytes().splitlines() if ln.strip()]
    expected = list(run_batch(lines, load_reference_dir(SAMPLES / "reference"), default_rulebooks()))
    with EmbeddedBroker(log_path=workdir / "tansu.log") as broker:
        pipe = Pipeline(broker.bootstrap, workdir, partitions=2)
        env = _worker_env(broker.bootstrap, workdir, **pipe.env, CLAIMS_WEB_PORT_FILE=str(workdir / "debug.port"),
                          CLAIMS_API_TOKEN=API_TOKEN, CLAIMS_SASL_USERNAME="claims-svc", CLAIMS_SASL_PASSWORD=SASL_PASSWORD)
        log_path = workdir / "worker-debug.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(_worker_cmd("--loglevel", "debug"), env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        pipe.workers["debug"] = proc
        try:
            asyncio.run(client.produce(broker.bootstrap, client.reference_records(SAMPLES / "reference")))
            pipe.submit(lines)
            wanted = Counter(comparable(r) for r in expected)

            def done(records: list[dict]) -> bool:
                assert proc.poll() is None, f"the worker died: see {log_path}"
                return Counter(comparable(r) for r in records) >= wanted

            records = asyncio.run(client.collect(broker.bootstrap, done, 120))
            missing = wanted - Counter(comparable(r) for r in records)
            assert not missing, f"{sum(missing.values())} sample answers missing, e.g. {list(missing)[:2]!r:.600}; see {log_path}"
            # the HTTP API at debug level: a lookup, a bad token, a submission, an invalid one
            web_port = pipe.web_port("debug")
            assert _api(web_port, "GET", "/v1/claims/C26-0001") == 200
            assert _api(web_port, "GET", "/v1/claims/C26-0001", token="wrong-token") == 401
            claim = {"claim_id": "C26-API-1", "form": "CMS-1500", "member_id": "M1002", "provider_npi": "1245678903",
                     "authorization_number": "PA26-1002", "diagnosis_codes": ["E43"],
                     "lines": [{"procedure_code": "S9500", "service_date": "2026-01-12", "units": "1", "charge_amount": "150.00"}]}
            assert _api(web_port, "POST", "/v1/claims?wait=10", claim) in (200, 202)
            assert _api(web_port, "POST", "/v1/claims", {**claim, "claim_id": "C26-API-2", "member_id": 12}) == 422
            time.sleep(1.0)
            assert proc.poll() is None, "the worker died"
        finally:
            pipe.stop_all()
    members, diagnoses, claims = _sample_phi()
    yield DebugRun(log_path.read_text(errors="replace"), members, diagnoses, claims | {"C26-API-1", "C26-API-2"})


def _occurrences(text: str, words: set[str]) -> dict[str, int]:
    """Whole-token occurrences (a member id inside a longer token or a hash does not count)."""
    found = {}
    for word in words:
        n = len(re.findall(rf"(?<![A-Za-z0-9]){re.escape(word)}(?![A-Za-z0-9])", text))
        if n:
            found[word] = n
    return found


@pytest.mark.broker
def test_debug_log_is_json_and_says_something(debug_run: DebugRun) -> None:
    entries = [json.loads(ln) for ln in debug_run.log.splitlines() if ln.startswith("{")]
    assert any(e.get("logger", "").startswith("claims") for e in entries), debug_run.log[-1000:]
    assert any(e.get("level") == "debug" for e in entries), "nothing logged at debug: the PHI scan would prove little"


@pytest.mark.broker
def test_worker_log_has_no_secret(debug_run: DebugRun) -> None:
    for secret in SECRETS:
        assert secret not in debug_run.log


@pytest.mark.broker
def test_worker_log_has_no_member_id_or_diagnosis_code(debug_run: DebugRun) -> None:
    assert debug_run.members and debug_run.diagnoses
    assert not _occurrences(debug_run.log, debug_run.members), "member ids in the worker log"
    assert not _occurrences(debug_run.log, debug_run.diagnoses), "diagnosis codes in the worker log"


@pytest.mark.broker
def test_worker_log_has_no_raw_claim_id(debug_run: DebugRun) -> None:
    assert not _occurrences(debug_run.log, debug_run.claim_ids), "raw claim ids in the worker log"


# --- TLS and SASL/SCRAM against Apache Kafka ---------------------------------------------------


def _sasl_ssl_kafka(pki: Pki, workdir: Path) -> KafkaCluster:
    """One Apache Kafka node whose client listener is SASL_SSL with SCRAM-SHA-256 (users made
    when its storage is formatted), serving the test CA's localhost certificate."""
    keystore = workdir / "broker-keystore.pem"
    keystore.write_text(pki.server_key.read_text() + pki.server_cert.read_text())
    config = {
        "sasl.enabled.mechanisms": "SCRAM-SHA-256",
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-256",
        "listener.name.client.scram-sha-256.sasl.jaas.config":
            'org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="broker-secret";',
        "ssl.keystore.type": "PEM", "ssl.keystore.location": str(keystore),
        "ssl.truststore.type": "PEM", "ssl.truststore.location": str(pki.ca),
    }
    users = ["--add-scram", "SCRAM-SHA-256=[name=broker,password=broker-secret]",
             "--add-scram", f"SCRAM-SHA-256=[name=claims-svc,password={SASL_PASSWORD}]"]
    return KafkaCluster(data_dir=workdir / "kafka", config=config, listener="SASL_SSL", format_args=users)


@pytest.mark.broker
def test_worker_decides_over_tls_and_scram_on_kafka_and_others_are_refused(kafka_available, pki: Pki, tmp_path: Path) -> None:
    lines = [ln for ln in (SAMPLES / "claims.jsonl").read_bytes().splitlines() if ln.strip()]
    wanted = Counter(comparable(r) for r in run_batch(lines, load_reference_dir(SAMPLES / "reference"), default_rulebooks()))
    secure = {"CLAIMS_SECURITY_PROTOCOL": "SASL_SSL", "CLAIMS_SASL_MECHANISM": "SCRAM-SHA-256",
              "CLAIMS_SASL_USERNAME": "claims-svc", "CLAIMS_SASL_PASSWORD": SASL_PASSWORD,
              "CLAIMS_SSL_CAFILE": str(pki.ca), "CLAIMS_PARTITIONS": "2"}
    with _sasl_ssl_kafka(pki, tmp_path) as kafka:
        env = _worker_env(kafka.bootstrap, tmp_path, **secure)
        s = Settings(_env_file=None, **{k.removeprefix("CLAIMS_").lower(): v for k, v in env.items() if k.startswith("CLAIMS_")})
        kwargs = s.kafka_client_kwargs()
        asyncio.run(wait_for_kafka(kafka.bootstrap, 60, kwargs))
        create_topics(s)
        log_path = tmp_path / "worker.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(_worker_cmd(), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            asyncio.run(client.produce(kafka.bootstrap, client.reference_records(SAMPLES / "reference"), **kwargs))
            asyncio.run(client.produce(kafka.bootstrap, [(topics.SUBMITTED.name, client.submission_key(ln), ln) for ln in lines], **kwargs))

            def done(records: list[dict]) -> bool:
                assert proc.poll() is None, f"the worker died: see {log_path}"
                return Counter(comparable(r) for r in records) >= wanted

            records = asyncio.run(client.collect(kafka.bootstrap, done, 120, **kwargs))
        finally:
            stop_worker(proc)
        assert Counter(comparable(r) for r in records) >= wanted
        assert proc.returncode == 0
        assert SASL_PASSWORD not in log_path.read_text(errors="replace")
        refused = {
            "TLS without SASL credentials": {"security_protocol": "SSL", "ssl_context": s.ssl_context},
            "a wrong password": {**kwargs, "sasl_plain_password": "not-the-password"},
            "an unknown user": {**kwargs, "sasl_plain_username": "intruder"},
            "plaintext": {},
        }
        for who, client_kwargs in refused.items():
            with pytest.raises(BrokerError):
                asyncio.run(wait_for_kafka(kafka.bootstrap, 4, client_kwargs))
                pytest.fail(f"the broker answered a client with {who}")
