//! The controller's state in an embedded database (redb): every change is one write
//! transaction, so a crash or restart loses nothing that was acknowledged.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::{Arc, RwLock},
};

use anyhow::{Context, Result};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use serde::{Deserialize, Serialize};
use violin_api::{
    rest::{AuditEntry, Credential, Loan},
    share::Registration,
    vm::{Migration, VmResources},
};

use crate::spec::Spec;

/// Environment name -> its spec, as the operator wrote it.
const ENVIRONMENTS: TableDefinition<&str, &str> = TableDefinition::new("environments");
/// Registered hosts: name -> what the host reported (JSON).
const HOSTS: TableDefinition<&str, &str> = TableDefinition::new("hosts");
/// Live migrations by id (JSON `Migration`): the in-flight ones shape the hosts' shares
/// (the destination is prepared, the source told where the VM goes), all are history.
const MIGRATIONS: TableDefinition<u64, &str> = TableDefinition::new("migrations");
/// The CPU and memory the adaptation manager gave each VM: VM name -> JSON
/// `VmResources`. They reach the VMs' hosts in their shares.
const RESOURCES: TableDefinition<&str, &str> = TableDefinition::new("resources");
/// Issued credentials: name -> JSON `StoredCredential` (the token only as a hash).
const CREDENTIALS: TableDefinition<&str, &str> = TableDefinition::new("credentials");
/// The audit log: id -> JSON `AuditEntry`, the latest `AUDIT_KEEP`.
const AUDIT: TableDefinition<u64, &str> = TableDefinition::new("audit");
const AUDIT_KEEP: u64 = 10_000;
/// VioCluster's standing loans: the borrower's VM name -> JSON `Loan`.
const LOANS: TableDefinition<&str, &str> = TableDefinition::new("loans");
/// Counters and settings: the state's generation (bumped by every change of an
/// environment, in the same transaction), the configuration-time bound.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const GENERATION: &str = "generation";
const BOUND_US: &str = "config_time_bound_us";

fn bump(tx: &redb::WriteTransaction) -> Result<u64> {
    let mut meta = tx.open_table(META)?;
    let g = meta.get(GENERATION)?.map_or(0, |v| v.value()) + 1;
    meta.insert(GENERATION, g)?;
    Ok(g)
}

pub struct Store {
    db: Database,
    /// The stored specs, parsed: every sync stream reads all of them on each change, and
    /// parsing a large spec costs milliseconds. Updated in the same call as the database,
    /// after its transaction committed.
    cache: RwLock<Arc<BTreeMap<String, (String, Spec)>>>,
    /// Every migration recorded, by id, as stored.
    migrations: RwLock<BTreeMap<u64, Migration>>,
    /// The VMs' resources, by VM name, as stored.
    resources: RwLock<Arc<BTreeMap<String, VmResources>>>,
    /// Issued credentials by their token's hash, as stored (every request looks one up).
    credentials: RwLock<BTreeMap<String, Credential>>,
}

#[derive(Serialize, Deserialize)]
struct StoredCredential {
    credential: Credential,
    hash: String,
}

fn read_credentials(db: &Database) -> Result<BTreeMap<String, Credential>> {
    let tx = db.begin_read()?;
    let table = tx.open_table(CREDENTIALS)?;
    let mut out = BTreeMap::new();
    for row in table.iter()? {
        let (k, v) = row?;
        let c: StoredCredential = serde_json::from_str(v.value())
            .with_context(|| format!("stored credential {} is invalid", k.value()))?;
        out.insert(c.hash, c.credential);
    }
    Ok(out)
}

fn read_resources(db: &Database) -> Result<BTreeMap<String, VmResources>> {
    let tx = db.begin_read()?;
    let table = tx.open_table(RESOURCES)?;
    let mut out = BTreeMap::new();
    for row in table.iter()? {
        let (k, v) = row?;
        if let Ok(r) = serde_json::from_str(v.value()) {
            out.insert(k.value().to_string(), r);
        }
    }
    Ok(out)
}

