"""Facts -> sentences: each sentence states what was measured on this host, nothing assumed.

Pure: the functions here take records (sockets, port facts, host facts) and give text. What a
state means is the kernel's definition of that state; every number, name and path comes from
the facts given.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from ..model import Endpoint, NetId, Owner, Socket, State, UnixEndpoint
from ..ports.services import PortFacts
from .facts import WILDCARDS, Explanation, Host, Link, SocketFacts, plain_address
from .files import NameCheck

MAX_CONNECTIONS = 20  # connections told one by one under a listener; the rest are counted

KINDS = {
    NetId.TCP: "TCP socket", NetId.UDP: "UDP socket", NetId.UNIX_STREAM: "unix stream socket",
    NetId.UNIX_DGRAM: "unix datagram socket", NetId.UNIX_SEQPACKET: "unix seqpacket socket",
}  # fmt: skip
CLASSES = {"well-known": "well-known (0-1023)", "registered": "registered (1024-49151)", "dynamic": "dynamic (49152-65535)"}

# What each state means, in the kernel's terms (tcp(7), unix(7)).
TCP_STATES = {
    State.LISTEN: "it is listening: the kernel completes each client's handshake and queues the connection until the program calls accept()",
    State.ESTAB: "the connection is established: data may flow both ways",
    State.SYN_SENT: "it is connecting: its SYN was sent and the peer has not answered yet",
    State.SYN_RECV: "a handshake is half done: the peer's SYN was answered and its final ACK is awaited",
    State.FIN_WAIT_1: "this end closed: its FIN was sent and awaits the peer's acknowledgment",
    State.FIN_WAIT_2: "this end closed and the peer acknowledged it; the peer has not closed its side yet",
    State.TIME_WAIT: "the connection is closed; the kernel keeps its address pair reserved for a while "
    "so that late packets of it are not taken for a new connection",
    State.CLOSE_WAIT: "the peer closed its side; the program holding this end has not called close() yet",
    State.LAST_ACK: "both sides closed; this end's FIN awaits the last acknowledgment",
    State.CLOSING: "both sides closed at the same time; the acknowledgments are awaited",
}
OTHER_STATES = {
    (NetId.UDP, State.UNCONN): "it is bound and not connected: it takes datagrams sent to its port from anyone",
    (NetId.UDP, State.ESTAB): "it is connected: it exchanges datagrams with one peer only",
    (NetId.UNIX_DGRAM, State.UNCONN): "it is not connected: it takes datagrams sent to its name",
    (NetId.UNIX_DGRAM, State.ESTAB): "it is connected: it sends its datagrams to one peer",
}
UNIX_STATES = {
    State.LISTEN: "it is listening: clients connect() to its name and wait in its queue until the program calls accept()",
    State.ESTAB: "it is connected: data may flow both ways",
    State.UNCONN: "it is neither listening nor connected",
}


def meaning(sock: Socket) -> str:
    """Give what a socket's state means for its kind."""
    found = OTHER_STATES.get((sock.netid, sock.state))
    if found is None:
        found = TCP_STATES.get(sock.state) if sock.netid is NetId.TCP else UNIX_STATES.get(sock.state)
    return found or f"its state is {sock.state.value}"


def end_text(end: object) -> str:
    """Give `127.0.0.1:80`, `[::1]:80`, a unix name or `an unnamed unix socket`."""
    if isinstance(end, Endpoint):
        return f"[{end.address}]:{end.port}" if ":" in end.address else f"{end.address}:{end.port}"
    if isinstance(end, UnixEndpoint):
        return end.path if end.path else "an unnamed unix socket"
    return str(end)


def plural(count: int, thing: str, things: str | None = None) -> str:
    """Give `1 byte`, `2 bytes`."""
    return f"{count} {thing if count == 1 else things or thing + 's'}"


def descriptor(owner: Owner, inode: int) -> str:
    """Give `/proc/PID/fd/N -> socket:[INODE]`, the link through which a process holds a socket."""
    return f"/proc/{owner.pid}/fd/{owner.fd} -> socket:[{inode}]"


def holder_text(owner: Owner, inode: int) -> str:
    """Give `pid 12 (nginx, user www) through descriptor 3 (/proc/12/fd/3 -> socket:[99])`."""
    return f"pid {owner.pid} ({owner.name}, user {owner.user}) through descriptor {owner.fd} ({descriptor(owner, inode)})"


