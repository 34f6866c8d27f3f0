"""A socket's internals (`ls -i -m -o --cgroup`) in `ss`'s own words, as JSON and as CSV columns.

The table line follows `ss -tinmo` field by field (misc/ss.c, tcp_stats_print): the same
names, units, rounding and the same rule for leaving a field out (zero, or the kernel's "unset"
value), so people who read ss read it at once. `ss` prints BBR's and DCTCP's own counters too;
those need the congestion module's attribute, which sockscope does not ask for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import repeat
from operator import itemgetter
from typing import cast

from .. import native
from ..inventory.diag import NO_RATE_LIMIT
from ..model import Internals, Socket, SocketMemory, State, TcpInfo, Timer

_OPTION_WORDS = ((1, "ts"), (64, "usec_ts"), (2, "sack"), (8, "ecn"), (16, "ecnseen"), (32, "fastopen"))  # TCPI_OPT_* bits
_WSCALE = 4
_NO_RTO = 3_000_000  # a socket whose RTO was never set shows the initial 3 s: ss leaves it out
_NO_SSTHRESH = 0xFFFF  # "infinite" ssthresh (TCP_INFINITE_SSTHRESH reads 0x7fffffff): ss shows it only below this
_NO_MIN_RTT = 0xFFFFFFFF


def rate_text(bps: float, numeric: bool) -> str:
    """Give a rate as `ss` prints it: digits with -n, else 3 significant digits and k/M/G/T."""
    if numeric:
        return f"{bps:.0f}"
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if bps >= scale:
            return f"{bps / scale:.3g}{unit}"
    return f"{bps:g}"


def timer_text(timeout_ms: int) -> str:
    """Give a timer's time left as `ss` prints it (`119min`, `4.952sec`, `200ms`).

    Like ss, it reads the kernel's value as unsigned: a timer already late is a large number.
    """
    timeout = timeout_ms & 0xFFFFFFFF
    secs, msecs = divmod(timeout, 1000)
    minutes, secs = divmod(secs, 60)
    text = ""
    if minutes:
        msecs = 0
        text = f"{minutes}min"
        if minutes > 9:
            secs = 0
    if secs:
        if secs > 9:
            msecs = 0
        text += f"{secs}{'.' if msecs else 'sec'}"
    if msecs:
        text += f"{msecs:03d}{'sec' if secs else 'ms'}"
    return text


def timer_words(found: Timer) -> str:
    """Give `timer:(name,time left,retransmits)` as `ss -o` shows it."""
    return f"timer:({found.name},{timer_text(found.expires_ms)},{found.retransmits})"


def memory_words(memory: SocketMemory) -> str:
    """Give `skmem:(r..,rb..,t..,tb..,f..,w..,o..,bl..,d..)` as `ss -m` shows it."""
    text = f"skmem:(r{memory.rmem_alloc},rb{memory.rcvbuf},t{memory.wmem_alloc},tb{memory.sndbuf},f{memory.fwd_alloc},w{memory.wmem_queued},o{memory.optmem}"
    if memory.backlog is not None:
        text += f",bl{memory.backlog}"
    if memory.drops is not None:
        text += f",d{memory.drops}"
    return text + ")"


def _printable(text: str) -> str:
    from .render import escape

    return escape(text)


def _ms(us: int) -> str:
    return f"{us / 1000:g}"


def tcp_words(info: TcpInfo, congestion: str | None, state: State, numeric: bool, options: bool) -> list[str]:
    """Give the words `ss -i` prints for one TCP socket, in its order (option flags with `options`, as ss -o)."""
    words: list[str] = []
    if options:
        words += [word for bit, word in _OPTION_WORDS if info.options & bit]
    if congestion:
        words.append(_printable(congestion))
    if info.options & _WSCALE:
        words.append(f"wscale:{info.snd_wscale},{info.rcv_wscale}")
    if info.rto_us and info.rto_us != _NO_RTO:
        words.append(f"rto:{_ms(info.rto_us)}")
    if info.backoff:
        words.append(f"backoff:{info.backoff}")
    if info.rtt_us:
        words.append(f"rtt:{_ms(info.rtt_us)}/{_ms(info.rttvar_us)}")
    if info.ato_us:
        words.append(f"ato:{_ms(info.ato_us)}")
    counted: tuple[tuple[str, int | None], ...] = (
        ("mss", info.snd_mss),
        ("pmtu", info.pmtu),
        ("rcvmss", info.rcv_mss),
        ("advmss", info.advmss),
        ("cwnd", info.cwnd),
    )
    words += [f"{name}:{value}" for name, value in counted if value]
    if info.ssthresh and info.ssthresh < _NO_SSTHRESH:
        words.append(f"ssthresh:{info.ssthresh}")
    counted = (
        ("bytes_sent", info.bytes_sent),
        ("bytes_retrans", info.bytes_retrans),
        ("bytes_acked", info.bytes_acked),
        ("bytes_received", info.bytes_received),
        ("segs_out", info.segs_out),
        ("segs_in", info.segs_in),
        ("data_segs_out", info.data_segs_out),
        ("data_segs_in", info.data_segs_in),
    )
    words += [f"{name}:{value}" for name, value in counted if value]
    if info.rtt_us and info.snd_mss and info.cwnd:
        # in floating point, step by step as ss computes it, so the last digit is ss's too
        words.append(f"send {rate_text(float(info.cwnd) * float(info.snd_mss) * 8_000_000.0 / float(info.rtt_us), numeric)}bps")
    counted = (("lastsnd", info.last_send_ms), ("lastrcv", info.last_receive_ms), ("lastack", info.last_ack_ms))
    words += [f"{name}:{value}" for name, value in counted if value]
    words += _rate_words(info, numeric)
    words += _tail_words(info, state)
    return words


def _rate_words(info: TcpInfo, numeric: bool) -> list[str]:
    words = []
    pacing, most = info.pacing_rate_bps, info.max_pacing_rate_bps
    if pacing and pacing != NO_RATE_LIMIT:
        text = f"pacing_rate {rate_text(pacing, numeric)}bps"
        if most and most != NO_RATE_LIMIT:
            text += f"/{rate_text(most, numeric)}bps"
        words.append(text)
    if info.delivery_rate_bps:
        words.append(f"delivery_rate {rate_text(info.delivery_rate_bps, numeric)}bps")
    if info.delivered:
        words.append(f"delivered:{info.delivered}")
    if info.delivered_ce:
        words.append(f"delivered_ce:{info.delivered_ce}")
    if info.app_limited:
        words.append("app_limited")
    busy = info.busy_us
    if busy:
        words.append(f"busy:{busy // 1000}ms")
        for name, value in (("rwnd_limited", info.rwnd_limited_us), ("sndbuf_limited", info.sndbuf_limited_us)):
            if value:
                words.append(f"{name}:{value // 1000}ms({100.0 * value / busy:.1f}%)")
    return words


def _tail_words(info: TcpInfo, state: State) -> list[str]:
    words = []
    if info.unacked:
        words.append(f"unacked:{info.unacked}")
    if info.retrans or info.total_retrans:
        words.append(f"retrans:{info.retrans}/{info.total_retrans}")
    if info.lost:
        words.append(f"lost:{info.lost}")
    if info.sacked and state is not State.LISTEN:  # a listener's "sacked" is its backlog limit
        words.append(f"sacked:{info.sacked}")
    if info.dsack_dups:
        words.append(f"dsack_dups:{info.dsack_dups}")
    if info.fackets:
        words.append(f"fackets:{info.fackets}")
    if info.reordering != 3:
        words.append(f"reordering:{info.reordering}")
    if info.reord_seen:
        words.append(f"reord_seen:{info.reord_seen}")
    if info.rcv_rtt_us:
        words.append(f"rcv_rtt:{_ms(info.rcv_rtt_us)}")
    counted: tuple[tuple[str, int | None], ...] = (("rcv_space", info.rcv_space), ("rcv_ssthresh", info.rcv_ssthresh), ("notsent", info.notsent_bytes))
    words += [f"{name}:{value}" for name, value in counted if value]
    if info.min_rtt_us and info.min_rtt_us != _NO_MIN_RTT:
        words.append(f"minrtt:{_ms(info.min_rtt_us)}")
    counted = (("rcv_ooopack", info.rcv_ooopack), ("snd_wnd", info.snd_wnd), ("rcv_wnd", info.rcv_wnd), ("rehash", info.rehash))
    words += [f"{name}:{value}" for name, value in counted if value]
    return words


def cgroup_words(extra: Internals) -> str:
    """Give `cgroup:PATH` as `ss --cgroup` shows it (`unreachable:ID` in hex when no path is known)."""
    path = _printable(extra.cgroup) if extra.cgroup is not None else f"unreachable:{extra.cgroup_id or 0:x}"
    text = f"cgroup:{path}"
    return text + f" container:{_printable(extra.container)}" if extra.container else text


def lines(sockets: list[Socket], asked: frozenset[str], numeric: bool) -> list[str]:
    """Give each socket's second line (see `line`), by the C accelerator when it is there."""
    fast = native.accel
    if fast is not None:
        found = fast.internals_lines(sockets, State.LISTEN, numeric, "timers" in asked, "cgroup" in asked)
        if found is not None:
            return cast(list[str], found)
    return list(map(line, map(itemgetter(14), sockets), map(itemgetter(2), sockets), repeat(asked), repeat(numeric)))


