"""The deployment in deploy/: Kubernetes manifests against their schemas and against the
code they configure, the NATS chart's users against qbus's permissions on a real
nats-server, the systemd units under ``systemd-analyze verify``, and the Prometheus files
under ``promtool``. No cluster runs here (docs/deploy.md says what that leaves unchecked)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml

from qbus.bus.auth import ADMIN, ADMIN_PERMISSIONS, STAGES, stage_permissions
from qbus.bus.config import BusConfig, read_config
from qbus.bus.connection import Bus
from qbus.bus.server import NatsServer, find_nats_server
from qbus.bus.signing import KEY_STAGES
from qbus.cli import cli
from qbus.schemas.enums import PRIORITIES
from qbus.secrets.resolve import stage_bus_config
from qbus.secrets.stage_keys import stage_signer

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
VALIDATE = DEPLOY / "validate"
SYSTEMD = DEPLOY / "systemd"
PROMETHEUS = DEPLOY / "prometheus"
MANIFESTS = sorted(K8S.glob("*.yaml"))
# `<< X >>` in the chart's values is X written unquoted into nats.conf.
UNQUOTED = re.compile(r'"<< (.*?) >>"')
VERIFIER_KEY = "0x" + "ab" * 32  # a chain verifier key (anvil's format), made up


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _kind(kind: str) -> list[dict]:
    return [d for p in MANIFESTS for d in _docs(p) if d["kind"] == kind]


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `bash scripts/setup.sh` (installs {package})")
    return path


def _parse(args: list[str]) -> click.Context:
    """``qbus ARGS`` parsed by the real command, not run: names and options are checked
    (stage name choices, the port's range)."""
    command = cli.get_command(click.Context(cli), args[0])
    assert isinstance(command, click.Command), args
    return command.make_context(args[0], list(args[1:]))


def _validate(*files: Path) -> subprocess.CompletedProcess[str]:
    node = _tool("node", "nodejs")
    if not (VALIDATE / "node_modules" / ".package-lock.json").is_file():
        pytest.fail(f"the schema validators are missing: run `npm ci --prefix {VALIDATE}`")
    return subprocess.run(
        [node, str(VALIDATE / "validate.mjs"), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def made_secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Secret and public-key ConfigMap that make_secrets.py prints."""
    out = tmp_path_factory.mktemp("secrets")
    (out / "verifier.key").write_text(VERIFIER_KEY + "\n")
    run = subprocess.run(
        [
            sys.executable,
            str(K8S / "make_secrets.py"),
            "--dir",
            str(out / "keys"),
            "--tenant",
            "acme",
            "--verifier-key-file",
            str(out / "verifier.key"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr
    path = out / "secrets.yaml"
    path.write_text(run.stdout)
    return path


def test_every_manifest_is_valid_against_the_kubernetes_keda_and_operator_schemas(
    made_secrets: Path,
):
    run = _validate(*MANIFESTS, made_secrets)
    assert run.returncode == 0, run.stdout + run.stderr
    kinds = re.findall(r"^ok \S+ (\S+) ", run.stdout, re.M)
    # 8 Deployments, 2 ScaledObjects, the PodMonitor and PrometheusRule, the config,
    # the namespace, and the made Secret and public-key ConfigMap.
    assert sorted(kinds) == sorted(
        ["apps/v1/Deployment"] * 8
        + ["keda.sh/v1alpha1/ScaledObject"] * 2
        + ["monitoring.coreos.com/v1/PodMonitor", "monitoring.coreos.com/v1/PrometheusRule"]
        + ["v1/ConfigMap"] * 2
        + ["v1/Namespace", "v1/Secret"]
    ), run.stdout
    assert run.stdout.rstrip().endswith("16 passed, 0 failed")


def test_the_validator_rejects_what_the_schemas_forbid(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    deployment = _kind("Deployment")[0]
    deployment["spec"]["replicas"] = "two"
    scaled = json.loads(json.dumps(_kind("ScaledObject")[0]))
    del scaled["spec"]["scaleTargetRef"]
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    bad.write_text(yaml.safe_dump_all([deployment, scaled, unknown]))
    run = _validate(bad)
    assert run.returncode == 1
    assert "spec/replicas must be integer" in run.stdout, run.stdout
    assert "spec must have required property scaleTargetRef" in run.stdout, run.stdout
    assert "no schema for example.com/v1 Widget" in run.stdout
    assert run.stdout.rstrip().endswith("0 passed, 3 failed")


def test_stage_deployments_run_every_stage_with_arguments_the_cli_accepts():
    started: dict[str, list[str]] = {}
    for deployment in _kind("Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        args = container["args"]
        ctx = _parse(args)
        stage = ctx.params["name"]
        label = stage if stage != "execute" else f"execute-{ctx.params['engine']}"
        assert deployment["metadata"]["name"] == f"qbus-{label}"
        assert ctx.params["metrics_port"] == container["ports"][0]["containerPort"]
        started[label] = args
    stages = {s for s in started if not s.startswith("execute-")}
    # Every stage `qbus up` runs (the anchor stage needs a chain: docs/deploy.md).
    assert stages == {"ingest", "rewrite", "route", "verify", "audit", "control"}
    assert {s for s in started if s.startswith("execute-")} == {
        "execute-qiskit-aer",
        "execute-reference",
    }
    (audit,) = [d for d in _kind("Deployment") if d["metadata"]["name"] == "qbus-audit"]
    assert audit["spec"]["replicas"] == 1 and audit["spec"]["strategy"]["type"] == "Recreate"


def test_keda_scales_each_executor_on_the_consumers_qbus_creates():
    deployments = {d["metadata"]["name"]: d for d in _kind("Deployment")}
    scaled = _kind("ScaledObject")
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled} == {
        n for n in deployments if n.startswith("qbus-execute-")
    }
    for s in scaled:
        target = deployments[s["spec"]["scaleTargetRef"]["name"]]
        args = target["spec"]["template"]["spec"]["containers"][0]["args"]
        engine = args[args.index("--engine") + 1]
        triggers = s["spec"]["triggers"]
        assert {t["type"] for t in triggers} == {"nats-jetstream"}
        # One per priority and one for the heavy lane; that they are the consumers qbus
        # creates is checked on a real server (test_a_stage_connects_as_its_user_…).
        assert len(triggers) == len(PRIORITIES) + 1
        assert all(engine in t["metadata"]["consumer"] for t in triggers)
        for t in triggers:
            meta = t["metadata"]
            assert meta["stream"] == BusConfig().stream
            assert meta["account"] == "$G"  # the default account: users in `authorization`
            # KEDA reads metadata as strings.
            assert all(isinstance(v, str) for v in meta.values()), meta
            assert int(meta["lagThreshold"]) > 0
            assert meta["natsServerMonitoringEndpoint"].endswith(":8222")


def _pod(tmp_path: Path, secrets: Path, deployment: dict) -> Path:
    """Lay out what ``deployment``'s pod would see: its config and only its secret items."""
    secret, public = _docs(secrets)
    spec = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    run = tmp_path / deployment["metadata"]["name"]
    for item in volumes["secrets"]["secret"]["items"]:
        path = run / "secrets" / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secret["stringData"][item["key"]])
    (config_map,) = _kind("ConfigMap")
    toml = config_map["data"]["qbus.toml"]
    toml = toml.replace("/run/secrets/qbus", str(run / "secrets"))
    toml = toml.replace("/etc/qbus", str(run / "etc"))
    (run / "etc").mkdir()
    (run / "etc" / "qbus.toml").write_text(toml)
    (run / "etc" / "public.json").write_text(public["data"]["public.json"])
    return run / "etc" / "qbus.toml"


def test_each_stage_pod_finds_its_password_and_signing_key_and_nothing_else(
    tmp_path: Path, made_secrets: Path
):
    secret, public = _docs(made_secrets)
    assert set(json.loads(public["data"]["public.json"])) == set(KEY_STAGES)
    assert secret["stringData"]["chain-verifier_key"] == VERIFIER_KEY
    assert "nats-tenant-acme" in secret["stringData"]
    for deployment in _kind("Deployment"):
        config = read_config(_pod(tmp_path, made_secrets, deployment), env={})
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        stage = args[1]
        user = "execute" if stage == "execute" else stage
        bus = stage_bus_config(config, stage)
        assert (bus.user, bus.password) == (user, secret["stringData"][f"nats-{user}"])
        signer = stage_signer(config, stage)
        assert signer is not None and signer.stage == user
        items = deployment["spec"]["template"]["spec"]["volumes"][1]["secret"]["items"]
        assert {i["key"] for i in items} == {f"nats-{user}", f"signing-{user}"}
    assert config.observability.metrics_addr == "0.0.0.0"
    assert config.auth.stage_users and config.secrets.provider == "file"


def _nats_users(values: dict) -> list[dict]:
    return values["config"]["merge"]["authorization"]["users"]


def test_nats_values_are_a_three_node_jetstream_cluster_with_qbus_users():
    values = yaml.safe_load((K8S / "helm" / "nats-values.yaml").read_text())
    assert values["config"]["cluster"] == {"enabled": True, "replicas": 3}
    assert values["config"]["jetstream"]["enabled"] is True
    assert values["config"]["monitor"]["enabled"] is True  # KEDA reads /jsz
    users = {u["user"]: u for u in _nats_users(values)}
    assert set(users) == {ADMIN, *STAGES}
    assert users[ADMIN]["permissions"] == ADMIN_PERMISSIONS
    for stage in STAGES:
        assert users[stage]["permissions"] == stage_permissions(stage), stage
    env = values["container"]["env"]
    for user in users.values():
        var = UNQUOTED.fullmatch(json.dumps(user["password"])).group(1).lstrip("$")
        assert env[var]["valueFrom"]["secretKeyRef"] == {
            "name": "qbus-secrets",
            "key": f"nats-{user['user']}",
        }


async def test_a_stage_connects_as_its_user_to_a_server_with_the_charts_users(
    tmp_path: Path, made_secrets: Path, monkeypatch: pytest.MonkeyPatch
):
    """The values' `config.merge` block, written as the chart writes it, on a real
    nats-server with the passwords of the made Secret; a stage pod's config connects."""
    values = yaml.safe_load((K8S / "helm" / "nats-values.yaml").read_text())
    secret, _ = _docs(made_secrets)
    for var, ref in values["container"]["env"].items():
        monkeypatch.setenv(var, secret["stringData"][ref["valueFrom"]["secretKeyRef"]["key"]])
    conf = tmp_path / "nats.conf"
    merge = UNQUOTED.sub(r"\1", json.dumps(values["config"]["merge"], indent=2))
    conf.write_text(f"jetstream {{}}\n{merge[1:-1]}\n")
    check = subprocess.run(
        [find_nats_server(), "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    (route,) = [d for d in _kind("Deployment") if d["metadata"]["name"] == "qbus-route"]
    with NatsServer(tmp_path / "store", config=conf) as server:
        pod_config = _pod(tmp_path, made_secrets, route)
        # The chart's cluster keeps three copies of everything; this one server cannot.
        assert read_config(pod_config, env={}).bus.replicas == 3
        config = read_config(pod_config, env={"QBUS_URL": server.url, "QBUS_REPLICAS": "1"})
        bus = await Bus.connect(stage_bus_config(config, "route"), name="qbus-route")
        try:
            await bus.provision()
            # KEDA's triggers name the consumers an executor creates for its engine.
            for scaled in _kind("ScaledObject"):
                engine = scaled["metadata"]["name"].removeprefix("qbus-execute-")
                await bus.ensure_executor(engine)
                names = {c.name for c in await bus.js.consumers_info(config.bus.stream)}
                wanted = {t["metadata"]["consumer"] for t in scaled["spec"]["triggers"]}
                assert wanted == {n for n in names if n.endswith(f"-{engine}")}, names
            assert await bus.deployed_engines() == {"qiskit-aer", "reference"}
        finally:
            await bus.close()
        # A wrong password is refused: the users really are in force.
        with pytest.raises(Exception):  # noqa: B017 - nats-py raises its own auth errors
            await Bus.connect(BusConfig(url=server.url, user="route", password="wrong"))


def test_prometheus_rule_in_kubernetes_equals_the_rule_file():
    (rule,) = _kind("PrometheusRule")
    assert rule["spec"] == yaml.safe_load((PROMETHEUS / "qbus-rules.yml").read_text())


def test_prometheus_config_and_rules_pass_promtool(tmp_path: Path):
    promtool = _tool("promtool", "prometheus")
    for f in ("prometheus.yml", "qbus-rules.yml"):
        shutil.copy(PROMETHEUS / f, tmp_path / f)
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "a.json").write_text("[]")
    run = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS: 8 rules found" in run.stdout
    (tmp_path / "qbus-rules.yml").write_text(
        "groups:\n  - name: x\n    rules:\n      - record: a\n"
    )
    bad = subprocess.run(
        [promtool, "check", "rules", str(tmp_path / "qbus-rules.yml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode != 0


def _units(tmp_path: Path, units: list[Path]) -> Path:
    """The units with /opt/qbus pointing at this venv, as an install would lay it out."""
    venv = tmp_path / "opt" / "qbus" / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "qbus").symlink_to(Path(sys.executable).with_name("qbus"))
    (venv / "nats-server").symlink_to(find_nats_server())
    out = tmp_path / "units"
    out.mkdir()
    for unit in units:
        text = unit.read_text().replace("/opt/qbus", str(tmp_path / "opt" / "qbus"))
        (out / unit.name).write_text(text)
    return out


def _verify(directory: Path, names: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("systemd-analyze", "systemd"), "verify", *names],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=directory,
    )


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path):
    units = sorted(SYSTEMD.glob("*.service")) + sorted(SYSTEMD.glob("*.target"))
    assert {u.name for u in units} == {
        "nats-server.service",
        "qbus-stage@.service",
        "qbus-execute@.service",
        "qbus.target",
    }
    out = _units(tmp_path, units)
    names = [
        "nats-server.service",
        *(f"qbus-stage@{s}.service" for s in ("ingest", "audit")),
        "qbus-execute@qiskit-aer.service",
        "qbus.target",
    ]
    run = _verify(out, names)
    assert run.returncode == 0, run.stderr
    # systemd-analyze warns (exit 0) about unknown keys and the like: none allowed.
    assert not [ln for ln in run.stderr.splitlines() if str(out) in ln or "qbus" in ln], run.stderr
    # The ExecStart lines run commands the CLI accepts.
    for unit, args in (
        ("qbus-stage@.service", ["stage", "ingest", "--metrics-port", "9464"]),
        ("qbus-execute@.service", ["stage", "execute", "--engine", "qiskit-aer"]),
    ):
        line = re.search(r"^ExecStart=\S+ (.*)$", (SYSTEMD / unit).read_text(), re.M).group(1)
        expected = " ".join(args[:2]) if unit.startswith("qbus-stage") else " ".join(args)
        assert line.replace("%i", args[1] if "stage@" in unit else args[3]).startswith(expected)
        _parse(args)


def test_systemd_analyze_reports_a_broken_unit(tmp_path: Path):
    broken = tmp_path / "src" / "qbus-stage@.service"
    broken.parent.mkdir()
    broken.write_text(
        (SYSTEMD / "qbus-stage@.service").read_text().replace("Restart=always", "Restart=often")
    )
    run = _verify(_units(tmp_path, [broken]), ["qbus-stage@ingest.service"])
    assert "restart specifier, ignoring: often" in run.stderr, run.stderr


def test_vm_nats_cluster_config_is_accepted_by_nats_server():
    env = {
        "NATS_SERVER_NAME": "nats-1",
        **{f"NATS_ROUTE_{i}": f"nats://qbus-nats-{i}.example:6222" for i in (1, 2, 3)},
    }
    conf = str(SYSTEMD / "nats-cluster.conf")
    run = subprocess.run(
        [find_nats_server(), "-t", "-c", conf], capture_output=True, text=True, env=env
    )
    assert run.returncode == 0, run.stdout + run.stderr
    # Without the node's variables the server refuses it: the file really is parsed.
    missing = subprocess.run([find_nats_server(), "-t", "-c", conf], capture_output=True, text=True)
    assert missing.returncode != 0 and "NATS_SERVER_NAME" in missing.stdout + missing.stderr


def test_make_secrets_refuses_a_tenant_that_cannot_be_a_nats_user(tmp_path: Path):
    run = subprocess.run(
        [sys.executable, str(K8S / "make_secrets.py"), "--dir", str(tmp_path), "--tenant", "a b"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 2 and run.stdout == ""
    assert (
        run.stderr.startswith("error: 'a b' is not a valid tenant")
        and "[invalid_config]" in run.stderr
    )
