//! VioCluster's machine brokers (Ruth 2007, chapter 5): each domain's broker reads its
//! batch scheduler's demand and, by its borrowing, lending and reclamation policies, the
//! domains trade machines; a lent machine runs a VM of the borrower's environment.
//!
//! Pure: `trade` takes every domain's state and returns the trades. The live broker reads
//! Slurm and carries trades out with Violin VMs; the trace-driven simulator
//! (`cargo xtask bench adaptation`) runs the same code over SWF traces.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
pub use violin_api::rest::Trade;

/// A domain's policies. The defaults are the thesis prototype's: borrow what the queue
/// needs, lend up to half of the idle machines, reclaim at once on demand.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Whether this domain borrows when its demand exceeds its machines.
    pub borrow: bool,
    /// Machines borrowed at most at once (None: no bound).
    pub max_borrowed: Option<usize>,
    /// The share of its idle machines a domain lends at most (0 lends none).
    pub lend_share: f64,
    /// Machines reclaimed per round at most (None: all it needs at once, the thesis's
    /// policy; a number: gradual reclamation).
    pub reclaim_per_round: Option<usize>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            borrow: true,
            max_borrowed: None,
            lend_share: 0.5,
            reclaim_per_round: None,
        }
    }
}

/// One domain as its broker sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Domain {
    pub name: String,
    /// Its own machines, |P|.
    pub physical: usize,
    /// Its own machines that run its jobs now.
    pub busy_physical: usize,
    /// Nodes every job in its scheduler's queue needs, running or waiting (d).
    pub demand: usize,
    /// Borrowed machines that run none of its jobs now.
    pub idle_borrowed: usize,
}

/// The thesis's demand heuristic: the nodes the jobs in the queue require.
pub fn demand(jobs_nodes: impl IntoIterator<Item = usize>) -> usize {
    jobs_nodes.into_iter().sum()
}

/// Who lends whom how many machines: `loans[(owner, borrower)]`.
pub type Loans = BTreeMap<(String, String), usize>;

/// Takes up to `want` machines off the standing loans `held` ((owner, borrower) pairs, in
/// order); says what it took from which, as (owner, borrower, count).
fn take_back(
    loans: &mut Loans,
    held: Vec<(String, String)>,
    mut want: usize,
) -> Vec<(String, String, usize)> {
    let mut taken = Vec::new();
    for key in held {
        if want == 0 {
            break;
        }
        let c = loans.get_mut(&key).expect("a standing loan");
        let k = want.min(*c);
        *c -= k;
        want -= k;
        taken.push((key.0, key.1, k));
    }
    taken
}

/// n = d - ((|P| - |L|) + |V|): positive, the machines a domain needs; negative, those it
/// can spare.
pub fn need(d: &Domain, lent: usize, borrowed: usize) -> i64 {
    d.demand as i64 - ((d.physical as i64 - lent as i64) + borrowed as i64)
}

