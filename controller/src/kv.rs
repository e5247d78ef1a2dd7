//! The key-value engines under the controller's `store`: tables of string keys and
//! values, written in atomic, conditional transactions. `Redb` is the embedded default
//! that needs nothing; `etcd::Etcd` keeps the same tables in an etcd cluster, for several
//! controller replicas. The store's logic is written once, over this trait, so both
//! engines pass the same tests.
use std::{
    collections::BTreeMap,
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{Context, Result};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

/// One write of a transaction.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Put {
        table: &'static str,
        key: String,
        value: String,
    },
    Delete {
        table: &'static str,
        key: String,
    },
}

/// A condition a transaction holds to: the key's value is this one (None: absent).
#[derive(Clone, Debug, PartialEq)]
pub struct Cond {
    pub table: &'static str,
    pub key: String,
    pub value: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Txn {
    pub conds: Vec<Cond>,
    pub ops: Vec<Op>,
    /// Whether only the leading replica may make it (every change of the state is; the
    /// audit log is written by whichever replica answered).
    pub fenced: bool,
}

impl Txn {
    pub fn put(&mut self, table: &'static str, key: impl Into<String>, value: impl Into<String>) {
        self.ops.push(Op::Put {
            table,
            key: key.into(),
            value: value.into(),
        });
    }

    pub fn delete(&mut self, table: &'static str, key: impl Into<String>) {
        self.ops.push(Op::Delete {
            table,
            key: key.into(),
        });
    }

