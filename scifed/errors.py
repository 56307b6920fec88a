"""Errors shared by node, coordinator and client."""


class UserError(Exception):
    """A user mistake: one clear message, nothing changed."""


class NotFound(UserError):
    """The named thing (dataset, study, job, record) does not exist."""


class Unavailable(Exception):
    """Not the user's mistake: a part of the federation (a node, the Flower SuperLink) is
    not reachable or not running. The message says which; trying later may succeed."""


class NodeUnavailable(Unavailable):
    """A node has no open task stream, or dropped it before answering."""


class TrainingUnavailable(Unavailable):
    """The coordinator's Flower SuperLink is not running or not answering."""
