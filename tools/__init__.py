"""Operator tools: the local stack (`make up`/`make down`) and `huntctl`."""