    pub fn require(&mut self, table: &'static str, key: impl Into<String>, value: Option<String>) {
        self.conds.push(Cond {
            table,
            key: key.into(),
            value,
        });
    }
}

/// A table's rows, in key order.
pub type Rows = BTreeMap<String, String>;

/// A transaction the engine surely did not make (this replica may not write, or its
/// lead's lease ended): unlike a call that got no answer, nothing is left to find out.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

pub trait Kv: Send + Sync {
    fn get(&self, table: &'static str, key: &str) -> Result<Option<String>>;
    fn scan(&self, table: &'static str) -> Result<Rows>;
    /// The table's last `n` rows by key.
    fn last(&self, table: &'static str, n: usize) -> Result<Rows>;
    /// The tables as of one revision, and that revision.
    fn load(&self, tables: &[&'static str]) -> Result<(u64, Vec<Rows>)>;
    /// Applies the writes at once if every condition holds: the revision they made, or
    /// None when a condition did not hold (nothing was written).
    fn commit(&self, txn: &Txn) -> Result<Option<u64>>;
    /// The latest revision: it grows with every commit, from any replica.
    fn revision(&self) -> Result<u64>;
    /// Which engine, for logs and health.
    fn engine(&self) -> &'static str;
}

/// A shared engine is an engine (the replicated store's election holds it too).
impl<K: Kv + ?Sized> Kv for std::sync::Arc<K> {
    fn get(&self, table: &'static str, key: &str) -> Result<Option<String>> {
        (**self).get(table, key)
    }
    fn scan(&self, table: &'static str) -> Result<Rows> {
        (**self).scan(table)
    }
    fn last(&self, table: &'static str, n: usize) -> Result<Rows> {
        (**self).last(table, n)
    }
    fn load(&self, tables: &[&'static str]) -> Result<(u64, Vec<Rows>)> {
        (**self).load(tables)
    }
    fn commit(&self, txn: &Txn) -> Result<Option<u64>> {
        (**self).commit(txn)
    }
    fn revision(&self) -> Result<u64> {
        (**self).revision()
    }
    fn engine(&self) -> &'static str {
        (**self).engine()
    }
}

/// Keys that are numbers sort as numbers.
pub fn numeric_key(n: u64) -> String {
    format!("{n:020}")
}

/// Every table the store uses; redb creates them up front.
pub const TABLES: [&str; 8] = [
    "environments",
    "hosts",
    "resources",
    "credentials",
    "loans",
    "migration",
    "audit_log",
    "settings",
];

fn table(name: &str) -> TableDefinition<'_, &'static str, &'static str> {
    TableDefinition::new(name)
}

pub struct Redb {
    db: Database,
    /// Commits since the database was opened: only this process writes it, so this is
    /// the revision.
    revision: AtomicU64,
}

impl Redb {
    pub fn open(path: &Path) -> Result<Redb> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let db = Database::create(path).with_context(|| format!("opening {}", path.display()))?;
        let tx = db.begin_write()?;
        for t in TABLES {
            tx.open_table(table(t))?;
        }
        legacy::import(&tx)?;
        tx.commit()?;
        Ok(Redb {
            db,
            revision: AtomicU64::new(1),
        })
    }
}

impl Kv for Redb {
    fn get(&self, t: &'static str, key: &str) -> Result<Option<String>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(table(t))?;
        Ok(table.get(key)?.map(|v| v.value().to_string()))
    }

    fn scan(&self, t: &'static str) -> Result<Rows> {
        Ok(self.load(&[t])?.1.remove(0))
    }

    fn last(&self, t: &'static str, n: usize) -> Result<Rows> {
        let tx = self.db.begin_read()?;
        let mut rows = Rows::new();
        for row in tx.open_table(table(t))?.iter()?.rev().take(n) {
            let (k, v) = row?;
            rows.insert(k.value().to_string(), v.value().to_string());
        }
        Ok(rows)
    }

    fn load(&self, tables: &[&'static str]) -> Result<(u64, Vec<Rows>)> {
        let tx = self.db.begin_read()?;
        let revision = self.revision.load(Ordering::SeqCst);
        let mut out = Vec::new();
        for t in tables {
            let mut rows = Rows::new();
            for row in tx.open_table(table(t))?.iter()? {
                let (k, v) = row?;
                rows.insert(k.value().to_string(), v.value().to_string());
            }
            out.push(rows);
        }
        Ok((revision, out))
    }

    fn commit(&self, txn: &Txn) -> Result<Option<u64>> {
        let tx = self.db.begin_write()?;
        for c in &txn.conds {
            let t = tx.open_table(table(c.table))?;
            let now = t.get(c.key.as_str())?.map(|v| v.value().to_string());
            if now != c.value {
                return Ok(None);
            }
        }
        for op in &txn.ops {
            match op {
                Op::Put {
                    table: t,
                    key,
                    value,
                } => {
                    tx.open_table(table(t))?
                        .insert(key.as_str(), value.as_str())?;
                }
                Op::Delete { table: t, key } => {
                    tx.open_table(table(t))?.remove(key.as_str())?;
                }
            }
        }
        tx.commit()?;
        Ok(Some(self.revision.fetch_add(1, Ordering::SeqCst) + 1))
    }

    fn revision(&self) -> Result<u64> {
        Ok(self.revision.load(Ordering::SeqCst))
    }

    fn engine(&self) -> &'static str {
        "redb"
    }
}

/// Databases written before the store spoke only strings kept three tables typed
/// (numeric keys or values); they are moved into the string tables once, at open.
mod legacy {
    use super::*;

    const MIGRATIONS: TableDefinition<u64, &str> = TableDefinition::new("migrations");
    const AUDIT: TableDefinition<u64, &str> = TableDefinition::new("audit");
    const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
    const AUDIT_LOG: &str = "audit_log";

    pub fn import(tx: &redb::WriteTransaction) -> Result<()> {
        let names: Vec<String> = tx.list_tables()?.map(|h| h.name().to_string()).collect();
        let has = |n: &str| names.iter().any(|x| x == n);
        for (old, new) in [(MIGRATIONS, "migration"), (AUDIT, "audit_log")] {
            if !has(old.name()) {
                continue;
            }
            let rows: Vec<(u64, String)> = tx
                .open_table(old)?
                .iter()?
                .map(|r| r.map(|(k, v)| (k.value(), v.value().to_string())))
                .collect::<std::result::Result<_, _>>()?;
            let last = rows.iter().map(|(k, _)| *k).max();
            let mut t = tx.open_table(table(new))?;
            for (k, v) in rows {
                t.insert(numeric_key(k).as_str(), v.as_str())?;
            }
            drop(t);
            tx.delete_table(old)?;
            // The log's ids go on from the last imported.
            if let (AUDIT_LOG, Some(last)) = (new, last) {
                tx.open_table(table("settings"))?
                    .insert("audit_last", last.to_string().as_str())?;
            }
        }
        if has(META.name()) {
            let rows: Vec<(String, u64)> = tx
                .open_table(META)?
                .iter()?
                .map(|r| r.map(|(k, v)| (k.value().to_string(), v.value())))
                .collect::<std::result::Result<_, _>>()?;
            let mut t = tx.open_table(table("settings"))?;
            for (k, v) in rows {
                t.insert(k.as_str(), v.to_string().as_str())?;
            }
            drop(t);
            tx.delete_table(META)?;
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn typed_tables_of_an_older_database_are_imported() {
            let dir = std::env::temp_dir().join(format!("violin-kv-legacy-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("state.redb");
            {
                let db = Database::create(&path).unwrap();
                let tx = db.begin_write().unwrap();
                tx.open_table(MIGRATIONS).unwrap().insert(3, "{}").unwrap();
                tx.open_table(AUDIT).unwrap().insert(12, "{}").unwrap();
                tx.open_table(META)
                    .unwrap()
                    .insert("generation", 41)
                    .unwrap();
                tx.commit().unwrap();
            }
            let kv = Redb::open(&path).unwrap();
            assert_eq!(
                kv.get("migration", &numeric_key(3)).unwrap().as_deref(),
                Some("{}")
            );
            assert_eq!(kv.scan("audit_log").unwrap().len(), 1);
            assert_eq!(
                kv.get("settings", "audit_last").unwrap().as_deref(),
                Some("12")
            );
            assert_eq!(kv.last("audit_log", 5).unwrap().len(), 1);
            assert_eq!(
                kv.get("settings", "generation").unwrap().as_deref(),
                Some("41")
            );
            drop(kv);
            // Opening again finds nothing left to import.
            let kv = Redb::open(&path).unwrap();
            assert_eq!(kv.scan("migration").unwrap().len(), 1);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
