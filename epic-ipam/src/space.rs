//! The allocation state of one family of one pool.
//!
//! Memory is proportional to what is allocated, never to the pool's size:
//! `held` maps each allocated address to its first holder, in chunks of 16
//! neighbouring addresses (allocation is lowest-first, so neighbours are
//! usually allocated together), `shared` lists further holders of shared
//! addresses, and `runs` keeps the
//! allocated addresses as maximal runs `start -> end` in which every usable
//! address is allocated (unusable addresses — excluded, or a skipped
//! `.0`/`.255` — may sit inside a run). The lowest free address is then the
//! first usable address, or the address after the run that holds it: two
//! B-tree look-ups, however full the pool.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::pool::Usable;

#[derive(Debug, Clone)]
pub(crate) struct Space {
    pub(crate) usable: Usable,
    /// Chunk base (a multiple of [`CHUNK`]) -> first (smallest) holder per address.
    held: BTreeMap<u128, Box<Chunk>>,
    /// Further holders of shared addresses, sorted.
    shared: BTreeMap<u128, Vec<Arc<str>>>,
    /// Number of held addresses.
    count: usize,
    runs: BTreeMap<u128, u128>,
}

const CHUNK: u128 = 16;
type Chunk = [Option<Arc<str>>; CHUNK as usize];

/// Whether nothing usable lies strictly between `left` and `right`
/// (`left < right`): then runs ending at `left` and starting at `right` are
/// one run.
fn gap_free(usable: &Usable, left: u128, right: u128) -> bool {
    left.checked_add(1)
        .is_none_or(|n| n == right || usable.next_at_or_after(n).is_none_or(|n| n >= right))
}

fn split(value: u128) -> (u128, usize) {
    (value & !(CHUNK - 1), (value & (CHUNK - 1)) as usize)
}

impl Space {
    pub(crate) fn new(usable: Usable) -> Space {
        Space {
            usable,
            held: BTreeMap::new(),
            shared: BTreeMap::new(),
            count: 0,
            runs: BTreeMap::new(),
        }
    }

    /// The run containing `value`, if any.
    fn run_containing(&self, value: u128) -> Option<(u128, u128)> {
        let (&start, &end) = self.runs.range(..=value).next_back()?;
        (end >= value).then_some((start, end))
    }

    /// The lowest usable address that nobody holds.
    pub(crate) fn lowest_free(&self) -> Option<u128> {
        let mut candidate = self.usable.first()?;
        // Runs are maximal, so this loops at most twice; the bound is a guard.
        for _ in 0..=self.runs.len() {
            match self.run_containing(candidate) {
                None => return Some(candidate),
                Some((_, end)) => candidate = self.usable.next_at_or_after(end.checked_add(1)?)?,
            }
        }
        None
    }

    pub(crate) fn first_holder(&self, value: u128) -> Option<&Arc<str>> {
        let (base, slot) = split(value);
        self.held.get(&base)?[slot].as_ref()
    }

    /// Whether more than one owner holds `value`.
    pub(crate) fn is_shared(&self, value: u128) -> bool {
        self.shared.contains_key(&value)
    }

    /// The holders of `value`, sorted; empty when free.
    pub(crate) fn holders(&self, value: u128) -> Vec<&Arc<str>> {
        let Some(first) = self.first_holder(value) else {
            return Vec::new();
        };
        let mut out = vec![first];
        out.extend(self.shared.get(&value).into_iter().flatten());
        out
    }