/// One round of brokering over `domains` with `policies` (by domain name; missing: the
/// default) and the loans standing: reclaim, then return, then lend.
pub fn trade(domains: &[Domain], policies: &BTreeMap<String, Policy>, loans: &Loans) -> Vec<Trade> {
    let default = Policy::default();
    let policy = |n: &str| policies.get(n).unwrap_or(&default);
    let mut loans = loans.clone();
    let lent = |loans: &Loans, n: &str| -> usize {
        loans
            .iter()
            .filter(|((o, _), _)| o == n)
            .map(|(_, c)| c)
            .sum()
    };
    let borrowed = |loans: &Loans, n: &str| -> usize {
        loans
            .iter()
            .filter(|((_, b), _)| b == n)
            .map(|(_, c)| c)
            .sum()
    };
    let mut trades = Vec::new();
    let mut idle_borrowed: BTreeMap<&str, usize> = domains
        .iter()
        .map(|d| (d.name.as_str(), d.idle_borrowed))
        .collect();

    // An owner short of machines takes its own back, from the borrowers in name order.
    for d in domains {
        let n = need(d, lent(&loans, &d.name), borrowed(&loans, &d.name));
        if n <= 0 {
            continue;
        }
        let mut want = n as usize;
        if let Some(cap) = policy(&d.name).reclaim_per_round {
            want = want.min(cap);
        }
        let held: Vec<(String, String)> = loans
            .iter()
            .filter(|((o, _), c)| *o == d.name && **c > 0)
            .map(|(k, _)| k.clone())
            .collect();
        for (owner, borrower, count) in take_back(&mut loans, held, want) {
            // A reclaimed machine that was idle at the borrower costs it no job.
            if let Some(i) = idle_borrowed.get_mut(borrower.as_str()) {
                *i = i.saturating_sub(count);
            }
            trades.push(Trade::Reclaim {
                owner,
                borrower,
                count,
            });
        }
    }
    // A borrower with more than it needs returns idle machines.
    for d in domains {
        let n = need(d, lent(&loans, &d.name), borrowed(&loans, &d.name));
        if n >= 0 {
            continue;
        }
        let give = ((-n) as usize).min(idle_borrowed[d.name.as_str()]);
        let held: Vec<(String, String)> = loans
            .iter()
            .filter(|((_, b), c)| *b == d.name && **c > 0)
            .map(|(k, _)| k.clone())
            .collect();
        for (owner, borrower, count) in take_back(&mut loans, held, give) {
            trades.push(Trade::Return {
                owner,
                borrower,
                count,
            });
        }
    }
    // Borrowers, neediest first, from lenders with the most to spare. A lender lends at
    // most `lend_share` of its idle machines, counting those it lends already, so that
    // lending stays bounded round after round.
    let mut needs: Vec<(usize, i64)> = domains
        .iter()
        .enumerate()
        .map(|(i, d)| (i, need(d, lent(&loans, &d.name), borrowed(&loans, &d.name))))
        .collect();
    needs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (bi, n) in needs.clone() {
        let b = &domains[bi];
        let pol = policy(&b.name);
        if n <= 0 || !pol.borrow {
            continue;
        }
        let mut want = n as usize;
        if let Some(max) = pol.max_borrowed {
            want = want.min(max.saturating_sub(borrowed(&loans, &b.name)));
        }
        let mut lenders: Vec<(usize, usize)> = domains
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != bi)
            .map(|(i, d)| {
                let l = lent(&loans, &d.name);
                let own_idle = d.physical.saturating_sub(l).saturating_sub(d.busy_physical);
                let spare = (-need(d, l, borrowed(&loans, &d.name))).max(0) as usize;
                // Idle and not needed by its own queue.
                let idle = own_idle.min(spare);
                let share = policy(&d.name).lend_share.clamp(0.0, 1.0);
                let bound = (share * (idle + l) as f64).floor() as usize;
                (i, bound.saturating_sub(l).min(idle))
            })
            .filter(|(_, c)| *c > 0)
            .collect();
        lenders.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for (li, offer) in lenders {
            if want == 0 {
                break;
            }
            let k = want.min(offer);
            let owner = domains[li].name.clone();
            *loans.entry((owner.clone(), b.name.clone())).or_default() += k;
            want -= k;
            trades.push(Trade::Lend {
                owner,
                borrower: b.name.clone(),
                count: k,
            });
        }
    }
    trades
}

