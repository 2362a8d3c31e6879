"""The error a training configuration raises when one of its fields is invalid."""

from __future__ import annotations

import re
from collections.abc import Callable

_FIELD = re.compile(r"\{(\w+)\}")


class ConfigError(ValueError):
    """An invalid training option; the message names the fields as ``{field}``.

    ``str(exc)`` shows the field names; :meth:`render` lets a front end name them
    its own way (the CLI shows ``{batch_size}`` as ``--batch-size``).
    """

    def __init__(self, template: str) -> None:
        self.template = template
        super().__init__(self.render(str))

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(_FIELD.findall(self.template))

    def render(self, name: Callable[[str], str]) -> str:
        return _FIELD.sub(lambda match: name(match[1]), self.template)
