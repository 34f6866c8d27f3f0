"""Change over time: snapshots of the host's sockets compared with the one before."""
