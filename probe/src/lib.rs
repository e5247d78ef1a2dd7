//! The line `violin-probe` prints every 500 ms, defined once: the probe writes it inside
//! the guest, the testbed and the benchmarks read it back from the guest's console.
use std::fmt;

/// What the probe measured so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub tcp_sent: u64,
    pub tcp_echoed: u64,
    /// The longest time between echoes (the gap still open included).
    pub tcp_max_gap_ms: u64,
    /// The TCP session's first error (the probe never reconnects).
    pub tcp_error: Option<String>,
    pub ping_sent: u64,
    pub ping_received: u64,
    pub ping_max_gap_ms: u64,
}

const MARKER: &str = "VIOLIN-PROBE ";

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{MARKER}tcp_sent={} tcp_echoed={} tcp_max_gap_ms={} tcp_error={} \
             ping_sent={} ping_received={} ping_max_gap_ms={}",
            self.tcp_sent,
            self.tcp_echoed,
            self.tcp_max_gap_ms,
            self.tcp_error.as_deref().unwrap_or("none"),
            self.ping_sent,
            self.ping_received,
            self.ping_max_gap_ms
        )
    }
}

impl Report {
    /// One report line; console noise before the marker is skipped. An error has no
    /// spaces (the probe writes them with underscores).
    pub fn parse(line: &str) -> Option<Report> {
        let (_, fields) = line.split_once(MARKER)?;
        let value = |key: &str| {
            fields
                .split_whitespace()
                .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
        };
        let number = |key: &str| value(key)?.parse().ok();
        Some(Report {
            tcp_sent: number("tcp_sent")?,
            tcp_echoed: number("tcp_echoed")?,
            tcp_max_gap_ms: number("tcp_max_gap_ms")?,
            tcp_error: match value("tcp_error")? {
                "none" => None,
                e => Some(e.to_string()),
            },
            ping_sent: number("ping_sent")?,
            ping_received: number("ping_received")?,
            ping_max_gap_ms: number("ping_max_gap_ms")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_back_from_its_line() {
        let mut r = Report {
            tcp_sent: 120,
            tcp_echoed: 118,
            tcp_max_gap_ms: 250,
            tcp_error: None,
            ping_sent: 120,
            ping_received: 117,
            ping_max_gap_ms: 31,
        };
        let line = r.to_string();
        assert_eq!(
            line,
            "VIOLIN-PROBE tcp_sent=120 tcp_echoed=118 tcp_max_gap_ms=250 tcp_error=none \
             ping_sent=120 ping_received=117 ping_max_gap_ms=31"
        );
        assert_eq!(Report::parse(&format!("[ 12.3] {line}")), Some(r.clone()));
        r.tcp_error = Some("read:eof".into());
        assert_eq!(Report::parse(&r.to_string()), Some(r));
        assert_eq!(Report::parse("VIOLIN-PROBE tcp_sent=1"), None);
        assert_eq!(Report::parse("no marker"), None);
    }
}