def line(extra: Internals | None, state: State, asked: frozenset[str], numeric: bool) -> str:
    """Give the indented second line of a socket in the table ("" when it has nothing to show).

    Order: timer (ss prints it on the first line), cgroup, skmem, then the TCP words.
    """
    if extra is None:
        return ""
    words = []
    if extra.timer is not None:
        words.append(timer_words(extra.timer))
    if extra.cgroup_id is not None and "cgroup" in asked:
        words.append(cgroup_words(extra))
    if extra.memory is not None:
        words.append(memory_words(extra.memory))
    if extra.tcp is not None:
        words += tcp_words(extra.tcp, extra.congestion, state, numeric, "timers" in asked)
    elif extra.congestion:
        words.append(_printable(extra.congestion))
    return "\t " + " ".join(words) if words else ""


# ---------------------------------------------------------------- JSON and CSV

_TCP_JSON = "{" + ", ".join(f'"{name}": %s' for name in TcpInfo._fields) + "}"
_MEMORY_JSON = "{" + ", ".join(f'"{name}": %s' for name in SocketMemory._fields) + "}"


def _json_scalars(template: str, values: tuple[object, ...]) -> str:
    # every value is an int, a bool or None: Python's words for the last two are JSON's, capitalised
    return (template % values).replace("None", "null").replace("True", "true").replace("False", "false")


