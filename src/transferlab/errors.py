"""The error a user can fix: entry points (`entrypoints.run_cli`) report it as one line."""


class UserError(Exception):
    """A problem the user can fix (bad params, bad data, missing files); reported as one line."""
