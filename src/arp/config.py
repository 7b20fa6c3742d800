"""Every deadline and every bound in one place, each default documented once, under its field.

A wait on the network, a child process or Redis takes its deadline from here, and a queue, buffer
or connection count its bound. Each section is a frozen value a program builds once (from its
flags, where it has some) and hands down; a holder that also carries places or identity inherits
its section, so ``config.sigint_grace`` reads the same wherever the config goes. Module-level
instances (``SESSION_BOUNDS`` …) give the defaults to code that has no config at hand, so no number
is written twice. The sections and who reads them:

- `Timeouts`, `Limits`: the relay (arps), the client (arpc's tunnels) and `arp.net`.
- `SocketOptions` (`SOCKET_OPTIONS`): `arp.net.sockets`.
- `SessionBounds` (`SESSION_BOUNDS`): the session manager, through `SessionConfig`; its event log;
  command mode's flags and config (max sessions, prompt size); the pages the HTTP API and the
  remote protocol serve.
- `AttachmentBounds` (`ATTACHMENT_BOUNDS`): images and files sent with a prompt
  (`arp.agents.attachments`; the HTTP API's body limit, MCP, the remote protocol).
- `ChangesBounds` (`CHANGES_BOUNDS`): what a session changed (`arp.agents.changes`).
- `HistoryLimits`: the history readers (`arp.agents.history`) and the history API.
- `McpLimits`: the MCP face (`arp.command.mcp`).
- `ApiBounds` (`API_BOUNDS`): command mode's HTTP server and sessions API (`CommandConfig`
  inherits it); the remote protocol's ``list_sessions``.
- `RemoteBounds`: the remote TCP server, through `RemoteConfig`.
- `GatewayBounds`: the gateway (`GatewayConfig.bounds`).
- `AgentBounds`: arpc as a gateway agent, through `AgentOptions`.
- `ClusterBounds` (`CLUSTER_BOUNDS`): `arps --cluster` (`arp.relay.cluster`, `arp.relay.peer`) and
  the gateway across nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_CONTROL_PORT = 17001
DEFAULT_PROXY_PORT = 17002
DEFAULT_PUBLIC_PORT = 17003
DEFAULT_POOL_SIZE = 1


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Deadlines, in seconds."""

    connect: float = 10.0
    """Opening a TCP connection (client to relay, client to its local service)."""
    handshake: float = 10.0
    """Register → RegisterResult, a tunnel's NewProxyConn, a TLS handshake."""
    first_byte: float = 10.0
    """A public connection that sends nothing for this long is closed."""
    head: float = 30.0
    """The whole HTTP head of a public request must arrive within this."""
    keepalive_idle: float = 75.0
    """A keep-alive public connection on which nothing moves between requests for this long is
    ended."""
    tunnel_wait: float = 10.0
    """Slow path: how long a public connection waits for a fresh tunnel before 504."""
    tunnel_request: float = 10.0
    """A ``RequestNewProxyConn`` unanswered for this long is forgotten (it no longer counts
    against the client's tunnels), checked on the pool tick."""
    heartbeat_interval: float = 5.0
    """How often each end of a control link says it is alive."""
    heartbeat_timeout: float = 20.0
    """A control link silent for this long is dead."""
    pool_tick: float = 5.0
    """How often the relay tops every pool up, besides refilling on each take."""
    idle_tunnel: float = 60.0
    """Pooled tunnels beyond --pool-size (left over from a burst) idle this long are closed."""
    retention: float = 300.0
    """How long a disconnected client's state (id, TCP ports) is kept for it."""
    shutdown: float = 5.0
    """Graceful shutdown waits this long for open work before cancelling it."""
    farewell: float = 1.0
    """A last word before a close (an Error frame to a peer being refused, a closing control
    link's flush) gets this long."""
    answer: float = 2.0
    """The relay's own answer on the public port (an error, the token page) gets this long to be
    sent, and the caller's remaining bytes read, before the connection is closed."""
    backoff_initial: float = 0.2
    """The client's first reconnect delay (randomised around it)."""
    backoff_max: float = 5.0
    """The cap of the client's reconnect delay, so a restarted relay is found within seconds."""
    version_probe: float = 5.0
    """``<agent cli> --version`` must answer within this (arpc's start, ``GET /api/agents``)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on sizes and counts."""

    max_frame: int = 64 * 1024
    """The largest control frame either side accepts (checked before buffering it)."""
    max_json_depth: int = 64
    """How deeply arrays and objects may nest in JSON from a peer (a control frame, a command
    mode request body); beyond, the JSON is refused as bad before it is decoded."""
    max_head: int = 32 * 1024
    """The largest HTTP request head on the public port (beyond: 431)."""
    max_pool_size: int = 64
    """The most pre-warmed tunnels per client, whatever --pool-size asks."""
    max_idle_tunnels: int = 256
    """Idle tunnels the relay keeps per client: clean tunnels come back to the pool after their
    connection, up to this many (at least --pool-size); spares beyond --pool-size are closed
    once idle for `Timeouts.idle_tunnel`. Above the client's usual concurrency, so a busy
    client does not close tunnels only to ask for new ones a moment later: at 64, 50
    concurrent callers opening a connection per request had arps and arpc open a tunnel every
    few dozen connections (about a tenth of their CPU per connection)."""
    max_pending_tunnels: int = 256
    """Slow-path tunnel requests outstanding per client (beyond: 503)."""
    max_public_connections: int = 10_000
    """Concurrent public connections the relay serves (beyond: 503)."""
    max_clients: int = 10_000
    """Registered clients the relay keeps (beyond: registration refused)."""
    max_client_tunnels: int = 4096
    """Tunnels per client, the one bound both ends keep (idle in the pool, asked for, or
    carrying a connection): the relay sends its value in ``RegisterResult.max_tunnels`` and
    arpc keeps to the smaller of it and its own; beyond it the relay answers 503 with
    Retry-After (`arps --max-tunnels-per-client`)."""
    max_tcp_ports_per_client: int = 4
    """Dedicated public TCP ports one client may hold (`arps --max-tcp-ports-per-client`)."""
    max_access_tokens: int = 64
    """Access tokens one client may name (`arpc --access-token`)."""
    max_connections_per_ip: int = 256
    """Public connections one caller address may hold at once (IPv6: per /64; a trusted front
    proxy is not counted, see `arp.relay.limits`); beyond, 503 and a close
    (`arps --max-connections-per-ip`)."""
    socket_buffer: int = 0
    """SO_SNDBUF / SO_RCVBUF asked for on every link; 0 leaves them to the kernel, whose
    autotuning grows each buffer to what its path needs (a fixed size turns that off): on
    loopback it relays bulk as fast as 1 MiB did, keep-alive requests a few percent faster,
    and two setsockopt calls per connection are saved."""
    pipe_size: int = 1024 * 1024
    """The kernel pipe size behind a zero-copy splice."""
    copy_chunk: int = 256 * 1024
    """The read size where bytes pass through Python (TLS links, non-Linux)."""
    listen_backlog: int = 4096
    control_send_buffer: int = 1024 * 1024
    """Bytes queued to a control link that does not read; beyond, the relay cuts it off."""
    max_answer_drain: int = 1024 * 1024
    """After the relay's own answer, at most this many bytes the caller still sends are read, so
    the close does not turn into a reset that destroys the answer unread."""


