//! Who may hold an HTTP connection: at most [`MAX_CONNECTIONS_PER_PEER`] per client
//! address and [`MAX_CONNECTIONS`] in all, fewer when the process's open-file limit leaves
//! less room. One client cannot take every slot, and the server never becomes what runs
//! the process out of file descriptors.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections one client address may hold at once; more are closed as soon as they are
/// accepted. IPv6 clients are counted by /64 prefix, the block one host usually has.
pub const MAX_CONNECTIONS_PER_PEER: usize = 32;

/// Connections served at once; more wait in the kernel's listen backlog. A plain
/// connection costs this process about 8 KiB idle and 12 KiB holding a nearly full
/// request head (measured: RSS growth over 2,000 connections); TLS adds rustls' record
/// buffers, assumed at most 24 KiB more. So 2,048 take 16 to 75 MiB, on top of the
/// kernel's socket buffers.
pub const MAX_CONNECTIONS: usize = 2048;

/// File descriptors left for everything but the HTTP server: gateway connections, the
/// state and config files, the listener, and the simulator's connections in `demo`.
pub const RESERVED_FDS: u64 = 256;

/// The connection slots and who holds them.
pub struct ConnectionLimits {
    slots: Arc<Semaphore>,
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl ConnectionLimits {
    /// [`MAX_CONNECTIONS`], or fewer when this process's soft open-file limit is lower.
    pub fn for_this_process() -> Self {
        let soft = open_files_soft_limit();
        let total = connection_budget(soft);
        if total < MAX_CONNECTIONS {
            tracing::info!(
                "serving at most {total} HTTP connections: the soft limit on open files is {} \
                 (raise it above {} for {MAX_CONNECTIONS})",
                soft.unwrap_or_default(),
                MAX_CONNECTIONS as u64 + RESERVED_FDS
            );
        }
        Self::new(total)
    }

    /// `total` slots, [`MAX_CONNECTIONS_PER_PEER`] per client address.
    pub fn new(total: usize) -> Self {
        ConnectionLimits {
            slots: Arc::new(Semaphore::new(total)),
            peers: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Waits for a free slot; `None` once the slots are closed (never, today).
    pub async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
    }

    /// Admits a connection from `peer` into `slot`, or gives the slot back when `peer`
    /// already holds [`MAX_CONNECTIONS_PER_PEER`] connections.
    pub fn admit(
        &self,
        slot: OwnedSemaphorePermit,
        peer: IpAddr,
    ) -> Result<Admission, OwnedSemaphorePermit> {
        let key = peer_key(peer);
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let held = peers.entry(key).or_insert(0);
        if *held >= MAX_CONNECTIONS_PER_PEER {
            return Err(slot);
        }
        *held += 1;
        Ok(Admission {
            _slot: slot,
            key,
            peers: self.peers.clone(),
        })
    }
}

/// One admitted connection: its slot and its place in its peer's count, both given back
/// on drop.
pub struct Admission {
    _slot: OwnedSemaphorePermit,
    key: IpAddr,
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = peers.get_mut(&self.key) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                peers.remove(&self.key);
            }
        }
    }
}

/// The address a connection is counted under: IPv4 as is (also when it arrives
/// IPv4-mapped on an IPv6 listener), IPv6 by its /64 prefix.
fn peer_key(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

/// The HTTP connections that fit under a soft open-file limit of `soft` (`None`: no limit
/// or unknown): [`RESERVED_FDS`] are kept for the rest of the process, or half of a very
/// low limit.
pub fn connection_budget(soft: Option<u64>) -> usize {
    let Some(soft) = soft else {
        return MAX_CONNECTIONS;
    };
    let room = soft.saturating_sub(RESERVED_FDS).max(soft / 2).max(1);
    usize::try_from(room).map_or(MAX_CONNECTIONS, |room| room.min(MAX_CONNECTIONS))
}

/// This process's soft limit on open files, from `/proc/self/limits`; `None` when it is
/// unlimited or cannot be read (not Linux).
pub fn open_files_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files_soft_limit(&limits)
}

fn parse_open_files_soft_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    // "Max open files  <soft>  <hard>  files"; "unlimited" does not parse.
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_soft_limit_on_open_files() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63704                63704                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_files_soft_limit(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_files_soft_limit(unlimited), None);
        assert_eq!(parse_open_files_soft_limit(""), None);
    }

    #[test]
    fn the_budget_stays_below_the_open_file_limit() {
        assert_eq!(connection_budget(None), MAX_CONNECTIONS);
        assert_eq!(connection_budget(Some(1_048_576)), MAX_CONNECTIONS);
        assert_eq!(connection_budget(Some(1024)), 768);
        assert_eq!(connection_budget(Some(256)), 128);
        assert_eq!(connection_budget(Some(1)), 1);
        assert_eq!(connection_budget(Some(0)), 1);
    }

    #[test]
    fn ipv6_peers_are_counted_by_slash_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("v6");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("v6");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("v6");
        assert_eq!(peer_key(a), peer_key(b));
        assert_ne!(peer_key(a), peer_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("mapped");
        assert_eq!(peer_key(mapped), "192.0.2.7".parse::<IpAddr>().expect("v4"));
    }

    #[tokio::test]
    async fn a_peer_over_its_bound_gets_its_slot_back_and_others_still_get_in() {
        let limits = ConnectionLimits::new(MAX_CONNECTIONS_PER_PEER + 1);
        let flooder: IpAddr = "192.0.2.1".parse().expect("v4");
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS_PER_PEER {
            let slot = limits.slot().await.expect("slot");
            held.push(limits.admit(slot, flooder).expect("under the bound"));
        }
        let slot = limits.slot().await.expect("one slot left");
        let slot = match limits.admit(slot, flooder) {
            Ok(_) => panic!("over the per-peer bound"),
            Err(slot) => slot,
        };
        let other = limits
            .admit(slot, "192.0.2.2".parse().expect("v4"))
            .expect("another address gets the slot back");
        drop(other);
        held.pop();
        let slot = limits.slot().await.expect("slot freed");
        assert!(
            limits.admit(slot, flooder).is_ok(),
            "room again after a close"
        );
        assert_eq!(limits.peers.lock().expect("lock").len(), 1);
        drop(held);
    }
}