/// Applies `trades` to `loans`.
pub fn apply(loans: &mut Loans, trades: &[Trade]) {
    for t in trades {
        match t {
            Trade::Lend {
                owner,
                borrower,
                count,
            } => *loans.entry((owner.clone(), borrower.clone())).or_default() += count,
            Trade::Return {
                owner,
                borrower,
                count,
            }
            | Trade::Reclaim {
                owner,
                borrower,
                count,
            } => {
                let e = loans.entry((owner.clone(), borrower.clone())).or_default();
                *e = e.saturating_sub(*count);
            }
        }
    }
    loans.retain(|_, c| *c > 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dom(name: &str, physical: usize, busy: usize, demand: usize) -> Domain {
        Domain {
            name: name.into(),
            physical,
            busy_physical: busy,
            demand,
            idle_borrowed: 0,
        }
    }

    #[test]
    fn need_follows_the_thesis() {
        // d = 40, |P| = 36, 4 lent, 2 borrowed: 40 - (32 + 2) = 6 more.
        assert_eq!(need(&dom("a", 36, 30, 40), 4, 2), 6);
        assert_eq!(demand([4, 8, 1]), 13);
    }

    #[test]
    fn a_lender_lends_half_of_its_idle_machines() {
        // A needs 50 - 36 = 14; B has 36 - 6 = 30 idle: half is 15, A takes 14.
        let ds = [dom("a", 36, 36, 50), dom("b", 36, 6, 6)];
        let t = trade(&ds, &BTreeMap::new(), &Loans::new());
        assert_eq!(
            t,
            vec![Trade::Lend {
                owner: "b".into(),
                borrower: "a".into(),
                count: 14
            }]
        );
        // A wants 40 more: B still lends 15 at most.
        let ds = [dom("a", 36, 36, 76), dom("b", 36, 6, 6)];
        let t = trade(&ds, &BTreeMap::new(), &Loans::new());
        assert!(matches!(t[..], [Trade::Lend { count: 15, .. }]), "{t:?}");
        // Next round, with 15 lent and 15 idle left: (15 + 15) / 2 = 15, nothing more.
        let mut loans = Loans::new();
        apply(&mut loans, &t);
        let t = trade(&ds, &BTreeMap::new(), &loans);
        assert!(t.is_empty(), "{t:?}");
    }

    #[test]
    fn an_owner_reclaims_at_once_or_gradually() {
        // B lent 10 to A; now B's own demand is 34 on 26 machines: it needs 8 back.
        let mut loans = Loans::new();
        loans.insert(("b".into(), "a".into()), 10);
        let ds = [dom("a", 36, 36, 46), dom("b", 36, 26, 34)];
        let t = trade(&ds, &BTreeMap::new(), &loans);
        assert_eq!(
            t[0],
            Trade::Reclaim {
                owner: "b".into(),
                borrower: "a".into(),
                count: 8
            }
        );
        let mut gradual = BTreeMap::new();
        gradual.insert(
            "b".to_string(),
            Policy {
                reclaim_per_round: Some(2),
                ..Policy::default()
            },
        );
        let t = trade(&ds, &gradual, &loans);
        assert!(matches!(&t[0], Trade::Reclaim { count: 2, .. }), "{t:?}");
    }

    #[test]
    fn a_borrower_returns_idle_machines_it_no_longer_needs() {
        let mut loans = Loans::new();
        loans.insert(("b".into(), "a".into()), 10);
        // A's demand fell to 30 of its 36 + 10: 16 spare, 7 of the borrowed idle.
        let mut a = dom("a", 36, 30, 30);
        a.idle_borrowed = 7;
        let t = trade(&[a, dom("b", 36, 5, 5)], &BTreeMap::new(), &loans);
        assert_eq!(
            t,
            vec![Trade::Return {
                owner: "b".into(),
                borrower: "a".into(),
                count: 7
            }]
        );
    }

    #[test]
    fn policies_can_refuse() {
        let ds = [dom("a", 36, 36, 50), dom("b", 36, 6, 6)];
        let mut p = BTreeMap::new();
        p.insert(
            "b".to_string(),
            Policy {
                lend_share: 0.0,
                ..Policy::default()
            },
        );
        assert!(trade(&ds, &p, &Loans::new()).is_empty());
        let mut p = BTreeMap::new();
        p.insert(
            "a".to_string(),
            Policy {
                max_borrowed: Some(3),
                ..Policy::default()
            },
        );
        let t = trade(&ds, &p, &Loans::new());
        assert!(matches!(t[..], [Trade::Lend { count: 3, .. }]), "{t:?}");
    }
}
