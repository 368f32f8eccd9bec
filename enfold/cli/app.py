"""``enfold``: the Typer application, its commands in two groups: training
(``enfold.cli.train_commands``) and deployment (``enfold.cli.deploy_commands``), all top-level
commands. Heavy imports happen inside commands, so ``--help`` is fast and works without optional
libraries."""

from __future__ import annotations

import sys

import typer

from enfold.cli import deploy_commands, train_commands
from enfold.errors import EnfoldError

app = typer.Typer(
    name="enfold",
    help="One vision transformer as an energy model and its own decoder.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# every command stays top level (enfold pretrain, enfold restore); --help shows them in the
# Training and Deployment panels
for group in (train_commands.commands, deploy_commands.commands):
    app.registered_commands.extend(group.registered_commands)


def main() -> None:
    """Console entry point: user errors print one clear line (exit 2), not a traceback."""
    try:  # typer >= 0.20 vendors click; older ones use click itself
        from typer._click import exceptions as click_exc
    except ImportError:
        from click import exceptions as click_exc

    try:
        code = app(standalone_mode=False)
    except click_exc.NoArgsIsHelpError as exc:
        typer.echo(exc.format_message(), err=True)
        sys.exit(2)
    except click_exc.UsageError as exc:  # a bad option value, a missing option, a typo
        where = exc.ctx.command_path if exc.ctx is not None else "enfold"
        message = " ".join(exc.format_message().split())
        typer.secho(f"error: {message} (see {where} --help)", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except click_exc.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.secho("aborted", err=True)
        sys.exit(1)
    except EnfoldError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted; the last checkpoint is intact", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