fn read_all(db: &Database) -> Result<BTreeMap<String, (String, Spec)>> {
    let tx = db.begin_read()?;
    let table = tx.open_table(ENVIRONMENTS)?;
    let mut out = BTreeMap::new();
    for row in table.iter()? {
        let (k, v) = row?;
        let text = v.value().to_string();
        let spec = Spec::parse(&text)
            .map_err(|e| anyhow::anyhow!("stored spec {} is invalid: {e}", k.value()))?;
        out.insert(k.value().to_string(), (text, spec));
    }
    Ok(out)
}

fn read_migrations(db: &Database) -> Result<BTreeMap<u64, Migration>> {
    let tx = db.begin_read()?;
    let table = tx.open_table(MIGRATIONS)?;
    let mut out = BTreeMap::new();
    for row in table.iter()? {
        let (k, v) = row?;
        // A record this build cannot read is history it cannot show, not an error.
        if let Ok(m) = serde_json::from_str(v.value()) {
            out.insert(k.value(), m);
        }
    }
    Ok(out)
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let db = Database::create(path).with_context(|| format!("opening {}", path.display()))?;
        let tx = db.begin_write()?;
        tx.open_table(ENVIRONMENTS)?;
        tx.open_table(HOSTS)?;
        tx.open_table(META)?;
        tx.open_table(MIGRATIONS)?;
        tx.open_table(RESOURCES)?;
        tx.open_table(LOANS)?;
        tx.open_table(CREDENTIALS)?;
        tx.open_table(AUDIT)?;
        tx.commit()?;
        let cache = RwLock::new(Arc::new(read_all(&db)?));
        let migrations = RwLock::new(read_migrations(&db)?);
        let resources = RwLock::new(Arc::new(read_resources(&db)?));
        let credentials = RwLock::new(read_credentials(&db)?);
        Ok(Store {
            db,
            cache,
            migrations,
            resources,
            credentials,
        })
    }

    /// The VMs' resources, by VM name; cheap to take.
    pub fn resources(&self) -> Arc<BTreeMap<String, VmResources>> {
        self.resources.read().unwrap().clone()
    }

    /// Sets these VMs' resources (others keep theirs) and drops those of VMs not in
    /// `named`; the new generation, or None when nothing changed.
    pub fn set_resources(
        &self,
        set: &[VmResources],
        named: &BTreeSet<String>,
    ) -> Result<Option<u64>> {
        let current = self.resources();
        let changed: Vec<&VmResources> = set
            .iter()
            .filter(|r| current.get(&r.vm) != Some(*r))
            .collect();
        let gone: Vec<&String> = current.keys().filter(|vm| !named.contains(*vm)).collect();
        if changed.is_empty() && gone.is_empty() {
            return Ok(None);
        }
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(RESOURCES)?;
            for r in &changed {
                table.insert(r.vm.as_str(), serde_json::to_string(r)?.as_str())?;
            }
            for vm in &gone {
                table.remove(vm.as_str())?;
            }
        }
        let generation = bump(&tx)?;
        let mut cache = self.resources.write().unwrap();
        tx.commit()?;
        let mut next = (**cache).clone();
        for r in changed {
            next.insert(r.vm.clone(), r.clone());
        }
        for vm in gone {
            next.remove(vm);
        }
        *cache = Arc::new(next);
        Ok(Some(generation))
    }

    /// The stored environments (text and parsed spec, by name) as of now; cheap to take.
    pub fn snapshot(&self) -> Arc<BTreeMap<String, (String, Spec)>> {
        self.cache.read().unwrap().clone()
    }

    /// The state's generation: how many changes were committed.
    pub fn generation(&self) -> Result<u64> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(META)?;
        Ok(meta.get(GENERATION)?.map_or(0, |v| v.value()))
    }

    pub fn bound_us(&self) -> Result<Option<u64>> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(META)?;
        Ok(meta.get(BOUND_US)?.map(|v| v.value()))
    }

    pub fn set_bound_us(&self, us: u64) -> Result<()> {
        let tx = self.db.begin_write()?;
        tx.open_table(META)?.insert(BOUND_US, us)?;
        tx.commit()?;
        Ok(())
    }

    /// The credential whose token hashes to `hash`.
    pub fn credential_by_hash(&self, hash: &str) -> Option<Credential> {
        self.credentials.read().unwrap().get(hash).cloned()
    }

    pub fn credentials(&self) -> Vec<Credential> {
        let mut all: Vec<Credential> = self.credentials.read().unwrap().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Records a credential (token as `hash`); false if one has the name already.
    pub fn add_credential(&self, c: &Credential, hash: &str) -> Result<bool> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(CREDENTIALS)?;
            if t.get(c.name.as_str())?.is_some() {
                return Ok(false);
            }
            let stored = StoredCredential {
                credential: c.clone(),
                hash: hash.to_string(),
            };
            t.insert(c.name.as_str(), serde_json::to_string(&stored)?.as_str())?;
        }
        tx.commit()?;
        self.credentials
            .write()
            .unwrap()
            .insert(hash.to_string(), c.clone());
        Ok(true)
    }

    /// Revokes a credential; false if there was none by the name.
    pub fn remove_credential(&self, name: &str) -> Result<bool> {
        let tx = self.db.begin_write()?;
        let removed = tx.open_table(CREDENTIALS)?.remove(name)?.is_some();
        tx.commit()?;
        self.credentials
            .write()
            .unwrap()
            .retain(|_, c| c.name != name);
        Ok(removed)
    }

    /// Appends to the audit log (its id is the next), dropping the oldest past the limit.
    pub fn audit(&self, mut e: AuditEntry) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(AUDIT)?;
            let next = t.last()?.map_or(1, |(k, _)| k.value() + 1);
            e.id = next;
            t.insert(next, serde_json::to_string(&e)?.as_str())?;
            if next > AUDIT_KEEP {
                t.remove(next - AUDIT_KEEP)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The latest `last` audit entries, oldest first.
    pub fn audit_log(&self, last: usize) -> Result<Vec<AuditEntry>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(AUDIT)?;
        let mut out = Vec::new();
        for row in t.iter()?.rev().take(last) {
            let (_, v) = row?;
            out.push(serde_json::from_str(v.value())?);
        }
        out.reverse();
        Ok(out)
    }

    /// VioCluster's standing loans, by VM name.
    pub fn loans(&self) -> Result<Vec<Loan>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(LOANS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let loan = serde_json::from_str(v.value())
                .with_context(|| format!("stored loan of {} is invalid", k.value()))?;
            out.push(loan);
        }
        Ok(out)
    }

    pub fn put_loan(&self, loan: &Loan) -> Result<()> {
        let tx = self.db.begin_write()?;
        tx.open_table(LOANS)?
            .insert(loan.vm.as_str(), serde_json::to_string(loan)?.as_str())?;
        tx.commit()?;
        Ok(())
    }

    pub fn remove_loan(&self, vm: &str) -> Result<()> {
        let tx = self.db.begin_write()?;
        tx.open_table(LOANS)?.remove(vm)?;
        tx.commit()?;
        Ok(())
    }

    /// Records what a host reported when it registered.
    pub fn put_host(&self, name: &str, report: &Registration) -> Result<()> {
        let tx = self.db.begin_write()?;
        tx.open_table(HOSTS)?
            .insert(name, serde_json::to_string(report)?.as_str())?;
        tx.commit()?;
        Ok(())
    }

    /// Registered hosts and their reports (None: a report this build cannot read, kept
    /// until the host registers again).
    pub fn hosts(&self) -> Result<Vec<(String, Option<Registration>)>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(HOSTS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let report = serde_json::from_str(v.value()).ok();
            out.push((k.value().to_string(), report));
        }
        Ok(out)
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
        let tx = self.db.begin_write().map_err(anyhow::Error::from)?;
        {
            let mut table = tx.open_table(ENVIRONMENTS).map_err(anyhow::Error::from)?;
            let taken = self
                .snapshot()
                .values()
                .find(|(_, o)| o.name != spec.name && o.vni == spec.vni)
                .map(|(_, o)| o.name.clone());
            if let Some(other) = taken {
                return Err(PutError::VniTaken(other.to_string()));
            }
            table
                .insert(spec.name.as_str(), text)
                .map_err(anyhow::Error::from)?;
        }
        let generation = bump(&tx)?;
        tx.commit().map_err(anyhow::Error::from)?;
        let mut cache = self.cache.write().unwrap();
        let mut next = (**cache).clone();
        next.insert(spec.name.to_string(), (text.to_string(), spec.clone()));
        *cache = Arc::new(next);
        Ok(generation)
    }

    /// Deletes an environment; the new generation, or None if there was none.
    pub fn delete(&self, name: &str) -> Result<Option<u64>> {
        let tx = self.db.begin_write()?;
        let existed = {
            let mut table = tx.open_table(ENVIRONMENTS)?;
            let removed = table.remove(name)?.is_some();
            removed
        };
        if !existed {
            return Ok(None);
        }
        let generation = bump(&tx)?;
        tx.commit()?;
        let mut cache = self.cache.write().unwrap();
        let mut next = (**cache).clone();
        next.remove(name);
        *cache = Arc::new(next);
        Ok(Some(generation))
    }
}

