"""Errors whose message names Python arguments, and a command's view of them (flags).

A message that names arguments (in its fix, say: "choose a new {arg:model_dir}")
writes each as "{arg:<name>}": `str()` shows "<name>", and `with_flag` — what
the command line prints — "--<name>", the flag of the same name.
`validation.ArgumentError` is the one for a single refused argument.
"""

import re

_NAMED = re.compile(r"\{arg:(\w+)\}")


def name_arguments(template, prefix=""):
    """`template` with every "{arg:<name>}" written as `prefix` + name."""
    return _NAMED.sub(lambda match: prefix + match.group(1), template)


class NamesArguments:
    """Mixin for an exception whose message template names arguments as "{arg:<name>}"."""

    def __init__(self, template, *args):
        self.template = template
        super().__init__(name_arguments(template), *args)

    def with_flag(self):
        """The message naming each argument's flag "--<name>"."""
        return name_arguments(self.template, "--")


class ArgumentsError(NamesArguments, ValueError):
    """Refused values of several arguments together; each is written "{arg:<name>}"."""


def flag_message(error):
    """`error`'s message as a command prints it: its arguments named as flags."""
    if isinstance(error, NamesArguments):
        return error.with_flag()
    return str(error)