def json_text(extra: Internals | None, asked: frozenset[str], words: Callable[[str | None], str]) -> str:
    """Give the JSON members (`, "tcp": {...}, ...`) the asked groups add to a socket's object.

    Each asked group has its key, null where the socket has none of it (a UDP socket's "tcp").
    `words` gives the JSON text of a string (or null).
    """
    extra = extra or Internals()
    parts = []
    if "info" in asked:
        tcp = "null" if extra.tcp is None else _json_scalars(_TCP_JSON, extra.tcp)
        parts.append(f', "tcp": {tcp}, "congestion": {words(extra.congestion)}')
    if "memory" in asked:
        memory = "null" if extra.memory is None else _json_scalars(_MEMORY_JSON, extra.memory)
        parts.append(f', "memory": {memory}')
    if "timers" in asked:
        found = extra.timer
        timer = "null" if found is None else f'{{"name": "{found.name}", "expires_ms": {found.expires_ms}, "retransmits": {found.retransmits}}}'
        parts.append(f', "timer": {timer}')
    if "cgroup" in asked:
        group = "null"
        if extra.cgroup_id is not None:
            group = f'{{"id": {extra.cgroup_id}, "path": {words(extra.cgroup)}, "container": {words(extra.container)}}}'
        parts.append(f', "cgroup": {group}')
    return "".join(parts)


