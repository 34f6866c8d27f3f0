"""The model shared by every room: what a socket is, where it ends, and who holds it.

Records are immutable named tuples rather than dataclasses: `ls` builds tens of thousands of
them per run, and a tuple is made by C code (`tuple.__new__` over `zip`), which keeps the
inventory as fast as `ss` (see bench/). They compare, hash and unpack like tuples.
"""

from __future__ import annotations

import enum

from .records import NamedTuple


class Family(enum.StrEnum):
    """The address family, spelled as in the JSON contract."""

    INET = "inet"
    INET6 = "inet6"
    UNIX = "unix"
    NETLINK = "netlink"
    PACKET = "packet"
    VSOCK = "vsock"


class NetId(enum.StrEnum):
    """The socket kind, spelled as `ss` prints it in its Netid column."""

    TCP = "tcp"
    UDP = "udp"
    RAW = "raw"
    UNIX_STREAM = "u_str"
    UNIX_DGRAM = "u_dgr"
    UNIX_SEQPACKET = "u_seq"
    NETLINK = "nl"
    PACKET_RAW = "p_raw"
    PACKET_DGRAM = "p_dgr"
    VSOCK_STREAM = "v_str"
    VSOCK_DGRAM = "v_dgr"
    VSOCK_SEQPACKET = "v_seq"
    MPTCP = "mptcp"


class State(enum.StrEnum):
    """A socket state, spelled as `ss` prints it. The value order is the kernel's TCP_* order."""

    UNKNOWN = "UNKNOWN"
    ESTAB = "ESTAB"
    SYN_SENT = "SYN-SENT"
    SYN_RECV = "SYN-RECV"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    TIME_WAIT = "TIME-WAIT"
    UNCONN = "UNCONN"
    CLOSE_WAIT = "CLOSE-WAIT"
    LAST_ACK = "LAST-ACK"
    LISTEN = "LISTEN"
    CLOSING = "CLOSING"


#: Kernel state number (TCP_ESTABLISHED=1 ... TCP_CLOSING=11) -> State. Index 0 is unused;
#: 12 (TCP_NEW_SYN_RECV, a pending request) is shown as SYN-RECV, as `ss` does.
KERNEL_STATES: tuple[State, ...] = (*State, State.SYN_RECV)
#: State -> kernel state number, for state masks in kernel requests.
STATE_NUMBERS: dict[State, int] = {state: number for number, state in enumerate(State)}
#: Every kernel state bit, 1..12.
ALL_STATES_MASK = (1 << 13) - 2


class Endpoint(NamedTuple):
    """One end of an internet socket: canonical address text and port (0 for none)."""

    address: str
    port: int


class UnixEndpoint(NamedTuple):
    """One end of a unix socket: the path (`@name` when abstract, None when unnamed).

    For a peer, `inode` is the peer socket's inode (0 when unknown or not connected).
    """

    path: str | None
    inode: int = 0


class NetlinkEndpoint(NamedTuple):
    """A netlink socket's end: protocol name (`rtnl`, `nft`, ...), port id (0 is the kernel) and group.

    A peer is the destination a connected socket sends to (`group` is the multicast group
    number, 0 for none); the peer of a socket that is not connected has the protocol "".
    """

    protocol: str
    portid: int
    group: int = 0


class PacketEndpoint(NamedTuple):
    """A packet socket's end: ethernet protocol name (`ip`, `all`, ...) and interface (`*` for any)."""

    protocol: str
    interface: str


class VsockEndpoint(NamedTuple):
    """A vsock end: context id and port."""

    cid: int
    port: int


AnyEndpoint = Endpoint | UnixEndpoint | NetlinkEndpoint | PacketEndpoint | VsockEndpoint


class Owner(NamedTuple):
    """A process that holds a socket through one of its file descriptors."""

    pid: int
    name: str
    fd: int
    user: str


