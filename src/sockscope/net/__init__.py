"""Sockets in action: addresses, the server, the client."""
