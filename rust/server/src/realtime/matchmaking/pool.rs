//! The matching algorithm: a plain function over one pool (tickets of one project, mode and
//! region) and the time, so tests and the benchmark drive it without sockets or clocks.
//!
//! Tickets are compatible when their effective skill ranges share at least one value (for
//! intervals that is the same as every pair overlapping). A sweep over the ranges sorted by their
//! low end keeps the "active" tickets, those whose range contains the current sweep point; every
//! subset of them is compatible. Just before the active set loses a ticket (the sweep passes the
//! end of its range) and at the end, matches are formed from the active tickets, oldest first:
//! each match takes the longest-waiting tickets that fit, as many players as `max_players` allows
//! and at least `min_players`, parties whole. Sorting is O(n log n); each formed match looks at
//! no more than [`WINDOW`] tickets, so 100,000 tickets match in well under a second.

use std::collections::BTreeSet;

/// Most of the oldest active tickets one match is chosen from: bounds the work per match when
/// many tickets share a skill value.
pub const WINDOW: usize = 256;

/// A mode's rules as the algorithm needs them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    pub min_players: u32,
    /// At most [`aethex_protocol::matchmaking::MAX_MATCH_PLAYERS`] (fits the 128-bit sums below).
    pub max_players: u32,
    pub widen_per_sec: f64,
    pub max_widen: f64,
}

impl Rules {
    /// How far each side of a ticket's range has widened after `waited_ms`.
    pub fn widening(&self, waited_ms: i64) -> f64 {
        (self.widen_per_sec * waited_ms.max(0) as f64 / 1000.0).min(self.max_widen)
    }

    pub fn effective_range(&self, range: [f64; 2], created_at: i64, now_ms: i64) -> [f64; 2] {
        let w = self.widening(now_ms - created_at);
        [range[0] - w, range[1] + w]
    }
}

/// One ticket of the pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// The requested range (`low <= high`, finite).
    pub range: [f64; 2],
    /// Unix ms; older tickets are served first (ties: the earlier index).
    pub created_at: i64,
    /// Unix ms at which the ticket times out.
    pub expires_at: i64,
    /// Players on the ticket (the submitter and the party).
    pub players: u32,
}

/// What one pass decided, as indices into the pool.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// Each match's tickets, oldest first.
    pub matches: Vec<Vec<usize>>,
    pub timed_out: Vec<usize>,
}

/// Forms every match the pool allows at `now_ms` and names the tickets that timed out.
pub fn form_matches(pool: &[Candidate], rules: &Rules, now_ms: i64) -> Outcome {
    let mut outcome = Outcome::default();
    let max = rules
        .max_players
        .min(aethex_protocol::matchmaking::MAX_MATCH_PLAYERS);
    let min = rules.min_players.clamp(1, max.max(1));
    let mut starts = Vec::with_capacity(pool.len());
    let mut ends = vec![0u64; pool.len()];
    for (i, c) in pool.iter().enumerate() {
        if now_ms >= c.expires_at {
            outcome.timed_out.push(i);
            continue;
        }
        // A ticket bigger than the mode allows (the mode changed after it was queued) waits for
        // its timeout.
        if c.players == 0 || c.players > max {
            continue;
        }
        let [low, high] = rules.effective_range(c.range, c.created_at, now_ms);
        ends[i] = order_key(high);
        starts.push((order_key(low), i));
    }
    starts.sort_unstable();
    let mut sweep = Sweep {
        pool,
        min,
        max,
        by_end: BTreeSet::new(),
        by_age: BTreeSet::new(),
        ends: &ends,
        players: 0,
        grew: false,
        matches: &mut outcome.matches,
    };
    for &(start, i) in &starts {
        while let Some(&(end, oldest_end)) = sweep.by_end.first() {
            if end >= start {
                break;
            }
            // The active set is about to lose a ticket: match what it holds now.
            sweep.form_all();
            if sweep.by_end.remove(&(end, oldest_end)) {
                sweep
                    .by_age
                    .remove(&(pool[oldest_end].created_at, oldest_end));
                sweep.players -= pool[oldest_end].players;
            }
        }
        sweep.by_end.insert((ends[i], i));
        sweep.by_age.insert((pool[i].created_at, i));
        sweep.players += pool[i].players;
        sweep.grew = true;
    }
    sweep.form_all();
    outcome
}