def holders_sentence(sock: Socket, denied: int, uid: int | None = None) -> str:
    """Give who holds a socket, or why nobody can be named."""
    owners = sock.owners or ()
    if len(owners) == 1:
        return f"It is held by {holder_text(owners[0], sock.inode)}."
    if owners:
        pids = len({o.pid for o in owners})
        if pids > 1:
            shared = f"{pids} processes at once (one socket, shared through fork() or passed along)"
        else:
            shared = f"{len(owners)} descriptors of one process (duplicated by dup() or received twice)"
        each = "; ".join(holder_text(o, sock.inode) for o in owners)
        return f"It is held by {shared}: {each}; it stays open until every one of them closes it."
    if sock.state is State.TIME_WAIT:
        return "No process holds it: the program closed it, and the kernel keeps it on its own."
    if denied and sock.uid is not None and sock.uid != uid:
        from ..inventory.owners import user_name

        return (
            f"No holder could be seen: the socket was made by uid {sock.uid} ({user_name(sock.uid or 0)}), and the descriptors "
            f"of {plural(denied, 'process', 'processes')} of other users cannot be read without root (run with sudo to see them)."
        )
    return "No descriptor to it was found under /proc/*/fd: its holder, if any, is not visible here (another PID namespace), or the kernel holds it alone."


def services_source() -> str:
    """Give where service names come from: the services file, or the built-in table when it cannot be read."""
    from .. import services

    try:
        with open(services.SERVICES_FILE, "rb"):
            return services.SERVICES_FILE
    except OSError:
        return f"sockscope's built-in table ({services.SERVICES_FILE} cannot be read)"


def port_sentence(port: PortFacts, host: Host, both: bool = False) -> str:
    """Give what a port is here: its class, its service name, the ephemeral range, the privilege to bind it."""

    proto = "" if both else f"/{port.proto}"
    parts = [f"port {port.port}{proto} is {CLASSES.get(port.port_class, port.port_class)}"]
    if port.name:
        parts.append(f"named {port.name} in {services_source()}")
    else:
        parts.append(f"with no name in {services_source()}")
    low, high = host.ephemeral
    if port.ephemeral:
        parts.append(f"inside this host's ephemeral range {low}-{high} (net.ipv4.ip_local_port_range), where the kernel picks clients' ports")
    else:
        parts.append(f"outside this host's ephemeral range {low}-{high}")
    start = host.unprivileged_port_start
    if port.privileged:
        who = f"this user ({host.user}, uid {host.uid}) {'has' if host.may_bind_privileged else 'has neither'}"
        parts.append(f"binding it needs root or CAP_NET_BIND_SERVICE here (ports below {start}, net.ipv4.ip_unprivileged_port_start), and {who}")
    else:
        parts.append(f"any user may bind it here (ports from {start} up, net.ipv4.ip_unprivileged_port_start)")
    text = ", ".join(parts[:3]) + "; " + parts[3]
    return text[0].upper() + text[1:] + "."


def queue_sentence(sock: Socket, somaxconn: int | None = None) -> str | None:
    """Give what a socket's queues hold (Recv-Q and Send-Q mean other things per state)."""
    if sock.state is State.LISTEN:
        waiting, limit = sock.recv_q, sock.send_q
        # listen() cuts a larger backlog down to net.core.somaxconn without a word
        given = f"net.core.somaxconn: listen() asked for {limit} or more" if limit == somaxconn else "the backlog given to listen()"
        text = f"Its accept queue holds {plural(waiting, 'connection')} not accepted yet, of at most {limit} ({given})"
        if waiting > limit and isinstance(sock.local, UnixEndpoint):
            return text + ": the queue is full, so until the program accepts, a new client's connect() waits, or fails at once with EAGAIN when non-blocking."
        if waiting > limit:
            return text + ": the queue is full, so the kernel drops new clients' connection attempts until the program accepts; they wait and retry."
        return text + "."
    if sock.state is State.UNCONN and sock.netid in (NetId.UDP, NetId.UNIX_DGRAM):
        return f"{plural(sock.recv_q, 'byte')} of datagrams wait to be read (Recv-Q)." if sock.recv_q else "No datagram waits to be read."
    if sock.state is State.ESTAB:
        if sock.netid is NetId.UDP:  # datagrams are never acknowledged: Send-Q is what the kernel has yet to send
            sent = f"{plural(sock.send_q, 'byte')} of datagrams wait in the kernel to be sent"
        else:
            peer = "acknowledged" if sock.netid is NetId.TCP else "taken"
            sent = f"{plural(sock.send_q, 'byte')} sent are not {peer} by the peer yet"
        return f"{plural(sock.recv_q, 'byte')} arrived that the program has not read (Recv-Q); {sent} (Send-Q)."
    return None


