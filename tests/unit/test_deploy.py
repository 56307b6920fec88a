"""The deploy files (deploy/), checked statically: no container engine or cluster runs here.

What runs: hadolint on the Dockerfile; the compose file against the Compose Specification's
schema (check-jsonschema) and `docker compose config` where the compose plugin exists; the
Helm chart linted and rendered by Helm's own Go library (helm-python-sdk, or a `helm`
binary when one is on PATH) and every rendered manifest validated against the Kubernetes
API schemas (kubernetes-validate, strict: unknown fields fail); the PKI step for compose run
for real. Then checks of our own that these tools cannot make: the configs parse with
scifed's own models, the coordinator listens on every interface of its container, state is
on a volume, every port scifed opens is published (and the SuperLink's own port is not),
and the TLS files each config names are in the mounts and Secrets given to it.
The pip-installed tools are dev dependencies, so in CI none of these tests skips.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import tomllib
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath

import pytest
import yaml
from cryptography import x509

from scifed.config import CoordinatorConfig, NodeConfig, load_config, parse_model

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "scifed"
PROXY_CONF = CHART / "files" / "flower-proxy.conf"
KUBERNETES_VERSION = "1.33.0"  # the oldest Kubernetes the chart is checked against


def _tool(name: str) -> str | None:
    """A tool on PATH, or beside this interpreter (the venv's pip-installed tools)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else None


def _need(name: str) -> str:
    found = _tool(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]' brings it)")
    return found


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


# -- Dockerfile ----------------------------------------------------------------------------
def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each line, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    steps = _instructions(dockerfile)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_dockerfile_passes_hadolint():
    hadolint = _need("hadolint")
    res = _run([hadolint, "--no-color", str(DEPLOY / "Dockerfile")])
    assert res.returncode == 0, res.stdout + res.stderr


def _pyproject_pin(name: str) -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    [spec] = [d for d in deps if re.match(rf"{name}\s*[=<>!~]", d)]
    return spec.replace(" ", "")


def test_dockerfile_pins_torch_cpu_and_flower_as_pyproject_does():
    runs = [args for word, args in _instructions(DEPLOY / "Dockerfile") if word == "RUN"]
    torch, flwr = _pyproject_pin("torch"), _pyproject_pin("flwr")
    assert torch == "torch==2.13.0" and flwr == "flwr==1.41.*"
    cpu = [r for r in runs if "download.pytorch.org/whl/cpu" in r]
    assert cpu and all(torch in r.split() for r in cpu), cpu
    # the CPU index is the only index that install may use, and it comes before scifed's
    assert all("--extra-index-url" not in r for r in runs)
    scifed = [i for i, r in enumerate(runs) if "pip install ./" in r]
    assert scifed and runs.index(cpu[0]) < scifed[0]
    assert torch in runs[scifed[0]] and f'"{flwr}"' in runs[scifed[0]]


def test_image_runs_as_a_non_root_user_owning_its_state_volume():
    final = _final_stage(DEPLOY / "Dockerfile")
    users = [args for word, args in final if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    uid = users[-1].split(":")[0]
    run = " ".join(args for word, args in final if word == "RUN")
    assert f"--uid {uid}" in run
    volumes = [args for word, args in final if word == "VOLUME"]
    assert volumes == ['["/var/lib/scifed/state"]']
    # made and given to that user before USER, so a fresh volume starts owned by it
    assert "mkdir -p /var/lib/scifed/state" in run
    assert "chown -R scifed:scifed /var/lib/scifed" in run
    [check] = [args for word, args in final if word == "HEALTHCHECK"]
    assert '"/opt/scifed/healthcheck.py"' in check
    assert ("COPY", "deploy/healthcheck.py /opt/scifed/healthcheck.py") in final


# -- the image's health check, against real sockets -------------------------------------------
def _healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SCIFED_")}
    return _run([sys.executable, str(DEPLOY / "healthcheck.py")],
                env={**clean, "PYTHONPATH": str(REPO), **env})


def test_healthcheck_of_the_coordinator_follows_its_listen_port(tmp_path):
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    cfg = tmp_path / "coordinator.yaml"
    cfg.write_text(f"listen: 0.0.0.0:{port}\nstate_dir: s\n"
                   "tls: {ca: a, cert: b, key: c}\n")
    try:
        assert _healthcheck({"SCIFED_COORDINATOR_CONFIG": str(cfg)}).returncode == 0
    finally:
        server.close()
    res = _healthcheck({"SCIFED_COORDINATOR_CONFIG": str(cfg)})
    assert res.returncode == 1 and f"coordinator port {port}" in res.stderr


def test_healthcheck_of_the_node_follows_its_admin_socket(tmp_path):
    node = yaml.safe_load((DEPLOY / "compose" / "node-a.yaml").read_text())
    node["state_dir"] = str(tmp_path)
    cfg = tmp_path / "node.yaml"
    cfg.write_text(yaml.safe_dump(node))
    res = _healthcheck({"SCIFED_NODE_CONFIG": str(cfg)})
    assert res.returncode == 1 and "admin.sock" in res.stderr
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "admin.sock"))
        server.listen()
        assert _healthcheck({"SCIFED_NODE_CONFIG": str(cfg)}).returncode == 0


