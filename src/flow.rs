//! Flow events: the one data type that plugins produce and backends consume.
//!
//! Owns `FlowEvent`, `FlowKey`, `FlowState`, `Proto` and `Micros` (wall-clock time in
//! microseconds since the Unix epoch), plus what travels with an event: who made it
//! (`Origin`), what a relay passes on (`Relayed`) and what the enrichment layer attached
//! (`Enriched`). It does no I/O and never reads the clock: the loop stamps events with
//! the time it read once per turn.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Wall-clock time as microseconds since 1970-01-01T00:00:00Z (UTC).
///
/// Fireflies carry microsecond resolution, so this is the resolution flowd keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(pub i64);

impl Micros {
    /// The current wall-clock time. Only the loop and the CLI call this.
    pub fn now() -> Micros {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Micros(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
            Err(e) => Micros(-i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX)),
        }
    }
}

/// Lifecycle state of a flow event (`flow-lifecycle.state` in a firefly).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlowState {
    /// The flow has started.
    Start,
    /// The flow has ended.
    End,
    /// The flow is still open (periodic update).
    Ongoing,
}

impl FlowState {
    /// All states, in a fixed order (for metrics).
    #[cfg(test)]
    pub(crate) const ALL: [FlowState; 3] = [FlowState::Start, FlowState::End, FlowState::Ongoing];

    /// The lower-case wire name: `start`, `end` or `ongoing`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FlowState::Start => "start",
            FlowState::End => "end",
            FlowState::Ongoing => "ongoing",
        }
    }

    /// Parses a state name, ignoring ASCII case.
    pub(crate) fn parse(s: &[u8]) -> Option<FlowState> {
        if s.eq_ignore_ascii_case(b"start") {
            Some(FlowState::Start)
        } else if s.eq_ignore_ascii_case(b"end") {
            Some(FlowState::End)
        } else if s.eq_ignore_ascii_case(b"ongoing") {
            Some(FlowState::Ongoing)
        } else {
            None
        }
    }
}

impl fmt::Display for FlowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Transport protocol of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
}

impl Proto {
    /// The lower-case wire name: `tcp` or `udp`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    /// The IP protocol number (6 or 17).
    #[cfg(feature = "ebpf")]
    pub(crate) fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }

    /// Parses a protocol name, ignoring ASCII case.
    pub(crate) fn parse(s: &[u8]) -> Option<Proto> {
        if s.eq_ignore_ascii_case(b"tcp") {
            Some(Proto::Tcp)
        } else if s.eq_ignore_ascii_case(b"udp") {
            Some(Proto::Udp)
        } else {
            None
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The 5-tuple that identifies a flow, as announced (src = this host's side for np_api).
///
/// Both addresses are of the same family: constructors reject mixed families.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowKey {
    /// Transport protocol.
    pub proto: Proto,
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
}

impl FlowKey {
    /// Builds a key; `None` when the two addresses are of different families.
    pub fn new(proto: Proto, src: SocketAddr, dst: SocketAddr) -> Option<FlowKey> {
        (src.is_ipv4() == dst.is_ipv4()).then_some(FlowKey { proto, src, dst })
    }

    /// True for IPv6 flows.
    pub(crate) fn is_ipv6(&self) -> bool {
        self.dst.is_ipv6()
    }

    /// The firefly `afi` value: `ipv4` or `ipv6`.
    pub(crate) fn afi(&self) -> &'static str {
        if self.is_ipv6() {
            "ipv6"
        } else {
            "ipv4"
        }
    }

    /// The same flow seen from the other side (src and dst swapped).
    pub(crate) fn reversed(&self) -> FlowKey {
        FlowKey { proto: self.proto, src: self.dst, dst: self.src }
    }
}

/// Hashes the key as one 38-byte block: the derived hash feeds the hasher a dozen small
/// pieces (discriminants, octets, ports), and SipHash's per-call cost made it the largest
/// part of matching 20,000 dumped sockets against the flow table. IPv6 flow info and scope
/// are left out (equal keys still hash equally; they are never set in table keys).
impl std::hash::Hash for FlowKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        fn put(b: &mut [u8], a: &SocketAddr) {
            let ip = match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            b[..16].copy_from_slice(&ip.octets());
            b[16..].copy_from_slice(&a.port().to_be_bytes());
        }
        let mut b = [0u8; 38];
        b[0] = self.proto as u8;
        b[1] = u8::from(self.src.is_ipv6());
        put(&mut b[2..20], &self.src);
        put(&mut b[20..38], &self.dst);
        state.write(&b);
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.proto, self.src, self.dst)
    }
}

