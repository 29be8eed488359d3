//! A store for tests: object_store's in-memory store, with faults on
//! demand. object_store has no fault injection of its own (its
//! `ThrottledStore` only delays), so this wraps `InMemory` and counts puts.
//!
//! - `fail_put(n)`: the n-th put (1-based, counting from the call) fails
//!   with `Error::Generic`, as a put does after a timeout or a reset
//!   connection (`fail_puts(n, k)`: k of them in a row from the n-th);
//! - `deny_put(n)`: the n-th put fails with `PermissionDenied`;
//! - `lose_put(n)`: the n-th put is written, then fails with
//!   `Error::Generic`, as one whose answer was lost;
//! - `echo_put(n)`: the n-th put is written, then answers AlreadyExists, as
//!   a conditional put does when it was retried after its first answer was
//!   lost;
//! - `ignore_create_only()`: from now on a create-only put overwrites, as
//!   some S3-compatible stores that ignore `If-None-Match` do;
//! - `gate()`: from now on puts wait for permits on the semaphore returned;
//! - `pause_next_put()`: the next put waits until the test says go, after
//!   telling the test it has arrived (to run something in between);
//! - `pause_next_put_named(start)`: the same, for the next put whose file
//!   name starts with `start`;
//! - `pause_after_next_list()`: the same, after the next listing is made
//!   and before it is returned;
//! - `hide_in_next_list(name)`: the next listing leaves out that file name,
//!   as a listing of many pages does when a compaction ran between pages;
//! - `slow_gets(d)`: every get waits `d` on tokio's clock; `max_gets_at_once()`
//!   says how many were ever in flight together;
//! - `delete_calls()`: how many times `delete_stream` was called (a
//!   single `delete` is one call too).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use tokio::sync::{oneshot, Semaphore};

type Fut<'a, T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
type Stream<T> = futures_util::stream::BoxStream<'static, Result<T>>;

type Pause = Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>;

/// What happens to one put.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Fail,
    Deny,
    Lose,
    Echo,
}

#[derive(Debug, Default)]
pub(super) struct Faulty {
    pub(super) inner: InMemory,
    puts: AtomicUsize,
    faults: Mutex<HashMap<usize, Fault>>,
    gate: Mutex<Option<Arc<Semaphore>>>,
    pause: Pause,
    pause_named: Mutex<Option<String>>,
    pause_named_slot: Pause,
    pause_list: Pause,
    hide: Mutex<Option<String>>,
    get_delay: Mutex<Option<Duration>>,
    gets_now: AtomicUsize,
    gets_max: AtomicUsize,
    deletes: AtomicUsize,
    overwrites: std::sync::atomic::AtomicBool,
}

fn paused(slot: &Pause) -> Paused {
    let (arrived_tx, arrived) = oneshot::channel();
    let (go, go_rx) = oneshot::channel();
    *slot.lock().unwrap() = Some((arrived_tx, go_rx));
    Paused { arrived, go }
}

async fn wait_if_paused(slot: &Pause) {
    let pause = slot.lock().unwrap().take();
    if let Some((arrived, go)) = pause {
        let _ = arrived.send(());
        let _ = go.await;
    }
}

/// The test's side of a paused put: it has arrived, and it may go on.
pub(super) struct Paused {
    pub(super) arrived: oneshot::Receiver<()>,
    pub(super) go: oneshot::Sender<()>,
}

impl Faulty {
    pub(super) fn puts(&self) -> usize {
        self.puts.load(Ordering::SeqCst)
    }

    fn fault(&self, n: usize, count: usize, fault: Fault) {
        let at = self.puts() + n;
        let mut faults = self.faults.lock().unwrap();
        for i in 0..count {
            faults.insert(at + i, fault);
        }
    }

    pub(super) fn fail_put(&self, n: usize) {
        self.fault(n, 1, Fault::Fail);
    }

    pub(super) fn fail_puts(&self, n: usize, count: usize) {
        self.fault(n, count, Fault::Fail);
    }

    pub(super) fn deny_put(&self, n: usize) {
        self.fault(n, 1, Fault::Deny);
    }

    pub(super) fn lose_put(&self, n: usize) {
        self.fault(n, 1, Fault::Lose);
    }

    pub(super) fn echo_put(&self, n: usize) {
        self.fault(n, 1, Fault::Echo);
    }

    pub(super) fn pause_next_put_named(&self, start: &str) -> Paused {
        *self.pause_named.lock().unwrap() = Some(start.into());
        paused(&self.pause_named_slot)
    }

    pub(super) fn pause_after_next_list(&self) -> Paused {
        paused(&self.pause_list)
    }

