//! The requests waiting for dumps: `covobs dump` (answered on its socket) and covobs' own (an
//! `--interval` tick's label). Each counts the dumps (snapshots) it waits for; the last one in
//! closes it.
use std::collections::HashMap;

use super::control::{DumpResponse, Responder};

pub(super) struct RequestState {
    /// None for covobs' own requests (the label of an interval).
    pub(super) responder: Option<Responder>,
    remaining: usize,
    pub(super) response: DumpResponse,
    /// The label the request closes, and the first target it is about (the label event's pid).
    pub(super) label: Option<String>,
    pub(super) pid: u32,
}

#[derive(Default)]
pub(super) struct Requests {
    open: HashMap<u64, RequestState>,
    next: u64,
    /// Intervals labelled so far (`interval-000001`, ...).
    intervals: u64,
}

impl Requests {
    /// A new request, waiting for nothing yet.
    pub(super) fn open(
        &mut self,
        responder: Option<Responder>,
        response: DumpResponse,
        label: Option<String>,
        pid: u32,
    ) -> u64 {
        self.next += 1;
        self.open.insert(
            self.next,
            RequestState {
                responder,
                remaining: 0,
                response,
                label,
                pid,
            },
        );
        self.next
    }

    /// The next interval's label.
    pub(super) fn next_interval(&mut self) -> String {
        self.intervals += 1;
        format!("interval-{:06}", self.intervals)
    }

    /// Request `id` waits for `n` more dumps (snapshots).
    pub(super) fn expect(&mut self, id: u64, n: usize) {
        if let Some(r) = self.open.get_mut(&id) {
            r.remaining += n;
        }
    }

    /// What was triggered for request `id` (its answer lists it).
    pub(super) fn triggered(&mut self, id: u64, what: impl IntoIterator<Item = String>) {
        if let Some(r) = self.open.get_mut(&id) {
            r.response.triggered.extend(what);
        }
    }

    /// Request `id` joined a dump that `others` asked for: it waits for it too, and each names
    /// the other's label in its answer (they close at the same state; the report gives its gains
    /// to the label that closes first).
    pub(super) fn join(&mut self, id: u64, others: &[u64]) {
        self.expect(id, 1);
        let label_of =
            |open: &HashMap<u64, RequestState>, i: &u64| open.get(i).and_then(|r| r.label.clone());
        let mine = label_of(&self.open, &id);
        for o in others {
            if let Some(theirs) = label_of(&self.open, o)
                && let Some(r) = self.open.get_mut(&id)
                && !r.response.shares_dump_with.contains(&theirs)
            {
                r.response.shares_dump_with.push(theirs);
            }
            if let Some(mine) = &mine
                && let Some(r) = self.open.get_mut(o)
                && !r.response.shares_dump_with.contains(mine)
            {
                r.response.shares_dump_with.push(mine.clone());
            }
        }
    }

    /// `count` of request `id`'s dumps answered, with their artifact or why there is none; the
    /// request, complete, once none is left.
    pub(super) fn answer(
        &mut self,
        id: u64,
        count: usize,
        file: Option<String>,
        lost: Option<String>,
    ) -> Option<RequestState> {
        let r = self.open.get_mut(&id)?;
        r.remaining = r.remaining.saturating_sub(count);
        if let Some(f) = file {
            r.response.artifacts.push(f);
        }
        if let Some(l) = lost {
            r.response.lost.push(l);
        }
        if r.remaining > 0 {
            return None;
        }
        let mut r = self.open.remove(&id)?;
        r.response.ok = r.response.lost.is_empty();
        if !r.response.ok {
            r.response.error = Some(r.response.lost.join("; "));
        }
        Some(r)
    }

    /// Request `id` if it waits for nothing (nothing could be triggered), failed with `errors`.
    pub(super) fn refused(&mut self, id: u64, errors: &[String]) -> Option<RequestState> {
        if self.open.get(&id)?.remaining > 0 {
            return None;
        }
        let mut r = self.open.remove(&id)?;
        r.response.ok = false;
        r.response.error = Some(errors.join("; "));
        Some(r)
    }
}
