"""Entry point: a click group whose subcommands load on first use, so `--help` and cost commands stay fast."""
from __future__ import annotations

import importlib
import sys

import click

# name -> (module inside this package, attribute); nothing is imported until the command runs.
SUBCOMMANDS = {
    "cost": ("cost_commands", "cost"),
    "compare": ("cost_commands", "compare"),
    "model": ("cost_commands", "model"),
    "receptive-field": ("cost_commands", "receptive_field"),
    "info": ("engine_commands", "info"),
    "bench": ("engine_commands", "bench"),
    "run": ("engine_commands", "run"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        module, attr = SUBCOMMANDS[name]
        return getattr(importlib.import_module(f"{__package__}.{module}"), attr)

    def main(self, *args, **kwargs):  # one-line errors: no usage dump, exit status 2
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except click.ClickException as e:
            click.echo(f"Error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="numbaconv")
def cli() -> None:
    """numbaconv: the convolution family on Numba, and what each member costs.

    Counting convention: 1 MAC = one multiply and one add; FLOPs = 2 x MACs, plus one add per output
    element for a bias. Transposed convolutions are counted over input positions. Parameters are counted
    as PyTorch counts them (BatchNorm scale and shift included, running statistics not).
    """


if __name__ == "__main__":
    cli()