def other_sentence(sock: Socket, other: Socket | None, denied: int = 0, uid: int | None = None) -> str | None:
    """Give where a connection's other end is, and who holds it when it is on this host."""
    peer = sock.peer
    if isinstance(peer, UnixEndpoint):
        if not peer.inode:
            return None
        if other is None:
            return f"Its other end is socket inode {peer.inode}, which no longer shows here."
        return f"Its other end is socket inode {other.inode} ({end_text(other.local)}), {_held_by(other, denied, uid)}."
    if not isinstance(peer, Endpoint) or peer.port == 0:
        return None
    if other is not None:
        return f"Its other end is {end_text(peer)}, on this host: socket inode {other.inode}, {_held_by(other, denied, uid)}."
    if _loopback(peer.address) and sock.state is State.TIME_WAIT:  # the connection is over: its other end may be gone for good
        return f"Its other end was {end_text(peer)}; no socket of this connection remains there."
    if _loopback(peer.address):
        return f"Its other end is {end_text(peer)}, a loopback address, but no socket here matches it (another network namespace?)."
    return f"Its other end is {end_text(peer)}, not on this host: only that host can say which process it is."


def _unseen(sock: Socket, denied: int, uid: int | None) -> str:
    """Give why no holder of a socket is named: none was found, or this user may not look."""
    if denied and sock.uid is not None and sock.uid != uid:
        from ..inventory.owners import user_name

        return f"whose holder this user cannot see (it was made by uid {sock.uid} ({user_name(sock.uid)}); run with sudo)"
    return "with no descriptor to it found under /proc/*/fd"


def _held_by(sock: Socket, denied: int = 0, uid: int | None = None) -> str:
    owners = sock.owners or ()
    if not owners:
        return _unseen(sock, denied, uid) if sock.owners == () else "whose holder was not asked for"
    return "held by " + ", ".join(holder_text(o, sock.inode) for o in owners)


def connection_sentence(link: Link, host: Host, queued: bool = False, denied: int = 0) -> str:
    """Give one of a listener's connections: the client's end and port, who serves it, who the client is."""
    sock, other = link.socket, link.other
    if isinstance(sock.peer, Endpoint):
        low, high = host.ephemeral
        inside = "in" if low <= sock.peer.port <= high else "outside"
        start = f"from {end_text(sock.peer)} (client port {sock.peer.port}, {inside} this host's ephemeral range)"
    else:
        inode = sock.peer.inode if isinstance(sock.peer, UnixEndpoint) else 0
        start = f"from the client socket inode {inode}" if inode else "from an unknown peer"
    owners = sock.owners or ()
    if owners:
        served = "accepted by " + ", ".join(holder_text(o, sock.inode) for o in owners)
    elif queued:
        served = "waiting in the accept queue: no process has accepted it yet"
    else:
        served = _unseen(sock, denied, host.uid).removeprefix("with ")
    served = f"{sock.state.value}, {served}"
    if other is not None and other.owners:
        client = "; the client is " + ", ".join(holder_text(o, other.inode) for o in other.owners)
    elif other is not None:
        client = f"; the client's socket (inode {other.inode}) is here, {_unseen(other, denied, host.uid)}"
    elif isinstance(sock.peer, Endpoint):
        client = "; the client is on another host" if not _loopback(sock.peer.address) else ""
    else:
        client = ""
    return f"{start.capitalize() if start[0].islower() else start}: {served}{client}."


def _loopback(address: str) -> bool:
    return plain_address(address).startswith("127.") or address == "::1"


