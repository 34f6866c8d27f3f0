"""Change over time: sockets as they open and close, with the processes behind them.

`closing` listens to the kernel's sock_diag destroy groups (the final tcp_info of every TCP and
UDP socket as it goes), `snapshot` diffs inventory dumps by socket cookie, `holders` keeps an
incremental socket -> process map, and `events` joins them into one stream of open and close
events (what `sockscope events` shows): `event` is one event and how its fields are worked
out, `pairs` matches the two ends of a connection within this host for exact byte counts.
"""
