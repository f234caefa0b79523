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
    /// What this artifact added to its module: what it covers that the module's previous point
    /// did not (all of its coverage for the module's first). Snapshot deltas, seen through the
    /// report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_added: Option<Added>,
}

/// Newly covered lines, functions, regions and branches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Added {
    pub lines: u64,
    pub functions: u64,
    pub regions: u64,
    pub branches: u64,
}

impl Added {
    /// From the coverage before (None: nothing yet) to the coverage after.
    pub fn between(before: Option<&Totals>, after: &Totals) -> Self {
        let b = before.copied().unwrap_or_default();
        let hit = |c: Option<super::model::Counts>| c.map_or(0, |c| c.hit);
        Self {
            lines: after.lines.hit.saturating_sub(b.lines.hit),
            functions: after.functions.hit.saturating_sub(b.functions.hit),
            regions: hit(after.regions).saturating_sub(hit(b.regions)),
            branches: after.branches.hit.saturating_sub(b.branches.hit),
        }
    }
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
    use crate::model::Counts;

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
            module_added: None,
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
    fn added_counts_newly_covered_items() {
        let before = Totals {
            lines: Counts::new(3, 10),
            regions: Some(Counts::new(4, 20)),
            ..Totals::default()
        };
        let after = Totals {
            lines: Counts::new(5, 10),
            functions: Counts::new(1, 2),
            regions: Some(Counts::new(9, 20)),
            ..Totals::default()
        };
        let a = Added::between(Some(&before), &after);
        assert_eq!((a.lines, a.functions, a.regions, a.branches), (2, 1, 5, 0));
        assert_eq!(Added::between(None, &after).lines, 5);
        let mut p = point(1, (1, 2));
        p.module_added = Some(a);
        let v = serde_json::to_value(&p).expect("json");
        assert_eq!(v["module_added"]["regions"], 5);
    }

    #[test]
    fn monotonic() {
        assert!(is_monotonic(&[point(1, (1, 4)), point(2, (3, 4))]));
        assert!(!is_monotonic(&[point(1, (3, 4)), point(2, (1, 4))]));
        assert!(is_monotonic(&[]));
    }
}
