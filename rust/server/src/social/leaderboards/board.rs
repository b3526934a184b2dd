//! One board period's ranking in memory: the order-statistics set plus who holds which key.

use std::collections::HashMap;
use std::sync::Arc;

use aethex_protocol::social::SortOrder;

use super::index::OrderStatSet;

/// Total order of entries: score (by the board's direction), then when the score was reached,
/// then the board's write sequence, so no two entries tie and ranks are exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RankKey {
    /// The score, bit-inverted on descending boards so "better" is always "smaller".
    order: i64,
    reached_at: i64,
    seq: i64,
}

impl RankKey {
    pub fn new(sort: SortOrder, score: i64, reached_at: i64, seq: i64) -> Self {
        let order = match sort {
            SortOrder::Desc => !score,
            SortOrder::Asc => score,
        };
        Self {
            order,
            reached_at,
            seq,
        }
    }

    pub fn seq(self) -> i64 {
        self.seq
    }

    /// Opaque pagination cursor: the last key of a page.
    pub fn to_cursor(self) -> String {
        format!("{}_{}_{}", self.order, self.reached_at, self.seq)
    }

    pub fn from_cursor(text: &str) -> Option<Self> {
        // Out-of-range numbers saturate: that keeps their order, and any 19 digits the
        // documented pattern allows are a cursor.
        let number = |part: &str| {
            part.parse::<i128>()
                .ok()
                .map(|n| n.clamp(i64::MIN.into(), i64::MAX.into()) as i64)
        };
        let mut parts = text.split('_');
        let key = Self {
            order: number(parts.next()?)?,
            reached_at: number(parts.next()?)?,
            seq: number(parts.next()?)?,
        };
        parts.next().is_none().then_some(key)
    }

    /// The smallest key after this one (the start of the next page).
    fn successor(self) -> Self {
        Self {
            seq: self.seq.saturating_add(1),
            ..self
        }
    }
}

#[derive(Debug, Clone)]
pub struct Slot {
    pub user_id: Arc<str>,
    pub score: i64,
    pub num_scores: i64,
    pub reached_at: i64,
    pub key: RankKey,
}

/// A ranked entry read from the index: 1-based rank plus the slot's data.
#[derive(Debug, Clone)]
pub struct Ranked {
    pub rank: u64,
    pub slot: Slot,
}

#[derive(Debug)]
pub struct PeriodIndex {
    sort: SortOrder,
    set: OrderStatSet<(RankKey, u32)>,
    slots: Vec<Slot>,
    by_user: HashMap<Arc<str>, u32>,
    next_seq: i64,
}

/// One stored entry as loaded from SQL.
pub struct StoredEntry {
    pub user_id: String,
    pub score: i64,
    pub num_scores: i64,
    pub reached_at: i64,
    pub seq: i64,
}

impl PeriodIndex {
    pub fn new(sort: SortOrder) -> Self {
        Self::from_entries(sort, Vec::new())
    }

    pub fn from_entries(sort: SortOrder, entries: Vec<StoredEntry>) -> Self {
        let mut slots = Vec::with_capacity(entries.len());
        let mut by_user = HashMap::with_capacity(entries.len());
        let mut keys = Vec::with_capacity(entries.len());
        let mut next_seq = 1;
        for e in entries {
            let key = RankKey::new(sort, e.score, e.reached_at, e.seq);
            let user_id: Arc<str> = e.user_id.into();
            let slot = slots.len() as u32;
            keys.push((key, slot));
            by_user.insert(user_id.clone(), slot);
            next_seq = next_seq.max(e.seq + 1);
            slots.push(Slot {
                user_id,
                score: e.score,
                num_scores: e.num_scores,
                reached_at: e.reached_at,
                key,
            });
        }
        Self {
            sort,
            set: OrderStatSet::from_unsorted(keys),
            slots,
            by_user,
            next_seq,
        }
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    pub fn get(&self, user_id: &str) -> Option<&Slot> {
        self.by_user.get(user_id).map(|&i| &self.slots[i as usize])
    }

    /// The sequence number the next changed entry gets.
    pub fn take_seq(&mut self) -> i64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Puts the user's entry in place (new or changed); returns the 1-based rank.
    pub fn upsert(
        &mut self,
        user_id: &str,
        score: i64,
        num_scores: i64,
        reached_at: i64,
        seq: i64,
    ) -> u64 {
        let key = RankKey::new(self.sort, score, reached_at, seq);
        let slot = match self.by_user.get(user_id) {
            Some(&i) => {
                let old = self.slots[i as usize].key;
                if old != key {
                    self.set.remove(&(old, i));
                    self.set.insert((key, i));
                }
                let s = &mut self.slots[i as usize];
                s.score = score;
                s.num_scores = num_scores;
                s.reached_at = reached_at;
                s.key = key;
                i
            }
            None => {
                let i = self.slots.len() as u32;
                let user: Arc<str> = user_id.into();
                self.by_user.insert(user.clone(), i);
                self.slots.push(Slot {
                    user_id: user,
                    score,
                    num_scores,
                    reached_at,
                    key,
                });
                self.set.insert((key, i));
                i
            }
        };
        self.set.rank(&(key, slot)) as u64 + 1
    }

    /// 1-based rank of the user's entry.
    pub fn rank_of(&self, user_id: &str) -> Option<u64> {
        let &i = self.by_user.get(user_id)?;
        let key = self.slots[i as usize].key;
        Some(self.set.rank(&(key, i)) as u64 + 1)
    }

    pub fn ranked(&self, user_id: &str) -> Option<Ranked> {
        let rank = self.rank_of(user_id)?;
        Some(Ranked {
            rank,
            slot: self.get(user_id)?.clone(),
        })
    }

    /// Up to `count` entries from 0-based position `start`.
    pub fn page(&self, start: usize, count: usize) -> Vec<Ranked> {
        self.set
            .range(start, count)
            .into_iter()
            .enumerate()
            .map(|(n, (_, i))| Ranked {
                rank: (start + n) as u64 + 1,
                slot: self.slots[i as usize].clone(),
            })
            .collect()
    }

    /// 0-based position of the first entry after `cursor`.
    pub fn position_after(&self, cursor: RankKey) -> usize {
        self.set.rank(&(cursor.successor(), 0))
    }
}
