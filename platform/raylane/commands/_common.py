"""What every CLI command shares: the consoles and the RaylaneError-to-exit-code wrapper."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from raylane.errors import RaylaneError

__all__ = ["console", "err_console", "friendly_errors"]

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(fn: F) -> F:
    """Print a RaylaneError's message (it says what to do) and exit 1, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RaylaneError as e:
            err_console.print(
                f"[bold red]error[/] [dim]({e.stage})[/]: {e.message}", highlight=False
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