    /// Every held address with its holders, in address order.
    pub(crate) fn held(&self) -> impl Iterator<Item = (u128, Vec<&Arc<str>>)> + '_ {
        self.held.iter().flat_map(move |(base, chunk)| {
            chunk
                .iter()
                .enumerate()
                .filter(|(_, h)| h.is_some())
                .map(move |(i, _)| {
                    let value = base + i as u128;
                    (value, self.holders(value))
                })
        })
    }

    /// Adds `owner` to the holders of `value`; returns whether `value` was
    /// free before.
    pub(crate) fn hold(&mut self, value: u128, owner: Arc<str>) -> bool {
        let (base, slot) = split(value);
        let chunk = self.held.entry(base).or_default();
        match &mut chunk[slot] {
            None => {
                chunk[slot] = Some(owner);
                self.count += 1;
                self.insert_run(value);
                true
            }
            Some(first) => {
                let mut new = owner;
                if new < *first {
                    std::mem::swap(first, &mut new);
                }
                if *first == new {
                    return false;
                }
                let others = self.shared.entry(value).or_default();
                if let Err(at) = others.binary_search(&new) {
                    others.insert(at, new);
                }
                false
            }
        }
    }

    /// Removes `owner` from the holders of `value`; returns whether the
    /// address became free.
    pub(crate) fn unhold(&mut self, value: u128, owner: &str) -> bool {
        let (base, slot) = split(value);
        let Some(chunk) = self.held.get_mut(&base) else {
            return false;
        };
        let Some(first) = &chunk[slot] else {
            return false;
        };
        if &**first != owner {
            if let Some(others) = self.shared.get_mut(&value) {
                others.retain(|o| &**o != owner);
                if others.is_empty() {
                    self.shared.remove(&value);
                }
            }
            return false;
        }
        if let Some(others) = self.shared.get_mut(&value) {
            chunk[slot] = Some(others.remove(0));
            if others.is_empty() {
                self.shared.remove(&value);
            }
            return false;
        }
        chunk[slot] = None;
        if chunk.iter().all(Option::is_none) {
            self.held.remove(&base);
        }
        self.count -= 1;
        self.remove_run(value);
        true
    }

    /// Adds newly held `value` to the runs: extends or merges neighbours in
    /// place (one removal at most), or starts a run.
    fn insert_run(&mut self, value: u128) {
        let right = value
            .checked_add(1)
            .and_then(|n| self.runs.range(n..).next())
            .map(|(s, e)| (*s, *e))
            .filter(|&(start, _)| gap_free(&self.usable, value, start));
        let end = match right {
            Some((start, end)) => {
                self.runs.remove(&start);
                end
            }
            None => value,
        };
        if let Some((_, left_end)) = self.runs.range_mut(..value).next_back()
            && gap_free(&self.usable, *left_end, value)
        {
            *left_end = (*left_end).max(end);
            return;
        }
        self.runs.insert(value, end);
    }

    /// Removes newly freed `value` from the runs, trimming in place when it
    /// can.
    fn remove_run(&mut self, value: u128) {
        let Some((&start, run_end)) = self.runs.range_mut(..=value).next_back() else {
            return;
        };
        let end = *run_end;
        if end < value {
            return;
        }
        // Trim both pieces to allocated ends: usable addresses in a run are held.
        let left_end = (start < value)
            .then(|| self.usable.prev_at_or_before(value - 1))
            .flatten()
            .filter(|&e| e >= start);
        match left_end {
            Some(left_end) => *run_end = left_end,
            None => {
                self.runs.remove(&start);
            }
        }
        if value < end
            && let Some(right_start) = self.usable.next_at_or_after(value + 1)
            && right_start <= end
        {
            self.runs.insert(right_start, end);
        }
    }

    /// Fills an empty space from `held`, sorted by address without
    /// duplicates: the trees are built in bulk, with full nodes.
    pub(crate) fn fill_sorted(&mut self, held: impl IntoIterator<Item = (u128, Arc<str>)>) {
        debug_assert!(self.count == 0 && self.held.is_empty() && self.shared.is_empty());
        let mut chunks: Vec<(u128, Box<Chunk>)> = Vec::new();
        let mut runs: Vec<(u128, u128)> = Vec::new();
        for (value, owner) in held {
            let (base, slot) = split(value);
            match chunks.last_mut() {
                Some((b, chunk)) if *b == base => chunk[slot] = Some(owner),
                _ => {
                    let mut chunk: Box<Chunk> = Box::default();
                    chunk[slot] = Some(owner);
                    chunks.push((base, chunk));
                }
            }
            self.count += 1;
            match runs.last_mut() {
                Some((_, end)) if gap_free(&self.usable, *end, value) => *end = value,
                _ => runs.push((value, value)),
            }
        }
        self.held = chunks.into_iter().collect();
        self.runs = runs.into_iter().collect();
    }

    /// Rebuilds the B-trees with full nodes.
    pub(crate) fn compact(&mut self) {
        self.held = std::mem::take(&mut self.held).into_iter().collect();
        self.runs = std::mem::take(&mut self.runs).into_iter().collect();
    }

    /// Number of allocated addresses.
    pub(crate) fn allocated(&self) -> usize {
        self.count
    }

    #[cfg(test)]
    pub(crate) fn runs(&self) -> Vec<(u128, u128)> {
        self.runs.iter().map(|(s, e)| (*s, *e)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(ranges: Vec<(u128, u128)>, avoid_buggy: bool) -> Space {
        Space::new(Usable {
            ranges,
            avoid_buggy,
        })
    }

    fn owner(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    #[test]
    fn lowest_free_walks_runs() {
        let mut s = space(vec![(10, 19), (30, 39)], false);
        assert_eq!(s.lowest_free(), Some(10));
        for v in 10..20 {
            s.hold(v, owner("a"));
        }
        assert_eq!(s.runs(), vec![(10, 19)]);
        assert_eq!(s.lowest_free(), Some(30));
        s.hold(30, owner("a"));
        // the gap 20..29 is not usable, so the runs merge
        assert_eq!(s.runs(), vec![(10, 30)]);
        assert!(s.unhold(15, "a"));
        assert_eq!(s.runs(), vec![(10, 14), (16, 30)]);
        assert_eq!(s.lowest_free(), Some(15));
        assert!(s.unhold(30, "a"));
        assert_eq!(s.runs(), vec![(10, 14), (16, 19)]);
        s.hold(15, owner("b"));
        assert_eq!(s.runs(), vec![(10, 19)]);
    }

    #[test]
    fn buggy_addresses_join_runs() {
        let mut s = space(vec![(0, 1023)], true);
        let mut v = s.lowest_free();
        let mut got = Vec::new();
        while let Some(x) = v {
            if got.len() == 600 {
                break;
            }
            s.hold(x, owner("a"));
            got.push(x);
            v = s.lowest_free();
        }
        assert!(got.iter().all(|x| !matches!(x & 0xff, 0 | 255)));
        assert_eq!(s.runs().len(), 1);
        assert_eq!((got[253], got[254]), (254, 256 + 1));
        // release the first address of the second /24: run splits and trims
        assert!(s.unhold(257, "a"));
        assert_eq!(s.runs(), vec![(1, 254), (258, got[599])]);
        assert_eq!(s.lowest_free(), Some(257));
    }

    #[test]
    fn shared_holders() {
        let mut s = space(vec![(0, 3)], false);
        s.hold(1, owner("b"));
        s.hold(1, owner("a"));
        s.hold(1, owner("c"));
        assert_eq!(s.holders(1), [&owner("a"), &owner("b"), &owner("c")]);
        assert!(!s.unhold(1, "b"));
        assert!(!s.unhold(1, "a"));
        assert_eq!(s.holders(1), [&owner("c")]);
        assert_eq!(s.allocated(), 1);
        assert!(s.unhold(1, "c"));
        assert!(s.holders(1).is_empty());
        assert!(!s.unhold(1, "c"));
        assert_eq!(s.allocated(), 0);
        assert!(s.held().next().is_none());
    }

    #[test]
    fn top_of_the_address_space() {
        let mut s = space(vec![(u128::MAX - 1, u128::MAX)], false);
        s.hold(u128::MAX, owner("a"));
        assert_eq!(s.lowest_free(), Some(u128::MAX - 1));
        s.hold(u128::MAX - 1, owner("a"));
        assert_eq!(s.lowest_free(), None);
        assert_eq!(s.runs(), vec![(u128::MAX - 1, u128::MAX)]);
        assert!(s.unhold(u128::MAX, "a"));
        assert_eq!(s.lowest_free(), Some(u128::MAX));
    }
}
