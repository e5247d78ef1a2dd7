//! VNET forwarding rules: address qualifiers, match strength and rule priority.
//!
//! A rule matches a frame's (source, destination) MAC pair; of all matching rules the one
//! with the strongest match wins, as in VNET: an exact address is stronger than `not X`,
//! which is stronger than `any`; a rule whose destination is `none` is the default rule,
//! matched whenever its source matches, with the lowest priority. The controller (for
//! `violinctl route`) and `violind` (compiling rules into the datapath's ROUTES map) both
//! decide with [`best`], so what the operator is shown is what the datapath does.
use crate::packet::parse_mac;

/// One side of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MacMatch {
    Exact([u8; 6]),
    Not([u8; 6]),
    Any,
    /// Destination only: the default rule.
    None,
}

impl MacMatch {
    /// Parses `aa:bb:cc:dd:ee:ff`, `not aa:bb:cc:dd:ee:ff`, `any`, or (destination
    /// only, when `allow_none`) `none`.
    pub fn parse(s: &str, allow_none: bool) -> Option<MacMatch> {
        let s = s.trim();
        match s {
            "any" => Some(MacMatch::Any),
            "none" if allow_none => Some(MacMatch::None),
            _ => match s.strip_prefix("not ") {
                Some(rest) => parse_mac(rest.trim()).map(MacMatch::Not),
                None => parse_mac(s).map(MacMatch::Exact),
            },
        }
    }

    pub fn matches(&self, mac: &[u8; 6]) -> bool {
        match self {
            MacMatch::Exact(m) => m == mac,
            MacMatch::Not(m) => m != mac,
            MacMatch::Any | MacMatch::None => true,
        }
    }

    /// How specific a match on this side is.
    pub const fn strength(&self) -> u8 {
        match self {
            MacMatch::Exact(_) => 3,
            MacMatch::Not(_) => 2,
            MacMatch::Any => 1,
            MacMatch::None => 0,
        }
    }

    /// The address a qualifier names, if any.
    pub const fn address(&self) -> Option<[u8; 6]> {
        match self {
            MacMatch::Exact(m) | MacMatch::Not(m) => Some(*m),
            MacMatch::Any | MacMatch::None => None,
        }
    }
}

/// A rule's priority when it matches: default rules last, then the summed strength of
/// both sides, then the destination's (a destination match is the more specific one).
pub fn priority(src: &MacMatch, dst: &MacMatch) -> (bool, u8, u8) {
    let default = matches!(dst, MacMatch::None);
    (!default, src.strength() + dst.strength(), dst.strength())
}

/// The index of the rule that decides for (src, dst): the highest priority among the
/// matching ones, the earliest of equals. `None` when no rule matches.
pub fn best<I>(rules: I, src: &[u8; 6], dst: &[u8; 6]) -> Option<usize>
where
    I: IntoIterator<Item = (MacMatch, MacMatch)>,
{
    let mut winner: Option<(usize, (bool, u8, u8))> = None;
    for (i, (s, d)) in rules.into_iter().enumerate() {
        if !s.matches(src) || !d.matches(dst) {
            continue;
        }
        let p = priority(&s, &d);
        if winner.is_none_or(|(_, best)| p > best) {
            winner = Some((i, p));
        }
    }
    winner.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const C: [u8; 6] = [2, 0, 0, 0, 0, 3];
    const BCAST: [u8; 6] = [0xff; 6];

    #[test]
    fn parses_qualifiers() {
        assert_eq!(
            MacMatch::parse("02:00:00:00:00:01", false),
            Some(MacMatch::Exact(A))
        );
        assert_eq!(
            MacMatch::parse("not 02:00:00:00:00:02", false),
            Some(MacMatch::Not(B))
        );
        assert_eq!(MacMatch::parse("any", false), Some(MacMatch::Any));
        assert_eq!(MacMatch::parse("none", true), Some(MacMatch::None));
        assert_eq!(MacMatch::parse("none", false), None);
        assert_eq!(MacMatch::parse("not any", false), None);
        assert_eq!(MacMatch::parse("02:00:00", false), None);
    }

    #[test]
    fn stronger_match_wins() {
        use MacMatch::*;
        // VNET's Figure 2: broadcasts from anyone but A, anything to A, and A's default.
        let table = [(Not(A), Exact(BCAST)), (Any, Exact(A)), (Exact(A), None)];
        assert_eq!(best(table, &B, &BCAST), Some(0));
        assert_eq!(best(table, &B, &A), Some(1));
        // A's broadcast matches only its default rule.
        assert_eq!(best(table, &A, &BCAST), Some(2));
        assert_eq!(best(table, &A, &C), Some(2));
        // Nothing matches B -> C.
        assert_eq!(best(table, &B, &C), Option::None);
    }

    #[test]
    fn exact_beats_not_beats_any_and_ties_go_to_the_first() {
        use MacMatch::*;
        let table = [(Any, Any), (Any, Not(C)), (Any, Exact(B)), (Exact(A), Any)];
        assert_eq!(best(table, &C, &B), Some(2));
        assert_eq!(best(table, &C, &A), Some(1));
        assert_eq!(best(table, &C, &C), Some(0));
        // (A, any) and (any, B) sum to the same strength; the destination match wins.
        assert_eq!(best(table, &A, &B), Some(2));
        let tie = [(Any, Exact(B)), (Any, Exact(B))];
        assert_eq!(best(tie, &A, &B), Some(0));
        // The default rule loses to any other match.
        let default_first = [(Exact(A), None), (Any, Any)];
        assert_eq!(best(default_first, &A, &B), Some(1));
    }
}
