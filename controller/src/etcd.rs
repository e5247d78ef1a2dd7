//! The store's tables in etcd (v3 API: KV, Txn, Lease), for several controller replicas,
//! and their election of a leader through a lease.
//!
//! A table's row is the key `{prefix}{table}/{key}`. A transaction's conditions become
//! etcd compares; a fenced one also compares the leader key's lease with this replica's,
//! so a replica that lost its lease (paused, cut off) cannot change the state after
//! another took over. The calls are synchronous for the store: they run on a runtime of
//! their own and the caller waits, at most `TIMEOUT`.
//!
//! There is one client per member: a call that failed on the way (refused, timed out,
//! or the member is not part of a quorum) goes to the next, as many times as there are
//! members. A change may then have been made and its answer lost; the store tags each
//! change so that it knows its own (`Store::write`), and no change is made twice.
use std::{
    future::Future,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, SortOrder, SortTarget,
    Txn as ETxn, TxnOp, TxnOpResponse,
};
use tracing::{info, warn};

use crate::{
    kv::{Kv, Op, Refused, Rows, Txn},
    replica::Leadership,
};

/// How long one call may take, over every member: etcd answers in milliseconds, or has
/// lost its quorum.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long one member may take before the call goes to the next (a member cut off from
/// its peers holds a request until it times out).
const PER_MEMBER: Duration = Duration::from_millis(1500);
/// How often a follower looks for the leader key.
const LOOK: Duration = Duration::from_millis(500);

/// A client per member, and the one spoken to now.
struct Members {
    clients: Vec<Client>,
    current: AtomicUsize,
}

impl Members {
    fn pick(&self) -> (usize, Client) {
        let i = self.current.load(Ordering::SeqCst) % self.clients.len();
        (i, self.clients[i].clone())
    }

