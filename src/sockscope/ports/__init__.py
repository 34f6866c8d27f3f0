"""Port tasks built on the inventory: who holds a port, stop it, find free ports, wait for one."""
