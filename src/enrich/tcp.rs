//! The enrichment layer's tcp_info cache: this host's open flows (as plugins announced
//! them, and relayed TCP flows with an end on this host) with the latest `tcp_info` of
//! their socket.
//!
//! Filled by the enricher's periodic dump (this cache is that dump's [`Sink`]): each
//! dumped socket is looked up by its 4-tuple in both orientations (the flow's src is
//! normally the local side; a socket whose local side is the flow's src wins over the
//! reverse one within one dump, which matters when both ends are on this host), with
//! IPv4-mapped addresses as IPv4. An `end` event takes the last sample seen, because
//! when the end is announced the socket may already be gone. Bounded by FLOW_TABLE_SIZE.
//! No I/O, no clock.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::dump::Sink;
use crate::flow::{FlowEvent, FlowKey, FlowState, Micros, Proto, RelayOrigin};
use crate::netaddr::canonical;
use crate::wire::sock_diag::{Conn, TcpInfo};

/// The tcp_info of a flow, from the socket's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sample {
    /// As the kernel sent it.
    pub info: TcpInfo,
    /// True when the socket's local side is the flow's dst.
    pub reversed: bool,
}

/// What is known about one open flow.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tracked {
    /// Experiment id.
    pub exp: u32,
    /// Activity id.
    pub act: u32,
    /// When the flow started.
    pub start: Micros,
    /// A relayed flow's origin: its `ongoing` events obey the relay's loop rules.
    pub relay: Option<RelayOrigin>,
    sample: Option<Sample>,
    /// Dump generation that last set `sample`.
    gen: u32,
}

/// Open flows and their latest tcp_info.
#[derive(Debug)]
pub(crate) struct TcpCache {
    flows: HashMap<FlowKey, Tracked>,
    cap: usize,
    gen: u32,
}

impl TcpCache {
    /// An empty cache holding at most `cap` flows.
    pub(crate) fn new(cap: usize) -> TcpCache {
        TcpCache { flows: HashMap::new(), cap, gen: 0 }
    }

    /// Number of open flows.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.flows.len()
    }

    /// True when no flow is open.
    pub(crate) fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// True when a TCP flow is open (a dump can find something).
    pub(crate) fn has_tcp(&self) -> bool {
        self.flows.keys().any(|k| k.proto == Proto::Tcp)
    }

    /// The open flows' keys.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &FlowKey> {
        self.flows.keys()
    }

    /// The open flow with this key.
    pub(crate) fn get(&self, key: &FlowKey) -> Option<&Tracked> {
        self.flows.get(key)
    }

    /// A new dump begins: its samples replace those of earlier dumps.
    pub(crate) fn next_generation(&mut self) {
        self.gen = self.gen.wrapping_add(1);
    }

    /// Follows one of this host's flow events; returns the tcp_info for it (`end`: the
    /// last one seen before the flow ended; a new flow has none yet).
    pub(crate) fn observe(&mut self, ev: &FlowEvent) -> Option<Sample> {
        match ev.state {
            FlowState::Start | FlowState::Ongoing => {
                if let Some(t) = self.flows.get(&ev.key) {
                    return t.sample;
                }
                if self.flows.len() < self.cap {
                    let start = ev.start_time.unwrap_or(ev.at);
                    self.flows.insert(ev.key, Tracked { exp: ev.exp, act: ev.act, start, relay: ev.relayed.as_ref().map(|r| r.origin), sample: None, gen: 0 });
                }
                None
            }
            FlowState::End => self.flows.remove(&ev.key).and_then(|t| t.sample),
        }
    }

    /// Gives one dumped socket's tcp_info to the flow it belongs to, if any.
    fn match_socket(&mut self, local: SocketAddr, remote: SocketAddr, info: TcpInfo) {
        let local = SocketAddr::new(canonical(local.ip()), local.port());
        let remote = SocketAddr::new(canonical(remote.ip()), remote.port());
        let key = FlowKey { proto: Proto::Tcp, src: local, dst: remote };
        let gen = self.gen;
        if let Some(t) = self.flows.get_mut(&key) {
            t.sample = Some(Sample { info, reversed: false });
            t.gen = gen;
        } else if let Some(t) = self.flows.get_mut(&key.reversed()) {
            // The socket whose local side is the flow's src wins within one dump.
            if t.gen != gen || t.sample.is_some_and(|s| s.reversed) {
                t.sample = Some(Sample { info, reversed: true });
                t.gen = gen;
            }
        }
    }
}

impl Sink for TcpCache {
    fn conn(&mut self, c: Conn) {
        if let Some(info) = c.tcp_info {
            self.match_socket(c.src, c.dst, info);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str, d: &str) -> FlowKey {
        FlowKey::new(Proto::Tcp, s.parse().unwrap(), d.parse().unwrap()).unwrap()
    }

    fn info(rtt: u32) -> TcpInfo {
        let mut raw = [0u8; 248];
        raw[0] = 1;
        raw[68..72].copy_from_slice(&rtt.to_ne_bytes());
        TcpInfo::from_bytes(&raw)
    }

    fn conn(src: SocketAddr, dst: SocketAddr, rtt: u32) -> Conn {
        Conn { src, dst, state: 1, inode: 1, uid: 0, tcp_info: Some(info(rtt)), ext: Default::default() }
    }

    #[test]
    fn test_matching_prefers_the_src_side_and_maps_v4_in_v6() {
        let mut t = TcpCache::new(10);
        let k = key("127.0.0.1:1000", "127.0.0.1:2000");
        t.observe(&FlowEvent::new(FlowState::Start, k, 2, 9, Micros(1)));
        // Reverse socket first, then the exact one: the exact one wins.
        t.next_generation();
        t.conn(conn(k.dst, k.src, 5000));
        t.conn(conn("[::ffff:127.0.0.1]:1000".parse().unwrap(), "[::ffff:127.0.0.1]:2000".parse().unwrap(), 1234));
        t.conn(conn(k.dst, k.src, 9999));
        t.conn(Conn { tcp_info: None, ..conn(k.src, k.dst, 1) });
        let s = t.flows[&k].sample.unwrap();
        assert_eq!((s.info.rtt(), s.reversed), (Some(1234), false));
        // Only the reverse socket exists in the next dump: it is taken, marked reversed.
        t.next_generation();
        t.conn(conn(k.dst, k.src, 42));
        let s = t.flows[&k].sample.unwrap();
        assert_eq!((s.info.rtt(), s.reversed), (Some(42), true));
        assert_eq!(t.observe(&FlowEvent::new(FlowState::Ongoing, k, 2, 9, Micros(2))).map(|s| s.info.rtt()), Some(Some(42)));
        // The end event gets the last sample and forgets the flow.
        let got = t.observe(&FlowEvent::new(FlowState::End, k, 2, 9, Micros(2)));
        assert_eq!(got.map(|s| s.info.rtt()), Some(Some(42)));
        assert!(t.is_empty());
    }

    #[test]
    fn test_bounded_and_start_time_kept() {
        let mut t = TcpCache::new(2);
        for p in 1..=3 {
            let mut ev = FlowEvent::new(FlowState::Start, key("192.0.2.1:1", &format!("198.51.100.1:{p}")), 2, 9, Micros(10 + i64::from(p)));
            ev.start_time = Some(Micros(5));
            t.observe(&ev);
        }
        assert_eq!(t.len(), 2);
        assert!(t.keys().all(|k| t.get(k).is_some_and(|f| f.start == Micros(5) && (f.exp, f.act) == (2, 9))));
        assert!(t.has_tcp());
    }
}
