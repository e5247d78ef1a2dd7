//! The controller's state: environments, hosts, migrations, resources, credentials, the
//! audit log and VioCluster's loans, kept in a key-value engine (`kv`): the embedded redb
//! by default, etcd for several replicas. Every change is one conditional transaction
//! that also bumps the state's generation when the hosts must see it, so a crash or
//! restart loses nothing that was acknowledged, and a write that raced another replica's
//! is made again on the state it raced.
//!
//! What every sync stream and request reads (the parsed specs, migrations, resources,
//! credentials, the generation) is cached, at the engine's revision it reflects: a write
//! updates the cache as it commits, and `refresh` catches up with other replicas' writes.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use violin_api::{
    rest::{AuditEntry, Credential, Loan},
    share::Registration,
    vm::{Migration, VmResources},
};

use crate::{
    kv::{numeric_key, Kv, Op, Redb, Rows, Txn},
    spec::Spec,
};

/// Environment name -> its spec, as the operator wrote it.
const ENVIRONMENTS: &str = "environments";
/// Registered hosts: name -> what the host reported (JSON).
const HOSTS: &str = "hosts";
/// Live migrations by id (JSON `Migration`): the in-flight ones shape the hosts' shares
/// (the destination is prepared, the source told where the VM goes), all are history.
const MIGRATIONS: &str = "migration";
/// The CPU and memory the adaptation manager gave each VM: VM name -> JSON
/// `VmResources`. They reach the VMs' hosts in their shares.
const RESOURCES: &str = "resources";
/// Issued credentials: name -> JSON `StoredCredential` (the token only as a hash).
const CREDENTIALS: &str = "credentials";
/// The audit log: id -> JSON `AuditEntry`, the latest `AUDIT_KEEP`.
const AUDIT: &str = "audit_log";
const AUDIT_KEEP: u64 = 10_000;
/// VioCluster's standing loans: the borrower's VM name -> JSON `Loan`.
const LOANS: &str = "loans";
/// Counters and settings: the state's generation (bumped by every change the hosts must
/// see, in the same transaction), the configuration-time bound.
const SETTINGS: &str = "settings";
const GENERATION: &str = "generation";
/// The tag of the latest change: a writer whose answer was lost finds its own there.
const LAST_WRITE: &str = "last_write";
/// The audit log's latest id.
const AUDIT_LAST: &str = "audit_last";
const BOUND_US: &str = "config_time_bound_us";
/// The tables the cache holds, in `load` order.
const CACHED: [&str; 5] = [ENVIRONMENTS, MIGRATIONS, RESOURCES, CREDENTIALS, SETTINGS];
/// Attempts at a write that keeps racing other writers.
const ATTEMPTS: usize = 20;

/// A change's tag: 16 random bytes, in hex.
fn random_tag() -> Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no randomness for a change's tag"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[derive(Serialize, Deserialize)]
struct StoredCredential {
    credential: Credential,
    hash: String,
}

/// The cached state, as of `revision`.
#[derive(Clone, Default)]
struct State {
    revision: u64,
    /// The generation as stored (None: never bumped), which a bump requires unchanged.
    generation: Option<String>,
    /// The tag of the latest change as stored, which every change requires unchanged.
    last_write: Option<String>,
    bound_us: Option<u64>,
    /// The stored specs, parsed: every sync stream reads all of them on each change, and
    /// parsing a large spec costs milliseconds.
    environments: Arc<BTreeMap<String, (String, Spec)>>,
    migrations: BTreeMap<u64, Migration>,
    resources: Arc<BTreeMap<String, VmResources>>,
    /// Issued credentials by their token's hash (every request looks one up).
    credentials: BTreeMap<String, Credential>,
}

impl State {
    fn generation(&self) -> u64 {
        self.generation
            .as_deref()
            .and_then(|g| g.parse().ok())
            .unwrap_or(0)
    }