/// Where a relayed flow's firefly came from, and which ends of the flow are this host's.
///
/// Set by the firefly listener; the flow table keeps it for open flows, so the enrichment
/// layer's `ongoing` events of a relayed flow obey the relay's loop rules too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayOrigin {
    /// Address the firefly was received from (a relay never sends it back there).
    pub from: Option<IpAddr>,
    /// The flow's src is one of this host's addresses.
    pub src_local: bool,
    /// The flow's dst is one of this host's addresses.
    pub dst_local: bool,
}

impl RelayOrigin {
    /// True when one end of the flow is this host's: the enrichment layer follows such a
    /// relayed TCP flow as it follows the flows announced through the pipe.
    pub fn has_local_end(&self) -> bool {
        self.src_local || self.dst_local
    }
}

/// A byte range `start..end` in a [`Received`] body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

/// What a relay does with one member of a received firefly's JSON (SPEC §6: everything
/// flowd does not own travels on as received).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Sent on exactly as received (key and value text).
    Kept,
    /// `flow-lifecycle`, `flow-id` or `context`: an object flowd reads; its members follow
    /// it in [`Received::members`], marked `nested`.
    Object,
    /// `start-time`, `end-time` or `current-time`: written as the same instant in flowd's
    /// form (UTC, six fraction digits, `+00:00`). A time with sub-microsecond digits
    /// (dCache's nine) is [`Role::Kept`] instead: flowd could not write the same instant.
    Time,
    /// `flow-id.src-ip`: replaced only when flowd rewrites this host's address (public
    /// address, UDP_FIREFLY_IP4_SRC/IP6_SRC).
    SrcIp,
    /// `flow-id.dst-ip`: replaced only when flowd rewrites this host's address.
    DstIp,
    /// `usage`, as received (also `{}`); flowd adds its own only when there is none.
    Usage,
    /// `netlink`, as received; flowd adds its own only when there is none.
    Netlink,
}

/// One member (`"key": value`) of a received firefly's JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Inside the nearest preceding top-level [`Role::Object`] member.
    pub nested: bool,
    /// What the relay does with it.
    pub role: Role,
    /// The key, quotes included, as received.
    pub key: Span,
    /// The value as received (for an object: from `{` to `}`).
    pub value: Span,
}

/// The JSON body of a received firefly, kept whole so that a relay passes on every field
/// it does not own, at any depth, in the order and spelling received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// The body as received (a JSON object; the syslog header is not kept).
    pub body: Box<str>,
    /// Its top-level members in order, each [`Role::Object`] followed by its own members.
    pub members: Vec<Member>,
}

impl Received {
    /// The text of `span` (empty if out of range).
    #[inline]
    pub fn text(&self, span: Span) -> &str {
        self.body.get(span.start as usize..span.end as usize).unwrap_or("")
    }

    /// The bytes of `span` (empty if out of range): what the relay copies.
    #[inline]
    pub fn bytes(&self, span: Span) -> &[u8] {
        self.body.as_bytes().get(span.start as usize..span.end as usize).unwrap_or(b"")
    }

    /// True when a member has this role (e.g. the producer sent `usage`).
    pub fn has(&self, role: Role) -> bool {
        self.members.iter().any(|m| m.role == role)
    }

    /// The raw value text at `path` (`["storage-stats"]`, `["context", "application"]`),
    /// found by the key as spelled (no escapes); for tests and logs.
    pub fn value(&self, path: &[&str]) -> Option<&str> {
        let key = |m: &Member, name: &str| self.text(m.key).strip_prefix('"').and_then(|k| k.strip_suffix('"')) == Some(name);
        match path {
            [top] => self.members.iter().find(|m| !m.nested && key(m, top)).map(|m| self.text(m.value)),
            [top, inner] => {
                let at = self.members.iter().position(|m| !m.nested && key(m, top))?;
                self.members[at + 1..].iter().take_while(|m| m.nested).find(|m| key(m, inner)).map(|m| self.text(m.value))
            }
            _ => None,
        }
    }
}