def test_healthcheck_without_a_role_says_what_to_set():
    res = _healthcheck({})
    assert res.returncode == 1 and "SCIFED_COORDINATOR_CONFIG" in res.stderr


# -- docker compose ---------------------------------------------------------------------------
COMPOSE = DEPLOY / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_follows_the_compose_specification():
    checker = _need("check-jsonschema")
    res = _run([checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert res.returncode == 0, res.stdout + res.stderr


def test_docker_compose_config_accepts_the_file():
    docker = _tool("docker")
    if docker is None or _run([docker, "compose", "version"]).returncode != 0:
        pytest.skip("the docker compose plugin is not installed (the schema test above runs)")
    env = {**os.environ, "POSTGRES_PASSWORD": "not-a-secret"}
    res = _run([docker, "compose", "-f", str(COMPOSE), "config", "-q"], env=env)
    assert res.returncode == 0, res.stderr


def _mounts(service: dict) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of a service's short-syntax volumes."""
    out = []
    for spec in service.get("volumes", []):
        source, target, *mode = spec.split(":")
        out.append((source, target, mode == ["ro"]))
    return out


def _compose_config(compose: dict, service: str, model):
    env = compose["services"][service]["environment"]
    var = "SCIFED_COORDINATOR_CONFIG" if model is CoordinatorConfig else "SCIFED_NODE_CONFIG"
    [source] = [s for s, t, _ in _mounts(compose["services"][service]) if t == env[var]]
    path = (DEPLOY / source).resolve()
    return parse_model(path.read_text(), str(path), model)


def _published(service: dict) -> set[int]:
    return {int(p.split(":")[-1]) for p in service.get("ports", [])}


def test_compose_coordinator_listens_on_all_interfaces_and_publishes_its_ports(compose):
    services = compose["services"]
    coord = _compose_config(compose, "coordinator", CoordinatorConfig)
    node = _compose_config(compose, "node-a", NodeConfig)
    host, port = _host_port(coord.listen)
    assert host == "0.0.0.0"
    published = _published(services["coordinator"])
    assert port in published
    # the node dials the coordinator's service name and port
    assert node.coordinator == f"coordinator:{port}"
    # Flower: the SuperLink stays on loopback, unpublished; the proxy in the coordinator's
    # network forwards only the Fleet API to it, on the port the node is given
    proxy = services["flower-proxy"]
    assert proxy["network_mode"] == "service:coordinator"
    conf = PROXY_CONF.read_text()
    [proxy_port] = [int(p) for p in re.findall(r"listen (\d+) ssl;", conf)]
    assert node.flower_superlink == f"coordinator:{proxy_port}" and proxy_port in published
    assert coord.flower_port not in published
    targets = set(re.findall(r"proxy_pass https://([\d.]+:\d+);", conf))
    assert targets == {f"127.0.0.1:{coord.flower_port}"}
    assert re.findall(r"location (?:= )?(\S+) \{", conf) == ["/v1/fleet/", "/health", "/"]
    assert re.search(r"location / \{\s*return 404;", conf)
    # a node opens no port
    assert not _published(services["node-a"])


def test_compose_puts_state_on_named_volumes_and_waits_for_health(compose):
    services = compose["services"]
    for name, model in (("coordinator", CoordinatorConfig), ("node-a", NodeConfig)):
        cfg = _compose_config(compose, name, model)
        [(source, _, ro)] = [m for m in _mounts(services[name])
                             if m[1] == str(cfg.state_dir)]
        assert source in compose["volumes"] and not ro, name
    coord = _compose_config(compose, "coordinator", CoordinatorConfig)
    assert coord.database.startswith("postgresql+psycopg://") and "@postgres:" in coord.database
    assert ":" not in coord.database.split("//")[1].split("@")[0], "no password in the URL"
    assert services["coordinator"]["environment"]["PGPASSWORD"] == \
        services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert services["coordinator"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["node-a"]["depends_on"]["coordinator"]["condition"] == "service_healthy"
    assert services["flower-proxy"]["healthcheck"]["test"]


@pytest.fixture(scope="module")
def compose_pki(tmp_path_factory) -> Path:
    """deploy/compose-pki.sh run for real (with this checkout's scifed) in a copy of deploy/."""
    where = tmp_path_factory.mktemp("compose")
    for name in ("compose", "helm"):
        shutil.copytree(DEPLOY / name, where / name)
    for name in ("docker-compose.yml", "compose-pki.sh"):
        shutil.copy2(DEPLOY / name, where / name)
    env = {**os.environ, "PYTHONPATH": str(REPO), "SCIFED": f"{sys.executable} -m cli"}
    res = _run(["sh", str(where / "compose-pki.sh"), "init", "coord.example.org"],
               cwd=where, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    return where


def _host_file(where: Path, service: dict, container_path: Path) -> Path:
    """The host file a container path of a service's bind mounts comes from."""
    for source, target, _ in _mounts(service):
        if source.startswith(".") and container_path.is_relative_to(target):
            return where / source / container_path.relative_to(target)
    raise AssertionError(f"{container_path} is in no bind mount")


def _sans(cert: Path) -> set[str]:
    ext = x509.load_pem_x509_certificate(cert.read_bytes()).extensions
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName)) | {
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)}


def test_compose_pki_step_makes_the_files_each_config_names(compose, compose_pki):
    services = compose["services"]
    for name, model in (("coordinator", CoordinatorConfig), ("node-a", NodeConfig)):
        tls = _compose_config(compose, name, model).tls
        for path in (tls.ca, tls.cert, tls.key, tls.crl):
            if path is not None:
                assert _host_file(compose_pki, services[name], path).is_file(), (name, path)
        key = _host_file(compose_pki, services[name], tls.key)
        assert key.stat().st_mode & 0o077 == 0, f"{key} readable by others"
    # the proxy's certificate and key are the coordinator's, where its conf names them
    conf = PROXY_CONF.read_text()
    for path in re.findall(r"ssl_(?:certificate|certificate_key|trusted_certificate) (\S+);",
                           conf):
        assert _host_file(compose_pki, services["flower-proxy"], PurePosixPath(path)).is_file()
    # the CA's private key is mounted into no container
    for service in services.values():
        for source, _, _ in _mounts(service):
            if source.startswith("."):
                assert not (compose_pki / source / "ca.key").exists(), source


def test_compose_coordinator_certificate_names_what_each_client_checks(compose, compose_pki):
    coord = _compose_config(compose, "coordinator", CoordinatorConfig)
    node = _compose_config(compose, "node-a", NodeConfig)
    sans = _sans(_host_file(compose_pki, compose["services"]["coordinator"], coord.tls.cert))
    [proxy_checks] = set(re.findall(r"proxy_ssl_name (\S+);", PROXY_CONF.read_text()))
    assert {_host_port(node.coordinator)[0], _host_port(node.flower_superlink)[0],
            proxy_checks, "127.0.0.1", "coord.example.org"} <= sans, sans
    node_cert = _host_file(compose_pki, compose["services"]["node-a"], node.tls.cert)
    subject = x509.load_pem_x509_certificate(node_cert.read_bytes()).subject
    assert subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == node.name


def test_the_example_configs_load():
    """The compose configs are what scifed itself loads (paths resolved, fields checked)."""
    assert load_config(DEPLOY / "compose" / "coordinator.yaml", CoordinatorConfig).flower_port
    assert load_config(DEPLOY / "compose" / "node-a.yaml", NodeConfig).flower_superlink


class _SuperLinkStandIn(BaseHTTPRequestHandler):
    """Answers every request with the path it saw (and counts them), over TLS with the
    coordinator's certificate, as the SuperLink does on its loopback port."""

    seen: list[str] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        type(self).seen.append(self.path)
        body = f"superlink {self.path} {length}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _https(port: int, ca: Path, server_name: str, method: str, path: str,
           body: bytes = b"") -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=server_name) as tls:
        tls.sendall(f"{method} {path} HTTP/1.1\r\nHost: {server_name}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body)
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


def test_flower_proxy_passes_only_the_fleet_api_to_the_superlink(compose, compose_pki,
                                                                 tmp_path):
    """files/flower-proxy.conf run by nginx (ports and directories moved to this test's),
    in front of a stand-in SuperLink with the certificates compose-pki.sh made."""
    nginx = _need("nginx")
    pki = _host_file(compose_pki, compose["services"]["flower-proxy"],
                     PurePosixPath("/etc/scifed/pki/ca.crt")).parent
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _SuperLinkStandIn)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / "coordinator.crt", pki / "coordinator.key")
    upstream.socket = ctx.wrap_socket(upstream.socket, server_side=True)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    proxy_port = _free_port()
    conf = (PROXY_CONF.read_text().replace("/tmp/", f"{tmp_path}/")
            .replace("/etc/scifed/pki", str(pki))
            .replace("listen 9443 ssl", f"listen 127.0.0.1:{proxy_port} ssl")
            .replace("127.0.0.1:9093", f"127.0.0.1:{upstream.server_address[1]}"))
    if os.geteuid() == 0:  # in the container master and workers are one user, as here
        conf = "user root;\n" + conf
    (tmp_path / "nginx.conf").write_text(conf)
    proc = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
                             "-e", "stderr", "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", proxy_port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "nginx did not listen"
                time.sleep(0.05)
        ca = pki / "ca.crt"
        node = _compose_config(compose, "node-a", NodeConfig)
        name = _host_port(node.flower_superlink)[0]  # what the SuperNode checks
        _SuperLinkStandIn.seen.clear()
        assert _https(proxy_port, ca, name, "GET", "/health") == (200, b"superlink /health 0")
        big = os.urandom(3 << 20)  # a model update in one request
        assert _https(proxy_port, ca, name, "POST", "/v1/fleet/push-messages", big) == (
            200, f"superlink /v1/fleet/push-messages {len(big)}".encode())
        for path in ("/v1/control/start-run", "/v1/serverappio/pull", "/", "/v1/fleetx"):
            assert _https(proxy_port, ca, name, "POST", path)[0] == 404, path
        assert _SuperLinkStandIn.seen == ["/health", "/v1/fleet/push-messages"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        upstream.shutdown()
        upstream.server_close()


# -- Helm chart -------------------------------------------------------------------------------
NODES = [{"name": "node-a", "platform": "Key Lab A", "pkiSecret": "node-a-pki"},
         {"name": "node-b", "platform": "Key Lab B", "pkiSecret": "node-b-pki",
          "data": {"existingClaim": "lab-b-data"}}]
VALUE_SETS = {
    "bundled-postgresql": {"postgresql": {"password": "not-a-secret"}, "nodes": NODES},
    "external-database": {
        "postgresql": {"enabled": False},
        "externalDatabase": {"url": "postgresql+psycopg://scifed@db.example.org/scifed",
                             "existingSecret": "db", "passwordKey": "pw"}},
    "sqlite-no-flower": {"postgresql": {"enabled": False}, "flower": {"enabled": False},
                         "nodes": NODES[:1]},
    "nodes-only": {"coordinator": {"enabled": False}, "postgresql": {"enabled": False},
                   "coordinatorAddress": "coord.example.org:7443",
                   "flowerSuperlinkAddress": "coord.example.org:9443", "nodes": NODES[1:]},
}


class _Helm:
    """`helm lint` and `helm template`: the helm binary when there is one, else Helm's Go
    SDK through helm-python-sdk (the same chart loader, linter and template engine)."""

    def __init__(self) -> None:
        self.binary = _tool("helm")
        if self.binary is None:
            try:
                import helm_python
            except ImportError:
                pytest.skip("neither helm nor helm-python-sdk is installed "
                            "(pip install -e '.[dev]' brings the latter)")
            self.sdk = helm_python

    def lint(self, values: dict, tmp: Path) -> list[str]:
        """Problems at warning level or above (strict)."""
        if self.binary:
            vals = tmp / "values.yaml"
            vals.write_text(yaml.safe_dump(values))
            res = _run([self.binary, "lint", "--strict", str(CHART), "-f", str(vals)])
            return [] if res.returncode == 0 else [res.stdout + res.stderr]
        report = self.sdk.lint(str(CHART), values, strict=True)
        return [*report["errors"],
                *(f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] > 1)]

    def template(self, values: dict, tmp: Path) -> list[dict]:
        if self.binary:
            vals = tmp / "values.yaml"
            vals.write_text(yaml.safe_dump(values))
            res = _run([self.binary, "template", "fed", str(CHART), "-n", "scifed",
                        "-f", str(vals)])
            assert res.returncode == 0, res.stderr
            text = res.stdout
        else:
            rendered = self.sdk.Chart.load(str(CHART)).render(values, name="fed",
                                                               namespace="scifed")
            text = "\n---\n".join(v for k, v in rendered.items() if k.endswith(".yaml"))
        return [d for d in yaml.safe_load_all(text) if d]

    def error(self, values: dict, tmp: Path) -> str:
        if self.binary:
            vals = tmp / "values.yaml"
            vals.write_text(yaml.safe_dump(values))
            res = _run([self.binary, "template", "fed", str(CHART), "-f", str(vals)])
            assert res.returncode != 0
            return res.stderr
        with pytest.raises(Exception) as exc:
            self.sdk.Chart.load(str(CHART)).render(values, name="fed", namespace="scifed")
        return str(exc.value)


