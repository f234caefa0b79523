//! Coverage over time: the cumulative coverage after each artifact, in collection order.
use serde::Serialize;

use super::model::Totals;

/// The session's coverage right after one more artifact was merged in.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimelinePoint {
    /// 1, 2, ...: the how-manyth artifact in the report this is.
    pub index: usize,
    pub seq: u64,
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    pub runtime: String,
    /// The module whose counters the artifact holds.
    pub module: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// When the dump ended (CLOCK_BOOTTIME ns, as in the artifact's metadata).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_ns: Option<u64>,
    /// Cumulative coverage of the whole session (every module) after this artifact.
    #[serde(flatten)]
    pub totals: Totals,
}

impl TimelinePoint {
    /// "lines 63.2% (120/190), functions ..." for progress output.
    pub fn describe(&self) -> String {
        self.totals.describe()
    }
}

/// timeline.json.
#[derive(Debug, Serialize)]
pub struct TimelineFile<'a> {
    pub version: u32,
    pub points: &'a [TimelinePoint],
}

/// Whether coverage never decreases along the timeline (it cannot, as counts only add up;
/// the report asserts this in its tests).
pub fn is_monotonic(points: &[TimelinePoint]) -> bool {
    points.windows(2).all(|w| {
        let (a, b) = (&w[0].totals, &w[1].totals);
        b.lines.hit >= a.lines.hit
            && b.functions.hit >= a.functions.hit
            && b.branches.hit >= a.branches.hit
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::Counts;

    fn point(index: usize, lines: (u64, u64)) -> TimelinePoint {
        TimelinePoint {
            index,
            seq: index as u64,
            pid: 1,
            tid: None,
            runtime: "llvm".into(),
            module: "m".into(),
            trigger: None,
            end_ns: Some(index as u64 * 1000),
            totals: Totals {
                lines: Counts::new(lines.0, lines.1),
                ..Totals::default()
            },
        }
    }

    #[test]
    fn json_shape() {
        let p = point(1, (3, 4));
        let v = serde_json::to_value(&p).expect("json");
        assert_eq!(v["lines"]["hit"], 3);
        assert_eq!(v["lines"]["percent"], 75.0);
        assert_eq!(v["seq"], 1);
        assert!(v.get("regions").is_none());
        assert!(v.get("tid").is_none());
    }

    #[test]
    fn monotonic() {
        assert!(is_monotonic(&[point(1, (1, 4)), point(2, (3, 4))]));
        assert!(!is_monotonic(&[point(1, (3, 4)), point(2, (1, 4))]));
        assert!(is_monotonic(&[]));
    }
}