@dataclass(frozen=True, slots=True)
class SocketOptions:
    """The TCP options `arp.net.sockets` sets; seconds and counts as the kernel takes them."""

    keepalive_idle: int = 30
    """A long-lived idle link (control link, pooled tunnel) is probed after this many seconds."""
    keepalive_interval: int = 10
    """Seconds between keep-alive probes."""
    keepalive_count: int = 3
    """Unanswered probes after which the kernel declares the peer dead (so about a minute)."""
    defer_accept: int = 1
    """TCP_DEFER_ACCEPT on client-first listeners: seconds the kernel holds a silent connection
    before handing it over anyway."""


SOCKET_OPTIONS = SocketOptions()


@dataclass(frozen=True, slots=True)
class RegistrationBounds:
    """Registrations on the control port of a relay without ``--auth-token`` (anyone may
    register), per caller address (IPv6 per /64): so one address cannot fill the client table."""

    per_address_rate: int = 20
    """New registrations one address may make per `rate_window` seconds."""
    rate_window: float = 10.0
    per_address_clients: int = 32
    """Clients registered from one address that the relay holds at once (online or kept for
    the retention window)."""
    max_addresses: int = 65_536
    """Addresses whose recent registrations are remembered (the oldest are forgotten)."""


REGISTRATION_BOUNDS = RegistrationBounds()
TIMEOUTS = Timeouts()
"""The relay/client deadlines' defaults (other sections start from some of them)."""

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SessionBounds:
    """Bounds and deadlines of the session manager (`SessionConfig` inherits them)."""

    max_sessions: int = 8
    """Runs going on at once (beyond: 429); arpc's ``--max-sessions`` default."""
    max_kept_sessions: int = 10_000
    """Sessions kept, running or not: a new one beyond this evicts the oldest finished ones
    (their files too); 429 only when every kept session is running."""
    max_prompt_bytes: int = 256 * 1024
    """The largest prompt, in UTF-8 bytes (beyond: 413); arpc's ``--max-prompt-bytes`` default."""
    memory_events: int = 2000
    """Events of each session kept in memory besides the file (`EventLog`'s default too)."""
    memory_bytes: int = 512 * 1024
    """Bytes of events of each session kept in memory besides the file: the one event-memory cap
    (`EventLog`'s default too)."""
    max_output_bytes: int = 1024 * MIB
    """The most output stored per session (checked per chunk read, so it may overshoot by one);
    beyond it one ``error`` event says so, and nothing more is kept. A run's spool
    (`arp.agents.supervisor`) holds at most this plus ``max_line`` bytes likewise."""
    max_line: int = 8 * MIB
    """The longest output line kept whole; a longer one is cut (the rest is dropped)."""
    read_chunk: int = 16 * 1024
    """The read size on a child's stdout/stderr: also the most output parsed in one go, which
    keeps each turn of the event loop short while many sessions print at once."""
    sigint_grace: float = 3.0
    """Cancel: how long after SIGINT before SIGTERM."""
    sigterm_grace: float = 3.0
    """Cancel: how long after SIGTERM before SIGKILL."""
    kill_wait: float = 5.0
    """How long to wait for the child after SIGKILL (and for its pipes to close)."""
    idle_tick: float = 15.0
    """A follower gets an empty batch after this much silence (keep-alives)."""
    follow_batch: int = 1000
    """The most lines a follower gets at once."""
    page_events: int = 1000
    """Events in a page (`SessionManager.page`, the HTTP API's, the remote ``session_output``)
    when the caller names no limit; the remote protocol's cap too."""
    max_page_events: int = 10_000
    """The most events one page holds, whatever the caller asks."""
    spool_sync_interval: float = 0.2
    """A run's supervisor fsyncs the spool of its agent's output at most this often
    (`arp.agents.supervisor`): what a crash of the machine, not of arpc, can lose."""
    spool_poll: float = 0.5
    """arpc looks at a run's spool at least this often even when the supervisor's wake-up
    does not come (`arp.agents.reattach`); also how soon a dead supervisor is noticed."""
    supervisor_start: float = 30.0
    """How long arpc waits for a run's supervisor to start its agent."""
    approval_timeout: float = 900.0
    """``ask`` mode: seconds an approval waits for a person before it is denied
    (``arpc --approval-timeout``)."""