    /// One row of a cached table changed (None: deleted).
    fn set(&mut self, table: &str, key: &str, value: Option<&str>) -> Result<()> {
        match table {
            ENVIRONMENTS => {
                let mut next = (*self.environments).clone();
                match value {
                    Some(text) => {
                        let spec = Spec::parse(text)
                            .map_err(|e| anyhow::anyhow!("stored spec {key} is invalid: {e}"))?;
                        next.insert(key.to_string(), (text.to_string(), spec));
                    }
                    None => {
                        next.remove(key);
                    }
                }
                self.environments = Arc::new(next);
            }
            MIGRATIONS => {
                let id: u64 = key.parse().context("a migration's key")?;
                // A record this build cannot read is history it cannot show, not an error.
                match value.and_then(|v| serde_json::from_str(v).ok()) {
                    Some(m) => self.migrations.insert(id, m),
                    None => self.migrations.remove(&id),
                };
            }
            RESOURCES => {
                let mut next = (*self.resources).clone();
                match value.and_then(|v| serde_json::from_str(v).ok()) {
                    Some(r) => next.insert(key.to_string(), r),
                    None => next.remove(key),
                };
                self.resources = Arc::new(next);
            }
            CREDENTIALS => {
                self.credentials.retain(|_, c| c.name != key);
                if let Some(v) = value {
                    let c: StoredCredential = serde_json::from_str(v)
                        .with_context(|| format!("stored credential {key} is invalid"))?;
                    self.credentials.insert(c.hash, c.credential);
                }
            }
            SETTINGS => match key {
                GENERATION => self.generation = value.map(str::to_string),
                LAST_WRITE => self.last_write = value.map(str::to_string),
                BOUND_US => self.bound_us = value.and_then(|v| v.parse().ok()),
                _ => {}
            },
            _ => {}
        }
        Ok(())
    }

    fn load(revision: u64, tables: Vec<Rows>) -> Result<State> {
        let mut state = State {
            revision,
            ..State::default()
        };
        for (table, rows) in CACHED.iter().zip(tables) {
            for (k, v) in rows {
                state.set(table, &k, Some(&v))?;
            }
        }
        Ok(state)
    }
}

/// Told of every new generation the store learns of by catching up (not of those its own
/// writes return): the hub's streams then send it.
type Hook = Box<dyn Fn(u64) + Send + Sync>;

pub struct Store {
    kv: Box<dyn Kv>,
    state: RwLock<Arc<State>>,
    /// This replica's writes go one at a time, each built on the state the last left.
    writing: Mutex<()>,
    hook: RwLock<Option<Hook>>,
}

impl Store {
    /// The embedded store (redb) at `path`, created if missing.
    pub fn open(path: &Path) -> Result<Store> {
        Store::on(Box::new(Redb::open(path)?))
    }

    /// The store on a key-value engine.
    pub fn on(kv: Box<dyn Kv>) -> Result<Store> {
        let (revision, tables) = kv.load(&CACHED)?;
        let state = State::load(revision, tables)?;
        Ok(Store {
            kv,
            state: RwLock::new(Arc::new(state)),
            writing: Mutex::new(()),
            hook: RwLock::new(None),
        })
    }

