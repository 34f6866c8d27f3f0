"""Sockets over time: snapshots diffed by socket cookie, rates from tcp_info, an owner map kept
up to date incrementally. Built on `inventory`; `top` and the other live faces draw from here."""
