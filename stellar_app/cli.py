"""`stellar`: the project's command line (click).

Commands import what they need when they run, so `stellar classify` never pays
for importing Dagster. The serving commands hand their arguments to the server's
own command line (stellar_serving.cli), which documents them (`stellar serve --help`).
"""

from __future__ import annotations

import sys

import click

SURVEY_FIRST_WEEK, SURVEY_LAST_WEEK = "2000-03-05", "2020-03-22"
PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}


class TcpPort(click.ParamType):
    name = "PORT"

    def convert(self, value, param, ctx) -> int:
        text = str(value)
        if not text.isdigit() or not 1 <= int(text) <= 65535:
            self.fail(f"{text!r} is not a TCP port (1-65535)", param, ctx)
        return int(text)


def _print_version(ctx: click.Context, _param, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from stellar_serving.cli import version_text

    click.echo(version_text())
    ctx.exit(0)


@click.group(context_settings={"show_default": True, "help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Print the package and API version and exit.")
def stellar() -> None:
    """stellar: SDSS STAR/GALAXY/QSO classification on Dagster, MLflow and gRPC."""


@stellar.command()
@click.option("--first-week", metavar="YYYY-MM-DD", default=None,
              help="First week replayed (a Sunday); unset: STELLAR_REPLAY_FIRST_WEEK, else 2008-03-02.")
@click.option("--last-week", metavar="YYYY-MM-DD", default=None,
              help="Last week replayed (up to 2020-03-22); unset: STELLAR_REPLAY_LAST_WEEK, else 2008-12-28.")
@click.option("--whole-survey", is_flag=True, default=False,
              help=f"Replay every week of the survey, {SURVEY_FIRST_WEEK}..{SURVEY_LAST_WEEK} "
              "(the first champion trains on the opening weeks).")
def demo(first_week: str | None, last_week: str | None, whole_survey: bool) -> None:
    """The main job: replay a range of weeks (ingest, predict, drift, retrain, promote), then serve the
    final champion."""
    if whole_survey and (first_week or last_week):
        raise click.UsageError("--whole-survey replays every week: give it without --first-week/--last-week")
    if whole_survey:
        first_week, last_week = SURVEY_FIRST_WEEK, SURVEY_LAST_WEEK
    from stellar_app.demo import run_demo

    sys.exit(run_demo(first_week=first_week, last_week=last_week))


@stellar.command()
@click.option("--first-week", metavar="YYYY-MM-DD", default=None,
              help="First week (a Sunday); unset: the first week the source covers.")
@click.option("--last-week", metavar="YYYY-MM-DD", default=None,
              help="Last week; unset: the last week the source covers.")
@click.option("--allow-shrink", is_flag=True, default=False,
              help="Let this run store fewer rows in a week than it holds (otherwise refused).")
def ingest(first_week: str | None, last_week: str | None, allow_shrink: bool) -> None:
    """Backfill raw observations and features for every week (new or changed weeks only, in one run)."""
    from stellar_app.ingest import run_ingestion

    sys.exit(run_ingestion(first_week=first_week, last_week=last_week, allow_shrink=allow_shrink))


@stellar.command()
@click.option("--host", default="127.0.0.1",
              help="Address the UI listens on (0.0.0.0: every interface; the UI has no login).")
@click.option("--port", type=TcpPort(), default=3000, help="Port the UI listens on (1-65535).")
def ui(host: str, port: int) -> None:
    """Open the Dagster UI (dagster dev) on the main job's instance."""
    import os

    from stellar_app.home import prepare_home
    from stellar_app.settings import AppSettings
    from stellar_core.home import repo_root

    settings = AppSettings()
    prepare_home(settings)
    workspace = repo_root() / "workspace.yaml"
    click.echo(f"Dagster UI on the instance in {settings.dagster_dir}: http://{host}:{port}")
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    os.execv(dagster, [dagster, "dev", "-w", str(workspace), "-h", host, "-p", str(port)])


@stellar.command()
def settings() -> None:
    """List every environment variable the application and the code location read, with its value
    (secrets: only whether they are set); the server's: stellar serve --print-env."""
    from stellar_app.settings import AppSettings
    from stellar_assets.settings import CodeLocationSettings

    for title, rows in (("application (stellar demo, ingest, ui)", AppSettings().describe()),
                        ("code location (stellar_assets)", CodeLocationSettings().describe())):
        click.echo(f"# {title}")
        for name, shown, doc in rows:
            click.echo(f"{name}={shown}  # {doc}")


def _serving_command(name: str, text: str) -> None:
    @stellar.command(name=name, help=text, context_settings=PASS_THROUGH, add_help_option=False)
    @click.pass_context
    def command(ctx: click.Context) -> None:
        from stellar_app.home import export_serving_environment
        from stellar_app.settings import AppSettings
        from stellar_serving.cli import main as serving_main

        # Without other settings the server serves the embedded store's champion.
        export_serving_environment(AppSettings())
        sys.exit(serving_main([name, *ctx.args]))


_serving_command("serve", "Run the gRPC prediction server (options: stellar serve --help).")
_serving_command("classify", "Classify objects through the prediction server (stellar classify --help).")
_serving_command("model-info", "Show the model the prediction server answers with.")
_serving_command("reload", "Ask the prediction server to reload the champion (admin).")


def main(argv: list[str] | None = None) -> int:
    """Entry point `stellar`; returns the exit code instead of exiting (tests call it in process)."""
    try:
        stellar.main(args=argv, prog_name="stellar", standalone_mode=False)
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted!", err=True)
        return 1
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