@pytest.fixture(scope="module")
def helm() -> _Helm:
    return _Helm()


@pytest.fixture(scope="module")
def rendered(helm, tmp_path_factory) -> dict[str, list[dict]]:
    return {name: helm.template(values, tmp_path_factory.mktemp(name))
            for name, values in VALUE_SETS.items()}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_chart_passes_helm_lint(helm, name, tmp_path):
    assert helm.lint(VALUE_SETS[name], tmp_path) == []


def test_every_rendered_manifest_is_valid_kubernetes(rendered):
    try:
        import kubernetes_validate
    except ImportError:
        pytest.skip("kubernetes-validate is not installed (pip install -e '.[dev]')")
    for name, docs in rendered.items():
        assert docs, name
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(f"{name}: {doc['kind']} {doc['metadata']['name']}: "
                                     f"{exc.message} at {list(exc.path)}") from None


def _one(docs: list[dict], kind: str, name: str) -> dict:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _chart_config(docs: list[dict], configmap: str, key: str, model):
    text = _one(docs, "ConfigMap", configmap)["data"][key]
    return parse_model(text, f"{configmap}/{key}", model)


def _container(sts: dict, name: str) -> dict:
    [c] = [c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return c


def _mounted_file(sts: dict, container: dict, path: Path) -> tuple[dict, str]:
    """The pod volume and the file in it that a container sees at ``path``."""
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"].get("volumes", [])}
    claims = {c["metadata"]["name"]: {"claim": c} for c in sts["spec"].get(
        "volumeClaimTemplates", [])}
    for m in container["volumeMounts"]:
        target = PurePosixPath(m["mountPath"])
        if m.get("subPath") and PurePosixPath(path) == target:
            return volumes[m["name"]], m["subPath"]
        if not m.get("subPath") and PurePosixPath(path).is_relative_to(target):
            return (volumes.get(m["name"]) or claims[m["name"]],
                    str(PurePosixPath(path).relative_to(target)))
    raise AssertionError(f"{path} is mounted from nothing")


def _secret_files(volume: dict) -> set[str]:
    assert "secret" in volume, volume
    return {item["path"] for item in volume["secret"]["items"]}


def _state_is_a_claim(sts: dict, container: dict, state_dir: Path) -> None:
    mount = [m for m in container["volumeMounts"] if m["mountPath"] == str(state_dir)]
    assert len(mount) == 1 and not mount[0].get("readOnly")
    claims = [c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]]
    assert mount[0]["name"] in claims


