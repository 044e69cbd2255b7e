"""Errors raised for bad user input.

Every module that validates input raises
[`ConfigurationError`][actors.common.errors.ConfigurationError] with a message
that names the bad value and what would be valid; the CLI turns it into one
line on stderr and exit status 2.
"""

from __future__ import annotations


class ConfigurationError(ValueError):
    """A user-supplied value (flag, file, parameter) is invalid."""