def connections_sentences(facts: SocketFacts, host: Host, denied: int = 0) -> list[str]:
    """Give a listener's connections, one sentence each (at most MAX_CONNECTIONS, the rest counted)."""
    sock, links = facts.socket, facts.connections
    if sock.state is not State.LISTEN:
        return []
    # a unix listener's queued connections are not sockets the kernel lists until they are accepted
    hidden = sock.recv_q if sock.netid is not NetId.TCP else 0
    unlisted = f"the {plural(hidden, 'connection')} in its queue show here only once accepted." if hidden else ""
    shared = ""
    if facts.shared and isinstance(sock.local, UnixEndpoint):
        shared = (
            f"{plural(facts.shared, 'connection')} to its name came in through it or through another socket bound to the same name; "
            "the kernel does not say which."
        )
    elif facts.shared:
        shared = (
            f"{plural(facts.shared, 'connection')} on its port came in through it or through another listener on the same address "
            "and port (SO_REUSEPORT); the kernel does not say which (`sockscope explain` of its port lists them)."
        )
    if not links:
        if shared:
            return [shared]
        return [f"No connection of it is listed yet: {unlisted}" if hidden else "No client is connected to it right now."]
    out = [f"It has {plural(len(links), 'connection')}:"]
    # connections nobody holds are those still in the accept queue only when their count agrees with the queue's
    unheld = [link for link in links if not link.socket.owners and link.socket.state is State.ESTAB]
    # (a unix listener's queue is never listed: what is listed under it was accepted, seen or not)
    queued = sock.netid is NetId.TCP and 0 < len(unheld) <= sock.recv_q
    out += [connection_sentence(link, host, queued and link in unheld, denied) for link in links[:MAX_CONNECTIONS]]
    if len(links) > MAX_CONNECTIONS:
        out.append(f"... and {len(links) - MAX_CONNECTIONS} more (sockscope ls shows them all).")
    if hidden:
        out.append(f"Besides, {unlisted}")
    if shared:
        out.append(shared)
    return out


def timer_sentence(sock: Socket) -> str | None:
    """Give when the kernel's timer on a closed connection fires, when it was measured."""
    timer = sock.internals.timer if sock.internals is not None else None
    if timer is None or sock.state is not State.TIME_WAIT:
        return None
    return f"The kernel frees it in {max(0, timer.expires_ms) / 1000:.1f} s (its {timer.name} timer)."


def name_sentence(sock: Socket, check: NameCheck) -> str:
    """Give what became of a unix socket's filesystem name when it no longer leads to the socket."""
    path = end_text(sock.local)
    seen = " as its holder sees the filesystem" if check.holder_view else ""
    if check.leads == "nothing":
        why = "it was removed or renamed after bind()" if check.holder_view else "it was removed or renamed after bind(), or lives in another mount namespace"
        return (
            f"Its name no longer leads to it: no file is at {path}{seen} ({why}), "
            "so no client can connect() to it by that name; connections it already has go on."
        )
    now = f"another socket (inode {check.now})" if check.now else "another file"
    return (
        f"Its name no longer leads to it: {path}{seen} is now {now} (another file took the name after bind()), "
        f"so clients that connect() to that name reach {'that socket' if check.now else 'that file'}, not this one."
    )


def shell_word(text: str) -> str:
    """Give text as one word a POSIX shell reads back exactly: quoted, or `$'...'` with escapes for
    a name holding control characters or bytes that are not UTF-8 (so a pasted command still works)."""
    if text.isprintable():
        return shlex.quote(text)
    raw = text.encode("utf-8", "surrogateescape")
    inner = "".join(chr(b) if 32 <= b < 127 and b not in (39, 92) else f"\\x{b:02x}" for b in raw)
    return f"$'{inner}'"


