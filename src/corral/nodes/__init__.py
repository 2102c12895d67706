"""Linked nodes: other corral daemons this one (the controller) polls and shows.

``health`` (pure: misses, states, backoff), ``remote`` (one node's REST API over a
keep-alive httpx client, its URL check), ``registry`` (the daemon's nodes: add, remove,
views, one poll loop each). The table is :mod:`corral.store.nodes`.
"""