class TcpInfo(NamedTuple):
    """A TCP socket's internals (struct tcp_info), in base units named by each field.

    Times are microseconds (`_us`) or milliseconds (`_ms`, how long ago), rates bits per
    second (`_bps`, as `ss` prints them), counters are counts or bytes. A field the running
    kernel does not fill (its tcp_info is shorter) is None.
    """

    state: int
    ca_state: int
    retransmits: int
    probes: int
    backoff: int
    options: int
    snd_wscale: int
    rcv_wscale: int
    app_limited: bool
    rto_us: int
    ato_us: int
    snd_mss: int
    rcv_mss: int
    unacked: int
    sacked: int
    lost: int
    retrans: int
    fackets: int
    last_send_ms: int
    last_ack_sent_ms: int
    last_receive_ms: int
    last_ack_ms: int
    pmtu: int
    rcv_ssthresh: int
    rtt_us: int
    rttvar_us: int
    ssthresh: int
    cwnd: int
    advmss: int
    reordering: int
    rcv_rtt_us: int
    rcv_space: int
    total_retrans: int
    pacing_rate_bps: int | None = None
    max_pacing_rate_bps: int | None = None
    bytes_acked: int | None = None
    bytes_received: int | None = None
    segs_out: int | None = None
    segs_in: int | None = None
    notsent_bytes: int | None = None
    min_rtt_us: int | None = None
    data_segs_in: int | None = None
    data_segs_out: int | None = None
    delivery_rate_bps: int | None = None
    busy_us: int | None = None
    rwnd_limited_us: int | None = None
    sndbuf_limited_us: int | None = None
    delivered: int | None = None
    delivered_ce: int | None = None
    bytes_sent: int | None = None
    bytes_retrans: int | None = None
    dsack_dups: int | None = None
    reord_seen: int | None = None
    rcv_ooopack: int | None = None
    snd_wnd: int | None = None
    rcv_wnd: int | None = None
    rehash: int | None = None


class SocketMemory(NamedTuple):
    """A socket's memory in bytes (SK_MEMINFO_*, what `ss -m` shows as skmem), drops a count."""

    rmem_alloc: int
    rcvbuf: int
    wmem_alloc: int
    sndbuf: int
    fwd_alloc: int
    wmem_queued: int
    optmem: int
    backlog: int | None = None
    drops: int | None = None


class Timer(NamedTuple):
    """A pending socket timer, as `ss -o` shows it: `on`, `keepalive`, `timewait`, `persist`
    (zero-window probe) or `delack`; when it fires (milliseconds from now, negative when late)
    and how often it already fired (retransmits or probes)."""

    name: str
    expires_ms: int
    retransmits: int


class Internals(NamedTuple):
    """What `ls -i`, `-m`, `-o` and `--cgroup` add to a socket; a group not asked for is None.

    `congestion` is the congestion control algorithm (`cubic`, `bbr`, ...), `cgroup` the
    cgroup v2 path (relative to the cgroup root, `/` for the root) and `cgroup_id` its id.
    `container` is the short id (or name) of the container whose cgroup that is, when the path
    names one (docker, podman, containerd, CRI-O, LXC), else None.
    """

    tcp: TcpInfo | None = None
    congestion: str | None = None
    memory: SocketMemory | None = None
    timer: Timer | None = None
    cgroup_id: int | None = None
    cgroup: str | None = None
    container: str | None = None


class Socket(NamedTuple):
    """One socket on the host, as the kernel reports it.

    `owners` is None when owners were not asked for, () when no process holds it (or the
    holders could not be seen), and lists every holder when several processes share it.
    `recv_q`/`send_q` follow `ss`: for a listener they are the accept backlog and its limit.
    `device` is the interface an inet socket is bound to (SO_BINDTODEVICE, or the scope of a
    link-local address), None when it is not bound to one. `v6only` tells, for an inet6 socket
    that is listening or not connected, whether it takes IPv6 alone (False: IPv4 too, which
    `ss` shows as `*`); None when the kernel does not say (other states, other families, /proc).
    Both come after `owners` so records built by position keep their meaning.
    `cookie` is the kernel's socket cookie (sock_diag sources; None from /proc): unique while
    the socket lives, so it tells a new connection from an old one on the same ports, as an
    inode does not for sockets that already closed. `internals` holds what `ls -i -m -o
    --cgroup` asked for (None when nothing was).
    """

    netid: NetId
    family: Family
    state: State
    recv_q: int
    send_q: int
    local: AnyEndpoint
    peer: AnyEndpoint
    inode: int
    uid: int | None
    netns: str | None = None
    owners: tuple[Owner, ...] | None = None
    device: str | None = None
    v6only: bool | None = None
    cookie: int | None = None
    internals: Internals | None = None