    /// Member `i` could not be reached: speak to the next.
    fn skip(&self, i: usize) {
        let _ = self.current.compare_exchange(
            i,
            (i + 1) % self.clients.len(),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// Runs `call` with a member's client, and with the next members' while the call
    /// was not delivered.
    async fn call<T, F: Future<Output = Result<T, etcd_client::Error>>>(
        &self,
        call: impl Fn(Client) -> F,
    ) -> Result<T> {
        let mut last = None;
        for _ in 0..self.clients.len() {
            let (i, c) = self.pick();
            match tokio::time::timeout(PER_MEMBER, call(c)).await {
                Ok(Err(e)) if transient(&e) => {
                    self.skip(i);
                    last = Some(e.to_string());
                }
                Ok(other) => return other.map_err(anyhow::Error::from),
                Err(_) => {
                    self.skip(i);
                    last = Some(format!("no answer within {PER_MEMBER:?}"));
                }
            }
        }
        Err(anyhow!(
            "no member answered (the last: {}); a member cut off from its quorum cannot",
            last.unwrap_or_default()
        ))
    }
}

/// Whether another member may answer: the connection was refused, broken or timed out,
/// or the member said it cannot serve (no quorum, no leader).
fn transient(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            matches!(
                s.code(),
                Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded
            )
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

pub struct Etcd {
    rt: tokio::runtime::Runtime,
    members: Arc<Members>,
    prefix: String,
    endpoints: String,
    /// This replica's lease while it leads (shared with its campaign, which must not
    /// hold the engine: the engine owns the runtime the campaign runs on).
    fence: Arc<Mutex<Option<i64>>>,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.resign();
    }
}

impl Etcd {
    /// Connects and reads once, so that a wrong endpoint is said at start.
    pub fn connect(endpoints: &[String], prefix: &str) -> Result<Etcd> {
        if endpoints.is_empty() {
            bail!("--etcd-endpoints: no endpoint given");
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd")
            .enable_all()
            .build()?;
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(PER_MEMBER)
            .with_keep_alive(Duration::from_secs(2), TIMEOUT);
        let mut clients = Vec::new();
        for e in endpoints {
            let (ep, o) = (e.clone(), options.clone());
            let c = rt
                .block_on(async move { Client::connect([ep], Some(o)).await })
                .with_context(|| format!("--etcd-endpoints: cannot connect to {e}"))?;
            clients.push(c);
        }
        let etcd = Etcd {
            rt,
            members: Arc::new(Members {
                clients,
                current: AtomicUsize::new(0),
            }),
            prefix: prefix.to_string(),
            endpoints: endpoints.join(","),
            fence: Arc::new(Mutex::new(None)),
        };
        etcd.revision().with_context(|| {
            format!(
                "--etcd-endpoints: etcd at {} does not answer",
                etcd.endpoints
            )
        })?;
        Ok(etcd)
    }

    /// Makes `call` on the etcd runtime (on the next members while it is not
    /// delivered) and waits for it, at most `TIMEOUT`.
    fn block<T: Send + 'static, F: Future<Output = Result<T, etcd_client::Error>> + Send>(
        &self,
        call: impl Fn(Client) -> F + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        let members = self.members.clone();
        self.rt.spawn(async move {
            let _ = tx.send(tokio::time::timeout(TIMEOUT, members.call(call)).await);
        });
        match rx.recv() {
            Ok(Ok(r)) => r.map_err(|e| anyhow!("etcd at {}: {e}", self.endpoints)),
            Ok(Err(_)) => Err(anyhow!(
                "etcd at {} did not answer within {TIMEOUT:?} (has it lost its quorum?)",
                self.endpoints
            )),
            Err(_) => Err(anyhow!("etcd's runtime stopped")),
        }
    }

    fn key(&self, table: &str, key: &str) -> String {
        format!("{}{table}/{key}", self.prefix)
    }

    fn leader_key(&self) -> String {
        leader_key(&self.prefix)
    }

    /// A table's rows as `opts` select them (a prefix range, with a revision, an order or
    /// a limit), and the revision they are of.
    fn range(&self, table: &str, opts: GetOptions) -> Result<(u64, Rows)> {
        let start = self.key(table, "");
        let opts = opts.with_prefix();
        let s = start.clone();
        let resp = self.block(move |mut c| {
            let (s, opts) = (s.clone(), opts.clone());
            async move { c.get(s, Some(opts)).await }
        })?;
        let rev = resp.header().map_or(0, |h| h.revision()) as u64;
        let mut rows = Rows::new();
        for kv in resp.kvs() {
            let k = kv.key_str()?.strip_prefix(&start).unwrap_or_default();
            rows.insert(k.to_string(), kv.value_str()?.to_string());
        }
        Ok((rev, rows))
    }

    /// Ends this replica's lease (a clean stop): another replica takes over at once.
    pub fn resign(&self) {
        let Some(lease) = self.fence.lock().unwrap().take() else {
            return;
        };
        match self.block(move |mut c| async move { c.lease_revoke(lease).await }) {
            Ok(_) => info!("resigned the lead"),
            Err(e) => warn!(error = %e, "could not resign; the lease ends by itself"),
        }
    }
}

impl Kv for Etcd {
    fn get(&self, table: &'static str, key: &str) -> Result<Option<String>> {
        let k = self.key(table, key);
        let resp = self.block(move |mut c| {
            let k = k.clone();
            async move { c.get(k, None).await }
        })?;
        match resp.kvs().first() {
            Some(kv) => Ok(Some(kv.value_str()?.to_string())),
            None => Ok(None),
        }
    }

    fn scan(&self, table: &'static str) -> Result<Rows> {
        Ok(self.range(table, GetOptions::new())?.1)
    }

    fn last(&self, table: &'static str, n: usize) -> Result<Rows> {
        let newest = GetOptions::new()
            .with_sort(SortTarget::Key, SortOrder::Descend)
            .with_limit(n as i64);
        Ok(self.range(table, newest)?.1)
    }

    fn load(&self, tables: &[&'static str]) -> Result<(u64, Vec<Rows>)> {
        let mut revision = None;
        let mut out = Vec::new();
        for t in tables {
            let opts = match revision {
                Some(r) => GetOptions::new().with_revision(r),
                None => GetOptions::new(),
            };
            let (rev, rows) = self.range(t, opts)?;
            revision.get_or_insert(rev as i64);
            out.push(rows);
        }
        Ok((revision.unwrap_or(0) as u64, out))
    }

    fn commit(&self, txn: &Txn) -> Result<Option<u64>> {
        let mut compares: Vec<Compare> = txn
            .conds
            .iter()
            .map(|c| {
                let k = self.key(c.table, &c.key);
                match &c.value {
                    Some(v) => Compare::value(k, CompareOp::Equal, v.as_str()),
                    None => Compare::version(k, CompareOp::Equal, 0),
                }
            })
            .collect();
        let fence = *self.fence.lock().unwrap();
        if txn.fenced {
            let Some(lease) = fence else {
                return Err(Refused(
                    "this controller replica does not lead: only the leader changes the state"
                        .into(),
                )
                .into());
            };
            compares.push(Compare::lease(self.leader_key(), CompareOp::Equal, lease));
        }
        let ops: Vec<TxnOp> = txn
            .ops
            .iter()
            .map(|op| match op {
                Op::Put { table, key, value } => {
                    TxnOp::put(self.key(table, key), value.as_str(), None)
                }
                Op::Delete { table, key } => TxnOp::delete(self.key(table, key), None),
            })
            .collect();
        let t = ETxn::new()
            .when(compares)
            .and_then(ops)
            .or_else(vec![TxnOp::get(self.leader_key(), None)]);
        let resp = self.block(move |mut c| {
            let t = t.clone();
            async move { c.txn(t).await }
        })?;
        if resp.succeeded() {
            return Ok(Some(resp.header().map_or(0, |h| h.revision()) as u64));
        }
        if let (true, Some(lease)) = (txn.fenced, fence) {
            let holder = resp.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(g) => Some(g.kvs().first().map(|kv| kv.lease())),
                _ => None,
            });
            if holder != Some(Some(lease)) {
                return Err(Refused("this controller replica's lead ended (its lease expired): the change was not made; retry, the new leader takes it".into()).into());
            }
        }
        Ok(None)
    }

    fn revision(&self) -> Result<u64> {
        let k = self.leader_key();
        let resp = self.block(move |mut c| {
            let k = k.clone();
            async move { c.get(k, Some(GetOptions::new().with_count_only())).await }
        })?;
        Ok(resp.header().map_or(0, |h| h.revision()) as u64)
    }

    fn engine(&self) -> &'static str {
        "etcd"
    }
}