struct Sweep<'a> {
    pool: &'a [Candidate],
    min: u32,
    max: u32,
    /// Active tickets by the end of their effective range ...
    by_end: BTreeSet<(u64, usize)>,
    /// ... and by age.
    by_age: BTreeSet<(i64, usize)>,
    ends: &'a [u64],
    /// Players on the active tickets.
    players: u32,
    /// A ticket joined since the last failed attempt: removals alone cannot make a match
    /// possible that was not.
    grew: bool,
    matches: &'a mut Vec<Vec<usize>>,
}

impl Sweep<'_> {
    fn form_all(&mut self) {
        while self.grew && self.players >= self.min {
            if !self.form_one() {
                self.grew = false;
            }
        }
    }

    /// Forms one match from the oldest active tickets, or returns false when none fits. Looks
    /// at twice `max_players` tickets first (nearly always enough), then at up to [`WINDOW`].
    fn form_one(&mut self) -> bool {
        let small = 2 * self.max as usize;
        self.form_from(small) || (self.by_age.len() > small && self.form_from(WINDOW))
    }

    fn form_from(&mut self, window_len: usize) -> bool {
        let window: Vec<usize> = self
            .by_age
            .iter()
            .take(window_len)
            .map(|&(_, i)| i)
            .collect();
        let sizes: Vec<u32> = window.iter().map(|&i| self.pool[i].players).collect();
        // reachable[k]: the player totals (as bits) some subset of window[k..] adds up to.
        let cap = bits(0, self.max);
        let mut reachable = vec![0u128; window.len() + 1];
        reachable[window.len()] = 1;
        for k in (0..window.len()).rev() {
            let rest = reachable[k + 1];
            reachable[k] = (rest | (rest << sizes[k])) & cap;
        }
        if reachable[0] & bits(self.min, self.max) == 0 {
            return false;
        }
        // Oldest first: take a ticket whenever the rest can still complete a valid match.
        let mut total = 0;
        let mut chosen = Vec::new();
        for (k, &size) in sizes.iter().enumerate() {
            let with = total + size;
            if with > self.max {
                continue;
            }
            if reachable[k + 1] & bits(self.min.saturating_sub(with), self.max - with) != 0 {
                chosen.push(window[k]);
                total = with;
            }
        }
        for &i in &chosen {
            self.by_end.remove(&(self.ends[i], i));
            self.by_age.remove(&(self.pool[i].created_at, i));
        }
        self.players -= total;
        self.matches.push(chosen);
        true
    }
}

/// Bits `low..=high` set (`high` at most 127).
fn bits(low: u32, high: u32) -> u128 {
    if low > high {
        return 0;
    }
    let upto = if high >= 127 {
        u128::MAX
    } else {
        (1u128 << (high + 1)) - 1
    };
    upto & !((1u128 << low) - 1)
}

