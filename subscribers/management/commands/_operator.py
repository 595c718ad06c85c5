"""What the operator commands share: help layout, institution lookup, and refusals turned into CommandError."""

from __future__ import annotations

import argparse
import textwrap
from contextlib import contextmanager

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, DjangoHelpFormatter

from subscribers.access import OPERATOR
from subscribers.models import Institution
from subscribers.selectors import institutions_visible_to


class OperatorHelpFormatter(DjangoHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Django's layout (own options first), keeping the line breaks of the description and examples."""


class OperatorCommand(BaseCommand):
    """A command the service operator runs on the server; it acts as OPERATOR through one service."""

    examples = ""  # shown at the end of --help

    def create_parser(self, prog_name, subcommand, **kwargs):
        kwargs.setdefault("formatter_class", OperatorHelpFormatter)
        if self.examples:
            kwargs.setdefault("epilog", "examples:\n" + textwrap.indent(textwrap.dedent(self.examples).strip(), "  "))
        return super().create_parser(prog_name, subcommand, **kwargs)


@contextmanager
def refusals_as_command_errors(doing: str = ""):
    """A service's ValidationError (its messages are for people) becomes a CommandError: non-zero exit, nothing changed."""
    try:
        yield
    except ValidationError as error:
        message = " ".join(error.messages)
        raise CommandError(f"{doing}: {message}" if doing else message) from error


def institution_by_slug(slug: str) -> Institution:
    institution = institutions_visible_to(OPERATOR).filter(slug=slug).first()
    if institution is None:
        raise CommandError(f"no institution with slug {slug!r}")
    return institution
