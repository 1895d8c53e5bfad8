"""The ``themis`` Typer app: global options, command modules, errors and exit codes.

Adding commands: create ``themis/cli/<topic>.py`` (a public module name) that defines
``register(app: typer.Typer) -> None`` and adds its commands or a sub-``Typer`` to
``app``. Every such module is picked up automatically, in name order. Keep heavy imports
inside the command functions so ``themis --help`` stays fast. Raise a ``ThemisError``
for anything the user must fix: ``run`` prints it without a traceback and maps it to an
exit code (``exit_code_for``). ``cli_state(ctx)`` gives the global options.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import io
import pkgutil
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from themis.cli._logging import LOG_FORMATS, LOG_LEVELS, configure_logging
from themis.core.errors import ConfigError, ThemisError

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_USAGE",
    "CliState",
    "build_app",
    "cli_state",
    "click_command",
    "exit_code_for",
    "print_table",
    "run",
    "stderr_console",
    "stdout_console",
]

EXIT_OK = 0
EXIT_FAILURE = 1  # the run failed, or an operational error
EXIT_USAGE = 2  # usage, config or validation error
EXIT_PARTIAL = 3  # the run ended partial_failure and --strict was given


@dataclasses.dataclass(frozen=True)
class CliState:
    """The global options, as every command sees them through ``cli_state(ctx)``."""

    quiet: bool = False
    log_level: str = "info"
    log_format: str | None = None
    no_plugins: tuple[str, ...] = ()


def cli_state(ctx: typer.Context) -> CliState:
    """The global options of this invocation (defaults when called outside ``themis``)."""
    state = ctx.find_object(CliState)
    return state if state is not None else CliState()


def stdout_console() -> Console:
    """A rich console on stdout."""
    return Console(highlight=False)


def print_table(table: Table) -> None:
    """Print ``table`` on stdout: styled on a terminal, plain and unwrapped when piped."""
    console = stdout_console()
    if console.is_terminal:
        console.print(table)
        return
    # Piped output is read by scripts and tests: no colours, no wrapping at 80 columns,
    # no padding after the last column.
    buffer = Console(file=io.StringIO(), width=1000, color_system=None, highlight=False)
    buffer.print(table)
    text = buffer.file.getvalue()  # type: ignore[attr-defined]
    typer.echo("\n".join(line.rstrip() for line in text.splitlines()))


def stderr_console() -> Console:
    """A rich console on stderr, for messages that must not mix with JSON on stdout."""
    # soft_wrap: an error is one line a script can grep, whatever the terminal width.
    return Console(stderr=True, highlight=False, soft_wrap=True)


def exit_code_for(exc: BaseException) -> int:
    """2 for config and validation errors, 1 for every other error."""
    if isinstance(exc, ConfigError | ValidationError):
        return EXIT_USAGE
    return EXIT_FAILURE


def _version_callback(value: bool) -> None:
    if value:
        from themis import __version__

        typer.echo(f"themis {__version__}")
        raise typer.Exit(EXIT_OK)


def _choice(names: Sequence[str]) -> Callable[[str | None], str | None]:
    def check(value: str | None) -> str | None:
        if value is not None and value.lower() not in names:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(names)}")
        return None if value is None else value.lower()

    return check


def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the themis-core version and exit.",
            callback=_version_callback,
            is_eager=True,
        ),
    ] = False,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            envvar="THEMIS_LOG_LEVEL",
            help=f"Log level: {', '.join(LOG_LEVELS)}. Default info, or warning with --quiet.",
            callback=_choice(LOG_LEVELS),
        ),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format",
            envvar="THEMIS_LOG_FORMAT",
            help="Log format on stderr: json or console. Default console on a terminal, else json.",
            callback=_choice(LOG_FORMATS),
        ),
    ] = None,
    no_plugin: Annotated[
        list[str] | None,
        typer.Option(
            "--no-plugin",
            metavar="NAME",
            help="Do not load this plugin (repeatable); adds to THEMIS_BLOCK_PLUGINS.",
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only warnings and errors; no progress.")
    ] = False,
) -> None:
    """Reproducible evaluations of LLM systems."""
    level = log_level or ("warning" if quiet else "info")
    configure_logging(level, log_format)
    blocked = tuple(no_plugin or ())
    ctx.obj = CliState(quiet=quiet, log_level=level, log_format=log_format, no_plugins=blocked)
    if blocked:
        from themis.core.registry import Registry, use_registry

        # A registry of its own for this invocation, rather than editing os.environ, so
        # the block ends with the command (this matters when main() runs in-process).
        ctx.with_resource(use_registry(Registry(block=blocked)))


def _command_modules() -> Iterator[Any]:
    import themis.cli as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if not callable(getattr(module, "register", None)):
            raise RuntimeError(
                f"{module.__name__} defines no register(app) function; every public module "
                "of themis.cli must add its commands through one"
            )
        yield module


def build_app() -> typer.Typer:
    """The ``themis`` app with the global options and every command module registered."""
    app = typer.Typer(
        name="themis",
        help="Reproducible evaluations of LLM systems.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_root)
    for module in _command_modules():
        module.register(app)
    return app


class _Deferred:
    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


class _LazyCommands(MutableMapping[str, Any]):
    """A group's subcommands by name, each converted from its Typer definition when first read.

    Typer turns every command of an app into a click command (reading each function's
    signature and evaluating its annotations) before it runs one; for this app that was 8%
    of ``themis quick-eval``'s instructions. Names, order and the commands themselves are Typer's:
    ``themis --help`` reads them all, a command line reads the one it runs.
    """

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}

    def defer(self, name: str, make: Callable[[], Any]) -> None:
        self._items[name] = _Deferred(make)

    def __getitem__(self, name: str) -> Any:
        item = self._items[name]
        if isinstance(item, _Deferred):
            item = self._items[name] = item.make()
        return item

    def __setitem__(self, name: str, command: Any) -> None:
        self._items[name] = command

    def __delitem__(self, name: str) -> None:
        del self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def click_command(app: typer.Typer) -> Any:
    """``typer.main.get_command(app)``, with the subcommands converted only when used."""
    if not (app.registered_callback or app.info.callback):
        # Without a callback Typer may make a lone command the whole program: its rules.
        return typer.main.get_command(app)
    groups: list[tuple[str, Any]] = []
    for group_info in app.registered_groups:
        name = typer.main.solve_typer_info_defaults(group_info).name
        if not name:
            # An unnamed sub-app merges its commands into the root: leave that to Typer.
            return typer.main.get_command(app)
        groups.append((name, group_info))
    # The root group alone (its callback and global options), as Typer builds it.
    shell = copy.copy(app)
    shell.registered_commands = []
    shell.registered_groups = []
    group = typer.main.get_command(shell)
    assert isinstance(group, TyperGroup)
    commands = _LazyCommands()
    # The names, order and arguments of typer.main.get_group_from_info: commands, then groups.
    for info in app.registered_commands:
        assert info.callback is not None
        commands.defer(
            info.name or typer.main.get_command_name(info.callback.__name__),
            functools.partial(
                typer.main.get_command_from_info,
                info,
                pretty_exceptions_short=app.pretty_exceptions_short,
                rich_markup_mode=app.rich_markup_mode,
            ),
        )
    for name, group_info in groups:
        commands.defer(
            name,
            functools.partial(
                typer.main.get_group_from_info,
                group_info,
                pretty_exceptions_short=app.pretty_exceptions_short,
                rich_markup_mode=app.rich_markup_mode,
                suggest_commands=app.suggest_commands,
            ),
        )
    group.commands = commands
    return group


def run(app: typer.Typer, argv: Sequence[str] | None = None) -> int:
    """Run ``app`` on ``argv`` and return the exit code instead of exiting."""
    command = click_command(app)
    try:
        command.main(
            args=None if argv is None else list(argv), prog_name="themis", standalone_mode=True
        )
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_FAILURE)
    except (ThemisError, ValidationError) as exc:
        stderr_console().print(f"error: {exc}", markup=False)
        return exit_code_for(exc)
    return EXIT_OK
