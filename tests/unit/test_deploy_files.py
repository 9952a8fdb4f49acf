"""docker-compose.yml, the Dockerfile and .env.example agree with the code: CLI commands, ports, settings, probes."""

from __future__ import annotations

import argparse
import io
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from starlette.routing import Route

from analytics_gql.api.app import create_app
from analytics_gql.cli import build_parser
from analytics_gql.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# The services built from this repository's Dockerfile (the others are stock postgres and redis images).
OURS = {name: s for name, s in SERVICES.items() if "build" in s}
DOCKERFILE = DockerfileParser(fileobj=io.BytesIO((ROOT / "Dockerfile").read_bytes()))
ENV_EXAMPLE = (ROOT / ".env.example").read_text(encoding="utf-8")
PROBES = {"/healthz", "/readyz"}
SECRET_NAME = re.compile(r"KEY|PASSWORD|SECRET|TOKEN")


def setting_names() -> dict[str, str]:
    """Environment variable -> Settings field, as pydantic-settings reads them (prefix ANALYTICS_)."""
    prefix = Settings.model_config.get("env_prefix", "")
    names = {}
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias if isinstance(info.validation_alias, str) else None
        names[(alias or prefix + field).upper()] = field
    return names


def subcommands() -> set[str]:
    """The CLI's subcommand names, from its argparse parser."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def parse_cli(argv: list[str], where: str) -> argparse.Namespace:
    """argv parsed by the real CLI parser (the image's entry point is the CLI), or a failure naming `where`."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: {argv} is not a valid `analytics-gql` command line")


def instructions(name: str, stage: int = -1) -> list[str]:
    """The values of one instruction kind in one build stage (default: the final image)."""
    stages: list[list[dict[str, Any]]] = []
    for ins in DOCKERFILE.structure:
        if ins["instruction"] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return [ins["value"] for ins in stages[stage] if ins["instruction"] == name]


def image_cmd() -> list[str]:
    """The final image's default arguments (JSON form)."""
    (cmd,) = instructions("CMD")
    return list(json.loads(cmd))


def env_example() -> dict[str, str]:
    """NAME -> value of every variable line in .env.example, commented-out ones included."""
    found: dict[str, str] = {}
    for line in ENV_EXAMPLE.splitlines():
        m = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if m:
            assert m.group(1) not in found, f".env.example lists {m.group(1)} twice"
            found[m.group(1)] = m.group(2)
    return found


def probe_url(healthcheck: str) -> tuple[int, str]:
    """The port and path a healthcheck command requests from 127.0.0.1."""
    m = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/[\w/]*)", healthcheck)
    assert m, f"healthcheck requests no local URL: {healthcheck}"
    return int(m.group(1)), m.group(2)


def served_get_paths(tmp_path: Path) -> set[str]:
    """The paths the real app answers on GET (building it reads the migrations folder, it connects to nothing)."""
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'unused.db'}", _env_file=None))
    return {r.path for r in app.routes if isinstance(r, Route) and "GET" in (r.methods or ())}


def test_every_service_of_our_image_runs_a_real_cli_command() -> None:
    commands = set()
    for name, service in OURS.items():
        assert "entrypoint" not in service, f"{name}: the image's entry point (the CLI) must not be replaced"
        args = parse_cli(service["command"], f"service {name}")
        assert args.command in subcommands()
        commands.add(args.command)
    # The production shape of README's Jobs section: a one-shot migrate, the API, a worker and one scheduler.
    assert commands == {"migrate", "serve", "worker", "scheduler"}
    assert sum(parse_cli(s["command"], n).command == "scheduler" for n, s in OURS.items()) == 1


def test_the_dockerfile_entry_is_the_cli_and_its_default_command_serves_the_exposed_port() -> None:
    (entry,) = instructions("ENTRYPOINT")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert json.loads(entry) == ["analytics-gql"] and scripts["analytics-gql"] == "analytics_gql.cli:main"
    args = parse_cli(image_cmd(), "Dockerfile CMD")
    assert args.command == "serve"
    assert instructions("EXPOSE") == [str(args.port)]
    (check,) = instructions("HEALTHCHECK")
    port, path = probe_url(check)
    assert (port, path in PROBES) == (args.port, True), (port, path)


def test_ports_publish_on_the_hosts_loopback_only_and_match_the_served_port() -> None:
    for name, service in SERVICES.items():
        published = []
        for spec in service.get("ports", []):
            assert isinstance(spec, str), f"{name}: write ports as HOST_IP:HOST_PORT:CONTAINER_PORT strings"
            parts = spec.split("/")[0].split(":")  # HOST_IP:HOST_PORT:CONTAINER_PORT; no HOST_IP means all
            assert len(parts) == 3 and parts[0] == "127.0.0.1", f"{name} publishes {spec} beyond the host's loopback"
            published.append(int(parts[2]))
        if name in OURS and parse_cli(service["command"], name).command == "serve":
            assert published == [parse_cli(service["command"], name).port], name
        else:
            assert published == [], f"{name} serves no HTTP yet publishes {published}"
    assert any(s.get("ports") for s in OURS.values()), "the API is published nowhere"


