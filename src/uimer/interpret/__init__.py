"""Interpretation methods: one module per family, one interface, one registry (`METHODS`).

Importing this package registers every built-in method, so the CLI's `--method` choices are complete.
"""

from uimer.interpret import (
    diffmask,  # noqa: F401 - registers the dm-* methods
    gradient,  # noqa: F401 - registers the gb-* methods
    marginalization,  # noqa: F401 - registers the im-* methods
)
from uimer.interpret.base import (
    METHODS,
    Attribution,
    InterpretationMethod,
    MethodSetup,
    add_method_options,
    create_method,
    method_option_defaults,
    option_users,
    options_for,
    options_read_by,
    register_method,
)
from uimer.interpret.options import OPTION_CLASSES, MethodOptions, OptionError, option, register_options

__all__ = ["OPTION_CLASSES", "MethodOptions", "OptionError", "option", "register_options", "MethodSetup", "method_option_defaults", "options_for", "options_read_by", "add_method_options", "option_users", "METHODS", "Attribution", "InterpretationMethod", "create_method", "register_method"]