SESSION_BOUNDS = SessionBounds()


@dataclass(frozen=True, slots=True)
class AttachmentBounds:
    """Images and text files sent with a prompt (HTTP API, console, MCP, remote protocol)."""

    max_count: int = 10
    """Attachments one prompt may carry (beyond: 413)."""
    max_bytes: int = 20 * MIB
    """Their decoded bytes together, per prompt (beyond: 413). The HTTP API's body limit leaves
    room for this much in base64 (4/3 of it) besides the prompt."""
    max_name_chars: int = 128
    """A longer file name is cut (its extension kept)."""


ATTACHMENT_BOUNDS = AttachmentBounds()


@dataclass(frozen=True, slots=True)
class ChangesBounds:
    """What a session changed in its project (`arp.agents.changes`): snapshot and diff bounds."""

    git_timeout: float = 30.0
    """Each git command (snapshot at the first run's start, diff on request) must end in this."""
    max_output: int = 64 * MIB
    """The most output read from one git command (a longer diff is cut)."""
    max_files: int = 1000
    """Files listed in one answer (the rest are counted in ``truncated``)."""
    max_diff_bytes: int = 64 * 1024
    """A file's diff in the listing is cut past this (a marker says how many bytes were cut);
    ``?path=`` gives that one file's diff up to ``max_file_diff_bytes``."""
    max_file_diff_bytes: int = 4 * MIB
    snapshot_files: int = 5000
    """Outside git: the most project files whose content is kept when the first run starts."""
    snapshot_file_bytes: int = 1 * MIB
    """Outside git: a larger file is recorded by size and hash only (no diff of its content)."""
    snapshot_bytes: int = 16 * MIB
    """Outside git: the most bytes of content kept for one session's snapshot."""


