use crate::table::Entry;

/// The concurrent map under the FDB. Implementations never let a guard
/// escape a call, so no caller can hold a shard lock across calls.
pub trait FdbMap: Send + Sync + Default + 'static {
    /// Held across a batch of look-ups so each one need not set up its own
    /// (papaya: an epoch guard; dashmap: nothing).
    type Guard<'a>
    where
        Self: 'a;
    fn guard(&self) -> Self::Guard<'_>;
    /// Runs `f` on the entry for `k`, if any, under a held guard.
    fn with_entry_in<R>(&self, g: &Self::Guard<'_>, k: u64, f: impl FnOnce(&Entry) -> R) -> Option<R>;
    /// Runs `f` on the entry for `k`, if any.
    fn with_entry<R>(&self, k: u64, f: impl FnOnce(&Entry) -> R) -> Option<R> {
        self.with_entry_in(&self.guard(), k, f)
    }
    /// Inserts `e` if `k` is absent; returns false (and drops `e`) if present.
    fn insert_new(&self, k: u64, e: Entry) -> bool;
    /// Inserts or replaces; returns `f(old)` for the entry replaced.
    fn replace<R>(&self, k: u64, e: Entry, f: impl FnOnce(&Entry) -> R) -> Option<R>;
    /// Removes `k`; returns `f(old)`.
    fn remove<R>(&self, k: u64, f: impl FnOnce(&Entry) -> R) -> Option<R>;
    /// Removes `k` if `pred` holds for its entry at the moment of removal;
    /// returns `f(old)` for the entry removed.
    fn remove_if<R>(&self, k: u64, pred: impl FnMut(&Entry) -> bool, f: impl FnOnce(&Entry) -> R) -> Option<R>;
    /// Visits every entry.
    fn for_each(&self, f: impl FnMut(u64, &Entry));
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

type Hasher = foldhash::fast::RandomState;

/// Sharded `RwLock`ed hash map (`dashmap`).
#[derive(Debug, Default)]
pub struct DashMapBackend(dashmap::DashMap<u64, Entry, Hasher>);

impl FdbMap for DashMapBackend {
    type Guard<'a> = ();
    fn guard(&self) {}
    #[inline]
    fn with_entry_in<R>(&self, _: &(), k: u64, f: impl FnOnce(&Entry) -> R) -> Option<R> {
        self.0.get(&k).map(|r| f(r.value()))
    }
    fn insert_new(&self, k: u64, e: Entry) -> bool {
        match self.0.entry(k) {
            dashmap::Entry::Occupied(_) => false,
            dashmap::Entry::Vacant(v) => {
                v.insert(e);
                true
            }
        }
    }
    fn replace<R>(&self, k: u64, e: Entry, f: impl FnOnce(&Entry) -> R) -> Option<R> {
        self.0.insert(k, e).map(|old| f(&old))
    }
    fn remove<R>(&self, k: u64, f: impl FnOnce(&Entry) -> R) -> Option<R> {
        self.0.remove(&k).map(|(_, old)| f(&old))
    }
    fn remove_if<R>(&self, k: u64, mut pred: impl FnMut(&Entry) -> bool, f: impl FnOnce(&Entry) -> R) -> Option<R> {
        self.0.remove_if(&k, |_, v| pred(v)).map(|(_, old)| f(&old))
    }
    fn for_each(&self, mut f: impl FnMut(u64, &Entry)) {
        for r in self.0.iter() {
            f(*r.key(), r.value())
        }
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Lock-free hash map whose reads never block (`papaya`).
#[derive(Debug, Default)]
pub struct PapayaBackend(papaya::HashMap<u64, Entry, Hasher>);

impl FdbMap for PapayaBackend {
    type Guard<'a> = papaya::LocalGuard<'a>;
    #[inline]
    fn guard(&self) -> papaya::LocalGuard<'_> {
        self.0.guard()
    }
    // Always inlined: the datapath's per-frame look-ups (see Fdb::lookup_in).
    #[inline(always)]
    fn with_entry_in<R>(&self, g: &papaya::LocalGuard<'_>, k: u64, f: impl FnOnce(&Entry) -> R) -> Option<R> {
        self.0.get(&k, g).map(f)
    }
    fn insert_new(&self, k: u64, e: Entry) -> bool {
        self.0.pin().try_insert(k, e).is_ok()
    }
    fn replace<R>(&self, k: u64, e: Entry, f: impl FnOnce(&Entry) -> R) -> Option<R> {
        self.0.pin().insert(k, e).map(f)
    }
    fn remove<R>(&self, k: u64, f: impl FnOnce(&Entry) -> R) -> Option<R> {
        self.0.pin().remove(&k).map(f)
    }
    fn remove_if<R>(&self, k: u64, mut pred: impl FnMut(&Entry) -> bool, f: impl FnOnce(&Entry) -> R) -> Option<R> {
        match self.0.pin().remove_if(&k, |_, v| pred(v)) {
            Ok(Some((_, old))) => Some(f(old)),
            Ok(None) | Err(_) => None,
        }
    }
    fn for_each(&self, mut f: impl FnMut(u64, &Entry)) {
        for (k, v) in self.0.pin().iter() {
            f(*k, v)
        }
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}