    pub fn engine(&self) -> &'static str {
        self.kv.engine()
    }

    fn state(&self) -> Arc<State> {
        self.state.read().unwrap().clone()
    }

    /// Has `f` told of every generation `refresh` finds.
    pub fn on_generation(&self, f: impl Fn(u64) + Send + Sync + 'static) {
        *self.hook.write().unwrap() = Some(Box::new(f));
    }

    /// Catches up with writes made by other replicas; the generation if it changed (the
    /// hook is told of it too).
    pub fn refresh(&self) -> Result<Option<u64>> {
        let changed = self.catch_up()?;
        if let (Some(g), Some(hook)) = (changed, self.hook.read().unwrap().as_ref()) {
            hook(g);
        }
        Ok(changed)
    }

    fn catch_up(&self) -> Result<Option<u64>> {
        let latest = self.kv.revision()?;
        let before = self.state();
        if latest <= before.revision {
            return Ok(None);
        }
        let (revision, tables) = self.kv.load(&CACHED)?;
        let next = State::load(revision, tables)?;
        let mut state = self.state.write().unwrap();
        if next.revision <= state.revision {
            return Ok(None);
        }
        let changed = next.generation != state.generation;
        *state = Arc::new(next);
        Ok(changed.then(|| state.generation()))
    }

    /// Keeps the cache current with other replicas' writes, every `period` (the hook
    /// hears of every new generation).
    pub fn follow(self: &Arc<Store>, period: Duration) {
        let store = self.clone();
        std::thread::Builder::new()
            .name("store-follow".into())
            .spawn(move || loop {
                std::thread::sleep(period);
                if let Err(e) = store.refresh() {
                    tracing::warn!(error = format!("{e:#}"), "cannot refresh the state");
                }
            })
            .expect("spawning a thread");
    }

    /// Makes the transaction `build` returns from the current state (None: nothing to
    /// do), with the generation bumped when `bump`. Every change holds only while the
    /// latest change's tag is the one this replica saw, so none is made on a state that
    /// changed meanwhile: that attempt is refused, whole, and the caller asked to retry
    /// (its inputs may come from the state it saw). A change whose answer was lost on
    /// the way is recognised by its own tag. The new generation (the current one without
    /// `bump`), or None when nothing was written.
    fn write<E: From<anyhow::Error>>(
        &self,
        bump: bool,
        build: impl FnOnce(&State) -> Result<Option<Txn>, E>,
    ) -> Result<Option<u64>, E> {
        let _one = self.writing.lock().unwrap();
        let state = self.state();
        let Some(mut txn) = build(&state)? else {
            return Ok(None);
        };
        txn.fenced = true;
        let tag = random_tag()?;
        txn.require(SETTINGS, LAST_WRITE, state.last_write.clone());
        txn.put(SETTINGS, LAST_WRITE, tag.as_str());
        let mut generation = state.generation();
        if bump {
            generation += 1;
            txn.require(SETTINGS, GENERATION, state.generation.clone());
            txn.put(SETTINGS, GENERATION, generation.to_string());
        }
        let outcome = self.kv.commit(&txn);
        if let Ok(Some(revision)) = outcome {
            self.committed(revision, &txn.ops).map_err(E::from)?;
            return Ok(Some(generation));
        }
        // Refused, or no answer: the state caught up with says which.
        let landed = self
            .refresh()
            .map(|_| self.state().last_write.as_deref() == Some(tag.as_str()));
        match (outcome, landed) {
            (_, Ok(true)) => Ok(Some(generation)),
            (Err(e), _) if e.downcast_ref::<crate::kv::Refused>().is_some() => Err(E::from(e)),
            (Ok(_), Ok(false)) => Err(E::from(anyhow::anyhow!(
                "the state changed under this change (another replica wrote meanwhile): nothing was made; retry"
            ))),
            (Err(e), _) => Err(E::from(e.context(
                "the store did not confirm this change; read the state before making it again",
            ))),
            (Ok(_), Err(e)) => Err(E::from(e.context("the store refused this change"))),
        }
    }

    /// The cache after this replica's commit at `revision`: its writes applied, or the
    /// whole state read again when another replica wrote in between.
    fn committed(&self, revision: u64, ops: &[Op]) -> Result<()> {
        let mut state = self.state.write().unwrap();
        if revision != state.revision + 1 {
            drop(state);
            self.catch_up()?;
            return Ok(());
        }
        let mut next = (**state).clone();
        for op in ops {
            match op {
                Op::Put { table, key, value } => next.set(table, key, Some(value))?,
                Op::Delete { table, key } => next.set(table, key, None)?,
            }
        }
        next.revision = revision;
        *state = Arc::new(next);
        Ok(())
    }

    /// A write that changes nothing cached moved the revision by one.
    fn advanced(&self, revision: u64) {
        let mut state = self.state.write().unwrap();
        if revision == state.revision + 1 {
            let mut next = (**state).clone();
            next.revision = revision;
            *state = Arc::new(next);
        }
    }

    /// The VMs' resources, by VM name; cheap to take.
    pub fn resources(&self) -> Arc<BTreeMap<String, VmResources>> {
        self.state().resources.clone()
    }

    /// Sets these VMs' resources (others keep theirs) and drops those of VMs not in
    /// `named`; the new generation, or None when nothing changed.
    pub fn set_resources(
        &self,
        set: &[VmResources],
        named: &BTreeSet<String>,
    ) -> Result<Option<u64>> {
        self.write(true, |state| {
            let current = &state.resources;
            let mut txn = Txn::default();
            // A VM no spec names gets none (and is not both set and dropped).
            for r in set
                .iter()
                .filter(|r| named.contains(&r.vm) && current.get(&r.vm) != Some(*r))
            {
                txn.put(RESOURCES, r.vm.as_str(), serde_json::to_string(r)?);
            }
            for vm in current.keys().filter(|vm| !named.contains(*vm)) {
                txn.delete(RESOURCES, vm.as_str());
            }
            Ok::<_, anyhow::Error>((!txn.ops.is_empty()).then_some(txn))
        })
    }

    /// The stored environments (text and parsed spec, by name) as of now; cheap to take.
    pub fn snapshot(&self) -> Arc<BTreeMap<String, (String, Spec)>> {
        self.state().environments.clone()
    }

    /// The state's generation: how many changes the hosts had to see were committed.
    pub fn generation(&self) -> Result<u64> {
        Ok(self.state().generation())
    }

    pub fn bound_us(&self) -> Result<Option<u64>> {
        Ok(self.state().bound_us)
    }

    pub fn set_bound_us(&self, us: u64) -> Result<()> {
        self.write(false, |_| {
            let mut txn = Txn::default();
            txn.put(SETTINGS, BOUND_US, us.to_string());
            Ok::<_, anyhow::Error>(Some(txn))
        })?;
        Ok(())
    }

    /// The credential whose token hashes to `hash`.
    pub fn credential_by_hash(&self, hash: &str) -> Option<Credential> {
        self.state().credentials.get(hash).cloned()
    }

    pub fn credentials(&self) -> Vec<Credential> {
        let mut all: Vec<Credential> = self.state().credentials.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Records a credential (token as `hash`); false if one has the name already.
    pub fn add_credential(&self, c: &Credential, hash: &str) -> Result<bool> {
        let stored = serde_json::to_string(&StoredCredential {
            credential: c.clone(),
            hash: hash.to_string(),
        })?;
        let written = self.write(false, |state| {
            if state.credentials.values().any(|o| o.name == c.name) {
                return Ok::<_, anyhow::Error>(None);
            }
            let mut txn = Txn::default();
            txn.require(CREDENTIALS, c.name.as_str(), None);
            txn.put(CREDENTIALS, c.name.as_str(), stored.as_str());
            Ok(Some(txn))
        })?;
        Ok(written.is_some())
    }

    /// Revokes a credential; false if there was none by the name.
    pub fn remove_credential(&self, name: &str) -> Result<bool> {
        let written = self.write(false, |state| {
            if !state.credentials.values().any(|c| c.name == name) {
                return Ok::<_, anyhow::Error>(None);
            }
            let mut txn = Txn::default();
            txn.delete(CREDENTIALS, name);
            Ok(Some(txn))
        })?;
        Ok(written.is_some())
    }

    /// Appends to the audit log (its id is the next), dropping the oldest past the limit.
    /// Any replica writes it (it records refusals too), so the next id is claimed with a
    /// condition and claimed again when another replica took it.
    pub fn audit(&self, mut e: AuditEntry) -> Result<()> {
        for _ in 0..ATTEMPTS {
            let last = self.kv.get(SETTINGS, AUDIT_LAST)?;
            let next = last.as_deref().and_then(|l| l.parse().ok()).unwrap_or(0) + 1;
            e.id = next;
            let text = serde_json::to_string(&e)?;
            let mut txn = Txn::default();
            txn.require(SETTINGS, AUDIT_LAST, last);
            txn.put(SETTINGS, AUDIT_LAST, next.to_string());
            txn.put(AUDIT, numeric_key(next), text.as_str());
            if next > AUDIT_KEEP {
                txn.delete(AUDIT, numeric_key(next - AUDIT_KEEP));
            }
            if let Some(revision) = self.kv.commit(&txn)? {
                self.advanced(revision);
                return Ok(());
            }
            if self.kv.get(AUDIT, &numeric_key(next))?.as_deref() == Some(text.as_str()) {
                return Ok(());
            }
        }
        anyhow::bail!("the audit log kept changing under this entry ({ATTEMPTS} attempts)")
    }

    /// The latest `last` audit entries, oldest first.
    pub fn audit_log(&self, last: usize) -> Result<Vec<AuditEntry>> {
        let mut out = Vec::new();
        for v in self.kv.last(AUDIT, last)?.values() {
            out.push(serde_json::from_str(v)?);
        }
        Ok(out)
    }

    /// VioCluster's standing loans, by VM name.
    pub fn loans(&self) -> Result<Vec<Loan>> {
        let mut out = Vec::new();
        for (k, v) in self.kv.scan(LOANS)? {
            let loan = serde_json::from_str(&v)
                .with_context(|| format!("stored loan of {k} is invalid"))?;
            out.push(loan);
        }
        Ok(out)
    }

    pub fn put_loan(&self, loan: &Loan) -> Result<()> {
        let text = serde_json::to_string(loan)?;
        self.write(false, |_| {
            let mut txn = Txn::default();
            txn.put(LOANS, loan.vm.as_str(), text.as_str());
            Ok::<_, anyhow::Error>(Some(txn))
        })?;
        Ok(())
    }

    pub fn remove_loan(&self, vm: &str) -> Result<()> {
        self.write(false, |_| {
            let mut txn = Txn::default();
            txn.delete(LOANS, vm);
            Ok::<_, anyhow::Error>(Some(txn))
        })?;
        Ok(())
    }

    /// Records what a host reported when it registered.
    pub fn put_host(&self, name: &str, report: &Registration) -> Result<()> {
        let text = serde_json::to_string(report)?;
        self.write(false, |_| {
            let mut txn = Txn::default();
            txn.put(HOSTS, name, text.as_str());
            Ok::<_, anyhow::Error>(Some(txn))
        })?;
        Ok(())
    }

    /// Registered hosts and their reports (None: a report this build cannot read, kept
    /// until the host registers again).
    pub fn hosts(&self) -> Result<Vec<(String, Option<Registration>)>> {
        Ok(self
            .kv
            .scan(HOSTS)?
            .into_iter()
            .map(|(k, v)| (k, serde_json::from_str(&v).ok()))
            .collect())
    }

    /// Every stored spec (parsed).
    pub fn specs(&self) -> Result<Vec<Spec>> {
        Ok(self.snapshot().values().map(|(_, s)| s.clone()).collect())
    }

    /// Stored specs, by name.
    pub fn environments(&self) -> Result<Vec<(String, Spec)>> {
        Ok(self
            .snapshot()
            .iter()
            .map(|(k, (_, spec))| (k.clone(), spec.clone()))
            .collect())
    }

    pub fn get(&self, name: &str) -> Result<Option<(String, Spec)>> {
        Ok(self.snapshot().get(name).cloned())
    }

    /// Stores `text` (already validated as `spec`) unless another environment uses its
    /// VNI; returns the new generation.
    pub fn put(&self, spec: &Spec, text: &str) -> Result<u64, PutError> {
        let g = self.write(true, |state| {
            let taken = state
                .environments
                .values()
                .find(|(_, o)| o.name != spec.name && o.vni == spec.vni)
                .map(|(_, o)| o.name.to_string());
            if let Some(other) = taken {
                return Err(PutError::VniTaken(other));
            }
            let mut txn = Txn::default();
            // The VNI check holds only on the environments seen: another's, written
            // meanwhile, bumped the generation and makes this attempt again.
            txn.put(ENVIRONMENTS, spec.name.as_str(), text);
            Ok(Some(txn))
        })?;
        Ok(g.expect("a put always writes"))
    }

    /// Deletes an environment; the new generation, or None if there was none.
    pub fn delete(&self, name: &str) -> Result<Option<u64>> {
        self.write(true, |state| {
            if !state.environments.contains_key(name) {
                return Ok::<_, anyhow::Error>(None);
            }
            let mut txn = Txn::default();
            txn.delete(ENVIRONMENTS, name);
            Ok(Some(txn))
        })
    }
}

