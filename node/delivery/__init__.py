"""Delivery of shareable data: grants, downloads, in-node service, offline transfers."""

from node.delivery.desk import OFFLINE_DOMAIN, Delivery, offline_statement

__all__ = ["OFFLINE_DOMAIN", "Delivery", "offline_statement"]
