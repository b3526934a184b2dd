//! The in-memory rank index: an order-statistics set that answers "what rank is this key" and
//! "which key has rank r" in O(log n), and inserts/removes in O(log n + B).
//!
//! Layout: the sorted keys are cut into blocks of at most `MAX_BLOCK` keys; a Fenwick tree over
//! the block lengths gives the number of keys before any block. Compared with a balanced tree
//! carrying subtree counts this keeps keys contiguous (one cache-friendly binary search per
//! block) and costs ~1.1 pointers per 512 keys of overhead; compared with one sorted `Vec`, an
//! insert moves at most a block instead of up to a million keys.

/// Keys per block before it splits in two. Large enough that the block directory stays small
/// (2,000 blocks for 1M keys), small enough that shifting inside a block is a few hundred ns.
const MAX_BLOCK: usize = 1024;
/// A block shrinking below this merges with a neighbour, so boards whose entries drain from a
/// score range keep few, well-filled blocks instead of many nearly empty ones.
const MIN_BLOCK: usize = MAX_BLOCK / 8;

#[derive(Debug, Clone)]
pub struct OrderStatSet<K> {
    blocks: Vec<Vec<K>>,
    /// Largest key of each block, to find a key's block with one binary search.
    maxes: Vec<K>,
    /// Fenwick tree (1-based) over block lengths.
    fenwick: Vec<usize>,
    len: usize,
}

impl<K: Ord + Copy> Default for OrderStatSet<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + Copy> OrderStatSet<K> {
    pub fn new() -> Self {
        Self {
            blocks: Vec::new(),
            maxes: Vec::new(),
            fenwick: vec![0],
            len: 0,
        }
    }