_TCP_KEYS = tuple(("{" if index == 0 else ", ") + f'"{name}": ' for index, name in enumerate(TcpInfo._fields))
_MEMORY_KEYS = tuple(("{" if index == 0 else ", ") + f'"{name}": ' for index, name in enumerate(SocketMemory._fields))
_GROUP_BITS = {"info": 1, "memory": 2, "timers": 4, "cgroup": 8}


def json_texts(sockets: list[Socket], asked: frozenset[str], words: Callable[[str | None], str]) -> list[str]:
    """Give json_text of each socket, by the C accelerator when it is there."""
    fast = native.accel
    if fast is not None:
        bits = sum(_GROUP_BITS[group] for group in asked)
        found = fast.internals_json(sockets, bits, _TCP_KEYS, _MEMORY_KEYS)
        if found is not None:
            return cast(list[str], found)
    return [json_text(extra, asked, words) for extra in map(itemgetter(14), sockets)]


def json_value(extra: Internals | None, asked: frozenset[str], clean: Callable[[str], str] = str) -> dict[str, object]:
    """Give the members the asked groups add to a socket's JSON object, as a dict (json_text's twin).

    `clean` gives the JSON text of a cgroup path (which may hold any byte).
    """
    extra = extra or Internals()
    found: dict[str, object] = {}
    if "info" in asked:
        found["tcp"] = None if extra.tcp is None else extra.tcp._asdict()
        found["congestion"] = extra.congestion
    if "memory" in asked:
        found["memory"] = None if extra.memory is None else extra.memory._asdict()
    if "timers" in asked:
        found["timer"] = None if extra.timer is None else extra.timer._asdict()
    if "cgroup" in asked:
        path = None if extra.cgroup is None else clean(extra.cgroup)
        found["cgroup"] = None if extra.cgroup_id is None else {"id": extra.cgroup_id, "path": path, "container": extra.container}
    return found


def csv_fields(asked: frozenset[str]) -> list[str]:
    """Give the CSV columns the asked groups add, flat: `tcp_rtt_us`, `memory_rcvbuf`, `timer`, ..."""
    fields = []
    if "info" in asked:
        fields += ["congestion", *(f"tcp_{name}" for name in TcpInfo._fields)]
    if "memory" in asked:
        fields += [f"memory_{name}" for name in SocketMemory._fields]
    if "timers" in asked:
        fields += ["timer", "timer_expires_ms", "timer_retransmits"]
    if "cgroup" in asked:
        fields += ["cgroup_id", "cgroup", "container"]
    return fields


def _cells(values: Iterable[object] | None, count: int) -> list[object]:
    if values is None:
        return [""] * count
    return ["" if value is None else str(value).lower() if isinstance(value, bool) else value for value in values]


def csv_cells(extra: Internals | None, asked: frozenset[str], escape: Callable[[str], str]) -> list[object]:
    """Give the cells of csv_fields for one socket ("" where it has none of a group)."""
    extra = extra or Internals()
    cells: list[object] = []
    if "info" in asked:
        cells.append(extra.congestion or "")
        cells += _cells(extra.tcp, len(TcpInfo._fields))
    if "memory" in asked:
        cells += _cells(extra.memory, len(SocketMemory._fields))
    if "timers" in asked:
        cells += _cells(extra.timer, 3)
    if "cgroup" in asked:
        named = (extra.cgroup_id, escape(extra.cgroup) if extra.cgroup else None, escape(extra.container) if extra.container else None)
        cells += _cells(named if extra.cgroup_id is not None else None, 3)
    return cells
