"""Errors shared by node, coordinator and client."""


class UserError(Exception):
    """A user mistake: one clear message, nothing changed."""


class NotFound(UserError):
    """The named thing (dataset, study, job, record) does not exist."""
