"""An argparse parser whose defaults are computed when it is first used, not when ``pangea``'s parser is built.

Every command's parser is built on every run of ``pangea``; a default that takes an import to know (a job's
options are the core's ``JobOptions``) would make every command pay for that import. A ``LazyDefaultsParser``
with ``defaults`` set calls it once, before it parses or prints its help, and gives each option the value it
returns for its dest (and says it in the option's help, unless it is None or 0).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any


class LazyDefaultsParser(argparse.ArgumentParser):
    defaults: Callable[[], dict[str, Any]] | None = None

    def _fill_defaults(self) -> None:
        if self.defaults is None:
            return
        values, self.defaults = self.defaults(), None
        for action in self._actions:
            if action.dest in values:
                action.default = values[action.dest]
                if action.default and action.help:
                    action.help += " (default %(default)s)"

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        self._fill_defaults()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._fill_defaults()
        return super().format_help()
