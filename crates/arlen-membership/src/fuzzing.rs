//! Entry points for the coverage-guided fuzz targets in `fuzz/` (feature
//! `fuzzing`; no production code path uses it). Each drives the real code a
//! datagram or record from the network reaches, without sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use arlen_cluster::HeardClock;

use crate::gossip::core::{Core, Protocol};
use crate::gossip::identity::{Announced, GossipId};
use crate::gossip::seal::{Sealing, UnsealedTraffic};
use crate::gossip::{epoch_ms_now, GossipTraffic};

/// The cluster name every [`GossipReceiver`] belongs to.
pub const CLUSTER: &str = "fuzz";
/// The key a [`GossipReceiver`] opens sealed datagrams with.
pub const KEY: [u8; 32] = [7; 32];

/// One gossip node's protocol core (sealing, identity codec, foca) with no
/// socket: datagrams go in, what it would send and schedule is discarded.
pub struct GossipReceiver {
    core: Core,
    traffic: Arc<GossipTraffic>,
    now: SystemTime,
}

impl GossipReceiver {
    /// A node that opens datagrams sealed with [`KEY`] (and, if `accept_unsealed`,
    /// unsealed ones too, as during a rollout).
    pub fn new(accept_unsealed: bool) -> Self {
        let identity = GossipId {
            node_id: "node-1".to_owned(),
            generation: 1,
            seq: 0,
            addr: SocketAddr::from(([127, 0, 0, 1], 7946)),
            http_url: "http://127.0.0.1:8080".to_owned(),
            state: Announced::Alive,
            meta: crate::gossip::identity::Meta { software: Some("0.1.0+fuzz".to_owned()), zone: Some("z".to_owned()) },
        };
        let protocol = Protocol::defaults(16, 3);
        let unsealed = if accept_unsealed { UnsealedTraffic::Accept } else { UnsealedTraffic::Refuse };
        let traffic = Arc::new(GossipTraffic::default());
        let sealing = Sealing::new(CLUSTER, &[KEY], unsealed);
        let core = Core::new(identity, CLUSTER, &protocol, sealing, 1, HeardClock::default(), traffic.clone());
        Self { core, traffic, now: SystemTime::now() }
    }

    /// Seals `packet` with [`KEY`] as a member holding the key would, so the
    /// decoders behind the opener see attacker-chosen plaintext.
    pub fn seal(&self, packet: &[u8]) -> Vec<u8> {
        Sealing::new(CLUSTER, &[KEY], UnsealedTraffic::Refuse).seal(packet, epoch_ms_now())
    }

    /// Seals `packet` as a member of protocol version 2 would (identities in
    /// layout 1): the decoder that transcodes older peers' packets sees
    /// attacker-chosen plaintext too.
    pub fn seal_layout_1(&self, packet: &[u8]) -> Vec<u8> {
        let ext = crate::gossip::seal::extension("0.1.0+fuzz");
        Sealing::new(CLUSTER, &[KEY], UnsealedTraffic::Refuse).seal_for(packet, epoch_ms_now(), 2, &ext)
    }

    /// Hands one datagram to the core, as the driver does on receipt.
    pub fn receive(&mut self, from: SocketAddr, datagram: &[u8]) {
        self.core.handle_datagram(from, datagram, self.now);
        let _ = self.core.take_output();
    }

    /// Members known (this node excluded), each with a complete identity.
    pub fn members(&self) -> Vec<(String, u64)> {
        self.core.members().map(|m| (m.id().node_id.clone(), m.id().generation)).collect()
    }

    /// The most members the core may hold (this node included).
    pub fn max_members(&self) -> usize {
        16
    }

    /// Datagrams refused so far, for all reasons.
    pub fn rejected(&self) -> u64 {
        crate::Rejection::ALL.iter().map(|r| self.traffic.rejected(*r)).sum()
    }
}

/// Whether the etcd source would count the record `key` = `value` (leased by
/// `lease`, 0 meaning none) as a member, and under which node id.
pub fn etcd_record(prefix: &str, key: &[u8], value: &[u8], lease: i64) -> Option<String> {
    crate::etcd::check_record_parts(prefix, key, value, lease).ok().map(|registration| registration.node_id)
}

/// Well-formed unsealed datagrams addressed to a [`GossipReceiver`] (an
/// announce, and gossip naming members alive, suspect and down): seeds for
/// the fuzzer's corpus.
pub fn seed_datagrams() -> Vec<Vec<u8>> {
    use crate::forge::{Claim, ForgedMember, Wrapping};
    let member = |n: u16, state: &'static str| ForgedMember {
        node_id: format!("node-{n}"),
        generation: 1_700_000_000_000 + u64::from(n),
        seq: 0,
        addr: SocketAddr::from(([127, 0, 0, 2], 7000 + n)),
        http_url: format!("http://127.0.0.2:{}", 8000 + n),
        state,
    };
    let receiver = ForgedMember {
        node_id: "node-1".to_owned(),
        generation: 1,
        seq: 0,
        addr: SocketAddr::from(([127, 0, 0, 1], 7946)),
        http_url: "http://127.0.0.1:8080".to_owned(),
        state: "alive",
    };
    let from = member(2, "alive");
    vec![
        crate::forge::announce(CLUSTER, Wrapping::Unsealed, &from, receiver.addr),
        crate::forge::gossip(
            CLUSTER,
            Wrapping::Unsealed,
            &from,
            &receiver,
            &[
                (member(3, "alive"), Claim::Alive),
                (member(4, "draining"), Claim::Suspect),
                (member(5, "left"), Claim::Down),
            ],
        ),
    ]
}