def test_healthchecks_probe_a_served_endpoint_on_the_served_port(tmp_path: Path) -> None:
    served = served_get_paths(tmp_path)
    (image_check,) = instructions("HEALTHCHECK")
    for name, service in OURS.items():
        args = parse_cli(service["command"], name)
        check = service.get("healthcheck", {})
        if args.command != "serve":
            # The image's probe would ask a port nothing listens on: the service would show as unhealthy.
            assert check == {"disable": True}, f"{name} serves no HTTP: its healthcheck must be disabled"
            continue
        test = check.get("test", image_check)
        port, path = probe_url(test if isinstance(test, str) else " ".join(test))
        assert (port, path in PROBES, path in served) == (args.port, True, True), (name, port, path)
    for name, service in SERVICES.items():
        for dep, cond in service.get("depends_on", {}).items():
            if cond.get("condition") == "service_healthy":
                assert SERVICES[dep].get("healthcheck", {}).get("test"), f"{name} waits on {dep}, which has no probe"


def test_every_analytics_variable_is_a_setting_and_compose_passes_every_setting() -> None:
    settings = set(setting_names())
    used = set(re.findall(r"\bANALYTICS_[A-Z0-9_]+", COMPOSE_TEXT + (ROOT / "Dockerfile").read_text()))
    assert used - settings == set(), "not Settings fields"
    envs = [s["environment"] for s in OURS.values()]
    for env in envs:
        assert set(env) == settings, f"missing from docker-compose.yml: {sorted(settings - set(env))}"
    image_env = {k: v for k, v in DOCKERFILE.envs.items() if k.startswith("ANALYTICS_")}
    fields = setting_names()
    Settings(_env_file=None, **{fields[k]: v for k, v in image_env.items()})  # the image's values are valid


def test_env_example_lists_every_setting_once_and_only_placeholders() -> None:
    example = env_example()
    names = setting_names()
    assert {k for k in example if k.startswith("ANALYTICS_")} == set(names)
    # Every other variable it sets is one docker-compose.yml interpolates.
    interpolated = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE_TEXT))
    assert {k for k in example if not k.startswith("ANALYTICS_")} <= interpolated
    for key, value in example.items():
        if SECRET_NAME.search(key.removeprefix("ANALYTICS_")):
            assert value == "", f".env.example: {key} must be left empty (a placeholder), not {value!r}"
        if value and key in names:  # every example value is one the settings accept
            Settings(_env_file=None, **{names[key]: value})
        if "://" in value:
            assert urlsplit(value).password is None, f".env.example: {key} carries a password"


def test_compose_requires_the_secrets_instead_of_defaulting_them() -> None:
    # ${VAR:?message} makes docker-compose refuse to start while the variable is unset or empty.
    for var in ("ANALYTICS_API_KEYS", "POSTGRES_PASSWORD"):
        uses = re.findall(r"\$\{" + var + r"([^}]*)\}", COMPOSE_TEXT)
        assert uses and all(u.startswith(":?") for u in uses), (var, uses)


def test_the_image_is_built_from_a_wheel_and_installs_nothing_editable() -> None:
    froms = [i["value"] for i in DOCKERFILE.structure if i["instruction"] == "FROM"]
    assert len(froms) >= 2 and froms[-1] == "python:3.11-slim", froms
    builder = froms[0].split()[-1]
    every_run = [i["value"] for i in DOCKERFILE.structure if i["instruction"] == "RUN"]
    for run in every_run:
        words = shlex.split(run)
        assert "-e" not in words and "--editable" not in words and "develop" not in words, run
    assert any("pip wheel" in r for r in instructions("RUN", 0)), "the builder stage builds no wheel"
    # It copies in what the wheel is built from: pyproject.toml, its readme, the package and every mapped folder.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    needed = {"pyproject.toml", project["project"]["readme"], "analytics_gql",
              *project["tool"]["setuptools"].get("package-dir", {}).values()}
    copied = {src for c in instructions("COPY", 0) for src in shlex.split(c)[:-1]}
    assert needed <= copied, f"the builder stage does not copy {sorted(needed - copied)}"
    # The final stage takes nothing from the build context: only the builder's wheel, which pip installs.
    copies = instructions("COPY") + instructions("ADD")
    assert copies and all(c.startswith(f"--from={builder} ") for c in copies), copies
    assert any(re.search(r"pip install .*\.whl", r) for r in instructions("RUN")), "no wheel installed"


def test_the_image_runs_as_a_non_root_user() -> None:
    users = instructions("USER")
    assert users, "the final stage sets no USER (it would run as root)"
    # The last USER is the one the entry point runs as.
    assert users[-1].split(":")[0] not in ("root", "0"), users


def test_readme_lists_every_setting() -> None:
    """Every ANALYTICS_* variable Settings reads has a row in the README's settings table."""
    from analytics_gql.settings import Settings

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [f"ANALYTICS_{name.upper()}" for name in Settings.model_fields
               if f"`ANALYTICS_{name.upper()}`" not in readme]
    assert missing == []
