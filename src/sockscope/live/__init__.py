"""Change over time, built on `inventory`: sockets as they open and close, with the processes behind them.

`closing` listens to the kernel's sock_diag destroy groups (the final tcp_info of every TCP and
UDP socket as it goes), `snapshot` diffs inventory dumps by socket cookie, `holders` finds the
process of new sockets on demand, and `events` joins them into one stream of open and close
events (what `sockscope events` shows): `event` is one event and how its fields are worked out,
`pairs` matches the two ends of a connection within this host for exact byte counts.
`sampler` takes one refresh for the live views (`top`), `owner_map` keeps every socket's owners up
to date between refreshes, `rates` turns tcp_info byte counters into rates by cookie, and `view`
groups, sorts and filters the rows. `census` counts what the exporter serves: sockets by kind and
state, per listener and per process, with byte and connection counters kept across refreshes. `board` is the web page's state: what
each page asked to see, and the changes since it last saw it.
"""
