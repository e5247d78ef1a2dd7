//! The controller's state in an embedded database (redb): every change is one write
//! transaction, so a crash or restart loses nothing that was acknowledged.
use std::path::Path;

use anyhow::{Context, Result};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::spec::Spec;

/// Environment name -> its spec, as the operator wrote it.
const ENVIRONMENTS: TableDefinition<&str, &str> = TableDefinition::new("environments");

pub struct Store {
    db: Database,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let db = Database::create(path).with_context(|| format!("opening {}", path.display()))?;
        let tx = db.begin_write()?;
        tx.open_table(ENVIRONMENTS)?;
        tx.commit()?;
        Ok(Store { db })
    }

    /// Stored specs, by name.
    pub fn environments(&self) -> Result<Vec<(String, Spec)>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(ENVIRONMENTS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let spec = Spec::parse(v.value())
                .map_err(|e| anyhow::anyhow!("stored spec {} is invalid: {e}", k.value()))?;
            out.push((k.value().to_string(), spec));
        }
        Ok(out)
    }

    pub fn get(&self, name: &str) -> Result<Option<(String, Spec)>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(ENVIRONMENTS)?;
        let Some(v) = table.get(name)? else {
            return Ok(None);
        };
        let text = v.value().to_string();
        let spec = Spec::parse(&text).map_err(|e| anyhow::anyhow!("stored spec {name}: {e}"))?;
        Ok(Some((text, spec)))
    }

    /// Stores `text` (already validated as `spec`) unless another environment uses its VNI.
    pub fn put(&self, spec: &Spec, text: &str) -> Result<(), PutError> {
        let tx = self.db.begin_write().map_err(anyhow::Error::from)?;
        {
            let mut table = tx.open_table(ENVIRONMENTS).map_err(anyhow::Error::from)?;
            for row in table.iter().map_err(anyhow::Error::from)? {
                let (k, v) = row.map_err(anyhow::Error::from)?;
                if k.value() == spec.name {
                    continue;
                }
                if let Ok(other) = Spec::parse(v.value()) {
                    if other.vni == spec.vni {
                        return Err(PutError::VniTaken(other.name));
                    }
                }
            }
            table
                .insert(spec.name.as_str(), text)
                .map_err(anyhow::Error::from)?;
        }
        tx.commit().map_err(anyhow::Error::from)?;
        Ok(())
    }

    pub fn delete(&self, name: &str) -> Result<bool> {
        let tx = self.db.begin_write()?;
        let existed = {
            let mut table = tx.open_table(ENVIRONMENTS)?;
            let removed = table.remove(name)?.is_some();
            removed
        };
        tx.commit()?;
        Ok(existed)
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
