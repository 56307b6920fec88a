"""The node console (``scifed node console``): the data officer's, liaison's and security
lead's pages over the node's admin socket, logged in with their approver keys.

It is a client of the same admin API as ``scifed node ...`` (``node/admin_client.py``):
it reads no database or file behind the node, and signs decisions with the same statement
the CLI signs. ``app.py`` builds it; ``pages/`` holds one module per area.
"""