    pub(super) fn hide_in_next_list(&self, name: &str) {
        *self.hide.lock().unwrap() = Some(name.into());
    }

    pub(super) fn slow_gets(&self, delay: Duration) {
        *self.get_delay.lock().unwrap() = Some(delay);
    }

    pub(super) fn max_gets_at_once(&self) -> usize {
        self.gets_max.load(Ordering::SeqCst)
    }

    pub(super) fn delete_calls(&self) -> usize {
        self.deletes.load(Ordering::SeqCst)
    }

    pub(super) fn ignore_create_only(&self) {
        self.overwrites.store(true, Ordering::SeqCst);
    }

    pub(super) fn gate(&self) -> Arc<Semaphore> {
        let gate = Arc::new(Semaphore::new(0));
        *self.gate.lock().unwrap() = Some(gate.clone());
        gate
    }

    pub(super) fn pause_next_put(&self) -> Paused {
        paused(&self.pause)
    }
}

impl std::fmt::Display for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Faulty(InMemory)")
    }
}

impl ObjectStore for Faulty {
    fn put_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Fut<'c, Result<PutResult>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move {
            let n = self.puts.fetch_add(1, Ordering::SeqCst) + 1;
            let gate = self.gate.lock().unwrap().clone();
            if let Some(gate) = gate {
                gate.acquire().await.expect("the gate stays open").forget();
            }
            wait_if_paused(&self.pause).await;
            let named = {
                let mut named = self.pause_named.lock().unwrap();
                let name = location.filename().unwrap_or_default();
                let hit = named.as_deref().is_some_and(|s| name.starts_with(s));
                if hit {
                    *named = None;
                }
                hit
            };
            if named {
                wait_if_paused(&self.pause_named_slot).await;
            }
            let fault = self.faults.lock().unwrap().remove(&n);
            let generic = |what: &str| object_store::Error::Generic {
                store: "Faulty",
                source: format!("injected failure ({what})").into(),
            };
            match fault {
                Some(Fault::Fail) => return Err(generic("a timeout")),
                Some(Fault::Deny) => {
                    return Err(object_store::Error::PermissionDenied {
                        path: location.to_string(),
                        source: "injected: access denied".into(),
                    })
                }
                _ => {}
            }
            let mut opts = opts;
            if self.overwrites.load(Ordering::SeqCst) {
                opts.mode = object_store::PutMode::Overwrite;
            }
            let put = self.inner.put_opts(location, payload, opts).await?;
            match fault {
                Some(Fault::Lose) => Err(generic("the answer was lost")),
                Some(Fault::Echo) => Err(object_store::Error::AlreadyExists {
                    path: location.to_string(),
                    source: "injected: a retry of a put that succeeded".into(),
                }),
                _ => Ok(put),
            }
        })
    }

    fn put_multipart_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        opts: PutMultipartOptions,
    ) -> Fut<'c, Result<Box<dyn MultipartUpload>>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.inner.put_multipart_opts(location, opts)
    }

    fn get_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        options: GetOptions,
    ) -> Fut<'c, Result<GetResult>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move {
            let delay = *self.get_delay.lock().unwrap();
            let now = self.gets_now.fetch_add(1, Ordering::SeqCst) + 1;
            self.gets_max.fetch_max(now, Ordering::SeqCst);
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let got = self.inner.get_opts(location, options).await;
            self.gets_now.fetch_sub(1, Ordering::SeqCst);
            got
        })
    }

    fn delete_stream(&self, locations: Stream<Path>) -> Stream<Path> {
        self.deletes.fetch_add(1, Ordering::SeqCst);
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> Stream<ObjectMeta> {
        self.inner.list(prefix)
    }

    fn list_with_delimiter<'a, 'b, 'c>(
        &'a self,
        prefix: Option<&'b Path>,
    ) -> Fut<'c, Result<ListResult>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move {
            let mut listed = self.inner.list_with_delimiter(prefix).await?;
            let hide = self.hide.lock().unwrap().take();
            if let Some(hide) = hide {
                listed
                    .objects
                    .retain(|m| m.location.filename() != Some(hide.as_str()));
            }
            wait_if_paused(&self.pause_list).await;
            Ok(listed)
        })
    }

    fn copy_opts<'a, 'b, 'd, 'c>(
        &'a self,
        from: &'b Path,
        to: &'d Path,
        options: CopyOptions,
    ) -> Fut<'c, Result<()>>
    where
        'a: 'c,
        'b: 'c,
        'd: 'c,
        Self: 'c,
    {
        self.inner.copy_opts(from, to, options)
    }
}