impl Store {
    /// Every recorded migration, by id.
    pub fn migrations(&self) -> BTreeMap<u64, Migration> {
        self.state().migrations.clone()
    }

    /// The id the next recorded migration gets.
    pub fn next_migration_id(&self) -> u64 {
        self.state()
            .migrations
            .keys()
            .next_back()
            .map_or(1, |k| k + 1)
    }

    /// Migrations that shape the shares: not ended yet.
    pub fn in_flight(&self) -> Vec<Migration> {
        self.state()
            .migrations
            .values()
            .filter(|m| !m.phase.finished())
            .cloned()
            .collect()
    }

    /// Records a migration's progress. With `commit`, the change is one the hosts must
    /// see (their shares change): the generation is bumped in the same transaction, and
    /// with `spec` the VM's environment changes with it. Returns the generation then.
    pub fn record_migration(
        &self,
        m: &Migration,
        commit: bool,
        spec: Option<(&Spec, &str)>,
    ) -> Result<Option<u64>> {
        let record = serde_json::to_string(m)?;
        let g = self.write(commit, |_| {
            let mut txn = Txn::default();
            txn.put(MIGRATIONS, numeric_key(m.id), record.as_str());
            if let Some((spec, text)) = spec {
                txn.put(ENVIRONMENTS, spec.name.as_str(), text);
            }
            Ok::<_, anyhow::Error>(Some(txn))
        })?;
        Ok(g.filter(|_| commit))
    }
}