def next_steps(sock: Socket, by_name: bool = True) -> str:
    """Give the commands a person would run next about this socket (`by_name`: its unix name still reaches it)."""
    local = sock.local
    if isinstance(local, UnixEndpoint):
        # a name holding a NUL byte cannot be given on a command line: the shell would cut it there;
        # a relative name was relative to the binder's directory, not to the reader's
        named = local.path is not None and local.path.startswith(("/", "@")) and "\0" not in local.path
        if by_name and named and local.path is not None and sock.state in (State.LISTEN, State.UNCONN):
            kind = {NetId.UNIX_DGRAM: "unix-dgram", NetId.UNIX_SEQPACKET: "seqpacket"}.get(sock.netid, "unix")
            who, address = shell_word(local.path), shell_word(f"{kind}:{local.path}")
            return f"Next: `sockscope who {who}` shows who holds it; `sockscope connect {address}` connects to it."
        return f"Next: `sockscope explain inode:{sock.inode}` again later, or `sockscope ls -xap` to see every unix socket and its holders."
    if not isinstance(local, Endpoint) or not isinstance(sock.peer, Endpoint):
        return "Next: `sockscope ls -ap` lists every socket with its holders."
    udp = sock.netid is NetId.UDP
    port = f"{local.port}/udp" if udp else str(local.port)
    if sock.state in (State.LISTEN, State.UNCONN):
        host = "127.0.0.1" if local.address in ("0.0.0.0", "*") else "::1" if local.address == "::" else local.address
        where = f"[{host}]:{local.port}" if ":" in host else f"{host}:{local.port}"
        connect = f"`sockscope connect {'-u ' if udp else ''}{where}` connects to it; "
        if sock.device is not None and sock.device != "lo" and local.address in WILDCARDS:
            connect = f"a client reaches it only through {sock.device}; "  # through loopback it is refused
        return (
            f"Next: `sockscope who {port}` shows who holds it; {connect}"
            f"`sockscope kill {port}` frees the port (stops its holders, then checks that it is free)."
        )
    match = f"'sport = :{local.port} and dport = :{sock.peer.port}'"
    if sock.state is State.TIME_WAIT:
        return f"Next: nothing to do, it goes away by itself; `sockscope ls -tan {match}` shows whether it is still there."
    flag = "u" if udp else "t"
    return f"Next: `sockscope ls -{flag}anp {match}` follows it; `sockscope close {'-u ' if udp else ''}{match} --yes` ends it (root)."


def socket_sentences(facts: SocketFacts, host: Host, denied: int) -> list[str]:
    """Give the sentences about one socket, in the order a person asks: what, who, which port, how full, with whom, what next."""
    sock = facts.socket
    family = {"inet": "IPv4", "inet6": "IPv6"}.get(sock.family.value, sock.family.value)
    kind = KINDS.get(sock.netid, f"{sock.netid.value} socket")
    state = meaning(sock)
    if isinstance(sock.local, UnixEndpoint) and not sock.local.path:
        first = f"An unnamed {kind} (inode {sock.inode}) is in state {sock.state.value}."
    else:
        first = f"{end_text(sock.local)} is a {kind} ({family}, inode {sock.inode}) in state {sock.state.value}."
    out = [f"{first} {state[0].upper()}{state[1:]}."]
    if sock.v6only is not None and isinstance(sock.local, Endpoint) and sock.local.address == "::":
        takes = "IPv6 clients only (IPV6_V6ONLY is on)" if sock.v6only else "IPv4 clients too (IPV6_V6ONLY is off: they show as ::ffff:a.b.c.d)"
        out.append(f"Bound to every address, it takes {takes}.")
    if sock.device is not None and isinstance(sock.local, Endpoint):
        why = "the scope of its link-local address" if sock.local.address.lower().startswith("fe80:") else "SO_BINDTODEVICE"
        out.append(f"It is bound to interface {sock.device} ({why}): it takes only what arrives through {sock.device}.")
    out.append(holders_sentence(sock, denied, host.uid))
    if facts.name is not None and facts.name.leads != "it":
        out.append(name_sentence(sock, facts.name))
    if facts.port is not None:
        out.append(port_sentence(facts.port, host))
    other = other_sentence(sock, facts.other, denied, host.uid) if not facts.connections else None
    if facts.receivers and isinstance(sock.peer, Endpoint):
        inodes = sorted(s.inode for s in facts.receivers)
        named = ", ".join(str(i) for i in inodes[:-1]) + f" and {inodes[-1]}"
        other = (
            f"Its other end is {end_text(sock.peer)}, on this host: one of {len(inodes)} sockets bound alike (inodes {named}; SO_REUSEPORT) "
            "takes its datagrams, by a hash the kernel does not tell."
        )
    for sentence in (queue_sentence(sock, host.somaxconn), timer_sentence(sock), other):
        if sentence:
            out.append(sentence)
    if facts.listener is not None:
        out.append(f"It came in through the listener on {end_text(facts.listener.local)} (inode {facts.listener.inode}): this is the server's end.")
    elif len(facts.listeners) > 1:
        inodes = sorted(s.inode for s in facts.listeners)
        named = ", ".join(str(i) for i in inodes[:-1]) + f" and {inodes[-1]}"
        alike = "" if isinstance(sock.local, UnixEndpoint) else "; SO_REUSEPORT"
        out.append(
            f"It came in through one of {len(inodes)} listeners alike on {end_text(facts.listeners[0].local)} (inodes {named}{alike}): "
            "this is the server's end, and the kernel does not say which of them took it."
        )
    out += connections_sentences(facts, host, denied)
    reachable = facts.name is None or facts.name.leads == "it"
    out.append(next_steps(sock) if reachable else next_steps(sock, by_name=False))
    return out


