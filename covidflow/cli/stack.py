"""``covidflow stack``: the local stack without Docker."""

from __future__ import annotations

import sys

import click


def _runner(names: tuple[str, ...] = ()):  # -> Runner, imported lazily
    from covidflow.stack.runner import Runner
    from covidflow.stack.services import all_services, by_name

    try:
        services = [by_name(n) for n in names] if names else all_services()
    except KeyError as exc:
        raise click.UsageError(str(exc.args[0])) from None
    return Runner(services)


@click.group()
def stack() -> None:
    """Fetch, start, inspect and stop the local services (state under $COVIDFLOW_HOME, default ~/.covidflow)."""


@stack.command()
@click.argument("services", nargs=-1)
def up(services: tuple[str, ...]) -> None:
    """Start SERVICES (default: all), one after the other; services already up are left alone."""
    from covidflow.stack.runner import StackError

    runner = _runner(services)
    try:
        runner.up()
    except StackError as exc:
        click.echo(f"\nstack up failed: {exc}", err=True)
        sys.exit(1)
    for state in runner.status():
        click.echo(state.line())


@stack.command()
@click.argument("services", nargs=-1)
def down(services: tuple[str, ...]) -> None:
    """Stop SERVICES (default: all) that the stack started; data is kept."""
    _runner(services).down()
    click.echo("stopped; data kept (covidflow stack reset wipes it)")


@stack.command()
def status() -> None:
    """One line per service: up or down, port, pid, log path. Exits 1 when any is down."""
    states = _runner().status()
    for state in states:
        click.echo(state.line())
    click.echo(f"total rss {sum(s.rss_bytes for s in states) / 2**30:.2f} GB")
    sys.exit(0 if all(s.up for s in states) else 1)


@stack.command()
@click.argument("service")
@click.option("-n", "--lines", default=100, show_default=True, help="How many lines from the end of each log.")
def logs(service: str, lines: int) -> None:
    """Print the end of SERVICE's log(s)."""
    from covidflow.stack.runner import tail

    runner = _runner((service,))
    for path in runner.status()[0].logs:
        click.echo(f"==> {path} <==")
        click.echo(tail(path, lines))


@stack.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def reset(yes: bool) -> None:
    """Stop everything and wipe data, configuration and logs (downloads in cache/ are kept)."""
    runner = _runner()
    if not yes:
        click.confirm(f"Wipe all stack data under {runner.home.root} (the download cache is kept)?", abort=True)
    runner.reset()
    click.echo(f"stack data wiped under {runner.home.root}")


@stack.command()
def credentials() -> None:
    """Print this machine's generated logins: the Airflow UI admin, the S3 keys and the stores' users."""
    from covidflow import settings
    from covidflow.stack.connections import connections
    from covidflow.stack.home import StackHome
    from covidflow.stack.services.airflow import ADMIN_USER, admin_password
    from covidflow.stack.services.s3 import s3_credentials

    home = StackHome.from_env()
    access_key, secret_key = s3_credentials(home)
    conns = connections(home)
    kafka = conns[settings.CONN_KAFKA]["extra"]
    click.echo(f"airflow        user {ADMIN_USER}  password {admin_password(home)}")
    click.echo(f"s3             access key {access_key}  secret key {secret_key}")
    click.echo(f"kafka          user {kafka['sasl.username']}  password {kafka['sasl.password']}  (SASL/PLAIN)")
    for name, conn_id in (("cassandra", settings.CONN_CASSANDRA), ("elasticsearch", settings.CONN_ELASTICSEARCH)):
        click.echo(f"{name:<14} user {conns[conn_id]['login']}  password {conns[conn_id]['password']}")


@stack.command("env")
def env_() -> None:
    """Print the exports (and Kafka tool functions) that point airflow, cqlsh and Kafka's tools at the stack.

    Use: eval "$(covidflow stack env)"; then `airflow dags list`, `cqlsh`, `kafka-topics --list`.
    """
    from covidflow.stack.home import StackHome
    from covidflow.stack.oncall import cqlsh_bin, oncall_env, shell_script

    home = StackHome.from_env()
    click.echo(shell_script(oncall_env(home)), nl=False)
    if not cqlsh_bin(home).exists():
        click.echo("# cqlsh and Kafka's tools are not fetched yet: run `covidflow stack tools` once", err=True)


@stack.command()
def tools() -> None:
    """Fetch the on-call tools once: cqlsh (PyPI, own virtualenv) and Kafka's tools jar (Maven Central)."""
    from covidflow.stack.home import StackHome
    from covidflow.stack.oncall import install_tools

    for line in install_tools(StackHome.from_env()):
        click.echo(line)