#[derive(Debug)]
pub enum PutError {
    VniTaken(String),
    Store(anyhow::Error),
}

impl From<anyhow::Error> for PutError {
    fn from(e: anyhow::Error) -> Self {
        PutError::Store(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store suite, on any engine: `open` opens the same state again (a restart).
    fn suite(open: &dyn Fn() -> Store) {
        let r = VmResources {
            vm: "a1".into(),
            cpu_weight: 512,
            cpu_cap: Some(0.5),
            memory_mib: Some(96),
        };
        {
            let store = open();
            let named: BTreeSet<String> = ["a1".to_string()].into();
            let g = store
                .set_resources(std::slice::from_ref(&r), &named)
                .unwrap();
            assert_eq!(g, Some(1));
            assert_eq!(
                store
                    .set_resources(std::slice::from_ref(&r), &named)
                    .unwrap(),
                None
            );
        }
        let loan = Loan {
            vm: "b1".into(),
            owner: "d2".into(),
            borrower: "d1".into(),
            host: "h3".into(),
            node: "h3v0".into(),
            since_ms: 7,
            added_host: true,
        };
        open().put_loan(&loan).unwrap();
        let store = open();
        assert_eq!(store.loans().unwrap(), vec![loan]);
        store.remove_loan("b1").unwrap();
        assert!(store.loans().unwrap().is_empty());
        assert_eq!(store.resources().get("a1"), Some(&r));
        assert_eq!(store.generation().unwrap(), 1);
        // Credentials and the audit log survive too, and never bump the generation.
        let c = Credential {
            name: "h1".into(),
            role: violin_api::rest::Role::Host,
            created_ms: 1,
            created_by: "admin".into(),
        };
        assert!(store.add_credential(&c, "abc").unwrap());
        assert!(!store.add_credential(&c, "def").unwrap());
        let e = AuditEntry {
            id: 0,
            at_ms: 2,
            who: "admin".into(),
            role: violin_api::rest::Role::Admin,
            method: "PUT".into(),
            path: "/v1/environments/blue".into(),
            status: 200,
        };
        store.audit(e.clone()).unwrap();
        store.audit(e.clone()).unwrap();
        drop(store);
        let store = open();
        assert_eq!(store.credential_by_hash("abc"), Some(c));
        assert_eq!(store.credential_by_hash("def"), None);
        let log = store.audit_log(10).unwrap();
        assert_eq!(log.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(store.audit_log(1).unwrap()[0].id, 2);
        assert!(store.remove_credential("h1").unwrap());
        assert_eq!(store.credential_by_hash("abc"), None);
        assert_eq!(store.generation().unwrap(), 1);
        // A VM no spec names any more loses its resources.
        assert_eq!(store.set_resources(&[], &BTreeSet::new()).unwrap(), Some(2));
        assert!(store.resources().is_empty());
        environments_and_migrations(&store);
        drop(store);
        // A restart reads back what was written, generation and all.
        let store = open();
        assert_eq!(store.generation().unwrap(), 6);
        assert_eq!(store.snapshot().keys().collect::<Vec<_>>(), ["red"]);
        assert_eq!(store.migrations().len(), 1);
        assert!(store.in_flight().is_empty());
        assert_eq!(store.next_migration_id(), 2);
        assert_eq!(store.bound_us().unwrap(), Some(250_000));
        assert_eq!(store.hosts().unwrap().len(), 1);
    }

    fn spec(name: &str, vni: u32) -> (Spec, String) {
        let text = format!(
            "[environment]\nname = \"{name}\"\nvni = {vni}\n\n[[host]]\nname = \"h1\"\naddress = \"10.0.0.1\"\n\n[[vm]]\nname = \"{name}1\"\nhost = \"h1\"\nport = \"vm1\"\nmac = \"02:00:00:00:0{}:01\"\n",
            vni % 10
        );
        (Spec::parse(&text).unwrap(), text)
    }

    /// Continues from generation 2: puts, a VNI clash, deletes, a migration with its
    /// spec, settings and hosts.
    fn environments_and_migrations(store: &Store) {
        let (blue, blue_text) = spec("blue", 1001);
        let (red, red_text) = spec("red", 1002);
        assert_eq!(store.put(&blue, &blue_text).unwrap(), 3);
        assert_eq!(store.put(&red, &red_text).unwrap(), 4);
        let (clash, clash_text) = spec("green", 1001);
        match store.put(&clash, &clash_text) {
            Err(PutError::VniTaken(other)) => assert_eq!(other, "blue"),
            other => panic!("{other:?}"),
        }
        assert_eq!(store.delete("blue").unwrap(), Some(5));
        assert_eq!(store.delete("blue").unwrap(), None);
        let mut m = Migration::new(1, "red1", "red", "h1", "h2", 1.0);
        assert_eq!(store.record_migration(&m, false, None).unwrap(), None);
        assert_eq!(store.in_flight().len(), 1);
        m.phase = violin_api::vm::MigrationPhase::Completed;
        assert_eq!(
            store
                .record_migration(&m, true, Some((&red, &red_text)))
                .unwrap(),
            Some(6)
        );
        store.set_bound_us(250_000).unwrap();
        let reg: Registration =
            serde_json::from_value(serde_json::json!({"address": "10.0.0.1"})).unwrap();
        store.put_host("h1", &reg).unwrap();
        store.put_host("h1", &reg).unwrap();
    }

    #[test]
    fn the_suite_on_redb() {
        let dir = std::env::temp_dir().join(format!("violin-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("state.redb");
        suite(&|| Store::open(&path).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A replica that leads, on the etcd at `endpoints`.
    fn leading(
        endpoints: &str,
        prefix: &str,
        me: &str,
    ) -> (Store, Arc<crate::replica::Leadership>) {
        let etcd = Arc::new(
            crate::etcd::Etcd::connect(&violin_api::client::urls(endpoints), prefix).unwrap(),
        );
        let lead = Arc::new(crate::replica::Leadership::replica(me.into()));
        let (tx, rx) = std::sync::mpsc::channel();
        crate::etcd::campaign(
            &etcd,
            lead.clone(),
            Duration::from_secs(2),
            move || tx.send(()).unwrap(),
            |why| tracing::warn!(why, "lost the lead"),
        );
        rx.recv_timeout(Duration::from_secs(15))
            .expect("elected within 15 s");
        (Store::on(Box::new(etcd)).unwrap(), lead)
    }

    fn cluster(tag: &str) -> violin_testbed::etcd::Cluster {
        violin_testbed::etcd::Cluster::local(tag, 1).unwrap_or_else(|e| {
            panic!("the etcd tests need etcd (`cargo xtask setup` installs etcd-server): {e:#}")
        })
    }

    #[test]
    fn the_suite_on_etcd() {
        let etcd = cluster("st");
        suite(&|| leading(&etcd.endpoints(), "/suite/", "http://127.0.0.1:1").0);
    }

    /// Two replicas on one etcd: the follower's writes are refused, it catches up with
    /// the leader's, and takes the lead when the leader goes; the old leader's late
    /// writes are fenced off.
    #[test]
    fn replicas_follow_one_leader_on_etcd() {
        let etcd = cluster("rp");
        let (a, lead_a) = leading(&etcd.endpoints(), "/rp/", "http://a");
        let eps = violin_api::client::urls(&etcd.endpoints());
        let b_kv = Arc::new(crate::etcd::Etcd::connect(&eps, "/rp/").unwrap());
        let lead_b = Arc::new(crate::replica::Leadership::replica("http://b".into()));
        let (tx, rx) = std::sync::mpsc::channel();
        crate::etcd::campaign(
            &b_kv,
            lead_b.clone(),
            Duration::from_secs(2),
            move || tx.send(()).unwrap(),
            |_| {},
        );
        let b = Store::on(Box::new(b_kv)).unwrap();
        let (blue, text) = spec("blue", 1001);
        assert_eq!(a.put(&blue, &text).unwrap(), 1);
        let e = b.put(&blue, &text).unwrap_err();
        assert!(format!("{e:?}").contains("does not lead"), "{e:?}");
        // The refusal caught b up with the state: a's change is there.
        b.refresh().unwrap();
        assert_eq!(b.generation().unwrap(), 1);
        assert!(b.get("blue").unwrap().is_some());
        // b knows who leads, and follows until a's lease ends.
        std::thread::sleep(Duration::from_millis(700));
        assert_eq!(lead_b.leader().as_deref(), Some("http://a"));
        assert!(lead_a.leading() && !lead_b.leading());
        // a's hold on the lead ends under it (as when its lease expires while it is
        // paused or cut off): b takes over, and a's late writes are fenced off.
        let m = &etcd.members[0];
        let del = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &m.client_url, "del", "/rp/leader"])
            .output()
            .unwrap();
        assert!(del.status.success(), "{del:?}");
        rx.recv_timeout(Duration::from_secs(15)).expect("b elected");
        // It leads once its elected hook has returned.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !lead_b.leading() {
            assert!(std::time::Instant::now() < deadline, "b never led");
            std::thread::sleep(Duration::from_millis(10));
        }
        let e = a.delete("blue").unwrap_err();
        // Refused as soon as it is written (lease compare) or once its campaign saw it.
        assert!(format!("{e:#}").contains(" lead"), "{e:#}");
        b.refresh().unwrap();
        assert_eq!(b.delete("blue").unwrap(), Some(2));
        // b's write reaches a's copy of the state all the same.
        assert_eq!(a.refresh().unwrap(), Some(2));
    }
}