CHANGES_BOUNDS = ChangesBounds()


@dataclass(frozen=True, slots=True)
class HistoryLimits:
    """Bounds of history browsing."""

    default_sessions: int = 50
    max_sessions: int = 1000
    default_messages: int = 200
    max_messages: int = 2000
    recent_sessions: int = 5
    """Sessions shown inline under each project in the project listing."""
    max_line: int = 64 * MIB
    """A JSONL line longer than this is skipped, not buffered."""
    read_chunk: int = MIB
    head_bytes: int = MIB
    """How much of a file's start may be parsed for its cwd and first prompt."""
    tail_bytes: int = 64 * 1024
    """How much of a file's end is parsed for its last activity."""
    title_chars: int = 200
    transcript_cache_bytes: int = 512 * MIB
    """Sum of the file sizes whose parsed messages are kept in memory (least recent dropped)."""
    max_transcript_bytes: int = 2 * 1024 * MIB
    """A session file bigger than this is refused (413) rather than parsed."""
    parse_budget: float = 0.1
    """Seconds a page request goes on parsing a long session past the lines it needs."""
    max_concurrency: int = 4
    """History requests running in worker threads at once (the HTTP layer's bound)."""


@dataclass(frozen=True, slots=True)
class McpLimits:
    """Every bound and deadline the MCP face uses."""

    max_mcp_sessions: int = 64
    """MCP client sessions open at once (Streamable HTTP); beyond, a new one gets 503."""
    session_idle_timeout: float = 30 * 60.0
    """An MCP client session with no request in flight for this long is closed."""
    max_request_body: int = 4 * MIB
    """The largest JSON-RPC body on the loopback port (413 beyond; the prompt limit still holds)."""
    default_events: int = 200
    """Events `get_session` returns when the caller names no limit."""
    max_events: int = 1000
    """The most events one `get_session` call may ask for."""
    max_reply_chars: int = 256 * 1024
    """`get_session` stops adding events past this much JSON (at least one is always sent);
    ``has_more`` then says to ask again from ``next_after_seq``."""
    default_list: int = 50
    max_list: int = 1000
    """Page sizes of `list_sessions` and `list_projects`."""
    default_wait: float = 30.0
    max_wait: float = 600.0
    """`wait_session`'s timeout: the default, and the most a caller may ask for."""
    start_timeout: float = 10.0
    """How long starting the server may take before it counts as failed."""
    shutdown_timeout: float = 5.0
    """How long closing waits for open requests and streams before cancelling them."""
    forward_connect: float = 10.0
    """Through the relay: connecting to the loopback MCP port (pool wait included)."""
    forward_idle: float = 120.0
    """Through the relay: the longest silence of the loopback side before the forwarded
    response is ended (the SDK's SSE streams ping every 15 s, so only a stuck one is cut)."""
    max_forwarded: int = 100
    """Through the relay: requests and streams forwarded to the loopback port at once."""


