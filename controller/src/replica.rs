//! Which controller replica leads. With the embedded store there is one replica and it
//! always leads; on etcd the replicas elect one through a lease (`etcd::campaign`), and
//! the others serve reads and send every write to it.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        RwLock,
    },
    time::Instant,
};

pub struct Leadership {
    /// This replica's URL, as the others name it to clients (None: the only replica).
    pub me: Option<String>,
    leading: AtomicBool,
    leader: RwLock<Option<String>>,
    /// Until when the lead's lease is surely alive (None: no lease, the only replica).
    lease_until: RwLock<Option<Instant>>,
}

impl Leadership {
    /// The only replica: it leads from the start.
    pub fn solo() -> Leadership {
        Leadership {
            me: None,
            leading: AtomicBool::new(true),
            leader: RwLock::new(None),
            lease_until: RwLock::new(None),
        }
    }

    /// One of several replicas, following until elected.
    pub fn replica(me: String) -> Leadership {
        Leadership {
            me: Some(me),
            leading: AtomicBool::new(false),
            leader: RwLock::new(None),
            lease_until: RwLock::new(None),
        }
    }

    /// Whether this replica leads now: elected, and its lease surely alive.
    pub fn leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
            && self
                .lease_until
                .read()
                .unwrap()
                .is_none_or(|t| Instant::now() < t)
    }

    /// The lead's lease is surely alive until `t` (a renewal's send time plus what it
    /// has left).
    pub fn valid_until(&self, t: Instant) {
        *self.lease_until.write().unwrap() = Some(t);
    }

    /// The leader's URL as the election last showed it (None: none is known, or this
    /// replica leads).
    pub fn leader(&self) -> Option<String> {
        self.leader.read().unwrap().clone()
    }

    pub fn set_leader(&self, url: Option<String>) {
        *self.leader.write().unwrap() = url;
    }

    pub fn set_leading(&self) {
        self.set_leader(self.me.clone());
        self.leading.store(true, Ordering::SeqCst);
    }

    /// What this replica is, for health and logs.
    pub fn role(&self) -> &'static str {
        match (self.me.is_some(), self.leading()) {
            (false, _) => "only",
            (true, true) => "leader",
            (true, false) => "follower",
        }
    }
}

/// The reads a follower answers from its copy of the state (kept within a moment of the
/// leader's); every other request (changes, sync streams, what only the leader knows:
/// acknowledgements, traffic, measurements, the manager's and brokers' runs) goes to the
/// leader.
/// (The hosts' list carries their sync state, the bound its measured part and the
/// migrations their live progress: only the leader has those.)
const FOLLOWER_READS: [&str; 8] = [
    "/v1/environments",
    "/v1/environments/{name}",
    "/v1/links",
    "/v1/rules",
    "/v1/route",
    "/v1/hosts/{host}/interfaces",
    "/v1/credentials",
    "/v1/audit",
];

/// Whether a follower answers this request itself (`route` is the matched route).
pub fn served_by_followers(method: &str, route: &str) -> bool {
    matches!(method, "GET" | "HEAD") && FOLLOWER_READS.contains(&route)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followers_answer_only_reads_of_the_state() {
        assert!(served_by_followers("GET", "/v1/environments/{name}"));
        assert!(served_by_followers("HEAD", "/v1/audit"));
        assert!(!served_by_followers("PUT", "/v1/environments/{name}"));
        assert!(!served_by_followers("POST", "/v1/hosts/{host}/register"));
        assert!(!served_by_followers("GET", "/v1/hosts/{host}/sync"));
        assert!(!served_by_followers("GET", "/v1/sync"));
        assert!(!served_by_followers("GET", "/v1/hosts"));
        let solo = Leadership::solo();
        assert!(solo.leading());
        assert_eq!(solo.role(), "only");
        let r = Leadership::replica("http://10.0.0.1:7800".into());
        assert_eq!(
            (r.leading(), r.role(), r.leader()),
            (false, "follower", None)
        );
        r.set_leading();
        assert_eq!(r.role(), "leader");
        assert_eq!(r.leader().as_deref(), Some("http://10.0.0.1:7800"));
    }
}
