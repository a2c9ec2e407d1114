//! An in-memory store for unit tests of the layers above storage. Never the only backend a
//! behaviour is tested on.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{ObjectInfo, ObjectKey, PutMode, PutOutcome, Store};
use crate::error::Result;

#[derive(Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<ObjectKey, Vec<u8>>>,
}

impl MemoryStore {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<ObjectKey, Vec<u8>>> {
        crate::io::lock(&self.objects)
    }
}

impl Store for MemoryStore {
    fn location(&self) -> String {
        "memory:".into()
    }
    fn get(&self, key: &ObjectKey) -> Result<Option<Vec<u8>>> {
        Ok(self.map().get(key).cloned())
    }
    fn get_prefix(&self, key: &ObjectKey, len: usize) -> Result<Option<Vec<u8>>> {
        Ok(self.map().get(key).map(|v| v[..len.min(v.len())].to_vec()))
    }
    fn put(&self, key: &ObjectKey, data: &[u8], mode: PutMode) -> Result<PutOutcome> {
        let mut m = self.map();
        if mode == PutMode::CreateNew && m.contains_key(key) {
            return Ok(PutOutcome::AlreadyExists);
        }
        m.insert(key.clone(), data.to_vec());
        Ok(PutOutcome::Stored)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        Ok(self
            .map()
            .iter()
            .filter(|(k, _)| k.as_str().starts_with(prefix))
            .map(|(k, v)| ObjectInfo {
                key: k.clone(),
                size: v.len() as u64,
                modified: None,
            })
            .collect())
    }
    fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.map().remove(key);
        Ok(())
    }
}