/// A u64 whose order is the float order (finite values; -0.0 before 0.0).
fn order_key(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

/// The obvious matcher, kept as the benchmark's baseline: for each ticket, oldest first, scan
/// every other unmatched ticket for ones compatible with the group so far. O(n^2).
pub fn naive_pairwise(pool: &[Candidate], rules: &Rules, now_ms: i64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..pool.len())
        .filter(|&i| now_ms < pool[i].expires_at && pool[i].players <= rules.max_players)
        .collect();
    order.sort_by_key(|&i| (pool[i].created_at, i));
    let ranges: Vec<[f64; 2]> = pool
        .iter()
        .map(|c| rules.effective_range(c.range, c.created_at, now_ms))
        .collect();
    let mut taken = vec![false; pool.len()];
    let mut matches = Vec::new();
    for (n, &i) in order.iter().enumerate() {
        if taken[i] {
            continue;
        }
        let mut group = vec![i];
        let [mut low, mut high] = ranges[i];
        let mut total = pool[i].players;
        for &j in &order[n + 1..] {
            if taken[j] || total + pool[j].players > rules.max_players {
                continue;
            }
            let [l, h] = ranges[j];
            if l.max(low) <= h.min(high) {
                group.push(j);
                low = low.max(l);
                high = high.min(h);
                total += pool[j].players;
                if total == rules.max_players {
                    break;
                }
            }
        }
        if total >= rules.min_players {
            for &g in &group {
                taken[g] = true;
            }
            matches.push(group);
        }
    }
    matches
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUEL: Rules = Rules {
        min_players: 2,
        max_players: 2,
        widen_per_sec: 0.0,
        max_widen: 0.0,
    };

    fn ticket(low: f64, high: f64, created_at: i64, players: u32) -> Candidate {
        Candidate {
            range: [low, high],
            created_at,
            expires_at: created_at + 60_000,
            players,
        }
    }

    #[test]
    fn overlapping_ranges_match_and_disjoint_ones_do_not() {
        let pool = [
            ticket(1000.0, 1500.0, 0, 1),
            ticket(1400.0, 1900.0, 1, 1),
            ticket(3000.0, 3100.0, 2, 1),
        ];
        let out = form_matches(&pool, &DUEL, 10);
        assert_eq!(out.matches, vec![vec![0, 1]]);
        assert!(out.timed_out.is_empty());
        // Touching ends share the value 1500.
        let pool = [ticket(1000.0, 1500.0, 0, 1), ticket(1500.0, 1600.0, 1, 1)];
        assert_eq!(form_matches(&pool, &DUEL, 10).matches.len(), 1);
        let pool = [ticket(1000.0, 1500.0, 0, 1), ticket(1500.5, 1600.0, 1, 1)];
        assert!(form_matches(&pool, &DUEL, 10).matches.is_empty());
    }

    #[test]
    fn every_ticket_of_a_match_shares_one_skill_value() {
        // 0 overlaps 1 and 1 overlaps 2, but 0 and 2 do not: no match of three.
        let trio = Rules {
            min_players: 3,
            max_players: 3,
            ..DUEL
        };
        let pool = [
            ticket(0.0, 10.0, 0, 1),
            ticket(5.0, 15.0, 1, 1),
            ticket(12.0, 20.0, 2, 1),
        ];
        assert!(form_matches(&pool, &trio, 5).matches.is_empty());
        let pool = [
            ticket(0.0, 10.0, 0, 1),
            ticket(5.0, 15.0, 1, 1),
            ticket(9.0, 20.0, 2, 1),
        ];
        assert_eq!(form_matches(&pool, &trio, 5).matches, vec![vec![0, 1, 2]]);
    }

    #[test]
    fn ranges_widen_with_waiting_up_to_the_cap() {
        let rules = Rules {
            widen_per_sec: 10.0,
            max_widen: 50.0,
            ..DUEL
        };
        // 100 apart: each side must widen by 50, i.e. 5 s of waiting for both.
        let pool = [ticket(0.0, 100.0, 0, 1), ticket(200.0, 300.0, 0, 1)];
        assert!(form_matches(&pool, &rules, 4_999).matches.is_empty());
        assert_eq!(form_matches(&pool, &rules, 5_000).matches, vec![vec![0, 1]]);
        // 101 apart never match: the cap holds at any wait.
        let pool = [ticket(0.0, 100.0, 0, 1), ticket(201.0, 300.0, 0, 1)];
        assert!(form_matches(&pool, &rules, 59_000).matches.is_empty());
        assert_eq!(
            rules.effective_range([0.0, 100.0], 0, 2_000),
            [-20.0, 120.0]
        );
    }

    #[test]
    fn tickets_time_out_and_are_not_matched_after() {
        let pool = [ticket(0.0, 10.0, 0, 1), ticket(0.0, 10.0, 30_000, 1)];
        let out = form_matches(&pool, &DUEL, 60_000);
        assert_eq!(out.timed_out, vec![0]);
        assert!(out.matches.is_empty());
        assert_eq!(form_matches(&pool, &DUEL, 59_999).matches, vec![vec![0, 1]]);
    }

    #[test]
    fn min_and_max_players_and_the_oldest_tickets_first() {
        let rules = Rules {
            min_players: 3,
            max_players: 4,
            ..DUEL
        };
        // Two players: below the minimum.
        let pool = [ticket(0.0, 10.0, 0, 1), ticket(0.0, 10.0, 1, 1)];
        assert!(form_matches(&pool, &rules, 5).matches.is_empty());
        // Six compatible players, the youngest lowest in skill: the four oldest play.
        let pool = [
            ticket(5.0, 10.0, 0, 1),
            ticket(5.0, 10.0, 1, 1),
            ticket(5.0, 10.0, 2, 1),
            ticket(5.0, 10.0, 3, 1),
            ticket(0.0, 10.0, 9, 1),
            ticket(0.0, 10.0, 8, 1),
        ];
        let out = form_matches(&pool, &rules, 10);
        assert_eq!(out.matches, vec![vec![0, 1, 2, 3]]);
        // Three more make the rest a match of at least three.
        let mut more = pool.to_vec();
        more.push(ticket(0.0, 10.0, 10, 1));
        let out = form_matches(&more, &rules, 10);
        assert_eq!(out.matches, vec![vec![0, 1, 2, 3], vec![5, 4, 6]]);
    }

    #[test]
    fn parties_stay_whole_and_fill_the_match() {
        let rules = Rules {
            min_players: 4,
            max_players: 4,
            ..DUEL
        };
        // Oldest first would take the three and be stuck at 3 or 5; the two pairs make four.
        let pool = [
            ticket(0.0, 10.0, 0, 3),
            ticket(0.0, 10.0, 1, 2),
            ticket(0.0, 10.0, 2, 2),
        ];
        assert_eq!(form_matches(&pool, &rules, 5).matches, vec![vec![1, 2]]);
        // With a single it is the oldest party plus the single.
        let pool = [
            ticket(0.0, 10.0, 0, 3),
            ticket(0.0, 10.0, 1, 2),
            ticket(0.0, 10.0, 2, 1),
        ];
        assert_eq!(form_matches(&pool, &rules, 5).matches, vec![vec![0, 2]]);
        // A party larger than the mode allows never matches.
        let pool = [ticket(0.0, 10.0, 0, 5), ticket(0.0, 10.0, 1, 2)];
        assert!(form_matches(&pool, &rules, 5).matches.is_empty());
    }

    #[test]
    fn large_pools_use_every_ticket_at_most_once_and_only_compatible_ones() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let rules = Rules {
            min_players: 2,
            max_players: 5,
            widen_per_sec: 2.0,
            max_widen: 40.0,
        };
        let pool: Vec<Candidate> = (0..5_000)
            .map(|i| {
                let skill = rng.gen_range(0.0..3000.0);
                let spread = rng.gen_range(10.0..100.0);
                ticket(skill - spread, skill + spread, i, rng.gen_range(1..=3))
            })
            .collect();
        let now = 10_000;
        let out = form_matches(&pool, &rules, now);
        let mut seen = vec![false; pool.len()];
        let mut matched = 0;
        for m in &out.matches {
            let players: u32 = m.iter().map(|&i| pool[i].players).sum();
            assert!((2..=5).contains(&players), "{players} players");
            let (mut low, mut high) = (f64::MIN, f64::MAX);
            for &i in m {
                assert!(!seen[i], "ticket {i} twice");
                seen[i] = true;
                let [l, h] = rules.effective_range(pool[i].range, pool[i].created_at, now);
                low = low.max(l);
                high = high.min(h);
            }
            assert!(low <= high, "incompatible match {m:?}");
            matched += m.len();
        }
        assert!(matched > pool.len() * 9 / 10, "only {matched} matched");
    }

    #[test]
    fn float_order_keys_sort_like_floats() {
        let mut xs = [3.5, -1.0, 0.0, -0.0, -1e300, 1e300, 2.0];
        let mut keys: Vec<u64> = xs.iter().map(|&x| order_key(x)).collect();
        keys.sort_unstable();
        xs.sort_by(f64::total_cmp);
        assert_eq!(keys, xs.iter().map(|&x| order_key(x)).collect::<Vec<_>>());
        assert_eq!(bits(2, 3), 0b1100);
        assert_eq!(bits(0, 127), u128::MAX);
        assert_eq!(bits(4, 3), 0);
    }
}