def explanation_sentences(found: Explanation) -> list[list[str]]:
    """Give one paragraph (a list of sentences) per socket of an Explanation."""
    return [socket_sentences(facts, found.host, found.denied) for facts in found.sockets]


def brief(sock: Socket, port: PortFacts | None, host: Host) -> str:
    """Give one short sentence about a socket for `ls --explain` (what, which port, who)."""
    what = _brief_what(sock, port, host)
    owners = sock.owners
    if owners is None:
        return what
    if not owners:
        who = "no process holds it" if sock.state is State.TIME_WAIT else "no holder found in /proc"
        if sock.state is not State.TIME_WAIT and host.uid != 0 and sock.uid is not None and sock.uid != host.uid:
            # another user's descriptors cannot be read without root: not seeing a holder proves nothing
            from ..inventory.owners import user_name

            who = f"holder not visible to this user (uid {sock.uid} ({user_name(sock.uid)}); run with sudo)"
    elif len({o.pid for o in owners}) == 1:
        who = f"held by {owners[0].name} (pid {owners[0].pid}, fd {', '.join(str(o.fd) for o in owners)})"
    else:
        who = f"held by {len({o.pid for o in owners})} processes ({', '.join(f'{o.name} pid {o.pid}' for o in owners)})"
    return f"{what}; {who}"


def _brief_what(sock: Socket, port: PortFacts | None, host: Host) -> str:
    named = f" ({port.name})" if port is not None and port.name else ""
    if sock.state is State.LISTEN:
        where = f"port {port.port}{named}" if port is not None else end_text(sock.local)
        dropped = "new clients wait or get EAGAIN" if isinstance(sock.local, UnixEndpoint) else "new clients are dropped"
        full = f": FULL, {dropped}" if sock.recv_q > sock.send_q else ""
        return f"listening on {where}; {sock.recv_q} waiting to be accepted of {sock.send_q}{full}"
    if sock.state is State.UNCONN:
        where = f"port {port.port}{named}" if port is not None else end_text(sock.local)
        return f"bound to {where}, takes datagrams from anyone" if sock.netid is not NetId.TCP else f"bound to {where}"
    if sock.state is State.TIME_WAIT:
        return "closed; the kernel keeps the address pair reserved for a while"
    if sock.state is State.CLOSE_WAIT:
        return "the peer closed; the holder has not closed its end yet"
    if isinstance(sock.local, Endpoint) and isinstance(sock.peer, Endpoint) and port is not None:
        low, high = host.ephemeral
        peer_ephemeral = low <= sock.peer.port <= high
        if port.ephemeral and not peer_ephemeral:
            return f"{sock.state.value}: from this host's ephemeral port {sock.local.port} to {end_text(sock.peer)}"
        if peer_ephemeral and not port.ephemeral:
            return f"{sock.state.value}: {end_text(sock.peer)} connected to port {sock.local.port}{named}"
        # both ports (or neither) in the ephemeral range: which end connected is not told by the ports
        return f"{sock.state.value}: connected with {end_text(sock.peer)} (this end on port {sock.local.port}{named})"
    if isinstance(sock.peer, UnixEndpoint) and sock.peer.inode:
        return f"{sock.state.value}: connected to socket inode {sock.peer.inode}"
    return meaning(sock)


def every_sentence(paragraphs: Sequence[Sequence[str]]) -> list[str]:
    """Give the sentences of every paragraph in order."""
    return [sentence for paragraph in paragraphs for sentence in paragraph]
