"""Bodies of the ``mmsearch`` subcommands.

``service.cli`` only parses arguments, prints and maps errors to exit codes; the
work lives here, one module per command, imported when that command runs so
``mmsearch --help`` does not pay for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.encoders import Encoder
    from service.settings import Settings


class CommandInputError(ValueError):
    """Bad command-line input; the CLI prints the message and exits with status 2."""


class CommandFailedError(RuntimeError):
    """The command could not finish (a disk or file fault); one line and status 1."""


def load_encoder_for(settings: Settings) -> Encoder:
    """The settings' encoder; a spec or device the registry rejects is bad input."""
    from service.tasks import encoder_for

    try:
        return encoder_for(settings)
    except ValueError as exc:
        raise CommandInputError(f"cannot load encoder {settings.model!r}: {exc}") from exc
