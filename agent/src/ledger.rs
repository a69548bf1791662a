//! What HQ holds of one outlet's records, counted by their `seq`: the rules
//! behind `outlet-agent fleet audit` and the dashboard's gap view.
//!
//! Every record an agent publishes on `message/in` and `message/status`
//! carries `seq` (one counter per outlet, no gaps, never reused) and
//! `epoch` (new only when the outlet's data starts anew, seqs from 1
//! again). So a reader that knows the seqs below which it has everything
//! (`next`), and which it has above that, knows exactly what it is missing;
//! the agent's journal gives it back on `request/replay`, or says it no
//! longer holds it (`first_held`), and then it is lost for good and
//! counted as such, never silently forgotten.
//!
//! Plain data: no clock, no I/O. It must not import anything but `std`
//! and `serde` (the audit keeps it in a file as JSON).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Records held above the first gap, at most: a ledger whose gap is older
/// than this many later records gives up its lowest missing seqs (counted
/// `lost`), so one outlet's hole cannot grow the audit without bound.
pub const MAX_AHEAD: usize = 100_000;

/// One outlet's records as a reader has them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// The epoch the seqs below belong to; `None` before the first record.
    pub epoch: Option<String>,
    /// Every seq below this one is had (or counted lost); 0 before the
    /// first record.
    pub next: u64,
    /// Seqs had above `next` (there is a gap at `next`).
    #[serde(default)]
    pub ahead: BTreeSet<u64>,
    /// Distinct records taken as they were published.
    #[serde(default)]
    pub received: u64,
    /// Distinct records that came back through a replay.
    #[serde(default)]
    pub replayed: u64,
    /// Records seen again and ignored.
    #[serde(default)]
    pub duplicates: u64,
    /// Missing records the outlet no longer holds.
    #[serde(default)]
    pub lost: u64,
    /// Times the outlet's epoch changed (its data started anew).
    #[serde(default)]
    pub resets: u64,
    /// Epochs the outlet has left (the last [`PAST_EPOCHS`]): their records
    /// change nothing any more.
    #[serde(default)]
    pub past_epochs: Vec<String>,
}

/// Past epochs remembered per outlet.
pub const PAST_EPOCHS: usize = 8;

/// What one record did to a ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// A record not had before.
    New,
    /// Had already; ignored.
    Duplicate,
    /// The first of a new epoch: the ledger started over (the old epoch is
    /// given, `None` for an outlet's first record).
    Reset { from: Option<String> },
    /// From an epoch the outlet has left (a late record or replay of it):
    /// ignored.
    OtherEpoch,
}

/// A range of missing seqs, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub from: u64,
    pub to: u64,
}

impl Gap {
    /// How many seqs it spans.
    pub fn count(&self) -> u64 {
        self.to - self.from + 1
    }
}

impl Ledger {
    /// Takes one record. `seq` 0 is not a record (the agent counts from 1).
    ///
    /// A ledger that has seen nothing yet follows from the first record it
    /// gets: what came before it was published before this reader existed.
    /// A new epoch starts at 1, so its first record at a higher seq leaves
    /// a gap from 1 to ask for; what was still missing of the old epoch is
    /// lost with its data (counted). A record of an epoch the outlet has
    /// left (a replay that crossed the reset, a late delivery) changes
    /// nothing.
    pub fn take(&mut self, epoch: &str, seq: u64, replay: bool) -> Taken {
        if seq == 0 {
            return Taken::Duplicate;
        }
        let mut taken = Taken::New;
        match self.epoch.as_deref() {
            Some(known) if known == epoch => {}
            None => {
                self.epoch = Some(epoch.to_string());
                self.next = seq;
                taken = Taken::Reset { from: None };
            }
            Some(_) if replay || self.past_epochs.iter().any(|e| e == epoch) => {
                return Taken::OtherEpoch;
            }
            Some(old) => {
                let old = old.to_string();
                self.lost += self.missing();
                self.past_epochs.push(old.clone());
                if self.past_epochs.len() > PAST_EPOCHS {
                    self.past_epochs.remove(0);
                }
                self.epoch = Some(epoch.to_string());
                self.next = 1;
                self.ahead.clear();
                self.resets += 1;
                taken = Taken::Reset { from: Some(old) };
            }
        }
        if seq < self.next || self.ahead.contains(&seq) {
            self.duplicates += 1;
            return Taken::Duplicate;
        }
        if replay {
            self.replayed += 1;
        } else {
            self.received += 1;
        }
        if seq == self.next {
            self.next += 1;
            while self.ahead.remove(&self.next) {
                self.next += 1;
            }
        } else {
            self.ahead.insert(seq);
            while self.ahead.len() > MAX_AHEAD {
                // Give up the first gap: too old to wait for.
                let first = self.first_gap().map(|g| g.to);
                if let Some(to) = first {
                    self.lost_below(to + 1);
                } else {
                    break;
                }
            }
        }
        taken
    }