/// What travels with a relayed event (SPEC §6). Filled by the firefly listener; the
/// enrichment layer's `ongoing` events of a relayed flow carry its origin without a body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Relayed {
    /// Where it came from and which ends are this host's.
    pub origin: RelayOrigin,
    /// The received JSON: `None` on flowd's own `ongoing` events of a relayed flow.
    pub received: Option<Received>,
}

/// What the enrichment layer (`enrich`) attached to an event of this host's own flows
/// before the fan-out (relayed flows only when one of their ends is this host's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Enriched {
    /// The key as the outside sees it: a private src or dst replaced by this host's public
    /// address (discovery, manual pairs). `None` when nothing is replaced.
    pub public: Option<FlowKey>,
    /// The flow's socket's `struct tcp_info` from the latest sock_diag dump, as the kernel
    /// sent it (decode with `wire::sock_diag::TcpInfo::from_bytes`).
    pub tcp_info: Option<Vec<u8>>,
    /// True when that socket's local side is the flow's dst: its counters are seen from
    /// the other end (received and sent swap).
    pub reversed: bool,
}

/// Who made an event: the `plugin` label of `flowd_events_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Plugin number n (index into the daemon's plugin list).
    Plugin(usize),
    /// The enrichment layer (the periodic `ongoing` events); label `enrich`.
    Enricher,
}

/// One flow event: what a plugin saw, in the shape every backend understands.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowEvent {
    /// Lifecycle state.
    pub state: FlowState,
    /// The flow's 5-tuple.
    pub key: FlowKey,
    /// Experiment (science domain) id from the registry.
    pub exp: u32,
    /// Activity id from the registry (scoped by the experiment).
    pub act: u32,
    /// When the event was seen (the firefly `current-time`).
    pub at: Micros,
    /// When the flow started; the flow table fills it for `end`/`ongoing`.
    pub start_time: Option<Micros>,
    /// When the flow ended (`end` events only).
    pub end_time: Option<Micros>,
    /// Who produced the event (the loop sets it for plugins' events).
    pub origin: Origin,
    /// Data received with a relayed firefly.
    pub relayed: Option<Box<Relayed>>,
    /// What the enrichment layer attached (own flows only, set during the fan-out).
    pub enriched: Option<Box<Enriched>>,
}

impl FlowEvent {
    /// A fresh event as a plugin makes it: no start/end time yet, nothing relayed or
    /// attached; the loop sets the plugin's number in `origin`.
    pub fn new(state: FlowState, key: FlowKey, exp: u32, act: u32, at: Micros) -> FlowEvent {
        FlowEvent { state, key, exp, act, at, start_time: None, end_time: None, origin: Origin::Plugin(0), relayed: None, enriched: None }
    }
}

/// An experiment or activity as a user wrote it: a number or a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdOrName {
    /// A numeric id, used as is.
    Id(u32),
    /// A registry name, resolved against the registry in force.
    Name(String),
}

impl IdOrName {
    /// Reads a token: all digits → id, anything else → name.
    pub fn parse(s: &str) -> IdOrName {
        match s.parse::<u32>() {
            Ok(n) if s.bytes().all(|b| b.is_ascii_digit()) => IdOrName::Id(n),
            _ => IdOrName::Name(s.to_string()),
        }
    }
}

impl std::fmt::Display for IdOrName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdOrName::Id(n) => write!(f, "{n}"),
            IdOrName::Name(s) => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_state_and_proto_parse_case_insensitively() {
        assert_eq!(FlowState::parse(b"START"), Some(FlowState::Start));
        assert_eq!(FlowState::parse(b"Ongoing"), Some(FlowState::Ongoing));
        assert_eq!(FlowState::parse(b"stop"), None);
        assert_eq!(Proto::parse(b"UDP"), Some(Proto::Udp));
        assert_eq!(Proto::parse(b"sctp"), None);
    }

    #[test]
    fn test_key_rejects_mixed_families() {
        let v4: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:2".parse().unwrap();
        assert!(FlowKey::new(Proto::Tcp, v4, v6).is_none());
        let k = FlowKey::new(Proto::Tcp, v6, v6).unwrap();
        assert_eq!(k.afi(), "ipv6");
        assert_eq!(k.reversed().src, v6);
    }
}