def test_chart_coordinator_listens_on_all_interfaces_with_its_ports_in_the_service(rendered):
    for name in ("bundled-postgresql", "external-database", "sqlite-no-flower"):
        docs = rendered[name]
        cfg = _chart_config(docs, "fed-scifed-coordinator", "coordinator.yaml",
                            CoordinatorConfig)
        host, port = _host_port(cfg.listen)
        assert host == "0.0.0.0", name
        sts = _one(docs, "StatefulSet", "fed-scifed-coordinator")
        svc = _one(docs, "Service", "fed-scifed-coordinator")
        coordinator = _container(sts, "coordinator")
        assert [p["containerPort"] for p in coordinator["ports"]] == [port]
        ports = {p["name"]: p for p in svc["spec"]["ports"]}
        assert ports["grpc"]["port"] == port and ports["grpc"]["targetPort"] == "grpc"
        assert coordinator["readinessProbe"]["tcpSocket"]["port"] == "grpc"
        assert coordinator["livenessProbe"]["tcpSocket"]["port"] == "grpc"
        if cfg.flower_port is None:
            assert set(ports) == {"grpc"}, name
            continue
        # the SuperLink's own port is in no Service; the proxy sidecar's is
        assert cfg.flower_port not in {p["port"] for p in ports.values()}
        proxy = _container(sts, "flower-proxy")
        [proxy_port] = [int(p) for p in re.findall(r"listen (\d+) ssl;",
                                                   PROXY_CONF.read_text())]
        assert [p["containerPort"] for p in proxy["ports"]] == [proxy_port]
        assert ports["flower-fleet"]["port"] == proxy_port
        assert ports["flower-fleet"]["targetPort"] == proxy["ports"][0]["name"]
        conf_volume, conf_file = _mounted_file(sts, proxy, Path("/etc/nginx/nginx.conf"))
        proxy_cm = _one(docs, "ConfigMap", conf_volume["configMap"]["name"])
        assert proxy_cm["data"][conf_file] == PROXY_CONF.read_text()
        for path in re.findall(r"ssl_(?:certificate|certificate_key|trusted_certificate) "
                               r"(\S+);", PROXY_CONF.read_text()):
            volume, file = _mounted_file(sts, proxy, Path(path))
            assert file in _secret_files(volume)