@dataclass(frozen=True, slots=True)
class ApiBounds:
    """Bounds and deadlines of command mode's HTTP API (`CommandConfig` inherits them)."""

    shutdown_timeout: float = 5.0
    """How long closing the server waits for open requests before cancelling them."""
    default_list: int = 50
    """Sessions in a listing when the caller names no limit (the remote ``list_sessions`` too)."""
    max_list: int = 1000
    """The most sessions (or remote ``list_projects`` projects) one listing holds."""
    ws_heartbeat: float = 30.0
    """Seconds between WebSocket pings on a session's event stream."""
    ws_max_message: int = 64 * 1024
    """The largest message a client may send on a session's WebSocket."""


API_BOUNDS = ApiBounds()


@dataclass(frozen=True, slots=True)
class RemoteBounds:
    """Bounds and deadlines of the remote TCP server (`RemoteConfig` inherits them)."""

    max_line: int = 32 * MIB
    """The longest request line: a 20 MiB image is 26.7 MiB in base64, plus room for the rest."""
    max_attachment_bytes: int = 24 * MIB
    """Decoded images and files in one request, together."""
    max_concurrent: int = 4
    """Requests running at once on one connection (more wait: the server stops reading)."""
    max_connections: int = 64
    """Open connections (beyond: one ``connection_error`` line, then closed)."""
    request_timeout: float = 600.0
    """A request's whole deadline (``config.timeout`` may ask for less, never more)."""
    max_pending: int = 16
    """Request lines read ahead and waiting for a free slot (also bounded by ``max_line`` bytes)."""
    max_memory: int = 256 * MIB
    """Bytes of request lines and parsed requests held at once, all connections together: a
    partial line holds its bytes, a complete line twice its bytes (itself and its decoding)
    until parsed, a parsed request its attachments and texts until answered. What does not fit
    is answered with a ``connection_error`` at once (never waits)."""
    read_chunk: int = 256 * 1024
    """The read size on a connection (lines are framed from these reads)."""
    stream_limit: int = 64 * 1024
    """The asyncio stream buffer limit of each connection (reads are framed, not readline'd)."""
    write_timeout: float = 30.0
    """A client that takes no answer bytes for this long is disconnected."""
    stop_timeout: float = 15.0
    """How long stopping one agent (cancel) may take before it is left to the manager."""
    shutdown_timeout: float = 20.0
    """Closing waits this long for connections to stop their agents (longer than a stop)."""
    parse_in_thread: int = 256 * 1024
    """Lines at least this long are decoded in a worker thread (keeps the loop responsive)."""
    default_projects: int = 100
    """Projects ``list_projects`` returns when the caller names no limit."""


@dataclass(frozen=True, slots=True)
class GatewayBounds:
    """The gateway's remaining bounds and deadlines: fixed, not configuration keys."""

    max_body: int = MIB
    """The largest control-plane request body (beyond: 413)."""
    max_agents: int = 10_000
    """Registered agents (beyond: registration answers 429); also the most one listing shows."""
    inbound_queue: int = 4096
    """Received log/status/result messages of one agent waiting for their Redis write."""
    max_write_batch: int = 512
    """Messages written to Redis in one script call."""
    max_concurrent_writes: int = 4
    """Stream writes in flight at once (the rest wait, outside the Redis deadline)."""
    max_redis_connections: int = 32
    redis_retry_pause: float = 0.1
    """First pause before a failed stream write is retried (doubling up to the next)."""
    redis_retry_max: float = 2.0
    shutdown_grace: float = 5.0
    """Closing waits this long for open requests and WebSockets before cancelling them."""
    max_tasks_per_poll: int = 1000
    max_poll_response: int = 4 * MIB


