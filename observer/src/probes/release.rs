//! Releasing links without waiting for each. Closing a uprobe, tracepoint or trampoline link waits
//! for an RCU grace period (`synchronize_rcu_tasks_trace` and friends): tens of milliseconds on an
//! idle machine, seconds each when every core is busy. Closed one after another, a few dozen links
//! kept covobs in its stop for minutes. Concurrent waiters share a grace period, so every link of
//! a batch is closed on a thread of its own, and the whole batch costs about one grace period.
use std::{
    sync::mpsc::{Sender, channel},
    thread::JoinHandle,
};

/// An owned link: closed when dropped.
pub type Owned = Box<dyn Send>;

/// The most threads one batch uses; beyond it, threads close a share each.
const MAX_THREADS: usize = 256;
/// A closing thread only waits in the kernel: a small stack is plenty.
const STACK: usize = 64 << 10;

/// Closes links in the background (a process that is gone: its own probes) so the event loop never
/// waits for a grace period. Dropping it waits for what it was given.
pub struct Releaser {
    tx: Option<Sender<Vec<Owned>>>,
    thread: Option<JoinHandle<()>>,
}

impl Releaser {
    pub fn new() -> Self {
        let (tx, rx) = channel::<Vec<Owned>>();
        let thread = std::thread::Builder::new()
            .name("covobs-detach".into())
            .spawn(move || {
                for batch in rx {
                    close_all(batch);
                }
            });
        match thread {
            Ok(thread) => Self {
                tx: Some(tx),
                thread: Some(thread),
            },
            Err(e) => {
                // Links are then closed where they are given up (slower, never lost).
                tracing::warn!("starting the detach thread: {e}");
                Self {
                    tx: None,
                    thread: None,
                }
            }
        }
    }

    /// Close these links soon, off the caller's thread.
    pub fn later(&self, batch: Vec<Owned>) {
        if batch.is_empty() {
            return;
        }
        match &self.tx {
            Some(tx) => {
                if let Err(e) = tx.send(batch) {
                    close_all(e.0);
                }
            }
            None => close_all(batch),
        }
    }
}

impl Drop for Releaser {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::warn!("the detach thread panicked");
        }
    }
}

/// Close every link of `batch` at once and return when all are closed.
pub fn close_all(batch: Vec<Owned>) {
    if batch.len() <= 1 {
        drop(batch);
        return;
    }
    let per_thread = batch.len().div_ceil(MAX_THREADS);
    let mut rest = batch;
    let mut threads = Vec::new();
    while !rest.is_empty() {
        let share: Vec<Owned> = rest.drain(..per_thread.min(rest.len())).collect();
        let spawned = std::thread::Builder::new()
            .name("covobs-detach".into())
            .stack_size(STACK)
            .spawn(move || drop(share));
        match spawned {
            Ok(t) => threads.push(t),
            // Out of threads: what is left is closed here, one after another.
            Err(e) => {
                tracing::debug!("closing links concurrently: {e}");
                break;
            }
        }
    }
    drop(rest);
    for t in threads {
        let _ = t.join();
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        time::Duration,
    };

    use super::*;

    /// Stands for a link whose close blocks (a grace period); counts closes, and the most
    /// closes under way at once.
    #[derive(Default)]
    struct Seen {
        closed: AtomicUsize,
        now: AtomicUsize,
        most: AtomicUsize,
    }
    struct Slow(Arc<Seen>);
    impl Drop for Slow {
        fn drop(&mut self) {
            let now = self.0.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.0.most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(100));
            self.0.now.fetch_sub(1, Ordering::SeqCst);
            self.0.closed.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn slow(seen: &Arc<Seen>, n: usize) -> Vec<Owned> {
        (0..n)
            .map(|_| Box::new(Slow(seen.clone())) as Owned)
            .collect()
    }

    #[test]
    fn a_batch_is_closed_whole_and_concurrently() {
        let seen = Arc::new(Seen::default());
        close_all(slow(&seen, 40));
        assert_eq!(seen.closed.load(Ordering::SeqCst), 40);
        assert_eq!(seen.now.load(Ordering::SeqCst), 0);
        // Every close waits 100 ms: the threads overlap, whatever the machine's load.
        assert!(seen.most.load(Ordering::SeqCst) > 1, "closed one at a time");
    }

    #[test]
    fn the_releaser_closes_everything_before_it_is_gone() {
        let seen = Arc::new(Seen::default());
        let r = Releaser::new();
        for _ in 0..3 {
            r.later(slow(&seen, 2));
        }
        drop(r);
        assert_eq!(seen.closed.load(Ordering::SeqCst), 6);
    }
}
