"""The `scifed` command, split by audience: `ca` and the operator's commands, the
researcher's, and the data officer's (`scifed node ...`). It sits on top of everything:
`scifed/`, `node/` and `coordinator/` never import it."""