@dataclass(frozen=True, slots=True)
class AgentBounds:
    """Deadlines and bounds of arpc as a gateway agent (`AgentOptions` inherits them)."""

    heartbeat_interval: float = 15.0
    """Seconds between heartbeats (``--agent-heartbeat-interval``; under the gateway's timeout)."""
    ack_timeout: float = 10.0
    """Resend a log/status/result not acked within this (the gateway may have lost Redis)."""
    max_unacked: int = 10_000
    """Messages waiting for an ack; a task's output pauses while this many wait."""
    max_immediate: int = 1024
    """Unkept messages (acks) waiting to be sent; beyond, the oldest is dropped (resent later)."""
    dedup_window: int = 4096
    """Message ids of received tasks remembered, so a task the gateway sends again is dropped."""
    max_message_size: int = MIB
    """Keep equal to the gateway's `agent.max_message_size`: every message sent is cut to fit it
    (encoded bytes), and a larger one received is acked and dropped."""
    connect_timeout: float = TIMEOUTS.connect
    """Opening the WebSocket to the gateway (the relay client's connect deadline)."""
    backoff_initial: float = TIMEOUTS.backoff_initial
    backoff_max: float = TIMEOUTS.backoff_max
    """The reconnect delay: first and cap (the relay client's)."""
    max_log_data: int = 256 * 1024
    """A longer event line is cut to this many characters in `data`."""


@dataclass(frozen=True, slots=True)
class AdminBounds:
    """The relay's admin port (`arps --admin-port`): dashboard, JSON and metrics."""

    request: float = 10.0
    """A request's head must arrive, and its answer be sent, within this."""
    max_connections: int = 32
    """Admin connections served at once; more are closed at once (scrapers, a few browsers)."""
    max_head: int = 8 * 1024
    """The largest request head the admin port reads."""
    refresh: float = 3.0
    """How often the dashboard fetches `/api/clients` again, in seconds."""


@dataclass(frozen=True, slots=True)
class ClusterBounds:
    """Several relay nodes on one Redis (`arps --cluster`): leases, the peer link, its bounds."""

    lease: float = 6.0
    """How long a node's records (itself, its clients, its TCP ports) live in Redis unless
    renewed: a node killed without a word loses its clients to other nodes within this plus one
    renewal (under 10 s)."""
    renew_every: float = 2.0
    """How often a node renews its leases (a third of `lease`: two renewals may fail)."""
    redis: float = 2.0
    """Every Redis call of the cluster registry (claim, release, renew, look-up)."""
    peer_connect: float = 5.0
    """Dialling another node's peer port, TLS handshake included."""
    peer_handshake: float = 5.0
    """The peer link's challenge, response and carry request, together."""
    peer_answer: float = TIMEOUTS.tunnel_wait + 2.0
    """How long a node waits for the holding node to say whether it carries a connection (the
    holder may wait `Timeouts.tunnel_wait` for a fresh tunnel of its own)."""
    max_peer_frame: int = 16 * 1024
    """The largest handshake frame on the peer link (checked before it is buffered)."""
    max_peer_links: int = 10_000
    """Peer links a node serves at once (each carries one public connection or stands for one
    tunnel)."""
    max_remote_clients: int = 100_000
    """Clients held by other nodes that this node keeps a shadow of (to route to them); beyond,
    requests for further ones get 404 until shadows go."""
    move_grace: float = 2.0
    """A node stopping gracefully tells its clients to move, then waits this long (or until
    they are gone) before it closes."""
    locate_cache: float = 1.0
    """Seconds a node remembers where a client lives before asking Redis again."""
    locate_cache_size: int = 10_000
    """Clients whose node is remembered at once (beyond, the memory starts over)."""
    relay_block: float = 1.0
    """A gateway node's reader of its deliver stream waits at most this long per read (and at
    most half the gateway's Redis deadline)."""
    relay_batch: int = 100
    """Entries one read of a gateway node's deliver stream takes."""
    relay_maxlen: int = 100_000
    """Entries a gateway node's deliver stream keeps (approximate trim)."""


CLUSTER_BOUNDS = ClusterBounds()
