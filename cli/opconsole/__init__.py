"""The operator's web console (`scifed operator console`): nodes, studies, jobs and
revocations of the federation, live.

It runs on the operator's host with the operator's identity directory and is a client of
the coordinator's operator RPCs over mTLS, like `scifed nodes list` (:mod:`cli.operator_views`
holds what both show); the coordinator serves no web page and opens no other port.
"""
