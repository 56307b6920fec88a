"""The researcher's console, ``scifed ui``: the catalog, dataset pages, a job form, the
researcher's jobs with live progress, and released results with their plots.

It runs on the researcher's own machine with their identity directory, as the CLI does,
because a result is sealed to the researcher's key: the console opens it here, with the
same client (:class:`coordinator.client.Client`) and the same checks as `scifed job
result`, and no server ever sees it in clear. It is a client of the coordinator's
researcher RPCs only (``app`` wires the pages; ``catalog``, ``form`` and ``results`` hold
what the pages compute from the answers).
"""