impl Store {
    /// Every recorded migration, by id.
    pub fn migrations(&self) -> BTreeMap<u64, Migration> {
        self.migrations.read().unwrap().clone()
    }

    /// The id the next recorded migration gets.
    pub fn next_migration_id(&self) -> u64 {
        let migrations = self.migrations.read().unwrap();
        migrations.keys().next_back().map_or(1, |k| k + 1)
    }

    /// Migrations that shape the shares: not ended yet.
    pub fn in_flight(&self) -> Vec<Migration> {
        self.migrations
            .read()
            .unwrap()
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
        let tx = self.db.begin_write()?;
        tx.open_table(MIGRATIONS)?
            .insert(m.id, serde_json::to_string(m)?.as_str())?;
        if let Some((spec, text)) = spec {
            tx.open_table(ENVIRONMENTS)?
                .insert(spec.name.as_str(), text)?;
        }
        let generation = if commit { Some(bump(&tx)?) } else { None };
        // The caches change under their locks, taken before the commit, so no reader
        // sees the new generation without the state it stands for.
        let mut migrations = self.migrations.write().unwrap();
        let mut cache = self.cache.write().unwrap();
        tx.commit()?;
        migrations.insert(m.id, m.clone());
        if let Some((spec, text)) = spec {
            let mut next = (**cache).clone();
            next.insert(spec.name.to_string(), (text.to_string(), spec.clone()));
            *cache = Arc::new(next);
        }
        Ok(generation)
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

    #[test]
    fn resources_and_loans_survive_a_restart_and_only_resource_changes_bump_the_generation() {
        let dir = std::env::temp_dir().join(format!("violin-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("state.redb");
        let r = VmResources {
            vm: "a1".into(),
            cpu_weight: 512,
            cpu_cap: Some(0.5),
            memory_mib: Some(96),
        };
        {
            let store = Store::open(&path).unwrap();
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
        Store::open(&path).unwrap().put_loan(&loan).unwrap();
        let store = Store::open(&path).unwrap();
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
        let store = Store::open(&path).unwrap();
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
        let _ = std::fs::remove_dir_all(&dir);
    }
}
