//! A row taken from the cache (`--cache`): its images copied in at no cost,
//! checked, and journaled `done`; an entry that fails its checks is
//! forgotten and the row goes on as it would have without the cache.
//!
//! Cancellation: a row that has not begun ends at once when the run stops;
//! a copy under way is finished and journaled.

use super::finish::Saved;
use super::RowRun;
use crate::api::PART_PREFIX;
use crate::cache;
use crate::journal::{Charged, State};
use crate::plan::Usd;
use crate::progress::Event;
use crate::run::start::{resume, CACHED_FILES_MISSING_MESSAGE, FILES_MISSING_MESSAGE};
use crate::run::Start;
use crate::vocab::Code;

impl RowRun {
    /// Takes the row's images from the cache: completed at no cost. A row
    /// completed earlier whose files were damaged gets them back, keeping
    /// what it cost and whether it was paid for. An entry that fails its
    /// checks is forgotten: the row is then submitted if `or_submit` (it
    /// would have been without the cache), else it gets the verdict it
    /// would have had (never a submit nobody asked for). A failure to write
    /// the output folder stops spending, as a download's does.
    pub(super) async fn take_cached(&mut self, hit: cache::Hit, or_submit: bool) -> Start {
        let ctx = self.ctx.clone();
        let Some(cache) = ctx.cache.clone() else {
            return Start::Submit;
        };
        if self.shutdown.is_shutdown() {
            return Start::End; // left unrun, or left as it stands
        }
        let before = ctx.journal.with_replay(|r| {
            let rec = r.records.get(&self.key)?;
            match &rec.state {
                State::Done {
                    cost_micros,
                    cached,
                    ..
                } => Some((Usd::from_micros(*cost_micros), *cached, rec.seen_ms)),
                _ => None,
            }
        });
        let stem = ctx.stems.stem(&self.id, self.key);
        let dir = ctx.images_dir.clone();
        let taken = {
            let (cache, hit) = (cache.clone(), hit.clone());
            tokio::task::spawn_blocking(move || cache.take(&hit, &dir, &stem, PART_PREFIX))
                .await
                .unwrap_or_else(|e| {
                    Err(cache::CacheError::Io {
                        path: ctx.images_dir.clone(),
                        source: std::io::Error::other(e),
                    })
                })
        };
        let taken = match taken {
            Ok(taken) => taken,
            Err(e @ cache::CacheError::Output { .. }) => {
                self.say(format!(
                    "error: row {}: {e}; no new requests will be sent",
                    self.id
                ));
                if let cache::CacheError::Output { source, .. } = &e {
                    ctx.stop_images_unwritable(source);
                }
                return Start::End;
            }
            Err(e) => {
                cache.forget(&hit);
                let submit = or_submit && before.is_none();
                let then = if submit { "; it is submitted" } else { "" };
                self.say(format!(
                    "warning: row {}: not taken from the cache ({e}){then}",
                    self.id
                ));
                return match before {
                    _ if submit => Start::Submit,
                    // Paid for: fetched again from its request, if it can be.
                    Some((_, false, _)) => {
                        let again = ctx
                            .journal
                            .with_replay(|r| r.records.get(&self.key).and_then(|r| resume(r)));
                        match again {
                            Some(start) => start,
                            None => {
                                self.fail(
                                    Code::FilesMissing.as_str(),
                                    FILES_MISSING_MESSAGE,
                                    Charged::Yes,
                                )
                                .await
                            }
                        }
                    }
                    _ => {
                        self.fail(
                            Code::CachedFilesMissing.as_str(),
                            CACHED_FILES_MISSING_MESSAGE,
                            Charged::No,
                        )
                        .await
                    }
                };
            }
        };
        let count = taken.len() as u64;
        let mut saved = Saved::default();
        for t in taken {
            saved.push(t.path, t.sha256, t.bytes, t.mtime_ns);
        }
        let (cost, cached) = match before {
            Some((cost, cached, seen)) => {
                self.seen = seen.map(|[lo, hi]| (lo as f64 / 1000.0, hi as f64 / 1000.0));
                (cost, cached)
            }
            None => (Usd::default(), true),
        };
        // On a bucket, the files are there before the line that says so.
        if let Err(why) = ctx.publish(&saved.paths()).await {
            self.record_left(Code::Disk.as_str(), &why).await;
            ctx.event(Event::Left {
                possibly: Usd::default(),
            });
            self.say(format!(
                "warning: row {}: {}: {why}",
                self.id,
                Code::Disk.as_str()
            ));
            return Start::End;
        }
        if !ctx.record(&self.done(saved, cost, cached)).await {
            return Start::End;
        }
        self.write_sidecars().await;
        ctx.event(Event::Completed {
            images: count,
            cost: Usd::default(),
        });
        Start::End
    }
}