    /// The outlet no longer holds anything below `first_held`: what is
    /// missing there is lost. Returns how many records that was.
    pub fn lost_below(&mut self, first_held: u64) -> u64 {
        let mut lost = 0;
        while self.next < first_held {
            if !self.ahead.remove(&self.next) {
                lost += 1;
            }
            self.next += 1;
        }
        while self.ahead.remove(&self.next) {
            self.next += 1;
        }
        self.lost += lost;
        lost
    }

    /// The missing ranges between `next` and the highest seq had, lowest
    /// first.
    pub fn gaps(&self) -> Vec<Gap> {
        let mut gaps = Vec::new();
        let mut expected = self.next;
        for &seq in &self.ahead {
            if seq > expected {
                gaps.push(Gap {
                    from: expected,
                    to: seq - 1,
                });
            }
            expected = seq + 1;
        }
        gaps
    }

    /// The lowest missing range, if any.
    pub fn first_gap(&self) -> Option<Gap> {
        let first = *self.ahead.first()?;
        Some(Gap {
            from: self.next,
            to: first - 1,
        })
    }

    /// How many records are missing between `next` and the highest had.
    pub fn missing(&self) -> u64 {
        match self.ahead.last() {
            Some(&last) => last + 1 - self.next - self.ahead.len() as u64,
            None => 0,
        }
    }

    /// The highest seq had (0 for none).
    pub fn last_seq(&self) -> u64 {
        self.ahead
            .last()
            .copied()
            .unwrap_or(self.next.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_follows_from_its_first_record_and_sees_gaps_close() {
        let mut l = Ledger::default();
        assert_eq!(l.take("e1", 41, false), Taken::Reset { from: None });
        assert_eq!(l.take("e1", 42, false), Taken::New);
        assert_eq!(l.take("e1", 45, false), Taken::New);
        assert_eq!(l.take("e1", 47, false), Taken::New);
        assert_eq!(
            l.gaps(),
            vec![Gap { from: 43, to: 44 }, Gap { from: 46, to: 46 }]
        );
        assert_eq!(l.missing(), 3);
        assert_eq!(l.last_seq(), 47);
        assert_eq!(l.take("e1", 43, true), Taken::New);
        assert_eq!(l.take("e1", 44, true), Taken::New);
        assert_eq!(l.take("e1", 44, true), Taken::Duplicate);
        assert_eq!(l.next, 46);
        assert_eq!(l.take("e1", 46, false), Taken::New);
        assert_eq!((l.next, l.missing(), l.gaps()), (48, 0, vec![]));
        assert_eq!((l.received, l.replayed, l.duplicates), (5, 2, 1));
        // Before the first record: not this reader's to count.
        assert_eq!(l.take("e1", 12, true), Taken::Duplicate);
    }

    #[test]
    fn a_new_epoch_starts_from_one_and_old_replays_are_ignored() {
        let mut l = Ledger::default();
        l.take("e1", 7, false);
        assert_eq!(
            l.take("e2", 3, false),
            Taken::Reset {
                from: Some("e1".into())
            }
        );
        assert_eq!(l.gaps(), vec![Gap { from: 1, to: 2 }]);
        assert_eq!(l.take("e1", 8, true), Taken::OtherEpoch);
        // A late live record of the old epoch does not flip it back.
        assert_eq!(l.take("e1", 9, false), Taken::OtherEpoch);
        assert_eq!(l.resets, 1);
        assert_eq!(l.epoch.as_deref(), Some("e2"));
    }

    #[test]
    fn what_an_epoch_still_missed_is_lost_with_it() {
        let mut l = Ledger::default();
        l.take("e1", 1, false);
        l.take("e1", 4, false);
        assert_eq!(l.missing(), 2);
        l.take("e2", 1, false);
        assert_eq!((l.lost, l.missing(), l.next), (2, 0, 2));
    }

    #[test]
    fn what_the_outlet_no_longer_holds_is_counted_lost() {
        let mut l = Ledger::default();
        l.take("e", 1, false);
        l.take("e", 5, false);
        l.take("e", 9, false);
        // The journal starts at 4: 2 and 3 are gone; 4 can still come.
        assert_eq!(l.lost_below(4), 2);
        assert_eq!(
            l.gaps(),
            vec![Gap { from: 4, to: 4 }, Gap { from: 6, to: 8 }]
        );
        // 4 and 6 are gone; 5 was had.
        assert_eq!(l.lost_below(7), 2);
        assert_eq!((l.next, l.lost, l.missing()), (7, 4, 2));
    }

    #[test]
    fn a_gap_older_than_the_bound_is_given_up() {
        let mut l = Ledger::default();
        l.take("e", 1, false);
        for seq in 3..(3 + MAX_AHEAD as u64 + 1) {
            l.take("e", seq, false);
        }
        assert!(l.ahead.len() <= MAX_AHEAD);
        assert_eq!((l.lost, l.missing()), (1, 0));
    }

    #[test]
    fn it_round_trips_through_json() {
        let mut l = Ledger::default();
        l.take("e", 1, false);
        l.take("e", 3, false);
        let text = serde_json::to_string(&l).expect("serialises");
        let back: Ledger = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, l);
    }
}