fn leader_key(prefix: &str) -> String {
    format!("{prefix}leader")
}

/// Campaigns for the lead, for as long as the process runs: follows the leader key until
/// it is free, takes it with a lease of `ttl`, then keeps the lease alive. Once the key
/// is taken, `elected` runs (on a thread where it may wait on the store: it catches up
/// and picks up what the last leader left) and only then does the replica lead, so it
/// answers nothing from a state older than the last leader's. `lost` runs when the lease
/// ended under it (not when it resigned), and then the replica must stop (a restart
/// joins as a follower). The replica counts as leading only while its lease is surely
/// alive: until the last renewal's send time plus the lease's time left, which ends
/// before etcd can give the lead to another.
pub fn campaign(
    etcd: &Etcd,
    lead: Arc<Leadership>,
    ttl: Duration,
    elected: impl FnOnce() + Send + 'static,
    lost: impl FnOnce(String) + Send + 'static,
) {
    let me = lead.me.clone().expect("a replica has a URL");
    let (members, key, fence) = (etcd.members.clone(), etcd.leader_key(), etcd.fence.clone());
    etcd.rt.spawn(async move {
        let (lease, granted) = take_lead(&members, &key, &lead, &me, ttl).await;
        *fence.lock().unwrap() = Some(lease);
        lead.valid_until(granted + ttl);
        if tokio::task::spawn_blocking(elected).await.is_err() {
            lost("taking up the lead failed".into());
            return;
        }
        info!(url = %me, "this replica leads");
        lead.set_leading();
        if let Some(why) = keep_lead(&members, &key, &fence, &lead, lease, ttl).await {
            lost(why);
        }
    });
}