def test_chart_coordinator_state_database_and_pki(rendered):
    for name in ("bundled-postgresql", "external-database", "sqlite-no-flower"):
        docs = rendered[name]
        cfg = _chart_config(docs, "fed-scifed-coordinator", "coordinator.yaml",
                            CoordinatorConfig)
        sts = _one(docs, "StatefulSet", "fed-scifed-coordinator")
        coordinator = _container(sts, "coordinator")
        _state_is_a_claim(sts, coordinator, cfg.state_dir)
        env = {e["name"]: e for e in coordinator["env"]}
        # the config file mounted is the one SCIFED_COORDINATOR_CONFIG names
        volume, file = _mounted_file(sts, coordinator,
                                     Path(env["SCIFED_COORDINATOR_CONFIG"]["value"]))
        assert volume["configMap"]["name"] == "fed-scifed-coordinator"
        assert file == "coordinator.yaml"
        for path in (cfg.tls.ca, cfg.tls.cert, cfg.tls.key, cfg.tls.crl):
            volume, file = _mounted_file(sts, coordinator, path)
            assert volume["secret"]["secretName"] == "scifed-coordinator-pki"
            assert file in _secret_files(volume), path
        if name == "sqlite-no-flower":
            assert cfg.database is None and "PGPASSWORD" not in env
            continue
        ref = env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ":" not in cfg.database.split("//")[1].split("@")[0], "no password in the URL"
        if name == "external-database":
            assert cfg.database == VALUE_SETS[name]["externalDatabase"]["url"]
            assert ref == {"name": "db", "key": "pw"}
            assert not [d for d in docs if d["metadata"]["name"].endswith("postgresql")]
            continue
        host, port = cfg.database.split("@")[1].split("/")[0].split(":")
        pg_svc = _one(docs, "Service", host)
        assert [p["port"] for p in pg_svc["spec"]["ports"]] == [int(port)]
        secret = _one(docs, "Secret", ref["name"])
        assert ref["key"] in secret["data"]
        pg = _one(docs, "StatefulSet", host)
        pg_env = {e["name"]: e for e in pg["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert pg_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == ref
        assert pg["spec"]["volumeClaimTemplates"]


def test_chart_nodes_have_state_on_a_claim_pki_from_their_secret_and_the_right_addresses(
        rendered):
    for name in ("bundled-postgresql", "sqlite-no-flower", "nodes-only"):
        docs = rendered[name]
        values = VALUE_SETS[name]
        for node in values["nodes"]:
            full = f"fed-scifed-node-{node['name']}"
            cfg = _chart_config(docs, full, "node.yaml", NodeConfig)
            assert cfg.name == node["name"] and cfg.platform == node["platform"]
            sts = _one(docs, "StatefulSet", full)
            container = _container(sts, "node")
            assert "ports" not in container, "a node opens no port"
            _state_is_a_claim(sts, container, cfg.state_dir)
            env = {e["name"]: e["value"] for e in container["env"]}
            volume, file = _mounted_file(sts, container, Path(env["SCIFED_NODE_CONFIG"]))
            assert volume["configMap"]["name"] == full and file == "node.yaml"
            for path in (cfg.tls.ca, cfg.tls.cert, cfg.tls.key):
                volume, file = _mounted_file(sts, container, path)
                assert volume["secret"]["secretName"] == node["pkiSecret"]
                assert file in _secret_files(volume), path
            data, _ = _mounted_file(sts, container, cfg.data_dir / "x.csv")
            if "existingClaim" in node.get("data", {}):
                assert data["persistentVolumeClaim"] == {
                    "claimName": node["data"]["existingClaim"], "readOnly": True}
            else:
                assert "claim" in data
            assert container["readinessProbe"]["exec"]["command"] == [
                "python", "/opt/scifed/healthcheck.py"]
            pod = sts["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["runAsUser"] != 0
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["resources"]["limits"]
            if name == "nodes-only":
                assert cfg.coordinator == values["coordinatorAddress"]
                assert cfg.flower_superlink == values["flowerSuperlinkAddress"]
                continue
            svc = _one(docs, "Service", "fed-scifed-coordinator")
            ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
            assert cfg.coordinator == f"fed-scifed-coordinator:{ports['grpc']}"
            if "flower-fleet" in ports:
                assert cfg.flower_superlink == f"fed-scifed-coordinator:{ports['flower-fleet']}"
            else:
                assert cfg.flower_superlink is None


def test_chart_refuses_missing_settings_with_one_clear_error(helm, tmp_path):
    assert "postgresql.password" in helm.error({}, tmp_path)
    no_secret = {"postgresql": {"enabled": False},
                 "externalDatabase": {"url": "postgresql+psycopg://u@h/d"}}
    assert "externalDatabase.existingSecret" in helm.error(no_secret, tmp_path)
    bad_name = {"postgresql": {"password": "x"},
                "nodes": [{"name": "Node_A", "platform": "p", "pkiSecret": "s"}]}
    assert "Node_A" in helm.error(bad_name, tmp_path)


# -- systemd units ----------------------------------------------------------------------------
SCIFED_BIN = "/opt/scifed/.venv/bin/scifed"  # where the units expect the installation


@pytest.mark.parametrize("unit", sorted(p.name for p in (DEPLOY / "systemd").iterdir()))
def test_systemd_unit_passes_systemd_analyze_verify(unit):
    analyze = _need("systemd-analyze")
    res = _run([analyze, "verify", "--man=no", str(DEPLOY / "systemd" / unit)])
    # the one finding allowed: scifed is not installed at SCIFED_BIN on this machine
    absent = f"Command {SCIFED_BIN} is not executable: No such file or directory"
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
    assert [ln for ln in lines if absent not in ln] == [], lines
    if Path(SCIFED_BIN).exists():
        assert res.returncode == 0


@pytest.mark.parametrize("role", ["coordinator", "node"])
def test_systemd_service_may_write_where_its_config_lives(role):
    text = (DEPLOY / "systemd" / f"scifed-{role}.service").read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", text, flags=re.M))
    argv = settings["ExecStart"].split()
    assert argv[:3] == [SCIFED_BIN, role, "serve"]
    config = PurePosixPath(argv[argv.index("--config") + 1])
    writable = PurePosixPath(settings["ReadWritePaths"])
    # the example configs put state_dir beside the config file (a relative "state")
    assert config.parent == writable == PurePosixPath(settings["WorkingDirectory"])
    assert settings["ProtectSystem"] == "strict" and settings["User"] != "root"


def test_the_build_context_holds_what_the_dockerfile_copies():
    """deploy/Dockerfile.dockerignore (read by BuildKit for that Dockerfile) keeps the
    virtualenv and the tests out of the context, and every COPY source in."""
    ignore = [ln.strip() for ln in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    assert ".venv" in ignore and ".git" in ignore

    def ignored(path: str) -> bool:  # Docker's rule: the last matching line decides
        verdict = False
        for pattern in ignore:
            negate = pattern.startswith("!")
            pattern = pattern.lstrip("!")
            if PurePosixPath(path).is_relative_to(pattern) or fnmatch(path, pattern):
                verdict = not negate
        return verdict

    copies = [args.split()[:-1] for word, args in _instructions(DEPLOY / "Dockerfile")
              if word == "COPY" and not args.startswith("--from")]
    for source in (s for sources in copies for s in sources):
        assert (REPO / source).exists(), source
        assert not ignored(source), source