    /// Builds from keys in any order (sorting once beats a million inserts at start-up).
    pub fn from_unsorted(mut keys: Vec<K>) -> Self {
        keys.sort_unstable();
        keys.dedup();
        let len = keys.len();
        let blocks: Vec<Vec<K>> = keys.chunks(MAX_BLOCK / 2).map(|c| c.to_vec()).collect();
        let mut set = Self {
            maxes: blocks
                .iter()
                .map(|b| *b.last().expect("non-empty"))
                .collect(),
            blocks,
            fenwick: Vec::new(),
            len,
        };
        set.rebuild_fenwick();
        set
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn rebuild_fenwick(&mut self) {
        let n = self.blocks.len();
        self.fenwick = vec![0; n + 1];
        for (i, block) in self.blocks.iter().enumerate() {
            self.fenwick[i + 1] += block.len();
            let parent = (i + 1) + ((i + 1) & (i + 1).wrapping_neg());
            if parent <= n {
                self.fenwick[parent] += self.fenwick[i + 1];
            }
        }
    }

    fn fenwick_add(&mut self, block: usize, delta: isize) {
        let mut i = block + 1;
        while i < self.fenwick.len() {
            self.fenwick[i] = self.fenwick[i].wrapping_add_signed(delta);
            i += i & i.wrapping_neg();
        }
    }

    /// Keys in blocks before `block`.
    fn keys_before(&self, block: usize) -> usize {
        let mut i = block;
        let mut sum = 0;
        while i > 0 {
            sum += self.fenwick[i];
            i -= i & i.wrapping_neg();
        }
        sum
    }

    /// The block that holds (or would hold) `key`.
    fn block_for(&self, key: &K) -> usize {
        self.maxes
            .partition_point(|max| max < key)
            .min(self.blocks.len().saturating_sub(1))
    }

    /// Inserts `key`; false if it was already present.
    pub fn insert(&mut self, key: K) -> bool {
        if self.blocks.is_empty() {
            self.blocks.push(vec![key]);
            self.maxes.push(key);
            self.rebuild_fenwick();
            self.len = 1;
            return true;
        }
        let b = self.block_for(&key);
        let block = &mut self.blocks[b];
        let Err(pos) = block.binary_search(&key) else {
            return false;
        };
        block.insert(pos, key);
        if pos + 1 == block.len() {
            self.maxes[b] = key;
        }
        self.len += 1;
        if block.len() > MAX_BLOCK {
            let upper = block.split_off(block.len() / 2);
            self.maxes[b] = *block.last().expect("non-empty");
            self.maxes.insert(b + 1, *upper.last().expect("non-empty"));
            self.blocks.insert(b + 1, upper);
            self.rebuild_fenwick();
        } else {
            self.fenwick_add(b, 1);
        }
        true
    }

    /// Removes `key`; false if it was absent.
    pub fn remove(&mut self, key: &K) -> bool {
        if self.blocks.is_empty() {
            return false;
        }
        let b = self.block_for(key);
        let block = &mut self.blocks[b];
        let Ok(pos) = block.binary_search(key) else {
            return false;
        };
        block.remove(pos);
        self.len -= 1;
        if block.is_empty() {
            self.blocks.remove(b);
            self.maxes.remove(b);
            self.rebuild_fenwick();
            return true;
        }
        if pos == block.len() {
            self.maxes[b] = *block.last().expect("non-empty");
        }
        if block.len() < MIN_BLOCK && self.blocks.len() > 1 {
            self.merge_with_neighbour(b);
        } else {
            self.fenwick_add(b, -1);
        }
        true
    }

    /// Merges block `b` into a neighbour, splitting the result in half if it is too big.
    fn merge_with_neighbour(&mut self, b: usize) {
        let lo = if b + 1 < self.blocks.len() { b } else { b - 1 };
        let upper = self.blocks.remove(lo + 1);
        self.maxes.remove(lo + 1);
        self.blocks[lo].extend(upper);
        if self.blocks[lo].len() > MAX_BLOCK {
            let mid = self.blocks[lo].len() / 2;
            let half = self.blocks[lo].split_off(mid);
            self.maxes.insert(lo + 1, *half.last().expect("non-empty"));
            self.blocks.insert(lo + 1, half);
        }
        self.maxes[lo] = *self.blocks[lo].last().expect("non-empty");
        self.rebuild_fenwick();
    }

    /// Number of keys smaller than `key` (its 0-based rank when present).
    pub fn rank(&self, key: &K) -> usize {
        if self.blocks.is_empty() {
            return 0;
        }
        let b = self.block_for(key);
        let within = self.blocks[b].partition_point(|k| k < key);
        self.keys_before(b) + within
    }

    /// Block and offset of the key with 0-based rank `rank`, by descending the Fenwick tree.
    fn locate(&self, rank: usize) -> Option<(usize, usize)> {
        if rank >= self.len {
            return None;
        }
        let n = self.blocks.len();
        let mut pos = 0;
        let mut remaining = rank;
        let mut step = n.next_power_of_two();
        while step > 0 {
            let next = pos + step;
            if next <= n && self.fenwick[next] <= remaining {
                pos = next;
                remaining -= self.fenwick[next];
            }
            step >>= 1;
        }
        Some((pos, remaining))
    }

    /// The key with 0-based rank `rank`.
    pub fn select(&self, rank: usize) -> Option<K> {
        self.locate(rank).map(|(b, i)| self.blocks[b][i])
    }

    /// Up to `count` keys in order starting at 0-based rank `start`.
    pub fn range(&self, start: usize, count: usize) -> Vec<K> {
        let mut out = Vec::with_capacity(count.min(self.len.saturating_sub(start)));
        let Some((mut b, mut i)) = self.locate(start) else {
            return out;
        };
        while out.len() < count && b < self.blocks.len() {
            let block = &self.blocks[b];
            let take = (count - out.len()).min(block.len() - i);
            out.extend_from_slice(&block[i..i + take]);
            b += 1;
            i = 0;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    #[test]
    fn matches_a_sorted_vec_under_random_inserts_and_removes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut set = OrderStatSet::new();
        let mut model: Vec<u32> = Vec::new();
        for _ in 0..20_000 {
            let k = rng.gen_range(0..5_000u32);
            if rng.gen_bool(0.6) {
                let inserted = set.insert(k);
                let pos = model.binary_search(&k);
                assert_eq!(inserted, pos.is_err());
                if let Err(p) = pos {
                    model.insert(p, k);
                }
            } else {
                let removed = set.remove(&k);
                let pos = model.binary_search(&k);
                assert_eq!(removed, pos.is_ok());
                if let Ok(p) = pos {
                    model.remove(p);
                }
            }
            assert_eq!(set.len(), model.len());
        }
        for (r, k) in model.iter().enumerate() {
            assert_eq!(set.rank(k), r);
            assert_eq!(set.select(r), Some(*k));
        }
        assert_eq!(set.select(model.len()), None);
        assert_eq!(set.range(10, 25), model[10..35].to_vec());
        assert_eq!(set.rank(&u32::MAX), model.len());
    }

    #[test]
    fn draining_merges_small_blocks() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut keys: Vec<u32> = (0..50_000).collect();
        let mut set = OrderStatSet::new();
        for k in &keys {
            set.insert(*k);
        }
        keys.shuffle(&mut rng);
        let (gone, kept) = keys.split_at(49_000);
        for k in gone {
            assert!(set.remove(k));
        }
        let mut kept = kept.to_vec();
        kept.sort_unstable();
        assert_eq!(set.len(), kept.len());
        assert!(
            set.blocks.len() <= kept.len() / MIN_BLOCK + 1,
            "{} blocks for {} keys",
            set.blocks.len(),
            kept.len()
        );
        for (r, k) in kept.iter().enumerate() {
            assert_eq!(set.rank(k), r);
            assert_eq!(set.select(r), Some(*k));
        }
        assert_eq!(set.range(0, kept.len()), kept);
    }

    #[test]
    fn bulk_build_equals_incremental() {
        let mut keys: Vec<u64> = (0..10_000).collect();
        keys.shuffle(&mut rand::rngs::StdRng::seed_from_u64(1));
        let bulk = OrderStatSet::from_unsorted(keys.clone());
        let mut incremental = OrderStatSet::new();
        for k in &keys {
            incremental.insert(*k);
        }
        for r in [0usize, 1, 511, 512, 1023, 5_000, 9_999] {
            assert_eq!(bulk.select(r), incremental.select(r));
            assert_eq!(bulk.rank(&(r as u64)), r);
        }
        assert_eq!(bulk.range(9_990, 100).len(), 10);
    }
}