/// Waits until the leader key is free, then takes it: the lease it holds it with, and
/// when the lease was asked for.
async fn take_lead(
    members: &Members,
    key: &str,
    lead: &Leadership,
    me: &str,
    ttl: Duration,
) -> (i64, Instant) {
    let mut said = None;
    loop {
        let (i, mut c) = members.pick();
        let holder = tokio::time::timeout(TIMEOUT, c.get(key, None)).await;
        match holder {
            Ok(Ok(r)) => match r.kvs().first() {
                // This replica's URL under another lease: its own previous run, whose lease
                // has yet to end; no leader to send anyone to meanwhile.
                Some(kv) if kv.value_str().is_ok_and(|v| v == me) => lead.set_leader(None),
                Some(kv) => {
                    let url = kv.value_str().unwrap_or_default().to_string();
                    if said.as_deref() != Some(url.as_str()) {
                        info!(leader = %url, "following the leader");
                        said = Some(url.clone());
                    }
                    lead.set_leader(Some(url));
                }
                None => {
                    lead.set_leader(None);
                    let asked = Instant::now();
                    match try_take(&mut c, key, me, ttl).await {
                        Ok(Some(lease)) => return (lease, asked),
                        Ok(None) => {}
                        Err(e) => {
                            warn!(error = %e, "cannot campaign for the lead");
                            members.skip(i);
                        }
                    }
                }
            },
            Ok(Err(e)) => {
                warn!(error = %e, "cannot read the leader key");
                members.skip(i);
            }
            Err(_) => {
                warn!("etcd did not answer the leader key within {TIMEOUT:?}");
                members.skip(i);
            }
        }
        tokio::time::sleep(LOOK).await;
    }
}

/// One attempt: a fresh lease, and the key if it is still free (None: another took it).
async fn try_take(
    c: &mut Client,
    key: &str,
    me: &str,
    ttl: Duration,
) -> Result<Option<i64>, etcd_client::Error> {
    let lease = c.lease_grant(ttl.as_secs().max(1) as i64, None).await?.id();
    let t = ETxn::new()
        .when(vec![Compare::version(key, CompareOp::Equal, 0)])
        .and_then(vec![TxnOp::put(
            key,
            me,
            Some(PutOptions::new().with_lease(lease)),
        )]);
    match c.txn(t).await {
        Ok(r) if r.succeeded() => Ok(Some(lease)),
        other => {
            let _ = c.lease_revoke(lease).await;
            other.map(|_| None)
        }
    }
}

/// Keeps the lease alive three times per `ttl`, each renewal on the next member while
/// one does not answer; returns why the lead ended (None: the replica resigned).
async fn keep_lead(
    members: &Members,
    key: &str,
    fence: &Mutex<Option<i64>>,
    lead: &Leadership,
    lease: i64,
    ttl: Duration,
) -> Option<String> {
    loop {
        tokio::time::sleep(ttl / 3).await;
        for _ in 0..members.clients.len() {
            if fence.lock().unwrap().is_none() {
                return None;
            }
            let (i, mut c) = members.pick();
            let sent = Instant::now();
            let beat = async {
                let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                let left = stream.message().await?.map_or(0, |r| r.ttl());
                // The key may have gone while the lease lives (deleted by hand).
                let held = c.get(key, None).await?;
                let ours = held.kvs().first().is_some_and(|kv| kv.lease() == lease);
                Ok::<_, etcd_client::Error>((left, ours))
            };
            match tokio::time::timeout(PER_MEMBER, beat).await {
                // A resignation meanwhile revoked the lease: not a loss.
                _ if fence.lock().unwrap().is_none() => return None,
                Ok(Ok((_, false))) => {
                    *fence.lock().unwrap() = None;
                    return Some("another replica holds the lead".into());
                }
                Ok(Ok((left, true))) if left > 0 => {
                    lead.valid_until(sent + Duration::from_secs(left as u64));
                    break;
                }
                Ok(Ok(_)) => return Some("the lease expired".into()),
                Ok(Err(e)) => {
                    warn!(error = %e, "cannot renew the lead's lease");
                    members.skip(i);
                }
                Err(_) => {
                    warn!("etcd did not renew the lead's lease within {PER_MEMBER:?}");
                    members.skip(i);
                }
            }
        }
        if !lead.leading() {
            return Some(format!("the lease was not renewed within {ttl:?}"));
        }
    }
}
